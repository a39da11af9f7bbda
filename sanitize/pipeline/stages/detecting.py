"""Detection: the shared class statistics and one detector a stage."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import numpy as np

from sanitize.config import SanitizeConfig
from sanitize.detect import DetectorContext, DetectorResult, get_detector
from sanitize.detect.base import AdversarialProbe
from sanitize.detect.class_stats import ClassStatistics
from sanitize.detect.pixel_spectral import block_means
from sanitize.model import (
    NetSpec,
    load_checkpoint,
    resolve_device,
)
from sanitize.model.probe import adversarial_probe, probe_sample
from sanitize.pipeline.paths import RunPaths
from sanitize.pipeline.stages.common import (
    image_rows_of,
    images_of,
    json_default,
    log,
    optional_rows,
    rate_text,
    usable_rows,
)
from sanitize.report.progress import track


def class_stats_stage(paths: RunPaths) -> dict[str, Any]:
    """Per-class statistics of the usable rows' features, shared by the detectors."""
    start = time.perf_counter()
    usable, y, classes = usable_rows(paths)
    features = np.load(paths.features, mmap_mode="r")
    with track("class statistics"):
        stats = ClassStatistics.compute(features, y[usable], len(classes["names"]), rows=usable)
    stats.save(paths.class_stats, paths.class_projections)
    seconds = time.perf_counter() - start
    log.info("stats     %-21s %s", "per class", rate_text(len(usable), seconds))
    return {"seconds": seconds, "rows": int(len(usable))}


def detect_stage(name: str, config: SanitizeConfig, paths: RunPaths) -> dict[str, Any]:
    """Run one detector on the usable rows; write its scores and info."""
    start = time.perf_counter()
    usable, y, classes = usable_rows(paths)
    features = np.load(paths.features, mmap_mode="r")
    detector = get_detector(name, **config.params_for(name))
    shared = None
    if detector.shares_class_stats and paths.class_stats.exists():
        shared = ClassStatistics.load(paths.class_stats, paths.class_projections)
    context = DetectorContext(
        n_classes=len(classes["names"]),
        seed=config.seed,
        loss_history=optional_rows(paths.loss_history, usable),
        loss_bootstrap=optional_rows(paths.loss_bootstrap, usable),
        loss_clean=optional_rows(paths.loss_clean, usable),
        pixels=block_means(images_of(paths), usable) if "pixels" in detector.requires else None,
        images=image_rows_of(paths, usable) if "images" in detector.requires else None,
        class_stats=shared,
        channel_norms=(
            optional_rows(paths.channel_norms, usable)
            if "channel_norms" in detector.requires
            else None
        ),
        adversarial_probe=(
            _adversarial_probe(detector, config, paths, usable, y, classes)
            if "adversarial_probe" in detector.requires
            else None
        ),
    )
    missing = [field for field in detector.requires if getattr(context, field) is None]
    if missing:
        # Skipped on purpose (e.g. a loaded checkpoint has no loss history): say why.
        reason = f"skipped: no {', '.join(missing)} (bootstrap loaded from a checkpoint)"
        log.info("detect    %-21s %s", name, reason)
        result = DetectorResult(
            score=np.zeros(len(usable), dtype=np.float32),
            flagged=np.zeros(len(usable), dtype=bool),
            info={"skipped": reason},
        )
    else:
        # Every row usable (the common case): the detectors read the memory map class by
        # class, and those that share the class statistics never read it whole.
        rows = features if len(usable) == features.shape[0] else np.asarray(features[usable])
        with track(f"detect {name}"):
            result = detector.score(rows, y[usable], context)
    arrays = {"score": result.score, "flagged": result.flagged}
    if result.weight is not None:
        arrays["weight"] = result.weight
    if result.candidate is not None:
        arrays["candidate"] = result.candidate
    if result.oriented is not None:
        arrays["oriented"] = result.oriented
    np.savez(paths.detector_scores(name), **arrays)
    paths.detector_info(name).write_text(json.dumps(result.info, default=json_default))
    seconds = time.perf_counter() - start
    log.info(
        "detect    %-21s %s; %d flagged",
        name,
        rate_text(len(usable), seconds),
        result.flagged.sum(),
    )
    return {"seconds": seconds, "rows": int(len(usable)), "flagged": int(result.flagged.sum())}


def _adversarial_probe(
    detector: Any,
    config: SanitizeConfig,
    paths: RunPaths,
    usable: np.ndarray,
    y: np.ndarray,
    classes: dict[str, Any],
) -> AdversarialProbe:
    """PGD examples of f_B on a seeded sample of ``detector.n_probe`` usable rows.

    Bounded cost: ``detector.steps`` forward and backward passes and one forward pass over
    the sample, whatever the number of rows. ``rows`` are positions among ``usable``.
    """
    device = resolve_device(config.bootstrap.device)
    spec = NetSpec(classes["channels"], len(classes["names"]), config.bootstrap.width)
    model, normalizer = load_checkpoint(paths.model_bootstrap, spec=spec, device=device)
    positions = probe_sample(len(usable), detector.n_probe, config.seed)
    with track(f"probe {detector.name}"):
        probe = adversarial_probe(
            model,
            normalizer,
            images_of(paths),
            y,
            usable[positions],
            eps=detector.eps,
            steps=detector.steps,
            step_size=detector.eps / 5,
            device=device,
        )
    return dataclasses.replace(probe, rows=positions)


def shares_class_stats(config: SanitizeConfig) -> bool:
    """Whether a detector of ``config`` reads the shared class statistics.

    The plan then runs the ``class_stats`` stage (``sanitize.pipeline.plan.build_plan``).
    """
    return any(get_detector(name).shares_class_stats for name in config.detectors)
