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

The column checks live in :mod:`sanitize.data.validate`, the streaming pass and its
quarantine reasons in :mod:`sanitize.data.read_loop`, the image fetching, probing and
decoding in :mod:`sanitize.data.read_images`; their public names are re-exported here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sanitize.config import DataConfig
from sanitize.data.hf_layout import HF_METADATA_KEY, malformed_hf_metadata
from sanitize.data.read_images import (
    DECODE_PROCESS_MIN_CPUS,
    DECODE_PROCESS_MIN_ROWS,
    DECODE_WORKERS_ENV,
    MAX_DECODE_WORKERS,
    PROBED_IMAGES,
    decode_workers,
    working_shape,
)
from sanitize.data.read_loop import Columns, read_rows
from sanitize.data.schema import (
    CLASSES_FILE,
    IMAGES_FILE,
    REASON_MISSING_LABEL,
    REASON_UNREADABLE,
    ROWS_FILE,
    SAMPLE_ID,
)
from sanitize.data.source_base import Source
from sanitize.data.validate import canonical_labels, check_columns, id_column
from sanitize.errors import InputError

__all__ = [
    "DECODE_PROCESS_MIN_CPUS",
    "DECODE_PROCESS_MIN_ROWS",
    "DECODE_WORKERS_ENV",
    "MAX_DECODE_WORKERS",
    "PROBED_IMAGES",
    "ReadSummary",
    "canonical_labels",
    "decode_workers",
    "id_column",
    "read_source",
    "working_shape",
]

log = logging.getLogger("sanitize")


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

    An image size or channel count of None in ``data`` is taken from the first readable
    image: 1 channel for grey modes else 3, size = max(width, height). Each file appears
    in ``workdir`` under its final name only when complete.

    Parameters
    ----------
    source : Source
        From :func:`sanitize.data.open_source`.
    data : DataConfig
        Column names, image size and channels (None: from the first image), rows per batch.
    workdir : path-like
        Receives ``images.npy``, ``rows.parquet`` and ``classes.json``; created when missing.

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
    has_id = check_columns(schema, data)
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
        columns = read_rows(source, data, has_id, images_tmp)
        summary = _summarise(source, data, columns)
        _write_rows(workdir, columns, summary)
        os.replace(images_tmp, workdir / IMAGES_FILE)
    finally:
        images_tmp.unlink(missing_ok=True)
    return summary


def _summarise(source: Source, data: DataConfig, columns: Columns) -> ReadSummary:
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


def _write_rows(workdir: Path, columns: Columns, summary: ReadSummary) -> None:
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
