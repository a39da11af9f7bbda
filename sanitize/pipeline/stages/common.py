"""Helpers the stages share: row selection, stage files, rates for the log."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sanitize.config import SanitizeConfig
from sanitize.data import Source
from sanitize.decision.class_size import expected_shares
from sanitize.errors import SourceChangedError
from sanitize.pipeline.paths import RunPaths

log = logging.getLogger("sanitize")


def rate_text(rows: int, seconds: float) -> str:
    return f"{rows:,} rows in {seconds:.1f} s ({rows / max(seconds, 1e-9):,.0f} rows/s)"


def usable_rows(paths: RunPaths) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Row indices that can be scored, class index of every row, and classes.json."""
    table = pq.read_table(paths.rows, columns=["y", "ok"])
    ok = table.column("ok").to_numpy(zero_copy_only=False)
    y = table.column("y").to_numpy().astype(np.int64)
    classes = json.loads(paths.classes.read_text())
    return np.flatnonzero(ok), y, classes


def expected_class_shares(config: SanitizeConfig, paths: RunPaths) -> np.ndarray | None:
    """``decision.expected_class_counts`` by class index; ConfigError if a class lacks one."""
    if not config.decision.expected_class_counts:
        return None
    usable, y, classes = usable_rows(paths)
    return expected_shares(
        config.decision.expected_class_counts,
        classes["names"],
        classes["values"],
        np.unique(y[usable]),
    )


def images_of(paths: RunPaths) -> np.ndarray:
    return np.load(paths.images, mmap_mode="r")


def image_rows_of(paths: RunPaths, rows: np.ndarray) -> np.ndarray:
    """The decoded images of ``rows`` (the memory map itself when they are every row)."""
    images = images_of(paths)
    return images if len(rows) == images.shape[0] else np.asarray(images[rows])


def optional_rows(path, usable: np.ndarray) -> np.ndarray | None:
    if not path.exists():
        return None
    values = np.load(path)
    if values.ndim == 2 and values.shape[1] == 0:
        return None
    return values[usable]


def class_label_names(classes: dict[str, list]) -> list[str] | None:
    """The class names when the label values are 0..K-1, as a Hugging Face ClassLabel needs."""
    if list(classes["values"]) != list(range(len(classes["values"]))):
        return None
    return [str(name) for name in classes["names"]]


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def check_unchanged(src: Source, fingerprint: str, when: str) -> None:
    """SourceChangedError unless ``src`` still has the content ``fingerprint`` digests."""
    now = src.fingerprint()
    if now != fingerprint:
        raise SourceChangedError(
            f"source {src.uri} changed {when} (fingerprint {fingerprint} -> {now}); no output "
            "written: run again once it stays unchanged"
        )
