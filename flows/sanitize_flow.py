"""The ``sanitize`` flow: each pipeline stage is a task; tasks exchange paths, not arrays.

The method lives in ``sanitize.stages``; this module only wires it. Caching is off
(``NO_CACHE``): Prefect's default policy hashes task inputs, and a stage's real inputs are
files on disk, not its arguments.
"""

from __future__ import annotations

import shutil
from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from sanitize import stages
from sanitize.api import SanitizeResult
from sanitize.config import SanitizeConfig
from sanitize.paths import RunPaths

_task = task(cache_policy=NO_CACHE, persist_result=False)

read_task = _task(stages.read_stage, name="read")
bootstrap_task = _task(stages.bootstrap_stage, name="bootstrap")
embed_task = _task(stages.embed_stage, name="embed")
clean_model_task = _task(stages.clean_model_stage, name="clean-model")
detect_task = _task(stages.detect_stage, name="detect")
decide_task = _task(stages.decide_stage, name="decide")
export_task = _task(stages.export_stage, name="export")


@flow(name="sanitize", log_prints=False, persist_result=False)
def sanitize_flow(
    source: Annotated[
        str, Field(description="HF Parquet file/dir, image folder or .npz; path or fsspec URI")
    ],
    out: Annotated[str, Field(description="Output directory for clean/quarantine/scores/report")],
    config: Annotated[
        dict[str, Any] | None,
        Field(description="SanitizeConfig as nested dict (see sanitize.config)"),
    ] = None,
    keep_work: Annotated[bool, Field(description="Keep stage files under OUT/.work")] = False,
) -> dict[str, Any]:
    """Find likely poisons in ``source`` and write the filtered dataset to ``out``.

    Returns the run's ``counts`` (rows, kept, removed, ...) and ``verdict`` from
    ``report.json``.
    """
    cfg = SanitizeConfig.from_dict(config or {})
    paths = RunPaths.at(out)
    results: dict[str, dict] = {"read": read_task(source, cfg, paths)}
    results["bootstrap"] = bootstrap_task(cfg, paths)
    results["embed"] = embed_task(cfg, paths)
    if "cbd" in cfg.detectors:
        results["clean_model"] = clean_model_task(cfg, paths)
    # One after another: concurrent detectors share the BLAS thread pool, which changes
    # float rounding and would make outputs differ from run to run.
    for name in cfg.detectors:
        results[f"detect_{name}"] = detect_task(name, cfg, paths)
    results["decide"] = decide_task(cfg, paths)
    results["export"] = export_task(source, cfg, paths, results)
    if not keep_work:
        shutil.rmtree(paths.work, ignore_errors=True)
    result = SanitizeResult.load(paths.out)
    return {**result.counts, "verdict": result.verdict["text"]}
