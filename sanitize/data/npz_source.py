"""The ``npz`` source kind: arrays ``x`` (images) and ``y`` (labels) of a ``.npz`` file,
streamed row block by row block and presented in the Hugging Face layout (PNG bytes)."""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Iterator
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
from PIL import Image

from sanitize.config import DataConfig
from sanitize.data.hf_layout import HF_IMAGE_TYPE, hf_schema
from sanitize.data.source_base import Source, one_line
from sanitize.errors import InputError


class NpzSource(Source):
    """Arrays ``x`` (images) and ``y`` (labels) of a ``.npz`` file, images PNG-encoded.

    ``x`` is read row block by row block from the archive member, so only ``y`` and one
    batch of images are in memory. Float images are taken as [0, 1] when their maximum is
    at most 1, else as [0, 255]; both are rounded and clipped to uint8. Optional arrays
    ``class_names`` (or ``names``) give class names indexed by label value.
    """

    kind = "npz"

    def __init__(
        self, uri: str, fs: fsspec.AbstractFileSystem, path: str, data: DataConfig
    ) -> None:
        self._fs = fs
        self._path = path
        y, names = self._read_arrays(uri)
        self._layout = _npz_layout(self._shape, uri)
        _check_arrays(uri, self._shape, self._dtype, y)
        self._labels = pa.array(y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y)
        self._image_column = data.image_column
        self._scale = 1.0
        if np.issubdtype(self._dtype, np.floating):
            peak = max((float(np.nanmax(b)) for b in self._x_blocks(4096) if b.size), default=0.0)
            self._scale = 255.0 if peak <= 1.0 else 1.0
        super().__init__(
            uri=uri,
            num_rows=int(self._shape[0]),
            schema=hf_schema(data.image_column, data.label_column, self._labels.type, names),
            class_names=names,
            filesystem=fs,
        )

    def _read_arrays(self, uri: str) -> tuple[np.ndarray, list[str] | None]:
        """Read the header of ``x`` (into ``_x_member``, ``_shape``, ``_fortran``,
        ``_dtype``), and return ``y`` and the class names (None when absent)."""
        try:
            with self._fs.open(self._path, "rb") as fh, zipfile.ZipFile(fh) as archive:
                members = {posixpath.splitext(n)[0]: n for n in archive.namelist()}
                for needed in ("x", "y"):
                    if needed not in members:
                        raise InputError(
                            f"npz source {uri} has no array {needed!r}; arrays: "
                            f"{', '.join(sorted(members)) or 'none'}"
                        )
                self._x_member = members["x"]
                with archive.open(self._x_member) as member:
                    shape, fortran, dtype = _npy_header(member)
                with archive.open(members["y"]) as member:
                    y = np.load(member, allow_pickle=False)
                names = _class_names(archive, members)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile / numpy raise many types
            raise InputError(f"cannot read npz source {uri}: {one_line(exc)}") from None
        self._shape, self._fortran, self._dtype = shape, fortran, dtype
        return y, names

    def _x_blocks(self, rows: int) -> Iterator[np.ndarray]:
        n = self._shape[0]
        with (
            self._fs.open(self._path, "rb") as fh,
            zipfile.ZipFile(fh) as archive,
            archive.open(self._x_member) as member,
        ):
            _npy_header(member)
            if self._fortran:
                # Fortran order interleaves rows; there is no row block to stream.
                whole = np.frombuffer(member.read(), dtype=self._dtype)
                whole = whole.reshape(self._shape, order="F")
                for start in range(0, n, rows):
                    yield np.ascontiguousarray(whole[start : start + rows])
                return
            row_items = int(np.prod(self._shape[1:], dtype=np.int64))
            for start in range(0, n, rows):
                count = min(rows, n - start)
                raw = _read_exact(member, count * row_items * self._dtype.itemsize)
                block = np.frombuffer(raw, dtype=self._dtype)
                yield block.reshape((count, *self._shape[1:]))

    def _to_png(self, image: np.ndarray) -> bytes:
        if self._layout == "NCHW":
            image = np.moveaxis(image, 0, -1)
        if image.dtype != np.uint8:
            image = np.clip(np.rint(np.nan_to_num(image.astype(np.float64) * self._scale)), 0, 255)
            image = image.astype(np.uint8)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
        return buf.getvalue()

    def iter_located_batches(self, batch_rows: int) -> Iterator[tuple[pa.RecordBatch, str]]:
        base = posixpath.dirname(self._path)
        start = 0
        for block in self._x_blocks(batch_rows):
            payload = [self._to_png(img) for img in block]
            image = pa.StructArray.from_arrays(
                [pa.array(payload, pa.binary()), pa.nulls(len(payload), pa.string())],
                fields=list(HF_IMAGE_TYPE),
            )
            label = self._labels.slice(start, len(payload))
            start += len(payload)
            yield pa.RecordBatch.from_arrays([image, label], schema=self.schema), base

    def _files(self) -> list[tuple[str, str]]:
        return [(posixpath.basename(self._path), self._path)]


def _class_names(archive: zipfile.ZipFile, members: dict[str, str]) -> list[str] | None:
    """Class names from the array ``class_names`` (or else ``names``); None when neither."""
    for key in ("class_names", "names"):
        if key in members:
            with archive.open(members[key]) as member:
                return [str(v) for v in np.load(member, allow_pickle=False)]
    return None


def _check_arrays(uri: str, shape: tuple[int, ...], dtype: np.dtype, y: np.ndarray) -> None:
    """InputError unless ``x`` holds numbers and ``y`` is one label per row of ``x`` (> 0)."""
    if not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_
    ):
        raise InputError(f"npz source {uri}: array 'x' has dtype {dtype}; expected uint8 or float")
    if y.ndim != 1 or len(y) != shape[0]:
        raise InputError(
            f"npz source {uri}: array 'y' has shape {y.shape}; expected ({shape[0]},) like x"
        )
    if shape[0] == 0:
        raise InputError(f"source {uri} has no rows")


def _npz_layout(shape: tuple[int, ...], uri: str) -> str:
    channel_counts = (1, 3, 4)
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        if shape[-1] in channel_counts:
            return "NHWC"
        if shape[1] in channel_counts:
            return "NCHW"
    raise InputError(
        f"npz source {uri}: array 'x' has shape {shape}; expected (N, H, W), (N, H, W, C) "
        "or (N, C, H, W) with C in 1, 3, 4"
    )


def _npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    if dtype.hasobject:
        raise InputError("array 'x' holds Python objects; expected numbers")
    return shape, fortran, dtype


def _read_exact(fh: Any, size: int) -> bytes:
    parts = []
    while size > 0:
        chunk = fh.read(size)
        if not chunk:
            raise InputError("npz array 'x' is truncated")
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)
