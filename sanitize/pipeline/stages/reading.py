"""Reading the source: the read stage."""

from __future__ import annotations

import time
from typing import Any

from sanitize.config import SanitizeConfig
from sanitize.data import open_source, read_source
from sanitize.data.observed import ObservedSource
from sanitize.pipeline.paths import RunPaths
from sanitize.pipeline.stages.common import (
    check_unchanged,
    expected_class_shares,
    log,
    rate_text,
)
from sanitize.report.progress import track


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
    check_unchanged(src, fingerprint, "while it was read")
    expected_class_shares(config, paths)  # a class without an expected count fails here, not later
    seconds = time.perf_counter() - start
    log.info(
        "read      %s; %d classes, %dx%d px, %d channel(s); %d unreadable, %d without label",
        rate_text(summary.n_rows, seconds),
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
