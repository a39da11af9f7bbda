"""The dependency direction core <- flows <- CLI, and inside the core methods <- pipeline,
checked rather than stated."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path, depth: int = 1) -> set[str]:
    """The modules ``path`` imports, cut to their first ``depth`` dotted parts."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(".".join(alias.name.split(".")[:depth]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(".".join(node.module.split(".")[:depth]))
    return found


def _offenders(folder: str, forbidden: set[str], depth: int = 1) -> list[str]:
    return [
        str(path.relative_to(REPO))
        for path in (REPO / folder).rglob("*.py")
        if _imports(path, depth) & forbidden
    ]


def test_core_never_imports_prefect_flows_or_the_cli():
    assert _offenders("sanitize", {"prefect", "prefect_dask", "flows", "sanitize_cli"}) == []


def test_flows_never_import_the_cli():
    assert _offenders("flows", {"sanitize_cli"}) == []


@pytest.mark.parametrize("package", ["data", "model", "detect", "decision", "attacks"])
def test_methods_never_import_the_pipeline(package):
    forbidden = {"sanitize.pipeline", "sanitize.api"}
    assert _offenders(f"sanitize/{package}", forbidden, depth=2) == []


def test_detectors_never_import_the_decision():
    assert _offenders("sanitize/detect", {"sanitize.decision"}, depth=2) == []


def test_flows_hold_no_method_logic():
    for path in (REPO / "flows").rglob("*.py"):
        imported = _imports(path)
        assert not imported & {"torch", "sklearn", "numpy"}, path
