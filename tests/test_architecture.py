"""The dependency direction core <- flows <- CLI, checked rather than stated."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_core_never_imports_prefect_or_flows():
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "sanitize").rglob("*.py")
        if path.name != "cli.py" and _imports(path) & {"prefect", "prefect_dask", "flows"}
    ]
    assert offenders == []


def test_flows_hold_no_method_logic():
    for path in (REPO / "flows").rglob("*.py"):
        imported = _imports(path)
        assert not imported & {"torch", "sklearn", "numpy"}, path
