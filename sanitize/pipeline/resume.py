"""Content-keyed resume: a stage whose outputs a run already finished is not run again.

Each stage gets a key, the digest of everything its outputs depend on: the source's content
fingerprint, the part of the config the stage reads, the keys of the stages it needs (so a
changed input re-runs everything after it), the package version and a digest of the code
the stage runs (:func:`stage_code_files`: editing the report re-runs only the export),
and the thread count (see :mod:`sanitize.pipeline.threads`). Once a stage has written its outputs,
they are flushed to disk and a marker ``OUT/.work/done/<stage>.json`` is written atomically
with the key, the stage's result and the outputs' sizes. A later run into the same
directory skips a stage whose marker has the same key and whose outputs are all there with
those sizes, and hands on the saved result; anything else runs the stage again.

This is not Prefect's task caching: it works the same with or without Prefect, and keys on
content rather than on task arguments.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import sanitize
from sanitize.config import SanitizeConfig
from sanitize.data import open_source
from sanitize.pipeline.paths import RunPaths
from sanitize.pipeline.plan import Stage, StageResults, build_plan
from sanitize.pipeline.threads import pinned_threads

log = logging.getLogger("sanitize")

MARKER_VERSION = 1


# The module that holds each kind of stage; the stage's code is that module and what it
# imports from the package, followed transitively, so a stage's key moves only with code it
# can reach.
STAGE_CODE = {
    "read": "sanitize.pipeline.stages.reading",
    "bootstrap": "sanitize.pipeline.stages.training",
    "embed": "sanitize.pipeline.stages.training",
    "embed_shard": "sanitize.pipeline.stages.training",
    "embed_merge": "sanitize.pipeline.stages.training",
    "clean_model": "sanitize.pipeline.stages.training",
    "class_stats": "sanitize.pipeline.stages.detecting",
    "detect": "sanitize.pipeline.stages.detecting",
    "decide": "sanitize.pipeline.stages.deciding",
    "export": "sanitize.pipeline.stages.exporting",
}


def _module_file(name: str) -> Path | None:
    root = Path(sanitize.__file__).parent.parent
    path = root.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_imports(path: Path) -> set[str]:
    """The ``sanitize.*`` modules ``path`` imports (a name imported from a package counts
    as its submodule when there is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sanitize."))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sanitize."):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if _module_file(name) is not None}


@cache
def stage_code_files(kind: str) -> tuple[Path, ...]:
    """The package files a stage of ``kind`` runs: its module (:data:`STAGE_CODE`) and what
    it imports from the package, transitively."""
    todo, seen = [STAGE_CODE[kind]], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_package_imports(_module_file(name)) - seen)
    return tuple(sorted(_module_file(name) for name in seen))


@cache
def code_digest(kind: str) -> str:
    """Digest of the code a stage of ``kind`` runs (:func:`stage_code_files`)."""
    root = Path(sanitize.__file__).parent
    digest = hashlib.sha256()
    for path in stage_code_files(kind):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def plan_keys(
    plan: tuple[Stage, ...], fingerprint: str, config: SanitizeConfig, threads: int
) -> dict[str, str]:
    """The resume key of every stage of ``plan``, by stage name.

    ``fingerprint`` is the source's content fingerprint (``Source.fingerprint()``).
    """
    keys: dict[str, str] = {}
    for stage in plan:
        payload = {
            "stage": stage.name,
            "source_fingerprint": fingerprint,
            "config": stage.config_part(config),
            "rows": stage.rows,
            "shards": stage.shards,
            "needs": {name: keys[name] for name in stage.needs},
            "version": sanitize.__version__,
            "code": code_digest(stage.kind),
            "threads": threads,
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        keys[stage.name] = hashlib.sha256(text.encode()).hexdigest()[:24]
    return keys


def plan_run(
    source: str, config: SanitizeConfig, threads: int
) -> tuple[tuple[Stage, ...], dict[str, str]]:
    """The plan for ``source`` and the resume key of each of its stages.

    Reads the whole source once, to fingerprint its content.
    """
    src = open_source(source, config.data)
    plan = build_plan(config, src.num_rows)
    return plan, plan_keys(plan, src.fingerprint(), config, threads)


def marker_path(paths: RunPaths, stage: Stage) -> Path:
    return paths.work / "done" / f"{stage.name}.json"


def finished_result(stage: Stage, paths: RunPaths, key: str) -> dict[str, Any] | None:
    """The saved result of ``stage`` when its outputs for ``key`` are complete, else None."""
    try:
        marker = json.loads(marker_path(paths, stage).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if marker.get("version") != MARKER_VERSION or marker.get("key") != key:
        return None
    for name, size in marker["outputs"].items():
        path = paths.out / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return marker["result"]


def run_stage(
    stage: Stage,
    source: str,
    config: SanitizeConfig,
    paths: RunPaths,
    key: str,
    inputs: StageResults,
    threads: int,
) -> dict[str, Any]:
    """Run ``stage`` unless a run already finished it for ``key``; returns its result.

    The stage runs with ``threads`` CPU threads; its marker is written only after its
    outputs are on disk, so a run killed at any point leaves either a finished stage or
    one that the next run repeats.
    """
    saved = finished_result(stage, paths, key)
    if saved is not None:
        log.info("%-9s reused: finished by an earlier run into %s", stage.name, paths.out)
        return saved
    paths.prepare()
    with pinned_threads(threads):
        result = stage.run(source, config, paths, inputs)
    _write_marker(stage, paths, key, result)
    return result


def _write_marker(stage: Stage, paths: RunPaths, key: str, result: dict[str, Any]) -> None:
    outputs = {}
    for path in stage.outputs(paths):
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
        outputs[path.relative_to(paths.out).as_posix()] = path.stat().st_size
    marker = {
        "version": MARKER_VERSION,
        "stage": stage.name,
        "key": key,
        "outputs": outputs,
        "result": result,
    }
    final = marker_path(paths, stage)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as fh:
        json.dump(marker, fh, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
