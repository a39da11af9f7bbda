"""Poison a dataset on disk: read a source, apply an attack, write the set and its ground truth.

The source is read twice with :mod:`sanitize.data`, batch by batch: once for the labels and
ids (the attack chooses its rows from them, :meth:`Attack.plan`), once for the pixels,
which are decoded, stamped (:meth:`Attack.execute`), PNG-encoded and written out. Memory
is bounded by one batch of images, whatever the size of the set.

Images keep their native size: the first image fixes the side and the channels (1 for
grey modes, else 3; ``data.channels`` overrides the channels), and an image of another
size is an error, never resized.

The source is anything :func:`sanitize.data.open_source` reads (HF Parquet file or
directory, image folder, ``.npz``; local or an fsspec URI) with integer labels. The
poisoned set is a local Parquet file in the Hugging Face image layout: the image column
(``data.image_column``) as struct<bytes, path> of PNG bytes with paths
``<out stem>/<row:05d>.png``, the label column as int64 (after the attack), a
``sample_id`` column (the source's ``data.id_column`` when present, else the row ordinal
as int64), the other source columns unchanged, the source's ``huggingface`` schema
metadata (class names kept), zstd-compressed. The ground truth is the CSV
``sample_id,poisoned`` (0/1), by default :func:`default_truth_path` of the set.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from sanitize.attacks.base import Attack, PoisonPlan
from sanitize.attacks.checks import check_poison_args
from sanitize.config import DataConfig
from sanitize.data import decode_image, image_bytes, open_source, probe_image
from sanitize.data.schema import SAMPLE_ID
from sanitize.data.source import HF_METADATA_KEY, Source
from sanitize.errors import ConfigError, InputError, OutputError

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_THREADS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class PoisonSummary:
    """What :func:`poison_source` wrote.

    Attributes
    ----------
    out : Path
        The poisoned Parquet file.
    truth : Path
        The ground-truth CSV (``sample_id,poisoned``).
    n_rows : int
    n_poisoned : int
        Rows in the ground truth (the trigger, and the target label for dirty-label attacks).
    attack : str
    target : int
    rate : float
    seed : int
    channels : int
    height : int
    width : int
    info : dict
        The attack's ``info`` (see :class:`~sanitize.attacks.base.PoisonResult`).
    """

    out: Path
    truth: Path
    n_rows: int
    n_poisoned: int
    attack: str
    target: int
    rate: float
    seed: int
    channels: int
    height: int
    width: int
    info: dict[str, Any] = field(default_factory=dict)


def default_truth_path(out: str | os.PathLike[str]) -> Path:
    """Where the ground truth goes by default: ``out`` with its suffix replaced by
    ``.truth.csv`` (``train.parquet`` -> ``train.truth.csv``)."""
    return Path(out).with_suffix(".truth.csv")


def poison_source(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    attack: Attack,
    *,
    target: int,
    rate: float,
    seed: int,
    data: DataConfig = DataConfig(),  # noqa: B008 - frozen dataclass, safe as a default
    truth: str | os.PathLike[str] | None = None,
) -> PoisonSummary:
    """Poison a source with ``attack``; write the poisoned set and its ground truth.

    Both files appear under their final names only when complete; what they hold is in the
    module docstring.

    Parameters
    ----------
    source : str or path-like
        Anything :func:`sanitize.data.open_source` reads, with integer labels.
    out : str or path-like
        Local Parquet file to write, in the Hugging Face image layout.
    attack : Attack
        From :func:`sanitize.attacks.get_attack`.
    target, rate, seed
        As in :meth:`Attack.poison`.
    data : DataConfig, default=DataConfig()
        Column names, batch size and optionally ``channels``; ``image_size`` must be None.
    truth : str or path-like, optional
        The ground-truth CSV; None: :func:`default_truth_path` of ``out``.

    Returns
    -------
    PoisonSummary

    Raises
    ------
    ConfigError
        An attack parameter, ``target``, ``rate`` or ``seed`` out of range, ``out`` equal to
        the source or to ``truth``, or ``data.image_size`` set.
    InputError
        The source cannot be read, lacks a column, has non-integer or null labels, null or
        duplicated ids, or an image that cannot be decoded or differs in size from the
        first (the message names the row).
    OutputError
        ``out`` or ``truth`` cannot be written.
    """
    target, rate, seed = _check_poison_config(attack, data, target, rate, seed)
    out, truth_path = _output_paths(source, out, truth)

    src = open_source(source, data)
    _check_columns(src, data)
    labels, ids, id_type = _labels_and_ids(src, data)
    _check_target(src, labels, target)
    channels, height, width = _first_image(src, data)

    plan = attack.plan(labels, target=target, rate=rate, seed=seed)
    schema = _output_schema(src, data, id_type)
    batches = _poisoned_batches(src, data, attack, plan, ids, schema, (channels, height, width))
    _atomic(out, lambda path: _write_parquet(path, schema, batches(out.stem)))
    _atomic(truth_path, lambda path: _write_truth(path, ids, plan.poisoned))
    return PoisonSummary(
        out=out,
        truth=truth_path,
        n_rows=len(labels),
        n_poisoned=int(plan.poisoned.sum()),
        attack=attack.name,
        target=target,
        rate=rate,
        seed=seed,
        channels=channels,
        height=height,
        width=width,
        info=plan.info,
    )


def _check_poison_config(
    attack: Attack, data: DataConfig, target: int, rate: float, seed: int
) -> tuple[int, float, int]:
    """``data``, ``attack``'s parameters and ``target``, ``rate``, ``seed`` checked (see
    :func:`poison_source`); the last three as :func:`check_poison_args` returns them."""
    if data.image_size is not None:
        raise ConfigError(
            f"data.image_size must be None when poisoning (images keep their native size), "
            f"got {data.image_size}"
        )
    target, rate, seed = check_poison_args(target, rate, seed)
    if not isinstance(attack, Attack):
        raise ConfigError(f"attack must be an Attack (see get_attack), got {type(attack)}")
    attack._check_params()
    return target, rate, seed


def _output_paths(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    truth: str | os.PathLike[str] | None,
) -> tuple[Path, Path]:
    """The poisoned set's path and the ground truth's; neither may be the other or the
    source."""
    out = Path(out)
    truth_path = Path(truth) if truth is not None else default_truth_path(out)
    if out.resolve() == truth_path.resolve():
        raise ConfigError(f"the ground truth must not overwrite the dataset: both are {out}")
    if "://" not in os.fspath(source) and Path(source).resolve() in (
        out.resolve(),
        truth_path.resolve(),
    ):
        raise ConfigError(f"output {out} would overwrite the source (it is never modified)")
    return out, truth_path


def _write_parquet(path: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> None:
    """``batches`` to the zstd-compressed Parquet file ``path``."""
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)


def _write_truth(path: Path, ids: pa.Array, poisoned: np.ndarray) -> None:
    """The ground-truth CSV ``sample_id,poisoned`` (0/1), one line a row."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([SAMPLE_ID, "poisoned"])
        writer.writerows(zip(ids.to_pylist(), poisoned.astype(int).tolist(), strict=True))


# --- first pass: labels, ids, image shape ---------------------------------------------------


def _check_columns(src: Source, data: DataConfig) -> None:
    for name, option in (
        (data.image_column, "--image-column"),
        (data.label_column, "--label-column"),
    ):
        if name not in src.schema.names:
            raise InputError(
                f"missing column {name!r} in source; columns: {', '.join(src.schema.names)} "
                f"(use {option})"
            )
    dtype = src.schema.field(data.label_column).type
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if not pa.types.is_integer(dtype):
        raise InputError(
            f"label column {data.label_column!r} has type {dtype}; poisoning needs integer "
            "class labels"
        )
    if data.id_column in src.schema.names:
        id_type = src.schema.field(data.id_column).type
        if not (pa.types.is_integer(id_type) or pa.types.is_string(id_type)):
            raise InputError(
                f"id column {data.id_column!r} has type {id_type}; expected integers or strings "
                "(use --id-column to name another column)"
            )


def _labels_and_ids(src: Source, data: DataConfig) -> tuple[np.ndarray, pa.Array, pa.DataType]:
    has_id = data.id_column in src.schema.names
    label_chunks, id_chunks, seen = [], [], {}
    start = 0
    for batch in src.iter_batches(data.batch_rows):
        labels = batch.column(data.label_column)
        if pa.types.is_dictionary(labels.type):
            labels = labels.dictionary_decode()
        if labels.null_count:
            row = start + int(np.argmax(labels.is_null().to_numpy(zero_copy_only=False)))
            raise InputError(f"null label at row {row} (column {data.label_column!r})")
        label_chunks.append(labels.cast(pa.int64()).to_numpy())
        if has_id:
            ids = batch.column(data.id_column)
            for row, value in enumerate(ids.to_pylist(), start):
                if value is None:
                    raise InputError(f"null {data.id_column} at row {row}; ids must be unique")
                first = seen.setdefault(value, row)
                if first != row:
                    raise InputError(
                        f"duplicated {data.id_column} {value!r} at rows {first} and {row}; "
                        "ids must be unique"
                    )
            id_chunks.append(ids)
        start += batch.num_rows
    labels_all = np.concatenate(label_chunks) if label_chunks else np.zeros(0, np.int64)
    if has_id:
        id_type = src.schema.field(data.id_column).type
        ids_all = pa.chunked_array(id_chunks, type=id_type).combine_chunks()
    else:
        id_type = pa.int64()
        ids_all = pa.array(np.arange(len(labels_all), dtype=np.int64))
    return labels_all, ids_all, id_type


def _check_target(src: Source, labels: np.ndarray, target: int) -> None:
    n_classes = len(src.class_names) if src.class_names else int(labels.max()) + 1
    if not 0 <= target < n_classes:
        raise ConfigError(
            f"target {target} is not a class of the source (classes 0..{n_classes - 1})"
        )


def _first_image(src: Source, data: DataConfig) -> tuple[int, int, int]:
    for batch, base_dir in src.iter_located_batches(1):
        cell = batch.column(data.image_column)[0].as_py()
        try:
            payload = image_bytes(cell, filesystem=src.filesystem, base_dir=base_dir)
            channels, _ = probe_image(payload)
            width, height = _native_size(payload)
        except ValueError as exc:
            raise InputError(f"row 0: {exc}; every image must be readable to poison") from None
        if width != height:
            raise InputError(
                f"row 0: the image is {width}x{height}; poisoning keeps the native size and "
                "needs square images"
            )
        return data.channels or channels, height, width
    raise InputError(f"source {src.uri} has no rows")


def _native_size(payload: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(payload)) as image:
            return image.size
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ...
        raise ValueError(f"cannot decode image: {exc}") from None


# --- second pass: pixels ----------------------------------------------------------------


def _poisoned_batches(
    src: Source,
    data: DataConfig,
    attack: Attack,
    plan: PoisonPlan,
    ids: pa.Array,
    schema: pa.Schema,
    shape: tuple[int, int, int],
) -> Callable[[str], Iterator[pa.RecordBatch]]:
    channels, height, width = shape

    def decode(payload: bytes) -> np.ndarray:
        size = _native_size(payload)
        if size != (width, height):
            raise ValueError(
                f"the image is {size[0]}x{size[1]}, the first is {width}x{height}; "
                "poisoning keeps the native size, so every image must share it"
            )
        return decode_image(payload, height, channels)

    def batches(stem: str) -> Iterator[pa.RecordBatch]:
        start = 0
        with ThreadPoolExecutor(_THREADS) as pool:
            for batch, base_dir in src.iter_located_batches(data.batch_rows):
                n = batch.num_rows
                cells = batch.column(data.image_column).to_pylist()
                pixels = np.empty((n, channels, height, width), np.uint8)
                decoded = _map_in_chunks(pool, _catching(decode, src, base_dir), cells)
                for i, result in enumerate(decoded):
                    if isinstance(result, str):
                        row = start + i
                        raise InputError(
                            f"row {row} ({SAMPLE_ID} {ids[row].as_py()!r}): {result}; "
                            "every image must be readable to poison"
                        )
                    pixels[i] = result
                poisoned = attack.execute(pixels, plan, start=start)
                encoded = _map_in_chunks(pool, _png, list(poisoned))
                image = pa.StructArray.from_arrays(
                    [
                        pa.array(encoded, pa.binary()),
                        pa.array([f"{stem}/{start + i:05d}.png" for i in range(n)], pa.string()),
                    ],
                    fields=list(IMAGE_TYPE),
                )
                columns = {
                    data.image_column: image,
                    data.label_column: pa.array(plan.labels[start : start + n], pa.int64()),
                    SAMPLE_ID: ids.slice(start, n),
                }
                arrays = [
                    columns[f.name] if f.name in columns else batch.column(f.name) for f in schema
                ]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
                start += n
        if start != len(plan.poisoned):
            raise InputError(
                f"source {src.uri} yielded {start} rows, expected {len(plan.poisoned)}"
            )

    return batches


def _map_in_chunks(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: list) -> list:
    """``[fn(x) for x in items]`` on the pool, one task per thread rather than per item:
    a task per 32x32 image costs more in scheduling than the image takes to code."""
    size = max(1, -(-len(items) // _THREADS))
    parts = [items[i : i + size] for i in range(0, len(items), size)]
    return [y for part in pool.map(lambda p: [fn(x) for x in p], parts) for y in part]


def _catching(
    decode: Callable[[bytes], np.ndarray], src: Source, base_dir: str
) -> Callable[[Any], np.ndarray | str]:
    """``decode`` of a cell, or the one-line reason it failed (raised later, with the row)."""

    def run(cell: Any) -> np.ndarray | str:
        try:
            return decode(image_bytes(cell, filesystem=src.filesystem, base_dir=base_dir))
        except ValueError as exc:
            return str(exc)

    return run


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# --- output -----------------------------------------------------------------------------


def _output_schema(src: Source, data: DataConfig, id_type: pa.DataType) -> pa.Schema:
    """The source's columns with the image as HF struct, the label as int64 and
    ``sample_id`` appended (or replaced), and the source's ``huggingface`` metadata."""
    fields = []
    for f in src.schema:
        if f.name == data.image_column:
            fields.append(pa.field(f.name, IMAGE_TYPE))
        elif f.name == data.label_column:
            fields.append(pa.field(f.name, pa.int64()))
        elif f.name == SAMPLE_ID:
            fields.append(pa.field(SAMPLE_ID, id_type))
        else:
            fields.append(f)
    if SAMPLE_ID not in src.schema.names:
        fields.append(pa.field(SAMPLE_ID, id_type))
    metadata = {HF_METADATA_KEY: json.dumps(_hf_metadata(src, data, id_type)).encode()}
    return pa.schema(fields, metadata=metadata)


def _hf_metadata(src: Source, data: DataConfig, id_type: pa.DataType) -> dict[str, Any]:
    """The source's ``huggingface`` metadata, its features completed for the columns
    written here; everything else in it (class names included) is kept as it is."""
    try:
        meta = json.loads((src.schema.metadata or {})[HF_METADATA_KEY])
        features = meta["info"]["features"]
        if not isinstance(features, dict):
            raise TypeError
    except (KeyError, ValueError, TypeError):
        meta, features = {"info": {"features": {}}}, {}
        meta["info"]["features"] = features
    features[data.image_column] = {"_type": "Image"}
    if not isinstance(features.get(data.label_column), dict) or (
        features[data.label_column].get("_type") not in ("ClassLabel", "Value")
    ):
        if src.class_names is not None:
            features[data.label_column] = {"names": list(src.class_names), "_type": "ClassLabel"}
        else:
            features[data.label_column] = {"dtype": "int64", "_type": "Value"}
    if SAMPLE_ID not in features:
        dtype = "string" if pa.types.is_string(id_type) else str(id_type)
        features[SAMPLE_ID] = {"dtype": dtype, "_type": "Value"}
    return meta


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
