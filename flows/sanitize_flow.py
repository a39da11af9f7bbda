"""The ``sanitize`` flow: one task a stage of the plan; tasks exchange paths, not arrays.

The method lives in ``sanitize.pipeline.stages`` and the stage order in
``sanitize.pipeline.plan``; this module only wires them. Each task waits for the stages it
needs, so under a distributed task runner the detectors run at once on different workers.
Prefect's caching is off (``NO_CACHE``): its default policy hashes task inputs, while a
stage's real inputs are files on disk; resume is content-keyed instead
(``sanitize.pipeline.resume``), the same as in-process.
"""

from __future__ import annotations

import shutil
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from sanitize.api import SanitizeResult
from sanitize.config import SanitizeConfig
from sanitize.pipeline.export import remove_stale_staged
from sanitize.pipeline.lock import run_lock
from sanitize.pipeline.paths import RunPaths, check_locations
from sanitize.pipeline.resume import plan_run, run_stage
from sanitize.pipeline.threads import stage_threads

stage_task = task(run_stage, cache_policy=NO_CACHE, persist_result=False)


@flow(name="sanitize", log_prints=False, persist_result=False)
def sanitize_flow(
    source: str,
    out: str,
    config: SanitizeConfig | None = None,
    keep_work: bool = False,
) -> dict[str, Any]:
    """Find likely poisons in ``source`` and write the filtered dataset to ``out``.

    Returns the run's ``counts`` (rows, kept, removed, ...) and ``verdict`` from
    ``report.json``. Raises ``RunLockedError`` when another run holds ``out``.

    Args:
        source: Hugging Face Parquet file or directory, image folder or .npz; a path or an
            fsspec URI.
        out: Output directory for clean, quarantine, scores and report; under a distributed
            task runner, shared storage that every worker reaches.
        config: Sanitize options as nested sections, as in a run.toml
            ({"seed": 0, "bootstrap": {"epochs": 8}}); unset options keep their defaults.
        keep_work: Keep the stage files under OUT/.work after the run.
    """
    cfg = SanitizeConfig.coerce(config)
    check_locations(source, out)
    paths = RunPaths.at(out)
    with run_lock(paths.out):
        remove_stale_staged(paths.out)
        threads = stage_threads()
        plan, keys = plan_run(source, cfg, threads)
        futures: dict[str, Any] = {}
        for stage in plan:
            needed = {name: futures[name] for name in stage.needs}
            futures[stage.name] = stage_task.with_options(name=stage.name).submit(
                stage, source, cfg, paths, keys[stage.name], needed, threads
            )
        # In plan order, so a failure surfaces as the first failing stage's own error
        # (an InputError from read, say), not as a downstream "upstream failed".
        for future in futures.values():
            future.result()
        if not keep_work:
            shutil.rmtree(paths.work, ignore_errors=True)
    result = SanitizeResult.load(paths.out)
    return {**result.counts, "verdict": result.verdict["text"]}
