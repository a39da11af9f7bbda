"""Checks of the read stage on a source's columns: the image, label and id columns exist
and have usable types, labels are integral (:func:`canonical_labels`), and ids are non-null
and unique. Each problem raises :class:`~sanitize.errors.InputError` with a one-line
message; rows are 0-based ordinals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from sanitize.config import DataConfig
from sanitize.data.schema import SAMPLE_ID
from sanitize.errors import InputError

LABEL_TYPES = "integers, integral floats, bools or strings"


def check_columns(schema: pa.Schema, data: DataConfig) -> bool:
    """Check the image, label and id columns of ``schema``; whether there is an id column.

    Raises
    ------
    InputError
        The image or label column is missing or of an unusable type, or the id column is
        missing (see :func:`id_column`) or of an unusable type.
    """
    _require_column(schema, data.image_column, "--image-column")
    _require_column(schema, data.label_column, "--label-column")
    _check_image_type(data.image_column, schema.field(data.image_column).type)
    label_type = schema.field(data.label_column).type
    _check_label_type(data.label_column, label_type)
    has_id = id_column(schema, data) is not None
    if has_id:
        _check_id_type(data.id_column, schema.field(data.id_column).type)
    return has_id


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
    raise InputError(f"label column {column!r} has type {dtype}; expected {LABEL_TYPES}")


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
                f"{start + i}; labels must be {LABEL_TYPES}"
            )
        mask = nan | np.asarray(labels.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        return pa.array(np.where(nan, 0, values).astype(np.int64), mask=mask)
    try:
        return labels.cast(pa.int64())
    except pa.ArrowInvalid:
        raise InputError(
            f"label column {column!r} holds values beyond int64 (near row {start}); "
            f"labels must be {LABEL_TYPES}"
        ) from None


def check_ids(column: str, ids: pa.Array, start: int, seen: dict[Any, int]) -> None:
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
