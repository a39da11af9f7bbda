"""The pipeline's stages, each a function from files to files.

Every stage reads what earlier stages wrote under :class:`~sanitize.pipeline.paths.RunPaths` and
returns a small JSON-able dict (counts, seconds), so the same functions serve the plain
Python entry point (:func:`sanitize.sanitize_dataset`) and the Prefect tasks in ``flows/``
without moving arrays between tasks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sanitize.config import SanitizeConfig
from sanitize.data import Source, open_source, read_source
from sanitize.data.observed import ObservedSource
from sanitize.data.read import id_column
from sanitize.data.schema import (
    FLAGGED,
    LABEL,
    POISON_SCORE,
    REASONS,
    SAMPLE_ID,
    SAMPLE_WEIGHT,
    issue_column,
    score_column,
)
from sanitize.decision import decide
from sanitize.decision.class_size import expected_shares
from sanitize.decision.decide import size_rule_agreement
from sanitize.detect import DetectorContext, DetectorResult, get_detector
from sanitize.detect.base import AdversarialProbe
from sanitize.detect.cbd import confounder_loss
from sanitize.detect.class_stats import ClassStatistics
from sanitize.detect.pixel_spectral import block_means
from sanitize.errors import SourceChangedError
from sanitize.model import (
    NetSpec,
    Normalizer,
    embed_rows,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    stratified_sample,
    train_model,
)
from sanitize.model.probe import adversarial_probe, probe_sample
from sanitize.model.train import epochs_for
from sanitize.pipeline.export import StagedOutputs, dataset_card, write_tables
from sanitize.pipeline.paths import (
    CLEAN_FILE,
    DATASET_CARD,
    QUARANTINE_FILE,
    REPORT_HTML,
    REPORT_JSON,
    RunPaths,
)
from sanitize.report.html import embedding_projection, render_report, with_projection
from sanitize.report.progress import TrainingProgress, track
from sanitize.report.summary import build_report, provenance_of

log = logging.getLogger("sanitize")


def _rate(rows: int, seconds: float) -> str:
    return f"{rows:,} rows in {seconds:.1f} s ({rows / max(seconds, 1e-9):,.0f} rows/s)"


def _usable(paths: RunPaths) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Row indices that can be scored, class index of every row, and classes.json."""
    table = pq.read_table(paths.rows, columns=["y", "ok"])
    ok = table.column("ok").to_numpy(zero_copy_only=False)
    y = table.column("y").to_numpy().astype(np.int64)
    classes = json.loads(paths.classes.read_text())
    return np.flatnonzero(ok), y, classes


def _expected_shares(config: SanitizeConfig, paths: RunPaths) -> np.ndarray | None:
    """``decision.expected_class_counts`` by class index; ConfigError if a class lacks one."""
    if not config.decision.expected_class_counts:
        return None
    usable, y, classes = _usable(paths)
    return expected_shares(
        config.decision.expected_class_counts,
        classes["names"],
        classes["values"],
        np.unique(y[usable]),
    )


def _images(paths: RunPaths) -> np.ndarray:
    return np.load(paths.images, mmap_mode="r")


def _image_rows(paths: RunPaths, rows: np.ndarray) -> np.ndarray:
    """The decoded images of ``rows`` (the memory map itself when they are every row)."""
    images = _images(paths)
    return images if len(rows) == images.shape[0] else np.asarray(images[rows])


def read_stage(source: str, config: SanitizeConfig, paths: RunPaths) -> dict[str, Any]:
    """Read and validate the source; decode every image (see ``sanitize.data.schema``)."""
    start = time.perf_counter()
    paths.prepare()
    src = open_source(source, config.data)
    fingerprint = src.fingerprint()
    with track("read", total=src.num_rows) as bar:
        counted = ObservedSource(src, lambda batch, _dir, _start: bar.advance(batch.num_rows))
        summary = read_source(counted, config.data, paths.work)
    # Fingerprinted on both sides of the read, so the one recorded is the one decoded.
    _check_unchanged(src, fingerprint, "while it was read")
    _expected_shares(config, paths)  # a class without an expected count fails here, not later
    seconds = time.perf_counter() - start
    log.info(
        "read      %s; %d classes, %dx%d px, %d channel(s); %d unreadable, %d without label",
        _rate(summary.n_rows, seconds),
        summary.n_classes,
        summary.image_size,
        summary.image_size,
        summary.channels,
        summary.n_unreadable,
        summary.n_missing_label,
    )
    return {
        "seconds": seconds,
        "rows": summary.n_rows,
        "n_ok": summary.n_ok,
        "n_unreadable": summary.n_unreadable,
        "n_missing_label": summary.n_missing_label,
        "n_classes": summary.n_classes,
        "source_kind": src.kind,
        "source_fingerprint": fingerprint,
    }


def _check_unchanged(src: Source, fingerprint: str, when: str) -> None:
    """SourceChangedError unless ``src`` still has the content ``fingerprint`` digests."""
    now = src.fingerprint()
    if now != fingerprint:
        raise SourceChangedError(
            f"source {src.uri} changed {when} (fingerprint {fingerprint} -> {now}); no output "
            "written: run again once it stays unchanged"
        )


def bootstrap_stage(config: SanitizeConfig, paths: RunPaths) -> dict[str, Any]:
    """Train the bootstrap model f_B (or load the given checkpoint); record per-epoch losses."""
    start = time.perf_counter()
    boot = config.bootstrap
    device = resolve_device(boot.device)
    usable, y, classes = _usable(paths)
    images = _images(paths)
    spec = NetSpec(channels=classes["channels"], n_classes=len(classes["names"]), width=boot.width)
    train_rows = stratified_sample(y, usable, boot.max_train_rows, config.seed)
    np.save(paths.train_rows, train_rows)
    epochs = boot.epochs or epochs_for(len(train_rows), boot.batch_size, boot.train_steps)
    stop_below = None if boot.epochs else boot.fit_loss
    if boot.checkpoint:
        model, normalizer = load_checkpoint(boot.checkpoint, spec=spec, device=device)
        if normalizer is None:
            normalizer = Normalizer.fit(images, train_rows)
        history = np.full((images.shape[0], 0), np.nan, dtype=np.float32)
        log.info("bootstrap loaded %s", boot.checkpoint)
    else:
        fit = TrainingProgress(epochs, len(train_rows), spec.n_classes, stop_below)

        def on_epoch(epoch: int, seconds: float, loss: float) -> None:
            target = f" (stops below {stop_below:g})" if stop_below else ""
            bar.note(f"epoch {epoch + 1}/{epochs} done, mean loss {loss:.3f}{target}")
            fit.epoch_done(loss)
            bar.update(fit.done)
            log.info(
                "bootstrap epoch %d/%d: %s, mean loss %.3f",
                epoch + 1,
                epochs,
                _rate(len(train_rows), seconds),
                loss,
            )

        with track("bootstrap", total=fit.total, unit=fit.unit) as bar:
            result = train_model(
                images,
                y,
                train_rows,
                spec,
                epochs=epochs,
                batch_size=boot.batch_size,
                lr=boot.lr,
                seed=config.seed,
                device=device,
                stop_below=stop_below,
                precise_bn=boot.precise_bn,
                on_epoch=on_epoch,
                on_step=lambda rows: bar.update(fit.step_done(rows)),
            )
        model, normalizer, history = result.model, result.normalizer, result.loss_history
    save_checkpoint(model, normalizer, paths.model_bootstrap)
    np.save(paths.loss_history, history)
    return {
        "seconds": time.perf_counter() - start,
        "rows": int(len(train_rows)) * max(1, history.shape[1]),
        "train_rows": int(len(train_rows)),
        "epochs": int(history.shape[1]),
        "device": str(device),
        "from_checkpoint": bool(boot.checkpoint),
    }


def embed_stage(config: SanitizeConfig, paths: RunPaths) -> dict[str, Any]:
    """Penultimate features, last-conv channel norms and final loss of f_B for every usable row.

    The channel norms come from the same forward pass as the features (no second pass).
    """
    start = time.perf_counter()
    device = resolve_device(config.bootstrap.device)
    usable, y, classes = _usable(paths)
    spec = NetSpec(classes["channels"], len(classes["names"]), config.bootstrap.width)
    model, normalizer = load_checkpoint(paths.model_bootstrap, spec=spec, device=device)
    with track("embed", total=len(usable)) as bar:
        _, loss = embed_rows(
            model,
            normalizer,
            _images(paths),
            y,
            usable,
            device=device,
            features_out=paths.features,
            norms_out=paths.channel_norms,
            on_batch=bar.advance,
        )
    np.save(paths.loss_bootstrap, loss)
    seconds = time.perf_counter() - start
    log.info("embed     %s, %d features a row", _rate(len(usable), seconds), model.feature_dim)
    return {"seconds": seconds, "rows": int(len(usable)), "feature_dim": model.feature_dim}


def embed_shard_stage(
    config: SanitizeConfig, paths: RunPaths, shard: int, rows: tuple[int, int]
) -> dict[str, Any]:
    """Like :func:`embed_stage` for the usable rows among source rows ``[start, stop)`` only.

    Writes ``paths.shard_features(shard)``, ``paths.shard_channel_norms(shard)`` and
    ``paths.shard_loss(shard)``, one row a
    source row of the range; :func:`merge_embed_shards_stage` puts the shards together.
    """
    begin = time.perf_counter()
    start, stop = rows
    device = resolve_device(config.bootstrap.device)
    usable, y, classes = _usable(paths)
    part = usable[(usable >= start) & (usable < stop)] - start
    spec = NetSpec(classes["channels"], len(classes["names"]), config.bootstrap.width)
    model, normalizer = load_checkpoint(paths.model_bootstrap, spec=spec, device=device)
    with track(f"embed shard {shard}", total=len(part)) as bar:
        _, loss = embed_rows(
            model,
            normalizer,
            _images(paths)[start:stop],
            y[start:stop],
            part,
            device=device,
            features_out=paths.shard_features(shard),
            norms_out=paths.shard_channel_norms(shard),
            on_batch=bar.advance,
        )
    np.save(paths.shard_loss(shard), loss)
    seconds = time.perf_counter() - begin
    log.info("embed     shard %d: %s", shard, _rate(len(part), seconds))
    return {"seconds": seconds, "rows": int(len(part)), "feature_dim": model.feature_dim}


def merge_embed_shards_stage(
    paths: RunPaths, shards: list[tuple[int, int]], shard_results: list[dict[str, Any]]
) -> dict[str, Any]:
    """Copy the shards' features, channel norms and losses into ``paths.features``,
    ``paths.channel_norms`` and ``paths.loss_bootstrap``.

    The result counts the shards' own seconds too, so ``embed`` in the report's timings is
    the embedding work, whichever workers did it.
    """
    begin = time.perf_counter()
    n_rows, dim = shards[-1][1], shard_results[0]["feature_dim"]
    features = np.lib.format.open_memmap(
        paths.features, mode="w+", dtype=np.float32, shape=(n_rows, dim)
    )
    norms = np.lib.format.open_memmap(
        paths.channel_norms, mode="w+", dtype=np.float32, shape=(n_rows, 3, dim)
    )
    loss = np.full(n_rows, np.nan, dtype=np.float32)
    for shard, (start, stop) in enumerate(shards):
        features[start:stop] = np.load(paths.shard_features(shard), mmap_mode="r")
        norms[start:stop] = np.load(paths.shard_channel_norms(shard), mmap_mode="r")
        loss[start:stop] = np.load(paths.shard_loss(shard))
    features.flush()
    norms.flush()
    del features, norms
    np.save(paths.loss_bootstrap, loss)
    seconds = time.perf_counter() - begin + sum(r["seconds"] for r in shard_results)
    rows = sum(r["rows"] for r in shard_results)
    return {"seconds": seconds, "rows": rows, "feature_dim": dim, "shards": len(shards)}


def clean_model_stage(config: SanitizeConfig, paths: RunPaths) -> dict[str, Any]:
    """Train CBD's deconfounded model f_C, weighting each sample by l_B / (l_B + l_C).

    ``l_B`` is the early-stopped bootstrap loss of :func:`sanitize.detect.cbd.confounder_loss`,
    the one the CBD detector compares ``l_C`` with.
    """
    start = time.perf_counter()
    boot = config.bootstrap
    device = resolve_device(boot.device)
    usable, y, classes = _usable(paths)
    images = _images(paths)
    spec = NetSpec(classes["channels"], len(classes["names"]), boot.width)
    train_rows = np.load(paths.train_rows)
    history = np.load(paths.loss_history)
    loss_b = confounder_loss(history, np.load(paths.loss_bootstrap))
    epochs = (
        boot.clean_epochs
        or int(history.shape[1])
        or epochs_for(len(train_rows), boot.batch_size, boot.train_steps)
    )
    with track("clean-model", total=epochs * len(train_rows) + len(usable)) as bar:
        result = train_model(
            images,
            y,
            train_rows,
            spec,
            epochs=epochs,
            batch_size=boot.batch_size,
            lr=boot.lr,
            seed=config.seed + 1,
            device=device,
            reference_loss=loss_b,
            precise_bn=boot.precise_bn,
            on_epoch=lambda e, s, loss: log.info(
                "clean-model epoch %d/%d: %s, weighted loss %.3f",
                e + 1,
                epochs,
                _rate(len(train_rows), s),
                loss,
            ),
            on_step=bar.advance,
        )
        save_checkpoint(result.model, result.normalizer, paths.model_clean)
        _, loss_c = embed_rows(
            result.model,
            result.normalizer,
            images,
            y,
            usable,
            device=device,
            keep_features=False,  # only l_C is needed; features would be n_rows x d in RAM
            on_batch=bar.advance,
        )
    np.save(paths.loss_clean, loss_c)
    return {
        "seconds": time.perf_counter() - start,
        "rows": int(len(train_rows)) * epochs,
        "epochs": epochs,
    }


def shares_class_stats(config: SanitizeConfig) -> bool:
    """Whether a detector of ``config`` reads the shared class statistics.

    The plan then runs the ``class_stats`` stage (``sanitize.pipeline.plan.build_plan``).
    """
    return any(get_detector(name).shares_class_stats for name in config.detectors)


def class_stats_stage(paths: RunPaths) -> dict[str, Any]:
    """Per-class statistics of the usable rows' features, shared by the detectors."""
    start = time.perf_counter()
    usable, y, classes = _usable(paths)
    features = np.load(paths.features, mmap_mode="r")
    with track("class statistics"):
        stats = ClassStatistics.compute(features, y[usable], len(classes["names"]), rows=usable)
    stats.save(paths.class_stats, paths.class_projections)
    seconds = time.perf_counter() - start
    log.info("stats     %-21s %s", "per class", _rate(len(usable), seconds))
    return {"seconds": seconds, "rows": int(len(usable))}


def detect_stage(name: str, config: SanitizeConfig, paths: RunPaths) -> dict[str, Any]:
    """Run one detector on the usable rows; write its scores and info."""
    start = time.perf_counter()
    usable, y, classes = _usable(paths)
    features = np.load(paths.features, mmap_mode="r")
    detector = get_detector(name, **config.params_for(name))
    shared = None
    if detector.shares_class_stats and paths.class_stats.exists():
        shared = ClassStatistics.load(paths.class_stats, paths.class_projections)
    context = DetectorContext(
        n_classes=len(classes["names"]),
        seed=config.seed,
        loss_history=_optional_rows(paths.loss_history, usable),
        loss_bootstrap=_optional_rows(paths.loss_bootstrap, usable),
        loss_clean=_optional_rows(paths.loss_clean, usable),
        pixels=block_means(_images(paths), usable) if "pixels" in detector.requires else None,
        images=_image_rows(paths, usable) if "images" in detector.requires else None,
        class_stats=shared,
        channel_norms=(
            _optional_rows(paths.channel_norms, usable)
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
    paths.detector_info(name).write_text(json.dumps(result.info, default=_json_default))
    seconds = time.perf_counter() - start
    log.info(
        "detect    %-21s %s; %d flagged", name, _rate(len(usable), seconds), result.flagged.sum()
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
            _images(paths),
            y,
            usable[positions],
            eps=detector.eps,
            steps=detector.steps,
            step_size=detector.eps / 5,
            device=device,
        )
    return dataclasses.replace(probe, rows=positions)


def decide_stage(config: SanitizeConfig, paths: RunPaths) -> dict[str, Any]:
    """Combine the detectors into poison_score, flagged, sample_weight and reasons per row."""
    start = time.perf_counter()
    rows = pq.read_table(paths.rows)
    usable = np.flatnonzero(rows.column("ok").to_numpy(zero_copy_only=False))
    results = {}
    for name in config.detectors:
        saved = np.load(paths.detector_scores(name))
        info = json.loads(paths.detector_info(name).read_text())
        weight = saved["weight"] if "weight" in saved.files else None
        results[name] = DetectorResult(
            score=saved["score"],
            flagged=saved["flagged"],
            info=info,
            weight=weight,
            candidate=saved["candidate"] if "candidate" in saved.files else None,
            oriented=saved["oriented"] if "oriented" in saved.files else None,
        )
    y = rows.column("y").to_numpy().astype(np.int64)
    coordinates = None
    if shares_class_stats(config):
        coordinates = np.load(paths.class_projections, mmap_mode="r")
    expected = _expected_shares(config, paths)
    decision = decide(
        results,
        len(usable),
        config.decision,
        labels=y[usable],
        coordinates=coordinates,
        seed=config.seed,
        expected_shares=expected,
        row_loss=_optional_rows(paths.loss_bootstrap, usable),
        label_agreement=size_rule_agreement(
            _images(paths),
            y[usable],
            config.decision,
            expected_shares=expected,
            image_rows=usable,
            seed=config.seed,
        ),
    )

    n = rows.num_rows
    poison_score = np.ones(n, dtype=np.float32)  # rows that could not be scored are removed
    sample_weight = np.zeros(n, dtype=np.float32)
    flagged = np.ones(n, dtype=bool)
    reasons: list[list[str]] = [[r] for r in rows.column("reason").to_pylist()]
    poison_score[usable] = decision.poison_score
    sample_weight[usable] = decision.sample_weight
    flagged[usable] = decision.flagged
    for i, row in enumerate(usable):
        reasons[row] = decision.reasons[i]
    columns: dict[str, Any] = {SAMPLE_ID: rows.column("sample_id"), LABEL: rows.column("label")}
    for name, result in results.items():
        full = np.full(n, np.nan, dtype=np.float32)
        full[usable] = result.score
        columns[score_column(name)] = pa.array(full)
        own_flags = np.zeros(n, dtype=bool)  # rows set aside unread are no detector's issue
        own_flags[usable] = result.flagged
        columns[issue_column(name)] = pa.array(own_flags)
    columns[POISON_SCORE] = pa.array(poison_score)
    columns[SAMPLE_WEIGHT] = pa.array(sample_weight)
    columns[FLAGGED] = pa.array(flagged)
    columns[REASONS] = pa.array(reasons, type=pa.list_(pa.string()))
    pq.write_table(pa.table(columns), paths.decision)
    paths.decision_info.write_text(json.dumps(decision.info, default=_json_default))
    seconds = time.perf_counter() - start
    log.info("decide    %d of %d rows removed", int(flagged.sum()), n)
    return {"seconds": seconds, "rows": n, "removed": int(flagged.sum())}


def export_stage(
    source: str, config: SanitizeConfig, paths: RunPaths, stage_results: dict[str, dict]
) -> dict[str, Any]:
    """Write clean / quarantine / scores Parquet, report.html and report.json, renamed at once.

    scores.parquet also carries each row's 2-D embedding projection (``embedding_x``,
    ``embedding_y``), so report.html can be re-rendered after ``.work`` is gone.
    """
    start = time.perf_counter()
    src = open_source(source, config.data)
    usable, _, _ = _usable(paths)
    decision = with_projection(
        pq.read_table(paths.decision),
        embedding_projection(np.load(paths.features, mmap_mode="r"), usable, seed=config.seed),
    )
    provenance = provenance_of(source, config, stage_results)
    classes = json.loads(paths.classes.read_text())
    with StagedOutputs(paths.out) as staged:
        counts = write_tables(
            src.iter_batches(config.data.batch_rows),
            src.schema,
            decision,
            staged,
            provenance,
            id_column(src.schema, config.data),
            class_names=_class_label_names(classes),
        )
        # The rows streamed are the ones decided on: same ids above, same content here.
        _check_unchanged(src, stage_results["read"]["source_fingerprint"], "during the run")
        seconds = time.perf_counter() - start
        export_result = {"seconds": seconds, "rows": decision.num_rows, **counts}
        report = build_report(
            source=source,
            config=config,
            decision=decision,
            detector_info={
                name: json.loads(paths.detector_info(name).read_text()) for name in config.detectors
            },
            decision_info=json.loads(paths.decision_info.read_text()),
            classes=classes,
            stage_results={**stage_results, "export": export_result},
        )
        html = render_report(
            report,
            decision,
            clean_path=staged.staged(CLEAN_FILE),
            quarantine_path=staged.staged(QUARANTINE_FILE),
        )
        staged.write_text(REPORT_HTML, html)
        staged.write_text(DATASET_CARD, dataset_card([str(n) for n in classes["names"]], counts))
        staged.write_json(REPORT_JSON, report)  # last: its presence says the run finished
        staged.commit()
    log.info("export    %s -> %s", _rate(decision.num_rows, seconds), paths.out)
    return export_result


def _class_label_names(classes: dict[str, list]) -> list[str] | None:
    """The class names when the label values are 0..K-1, as a Hugging Face ClassLabel needs."""
    if list(classes["values"]) != list(range(len(classes["values"]))):
        return None
    return [str(name) for name in classes["names"]]


def _optional_rows(path, usable: np.ndarray) -> np.ndarray | None:
    if not path.exists():
        return None
    values = np.load(path)
    if values.ndim == 2 and values.shape[1] == 0:
        return None
    return values[usable]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
