"""The models: the bootstrap model, the embedding pass (whole or by shards) and CBD's
deconfounded model."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from sanitize.config import SanitizeConfig
from sanitize.detect.cbd import confounder_loss
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
from sanitize.model.train import epochs_for
from sanitize.pipeline.paths import RunPaths
from sanitize.pipeline.stages.common import (
    images_of,
    log,
    rate_text,
    usable_rows,
)
from sanitize.report.progress import TrainingProgress, track


def bootstrap_stage(config: SanitizeConfig, paths: RunPaths) -> dict[str, Any]:
    """Train the bootstrap model f_B (or load the given checkpoint); record per-epoch losses."""
    start = time.perf_counter()
    boot = config.bootstrap
    device = resolve_device(boot.device)
    usable, y, classes = usable_rows(paths)
    images = images_of(paths)
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
                rate_text(len(train_rows), seconds),
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
    usable, y, classes = usable_rows(paths)
    spec = NetSpec(classes["channels"], len(classes["names"]), config.bootstrap.width)
    model, normalizer = load_checkpoint(paths.model_bootstrap, spec=spec, device=device)
    with track("embed", total=len(usable)) as bar:
        _, loss = embed_rows(
            model,
            normalizer,
            images_of(paths),
            y,
            usable,
            device=device,
            features_out=paths.features,
            norms_out=paths.channel_norms,
            on_batch=bar.advance,
        )
    np.save(paths.loss_bootstrap, loss)
    seconds = time.perf_counter() - start
    log.info("embed     %s, %d features a row", rate_text(len(usable), seconds), model.feature_dim)
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
    usable, y, classes = usable_rows(paths)
    part = usable[(usable >= start) & (usable < stop)] - start
    spec = NetSpec(classes["channels"], len(classes["names"]), config.bootstrap.width)
    model, normalizer = load_checkpoint(paths.model_bootstrap, spec=spec, device=device)
    with track(f"embed shard {shard}", total=len(part)) as bar:
        _, loss = embed_rows(
            model,
            normalizer,
            images_of(paths)[start:stop],
            y[start:stop],
            part,
            device=device,
            features_out=paths.shard_features(shard),
            norms_out=paths.shard_channel_norms(shard),
            on_batch=bar.advance,
        )
    np.save(paths.shard_loss(shard), loss)
    seconds = time.perf_counter() - begin
    log.info("embed     shard %d: %s", shard, rate_text(len(part), seconds))
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
    usable, y, classes = usable_rows(paths)
    images = images_of(paths)
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
                rate_text(len(train_rows), s),
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
