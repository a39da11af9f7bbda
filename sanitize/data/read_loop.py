"""The streaming pass of the read stage and the quarantine reasons it sets.

:func:`read_rows` reads the source once, batch by batch: it checks labels and ids, fetches
and decodes every image into ``images.npy`` (:mod:`sanitize.data.read_images`), and keeps
the small per-row columns in memory. A row whose image cannot be decoded (or whose path is
refused) gets reason ``unreadable``, a readable row with a null label ``missing_label``.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sanitize.config import DataConfig
from sanitize.data.npyfile import NpyWriter
from sanitize.data.read_images import (
    DECODE_THREADS,
    decode_batch,
    decode_executor,
    decode_workers,
    fetcher,
    image_cells,
    probe_payloads,
    working_shape,
)
from sanitize.data.schema import REASON_MISSING_LABEL, REASON_UNREADABLE
from sanitize.data.source_base import Source
from sanitize.data.validate import canonical_labels, check_ids
from sanitize.errors import InputError

log = logging.getLogger("sanitize")


@dataclass
class Columns:
    """Per-row results of the streaming pass (small: no images)."""

    ids: pa.ChunkedArray
    labels: pa.ChunkedArray
    canonical: pa.ChunkedArray
    ok: np.ndarray
    reason: np.ndarray
    image_size: int
    channels: int


@dataclass
class _Pass:
    """What the streaming pass has gathered so far."""

    n: int
    size: int | None
    channels: int | None
    ok: np.ndarray
    unreadable: np.ndarray
    id_chunks: list[pa.Array] = field(default_factory=list)
    label_chunks: list[pa.Array] = field(default_factory=list)
    canonical_chunks: list[pa.Array] = field(default_factory=list)
    seen_ids: dict[Any, int] = field(default_factory=dict)
    refused: list[tuple[int, str]] = field(default_factory=list)  # appended by fetch threads
    images: NpyWriter | None = None


def read_rows(source: Source, data: DataConfig, has_id: bool, images_path: Path) -> Columns:
    """Stream ``source`` once: decode its images into ``images_path``, return its columns.

    Raises
    ------
    InputError
        The source yields another number of rows than it has, a label or id is unusable
        (:mod:`sanitize.data.validate`), or no image of the first batches can be decoded.
    """
    n = source.num_rows
    state = _Pass(
        n=n,
        size=data.image_size,
        channels=data.channels,
        ok=np.zeros(n, dtype=bool),
        unreadable=np.zeros(n, dtype=bool),
    )
    start = 0
    n_workers = decode_workers(n)
    with (
        ThreadPoolExecutor(DECODE_THREADS) as pool,
        decode_executor(n_workers) as workers,
        contextlib.ExitStack() as files,
    ):
        decoder, parts = (workers, 2 * n_workers) if workers else (pool, DECODE_THREADS)
        for batch, base_dir in source.iter_located_batches(data.batch_rows):
            rows = batch.num_rows
            if start + rows > n:
                raise InputError(f"source {source.uri} yielded more rows than its {n} rows")
            _take_labels_and_ids(state, batch, data, has_id, start)
            cells = image_cells(batch.column(data.image_column))
            fetch = fetcher(source, base_dir, data.allow_external_paths, state.refused)
            payloads = list(pool.map(fetch, range(start, start + rows), cells))
            if state.images is None:
                _open_images(state, payloads, files, images_path)
            if state.images is None:
                state.unreadable[start : start + rows] = True
            else:
                pixels, good = decode_batch(decoder, parts, payloads, state.size, state.channels)
                state.images.write(start, pixels)
                state.ok[start : start + rows] = good
                state.unreadable[start : start + rows] = ~good
            start += rows
    if start != n:
        raise InputError(f"source {source.uri} yielded {start} rows, expected {n}")
    _warn_refused(state.refused)
    if state.images is None:
        raise InputError(
            f"no usable rows in source {source.uri}: none of its {n} images in column "
            f"{data.image_column!r} can be decoded"
        )
    return _columns(source, data, has_id, state)


def _take_labels_and_ids(
    state: _Pass, batch: pa.RecordBatch, data: DataConfig, has_id: bool, start: int
) -> None:
    """Keep a batch's labels (checked, canonical) and ids (checked: non-null, unique)."""
    labels = batch.column(data.label_column)
    state.label_chunks.append(labels)
    state.canonical_chunks.append(canonical_labels(data.label_column, labels, start))
    if has_id:
        ids = batch.column(data.id_column)
        check_ids(data.id_column, ids, start, state.seen_ids)
        state.id_chunks.append(ids)


def _open_images(
    state: _Pass, payloads: list[bytes | None], files: contextlib.ExitStack, images_path: Path
) -> None:
    """Open ``images.npy`` once the working size and channels are known: configured, or
    probed from the readable images of this batch."""
    if state.size is None or state.channels is None:
        probed = working_shape(probe_payloads(payloads))
        if probed is not None:
            state.channels = state.channels or probed[0]
            state.size = state.size or probed[1]
    if state.size is not None and state.channels is not None:
        shape = (state.n, state.channels, state.size, state.size)
        state.images = files.enter_context(NpyWriter(images_path, shape, np.uint8))


def _warn_refused(refused: list[tuple[int, str]]) -> None:
    if refused:
        row, why = min(refused)
        log.warning(
            "%d image path(s) refused, rows quarantined as unreadable; first: row %d: %s",
            len(refused),
            row,
            why,
        )


def _columns(source: Source, data: DataConfig, has_id: bool, state: _Pass) -> Columns:
    """The per-row columns, with the quarantine reasons: ``unreadable`` wins over
    ``missing_label``; usable rows (``ok``) have neither."""
    n = state.n
    labels_all = pa.chunked_array(
        state.label_chunks, type=source.schema.field(data.label_column).type
    )
    canonical = pa.chunked_array(state.canonical_chunks)
    missing = np.asarray(canonical.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    reason = np.full(n, None, dtype=object)
    reason[missing] = REASON_MISSING_LABEL
    reason[state.unreadable] = REASON_UNREADABLE
    ok = state.ok & ~missing
    if has_id:
        ids_all = pa.chunked_array(state.id_chunks, type=source.schema.field(data.id_column).type)
    else:
        ids_all = pa.chunked_array([pa.array(np.arange(n, dtype=np.int64))])
    return Columns(ids_all, labels_all, canonical, ok, reason, int(state.size), int(state.channels))
