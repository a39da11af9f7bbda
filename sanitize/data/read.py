"""Read stage: validate a source, decode every image, and write the stage files.

The stage streams ``source.iter_batches(batch_rows)`` once. Images are decoded into
``images.npy``, written block by block (:mod:`sanitize.data.npyfile`); the small per-row
metadata (id, label, class index, status) is kept in memory and written to
``rows.parquet``; ``classes.json`` names the classes.
Layouts are documented in :mod:`sanitize.data.schema`.

Bad rows are never dropped: an undecodable image sets the row aside with reason
``unreadable``, a null label with reason ``missing_label``. Problems that make the whole
source unusable (a missing column, a label type that is not a class, duplicated ids, fewer
than two classes) raise :class:`~sanitize.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sanitize.config import MAX_WORKING_SIZE, MIN_IMAGE_SIZE, DataConfig
from sanitize.data.decode import PathRefused, decode_many, image_bytes, probe_image
from sanitize.data.npyfile import NpyWriter
from sanitize.data.schema import (
    CLASSES_FILE,
    IMAGES_FILE,
    REASON_MISSING_LABEL,
    REASON_UNREADABLE,
    ROWS_FILE,
    SAMPLE_ID,
)
from sanitize.data.source import HF_METADATA_KEY, Source, malformed_hf_metadata
from sanitize.errors import ConfigError, InputError

log = logging.getLogger("sanitize")

_LABEL_TYPES = "integers, integral floats, bools or strings"
_DECODE_THREADS = min(8, os.cpu_count() or 1)
# Images of the first batch whose headers set the working size and mode.
PROBED_IMAGES = 256
DECODE_WORKERS_ENV = "SANITIZE_DECODE_WORKERS"
# Rule: the fork server starts in a few seconds (a fresh interpreter importing sanitize);
# one CPU decodes about 5,000 CIFAR-10 images a second, so below 20,000 rows the start-up
# would eat the gain. Threads do not help with decoding small images: Pillow's per-image
# Python work holds the GIL (1 thread 5,600 rows/s, 2 threads 5,500). On 2 CPUs processes
# did not pay either (40,000 CIFAR-10 rows: 3.4 s in threads, 3.7 s with 2 warm workers,
# 6.5 s with the fork server's start): the parent's Parquet reading and fetching needs a
# CPU too, so processes start at 4 CPUs.
DECODE_PROCESS_MIN_ROWS = 20_000
DECODE_PROCESS_MIN_CPUS = 4
MAX_DECODE_WORKERS = 8


@dataclass(frozen=True)
class ReadSummary:
    """What the read stage found.

    Attributes
    ----------
    n_rows : int
        Rows in the source.
    n_ok : int
        Rows with a decoded image and a label (usable rows).
    n_unreadable : int
        Rows whose image could not be decoded (whatever their label).
    n_missing_label : int
        Rows with a readable image and a null label.
    n_classes : int
        Classes among usable rows (>= 2).
    class_names : list of str
        Name of class index i: the metadata's ClassLabel name of the value when there is
        one, else the value as a string.
    class_values : list of int or list of str
        Label value of class index i, sorted ascending.
    image_size : int
        Side of the decoded images in pixels.
    channels : int
        1 or 3.
    label_counts : dict of str to int
        Usable rows per class name, in class-index order.
    """

    n_rows: int
    n_ok: int
    n_unreadable: int
    n_missing_label: int
    n_classes: int
    class_names: list[str]
    class_values: list[Any]
    image_size: int
    channels: int
    label_counts: dict[str, int]


def read_source(source: Source, data: DataConfig, workdir: str | os.PathLike[str]) -> ReadSummary:
    """Validate ``source``, decode its images and write the read-stage files to ``workdir``.

    Parameters
    ----------
    source : Source
        From :func:`sanitize.data.open_source`.
    data : DataConfig
        Column names, image size and channels (None: from the first readable image: 1
        channel for grey modes else 3, size = max(width, height)), rows per batch.
    workdir : path-like
        Directory that receives ``images.npy``, ``rows.parquet`` and ``classes.json``;
        created when missing. Each file appears under its final name only when complete.

    Returns
    -------
    ReadSummary

    Raises
    ------
    InputError
        The image or label column is missing or of an unusable type, the source has no
        rows, a label is not integral, the id column is missing (see :func:`id_column`) or
        has a null or duplicated value, or
        fewer than two classes remain among usable rows. Rows are 0-based ordinals.
    """
    workdir = Path(workdir)
    schema = source.schema
    _require_column(schema, data.image_column, "--image-column")
    _require_column(schema, data.label_column, "--label-column")
    _check_image_type(data.image_column, schema.field(data.image_column).type)
    label_type = schema.field(data.label_column).type
    _check_label_type(data.label_column, label_type)
    has_id = id_column(schema, data) is not None
    if has_id:
        _check_id_type(data.id_column, schema.field(data.id_column).type)
    if source.num_rows == 0:
        raise InputError(f"source {source.uri} has no rows")
    if malformed_hf_metadata(schema):
        log.warning(
            "schema metadata %r of %s is malformed; ignored (classes are named by their "
            "label values, and the outputs leave it out)",
            HF_METADATA_KEY.decode(),
            source.uri,
        )

    workdir.mkdir(parents=True, exist_ok=True)
    images_tmp = workdir / (IMAGES_FILE + ".partial")
    try:
        columns = _read_rows(source, data, has_id, images_tmp)
        summary = _summarise(source, data, columns)
        _write_rows(workdir, columns, summary)
        os.replace(images_tmp, workdir / IMAGES_FILE)
    finally:
        images_tmp.unlink(missing_ok=True)
    return summary


@dataclass
class _Columns:
    """Per-row results of the streaming pass (small: no images)."""

    ids: pa.ChunkedArray
    labels: pa.ChunkedArray
    canonical: pa.ChunkedArray
    ok: np.ndarray
    reason: np.ndarray
    image_size: int
    channels: int


def _read_rows(source: Source, data: DataConfig, has_id: bool, images_path: Path) -> _Columns:
    n = source.num_rows
    ok = np.zeros(n, dtype=bool)
    unreadable = np.zeros(n, dtype=bool)
    id_chunks: list[pa.Array] = []
    label_chunks: list[pa.Array] = []
    canonical_chunks: list[pa.Array] = []
    seen_ids: dict[Any, int] = {}
    size, channels = data.image_size, data.channels
    images: NpyWriter | None = None
    refused: list[tuple[int, str]] = []  # (row, why), appended by the fetch threads
    start = 0
    n_workers = decode_workers(n)
    with (
        ThreadPoolExecutor(_DECODE_THREADS) as pool,
        _decode_executor(n_workers) as workers,
        contextlib.ExitStack() as files,
    ):
        for batch, base_dir in source.iter_located_batches(data.batch_rows):
            rows = batch.num_rows
            if start + rows > n:
                raise InputError(f"source {source.uri} yielded more rows than its {n} rows")
            labels = batch.column(data.label_column)
            label_chunks.append(labels)
            canonical_chunks.append(canonical_labels(data.label_column, labels, start))
            if has_id:
                ids = batch.column(data.id_column)
                _check_ids(data.id_column, ids, start, seen_ids)
                id_chunks.append(ids)

            cells = _cells(batch.column(data.image_column))
            fetch = _fetcher(source, base_dir, data.allow_external_paths, refused)
            payloads = list(pool.map(fetch, range(start, start + rows), cells))
            if images is None and (size is None or channels is None):
                probed = working_shape(_probes(payloads))
                if probed is not None:
                    channels = channels or probed[0]
                    size = size or probed[1]
            if images is None and size is not None and channels is not None:
                shape = (n, channels, size, size)
                images = files.enter_context(NpyWriter(images_path, shape, np.uint8))
            if images is None:
                unreadable[start : start + rows] = True
            else:
                decoder, parts = (workers, 2 * n_workers) if workers else (pool, _DECODE_THREADS)
                pixels, good = _decode(decoder, parts, payloads, size, channels)
                images.write(start, pixels)
                ok[start : start + rows] = good
                unreadable[start : start + rows] = ~good
            start += rows
    if start != n:
        raise InputError(f"source {source.uri} yielded {start} rows, expected {n}")
    if refused:
        row, why = min(refused)
        log.warning(
            "%d image path(s) refused, rows quarantined as unreadable; first: row %d: %s",
            len(refused),
            row,
            why,
        )
    if images is None:
        raise InputError(
            f"no usable rows in source {source.uri}: none of its {n} images in column "
            f"{data.image_column!r} can be decoded"
        )

    labels_all = pa.chunked_array(label_chunks, type=source.schema.field(data.label_column).type)
    canonical = pa.chunked_array(canonical_chunks)
    missing = np.asarray(canonical.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    reason = np.full(n, None, dtype=object)
    reason[missing] = REASON_MISSING_LABEL
    reason[unreadable] = REASON_UNREADABLE
    ok &= ~missing
    if has_id:
        ids_all = pa.chunked_array(id_chunks, type=source.schema.field(data.id_column).type)
    else:
        ids_all = pa.chunked_array([pa.array(np.arange(n, dtype=np.int64))])
    return _Columns(ids_all, labels_all, canonical, ok, reason, int(size), int(channels))


def _summarise(source: Source, data: DataConfig, columns: _Columns) -> ReadSummary:
    n = len(columns.ok)
    n_unreadable = int(np.sum(columns.reason == REASON_UNREADABLE))
    n_missing = int(np.sum(columns.reason == REASON_MISSING_LABEL))
    n_ok = int(columns.ok.sum())
    if n_ok == 0:
        raise InputError(
            f"no usable rows in source {source.uri}: {n_unreadable} of {n} images unreadable "
            f"(column {data.image_column!r}), {n_missing} labels null "
            f"(column {data.label_column!r})"
        )
    usable = pc.filter(columns.canonical, pa.array(columns.ok))
    counts = pc.value_counts(usable)
    order = pc.sort_indices(counts.field("values"))
    values = pc.take(counts.field("values"), order).to_pylist()
    class_counts = pc.take(counts.field("counts"), order).to_pylist()
    if len(values) < 2:
        raise InputError(
            f"only one class (label {values[0]!r}) among usable rows; need at least 2"
            + _unusable_note(n_unreadable, n_missing)
        )
    names = _class_names(values, source.class_names)
    return ReadSummary(
        n_rows=n,
        n_ok=n_ok,
        n_unreadable=n_unreadable,
        n_missing_label=n_missing,
        n_classes=len(values),
        class_names=names,
        class_values=values,
        image_size=columns.image_size,
        channels=columns.channels,
        label_counts=dict(zip(names, class_counts, strict=True)),
    )


def _write_rows(workdir: Path, columns: _Columns, summary: ReadSummary) -> None:
    value_set = pa.array(summary.class_values, type=columns.canonical.type)
    index = pc.index_in(columns.canonical, value_set=value_set)
    y = np.array(pc.fill_null(index, -1).to_numpy(zero_copy_only=False), dtype=np.int32)
    y[~columns.ok] = -1
    n = len(y)
    table = pa.table(
        {
            "row": pa.array(np.arange(n, dtype=np.int64)),
            SAMPLE_ID: columns.ids,
            "label": columns.labels,
            "y": pa.array(y),
            "ok": pa.array(columns.ok),
            "reason": pa.array(columns.reason.tolist(), type=pa.string()),
        }
    )
    _atomic(workdir / ROWS_FILE, lambda path: pq.write_table(table, path))
    classes = {
        "names": summary.class_names,
        "values": summary.class_values,
        "image_size": summary.image_size,
        "channels": summary.channels,
        "n_rows": summary.n_rows,
    }
    _atomic(workdir / CLASSES_FILE, lambda path: path.write_text(json.dumps(classes, indent=2)))


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- validation -------------------------------------------------------------------------


def _require_column(schema: pa.Schema, name: str, option: str) -> None:
    if name not in schema.names:
        raise InputError(
            f"missing column {name!r} in source; columns: {', '.join(schema.names)} (use {option})"
        )


def id_column(schema: pa.Schema, data: DataConfig) -> str | None:
    """The column that holds each row's id, or None when the row ordinal is the id.

    ``data.id_column`` must be a column of ``schema`` unless it is the default
    ``sample_id``. Its values are the ``sample_id`` of every output; a source ``sample_id``
    column beside another id column is refused, since clean and quarantine carry it
    unchanged under the name the id takes.

    Raises
    ------
    InputError
        The id column is missing, or a ``sample_id`` column is there beside it.
    """
    name = data.id_column
    if name not in schema.names:
        if name == SAMPLE_ID:
            return None
        raise InputError(
            f"missing id column {name!r} in source; columns: {', '.join(schema.names)} "
            "(use --id-column)"
        )
    if name != SAMPLE_ID and SAMPLE_ID in schema.names:
        raise InputError(
            f"source has both a {SAMPLE_ID!r} column and id column {name!r}; every output "
            f"names the id {SAMPLE_ID!r}: rename or drop that column, or use --id-column "
            f"{SAMPLE_ID}"
        )
    return name


def _check_image_type(column: str, dtype: pa.DataType) -> None:
    if pa.types.is_struct(dtype):
        if {"bytes", "path"} & {dtype.field(i).name for i in range(dtype.num_fields)}:
            return
    elif (
        pa.types.is_binary(dtype)
        or pa.types.is_large_binary(dtype)
        or pa.types.is_fixed_size_binary(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_null(dtype)
    ):
        return
    raise InputError(
        f"image column {column!r} has type {dtype}; expected struct<bytes, path>, "
        "binary image bytes or a path string (use --image-column)"
    )


def _check_label_type(column: str, dtype: pa.DataType) -> None:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if (
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_null(dtype)
    ):
        return
    raise InputError(f"label column {column!r} has type {dtype}; expected {_LABEL_TYPES}")


def _check_id_type(column: str, dtype: pa.DataType) -> None:
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_integer(dtype) or pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return
    raise InputError(
        f"id column {column!r} has type {dtype}; expected integers or strings "
        "(use --id-column to name another column)"
    )


def canonical_labels(column: str, labels: pa.Array, start: int) -> pa.Array:
    """Labels as int64 or string, null where missing; InputError on non-integral values."""
    if pa.types.is_dictionary(labels.type):
        labels = labels.dictionary_decode()
    dtype = labels.type
    if pa.types.is_null(dtype):
        return pa.nulls(len(labels), pa.int64())
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return labels.cast(pa.string())
    if pa.types.is_boolean(dtype):
        return labels.cast(pa.int64())
    if pa.types.is_floating(dtype):
        values = labels.to_numpy(zero_copy_only=False).astype(np.float64)
        # NaN is how pandas writes a missing label; it counts as null, not as a bad value.
        nan = np.isnan(values)
        bad = ~nan & ((values != np.round(values)) | ~np.isfinite(values))
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(
                f"label column {column!r} holds non-integer value {float(values[i])!r} at row "
                f"{start + i}; labels must be {_LABEL_TYPES}"
            )
        mask = nan | np.asarray(labels.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        return pa.array(np.where(nan, 0, values).astype(np.int64), mask=mask)
    try:
        return labels.cast(pa.int64())
    except pa.ArrowInvalid:
        raise InputError(
            f"label column {column!r} holds values beyond int64 (near row {start}); "
            f"labels must be {_LABEL_TYPES}"
        ) from None


def _check_ids(column: str, ids: pa.Array, start: int, seen: dict[Any, int]) -> None:
    if ids.null_count:
        i = int(np.argmax(ids.is_null().to_numpy(zero_copy_only=False)))
        raise InputError(
            f"null {column} at row {start + i}; column {column!r} must be non-null and unique"
        )
    for row, value in enumerate(ids.to_pylist(), start):
        first = seen.setdefault(value, row)
        if first != row:
            raise InputError(
                f"duplicated {column} {value!r} at rows {first} and {row}; "
                f"column {column!r} must be unique"
            )


def _unusable_note(n_unreadable: int, n_missing: int) -> str:
    if not (n_unreadable or n_missing):
        return ""
    return f" ({n_unreadable} rows unreadable, {n_missing} with a null label)"


def _class_names(values: list[Any], names: list[str] | None) -> list[str]:
    out = []
    for value in values:
        if names is not None and isinstance(value, int) and 0 <= value < len(names):
            out.append(names[value])
        else:
            out.append(str(value))
    return out


# --- images -----------------------------------------------------------------------------


def _cells(column: pa.Array) -> list[Any]:
    """Cells of an image column as Python values (HF structs as dicts)."""
    if not pa.types.is_struct(column.type):
        return column.to_pylist()
    # flatten() folds the struct's own null bitmap into its children.
    fields = dict(zip((f.name for f in column.type), column.flatten(), strict=True))
    raw = fields["bytes"].to_pylist() if "bytes" in fields else [None] * len(column)
    paths = fields["path"].to_pylist() if "path" in fields else [None] * len(column)
    return [{"bytes": b, "path": p} for b, p in zip(raw, paths, strict=True)]


def _fetcher(
    source: Source, base_dir: str, allow_external: bool, refused: list[tuple[int, str]]
) -> Callable[[int, Any], bytes | None]:
    """fetch(row, cell): a cell's bytes, None when unreadable; refused paths go to ``refused``."""

    def fetch(row: int, cell: Any) -> bytes | None:
        try:
            return image_bytes(
                cell,
                filesystem=source.filesystem,
                base_dir=base_dir,
                allow_external=allow_external,
            )
        except PathRefused as exc:
            refused.append((row, str(exc)))
            return None
        except ValueError:
            return None

    return fetch


def _probes(payloads: list[bytes | None]) -> list[tuple[int, int]]:
    """(channels, side) of the first ``PROBED_IMAGES`` readable images, from their headers."""
    probes: list[tuple[int, int]] = []
    for payload in payloads:
        if payload is None:
            continue
        try:
            probes.append(probe_image(payload))
        except ValueError:
            continue
        if len(probes) == PROBED_IMAGES:
            break
    return probes


def working_shape(probes: list[tuple[int, int]], *, warn: bool = True) -> tuple[int, int] | None:
    """(channels, side) every image is decoded to, from the probes of the first images.

    The mode most of them have, and their median side within [``MIN_IMAGE_SIZE``,
    ``MAX_WORKING_SIZE``]: one odd first image sets nothing, and a set of large images
    costs what a 64 x 64 one does. None when no image could be probed.
    """
    if not probes:
        return None
    channels = Counter(c for c, _ in probes).most_common(1)[0][0]
    sides = np.array([side for _, side in probes])
    size = int(min(max(int(np.median(sides)), MIN_IMAGE_SIZE), MAX_WORKING_SIZE))
    far = int(np.sum((sides > 2 * size) | (2 * sides < size)))
    if far and warn:
        log.warning(
            "%d of the first %d images are far from the working size %dx%d (sides %d to %d); "
            "every image is resized to it (set data.image_size to choose another)",
            far,
            len(sides),
            size,
            size,
            int(sides.min()),
            int(sides.max()),
        )
    return channels, size


def decode_workers(n_rows: int) -> int:
    """Worker processes that decode a source of ``n_rows`` rows; 0 decodes in this process.

    ``$SANITIZE_DECODE_WORKERS`` sets the number (0 turns processes off). Otherwise:
    min(8, usable CPUs) from ``DECODE_PROCESS_MIN_ROWS`` rows on, when there are
    ``DECODE_PROCESS_MIN_CPUS`` CPUs or more; never inside a daemonic process (a Dask
    worker), which may not have children.
    """
    if multiprocessing.current_process().daemon:
        return 0
    raw = os.environ.get(DECODE_WORKERS_ENV)
    if raw:
        try:
            return max(0, int(raw))
        except ValueError:
            raise ConfigError(
                f"{DECODE_WORKERS_ENV} must be an integer >= 0, got {raw!r}"
            ) from None
    cpus = len(os.sched_getaffinity(0))
    if cpus < DECODE_PROCESS_MIN_CPUS or n_rows < DECODE_PROCESS_MIN_ROWS:
        return 0
    return min(MAX_DECODE_WORKERS, cpus)


@contextlib.contextmanager
def _decode_executor(workers: int) -> Iterator[Executor | None]:
    if workers < 1:
        yield None
        return
    # forkserver, not fork: the stage may run in a thread of a process that holds locks
    # (Prefect's task runner, torch's thread pools), and a forked child would inherit them.
    context = multiprocessing.get_context("forkserver")
    # Imported once by the fork server, shared by the workers it forks.
    context.set_forkserver_preload(["sanitize.data.decode"])
    with ProcessPoolExecutor(workers, mp_context=context) as executor:
        yield executor


def _decode(
    executor: Executor, parts: int, payloads: list[bytes | None], size: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``payloads`` in ``parts`` chunks on ``executor``: pixels (n, C, S, S), ok mask."""
    if not payloads:
        return np.zeros((0, channels, size, size), dtype=np.uint8), np.zeros(0, dtype=bool)
    step = max(1, -(-len(payloads) // parts))
    chunks = [payloads[i : i + step] for i in range(0, len(payloads), step)]
    results = list(executor.map(decode_many, chunks, repeat(size), repeat(channels)))
    return (
        np.concatenate([pixels for pixels, _ in results]),
        np.concatenate([good for _, good in results]),
    )
