"""Open a training-set source and stream its rows as Arrow record batches.

A source is a local path or an fsspec URI (``file://``, ``memory://``, ``s3://``, ...) that
points at one of:

``parquet``
    one ``.parquet`` file, e.g. in the layout Hugging Face ``datasets`` writes
    (``image: struct<bytes, path>``, ``label: int64``, class names in the ``huggingface``
    schema metadata);
``parquet_dir``
    a directory whose top level holds ``.parquet`` files with one schema, read in name order;
``image_folder``
    a directory ``root/<class>/<file>`` (classes are the sorted subdirectory names);
``npz``
    a ``.npz`` file with arrays ``x`` of shape (N, H, W), (N, H, W, C) or (N, C, H, W) and
    ``y`` of shape (N,).

Image folders and ``.npz`` files are presented in the Hugging Face layout, so the read
stage sees one kind of table whatever the source. The source is never modified.

Directory sources leave out every file or folder :func:`ignored_name` names (hidden or
private ones), and never open what is not a regular file (a FIFO would block the run).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

from sanitize.config import DataConfig
from sanitize.data.decode import special_file
from sanitize.errors import InputError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
HF_METADATA_KEY = b"huggingface"
HF_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

# Shown first in the "unknown URI scheme" message; the rest follow in alphabetical order.
_COMMON_PROTOCOLS = ("file", "memory", "s3", "gs", "gcs", "az", "abfs", "http", "https", "hf")
_CHUNK_BYTES = 1 << 20
_IGNORED_PREFIXES = (".", "_")


def ignored_name(name: str) -> bool:
    """Whether a directory source (and the ingest flow's landing location) leaves out the
    file or folder ``name``: hidden (``.x``: ``.ipynb_checkpoints``, macOS's ``._x.png``) or
    private (``_x``: ``__MACOSX``, Spark's ``_SUCCESS``, a writer's ``_tmp.parquet``)."""
    return name.startswith(_IGNORED_PREFIXES)


def parquet_files(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The ``.parquet`` files a directory source reads: its top level's, in name order."""
    return sorted(
        p
        for p in fs.ls(path, detail=False)
        if p.endswith(".parquet") and not ignored_name(posixpath.basename(p)) and fs.isfile(p)
    )


class Source(ABC):
    """A readable training-set source; build one with :func:`open_source`.

    Attributes
    ----------
    kind : str
        ``"parquet"``, ``"parquet_dir"``, ``"image_folder"`` or ``"npz"``.
    uri : str
        The location as given by the caller.
    num_rows : int
        Rows in the source (> 0).
    schema : pyarrow.Schema
        Columns of the source, with its schema metadata (the ``huggingface`` key included).
    class_names : list of str or None
        Class names from the ``huggingface`` metadata (ClassLabel ``names``) or the folder
        names; None when the source does not name its classes.
    filesystem : fsspec.AbstractFileSystem
        The filesystem the source lives on; image paths stored in the rows resolve on it.
    """

    kind: str = ""

    def __init__(
        self,
        *,
        uri: str,
        num_rows: int,
        schema: pa.Schema,
        class_names: list[str] | None,
        filesystem: fsspec.AbstractFileSystem,
    ) -> None:
        self.uri = uri
        self.num_rows = num_rows
        self.schema = schema
        self.class_names = class_names
        self.filesystem = filesystem

    def __repr__(self) -> str:
        return f"{type(self).__name__}(uri={self.uri!r}, num_rows={self.num_rows})"

    def iter_batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Yield every row of the source, in source order, with every column unchanged.

        Parameters
        ----------
        batch_rows : int
            Upper bound on the rows of one batch; memory use is bounded by it.
        """
        for batch, _ in self.iter_located_batches(batch_rows):
            yield batch

    @abstractmethod
    def iter_located_batches(self, batch_rows: int) -> Iterator[tuple[pa.RecordBatch, str]]:
        """Like :meth:`iter_batches`, with the directory (on :attr:`filesystem`) that relative
        image paths in the batch resolve against."""

    @abstractmethod
    def _files(self) -> list[tuple[str, str | None]]:
        """(name, path) of every file the source is made of, in a stable order; path None
        for one that is never read (a link out of an image folder)."""

    def fingerprint(self) -> str:
        """Stable digest of the source's content: first 16 hex chars of a sha256.

        Covers the bytes of every file, streamed in chunks, and for multi-file sources the
        relative file names too, so a renamed class folder changes the fingerprint.
        """
        digest = hashlib.sha256()
        files = self._files()
        for name, path in files:
            if len(files) > 1 or self.kind == "image_folder":
                digest.update(name.encode() + b"\0")
            if path is None:
                digest.update(b"\0refused\0")
                continue
            with self.filesystem.open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK_BYTES):
                    digest.update(chunk)
        return digest.hexdigest()[:16]


def open_source(uri: str | os.PathLike[str], data: DataConfig) -> Source:
    """Open a source and detect its kind; nothing but metadata is read.

    Parameters
    ----------
    uri : str or path-like
        A local path or an fsspec URI (``file://``, ``memory://``, ``s3://``, ...).
    data : DataConfig
        Column names: the label column names the class names looked up in the metadata,
        and image folders and ``.npz`` files present their columns under the configured
        image and label names (``image`` and ``label`` by default).

    Returns
    -------
    Source

    Raises
    ------
    InputError
        Unknown URI scheme, a missing path, an unsupported file, unreadable or mismatched
        Parquet files, or a source with no rows.
    """
    uri = os.fspath(uri)
    fs, path = _filesystem(uri)
    try:
        exists = fs.exists(path)
    except Exception as exc:  # noqa: BLE001 - remote filesystems raise anything here
        raise InputError(f"cannot access source {uri}: {_one_line(exc)}") from None
    if not exists:
        raise InputError(f"source not found: {uri}")
    if fs.isdir(path):
        files = parquet_files(fs, path)
        if files:
            return ParquetSource(uri, fs, files, data, kind="parquet_dir")
        return ImageFolderSource(uri, fs, path, data)
    suffix = posixpath.splitext(path)[1].lower()
    if suffix == ".parquet":
        return ParquetSource(uri, fs, [path], data, kind="parquet")
    if suffix == ".npz":
        return NpzSource(uri, fs, path, data)
    raise InputError(
        f"unsupported source file {uri}; expected a .parquet file, a directory of .parquet "
        "files, an image folder root/<class>/<file>, or a .npz file"
    )


def _filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    if "://" in uri:
        known = fsspec.available_protocols()
        # Chained URIs ("simplecache::s3://...") name one protocol per link.
        for link in uri.split("::"):
            scheme = link.split("://", 1)[0] if "://" in link else None
            if scheme is not None and scheme not in known:
                ordered = [p for p in _COMMON_PROTOCOLS if p in known]
                ordered += sorted(set(known) - set(ordered))
                raise InputError(
                    f"unknown URI scheme {scheme!r} in {uri!r}; known: {', '.join(ordered)}"
                )
    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        raise InputError(f"cannot open {uri}: {_one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many types
        raise InputError(f"cannot open {uri}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def hf_metadata(schema: pa.Schema) -> dict[str, Any] | None:
    """The ``huggingface`` schema metadata, its ``info.features`` an object; None when it is
    absent or malformed (see :func:`malformed_hf_metadata`)."""
    raw = (schema.metadata or {}).get(HF_METADATA_KEY)
    if raw is None:
        return None
    try:
        hf = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(hf, dict) or not isinstance(hf.setdefault("info", {}), dict):
        return None
    if not isinstance(hf["info"].setdefault("features", {}), dict):
        return None
    return hf


def malformed_hf_metadata(schema: pa.Schema) -> bool:
    """Whether the schema has ``huggingface`` metadata that is not the object ``datasets``
    writes (no JSON, or ``info.features`` not an object); it is then ignored."""
    return HF_METADATA_KEY in (schema.metadata or {}) and hf_metadata(schema) is None


def class_names_from_metadata(schema: pa.Schema, label_column: str) -> list[str] | None:
    """ClassLabel names from a schema's ``huggingface`` metadata, or None.

    The feature of ``label_column`` is used when it is a ClassLabel; otherwise the first
    ClassLabel feature, so a renamed label column still finds its names. Malformed
    metadata is ignored: class names are a convenience, not a requirement.
    """
    hf = hf_metadata(schema)
    if hf is None:
        return None
    features = hf["info"]["features"]
    candidates = [features.get(label_column)] + list(features.values())
    for feature in candidates:
        if (
            isinstance(feature, dict)
            and isinstance(feature.get("names"), list)
            and feature.get("_type", "ClassLabel") == "ClassLabel"
        ):
            return [str(name) for name in feature["names"]]
    return None


def hf_schema(
    image_column: str, label_column: str, label_type: pa.DataType, class_names: list[str] | None
) -> pa.Schema:
    """Schema in the Hugging Face image layout, with ``huggingface`` metadata."""
    if class_names is not None:
        label_feature: dict[str, Any] = {"names": list(class_names), "_type": "ClassLabel"}
    else:
        label_feature = {"dtype": str(label_type), "_type": "Value"}
    features = {image_column: {"_type": "Image"}, label_column: label_feature}
    metadata = {HF_METADATA_KEY: json.dumps({"info": {"features": features}}).encode()}
    return pa.schema([(image_column, HF_IMAGE_TYPE), (label_column, label_type)], metadata=metadata)


class ParquetSource(Source):
    """One Parquet file, or several with one schema read in name order."""

    def __init__(
        self,
        uri: str,
        fs: fsspec.AbstractFileSystem,
        paths: list[str],
        data: DataConfig,
        *,
        kind: str,
    ) -> None:
        self.kind = kind
        self._paths = paths
        schema: pa.Schema | None = None
        num_rows = 0
        for path in paths:
            meta = self._metadata(fs, path, uri)
            file_schema = meta.schema.to_arrow_schema()
            if schema is None:
                schema = file_schema
            elif not file_schema.equals(schema, check_metadata=False):
                name = posixpath.basename(path)
                first = posixpath.basename(paths[0])
                raise InputError(
                    f"parquet file {name!r} in {uri} has a different schema from {first!r}: "
                    f"{_schema_difference(schema, file_schema)}"
                )
            num_rows += meta.num_rows
        assert schema is not None
        if num_rows == 0:
            raise InputError(f"source {uri} has no rows")
        super().__init__(
            uri=uri,
            num_rows=num_rows,
            schema=schema,
            class_names=class_names_from_metadata(schema, data.label_column),
            filesystem=fs,
        )

    @staticmethod
    def _metadata(fs: fsspec.AbstractFileSystem, path: str, uri: str) -> pq.FileMetaData:
        try:
            if fs.size(path) == 0:
                raise InputError(f"source {uri} has no rows (file {path} is empty)")
            with _open_parquet(fs, path) as pf:
                return pf.metadata
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
            raise InputError(f"cannot read parquet file {path}: {_one_line(exc)}") from None

    def iter_located_batches(self, batch_rows: int) -> Iterator[tuple[pa.RecordBatch, str]]:
        for path in self._paths:
            base = posixpath.dirname(path)
            with _open_parquet(self.filesystem, path) as pf:
                for batch in pf.iter_batches(batch_size=batch_rows):
                    yield batch.replace_schema_metadata(self.schema.metadata), base

    def _files(self) -> list[tuple[str, str]]:
        return [(posixpath.basename(p), p) for p in self._paths]


@contextmanager
def _open_parquet(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[pq.ParquetFile]:
    """``pq.ParquetFile`` on a native path for local files (Arrow's own fast reader),
    else on an fsspec file object."""
    if isinstance(fs, LocalFileSystem):
        with pq.ParquetFile(path) as pf:
            yield pf
        return
    with fs.open(path, "rb") as fh, pq.ParquetFile(fh) as pf:
        yield pf


def _schema_difference(expected: pa.Schema, got: pa.Schema) -> str:
    missing = [n for n in expected.names if n not in got.names]
    extra = [n for n in got.names if n not in expected.names]
    if missing or extra:
        return f"missing columns {missing}, extra columns {extra}"
    for name in expected.names:
        if expected.field(name).type != got.field(name).type:
            return (
                f"column {name!r} is {got.field(name).type}, expected {expected.field(name).type}"
            )
    return f"columns in a different order: {got.names}, expected {expected.names}"


class ImageFolderSource(Source):
    """Images under ``root/<class>/...``; the label is the index of the sorted class name.

    Hidden and private entries (:func:`ignored_name`) are left out at every level. A link to
    a file outside the root is never read unless ``data.allow_external_paths``, nor is a
    FIFO or other special file: its row has null bytes, and the read stage refuses or fails
    to read its path (quarantined, unreadable).
    """

    kind = "image_folder"

    def __init__(
        self, uri: str, fs: fsspec.AbstractFileSystem, root: str, data: DataConfig
    ) -> None:
        self._root = root.rstrip("/")
        self._image_column = data.image_column
        self._label_column = data.label_column
        classes = sorted(
            name
            for p in fs.ls(self._root, detail=False)
            if not ignored_name(name := posixpath.basename(p.rstrip("/"))) and fs.isdir(p)
        )
        files: list[tuple[str, int]] = []
        for index, name in enumerate(classes):
            found = (posixpath.relpath(p, self._root) for p in fs.find(f"{self._root}/{name}"))
            images = sorted(
                rel
                for rel in found
                if posixpath.splitext(rel)[1].lower() in IMAGE_EXTENSIONS
                and not any(ignored_name(part) for part in rel.split("/"))
            )
            files.extend((rel, index) for rel in images)
        if not files:
            raise InputError(
                f"source {uri} has no rows: no .parquet files and no images under root/<class>/"
            )
        self._entries = files
        self._outside = {
            rel
            for rel, _ in files
            if (not data.allow_external_paths and _links_out(fs, self._root, rel))
            or special_file(fs, posixpath.join(self._root, rel))
        }
        super().__init__(
            uri=uri,
            num_rows=len(files),
            schema=hf_schema(data.image_column, data.label_column, pa.int64(), classes),
            class_names=classes,
            filesystem=fs,
        )

    def iter_located_batches(self, batch_rows: int) -> Iterator[tuple[pa.RecordBatch, str]]:
        for start in range(0, len(self._entries), batch_rows):
            chunk = self._entries[start : start + batch_rows]
            payload = [
                None
                if rel in self._outside
                else self.filesystem.cat_file(posixpath.join(self._root, rel))
                for rel, _ in chunk
            ]
            image = pa.StructArray.from_arrays(
                [pa.array(payload, pa.binary()), pa.array([rel for rel, _ in chunk], pa.string())],
                fields=list(HF_IMAGE_TYPE),
            )
            label = pa.array([index for _, index in chunk], pa.int64())
            yield pa.RecordBatch.from_arrays([image, label], schema=self.schema), self._root

    def _files(self) -> list[tuple[str, str | None]]:
        return [
            (rel, None if rel in self._outside else posixpath.join(self._root, rel))
            for rel, _ in self._entries
        ]


def _links_out(fs: fsspec.AbstractFileSystem, root: str, rel: str) -> bool:
    """Whether ``root/rel`` is, on a local filesystem, a link to a file outside ``root``."""
    if not isinstance(fs, LocalFileSystem):
        return False
    real_root = os.path.realpath(root)
    real = os.path.realpath(posixpath.join(root, rel))
    return os.path.commonpath([real_root, real]) != real_root


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
        try:
            with fs.open(path, "rb") as fh, zipfile.ZipFile(fh) as archive:
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
                names = None
                for key in ("class_names", "names"):
                    if key in members:
                        with archive.open(members[key]) as member:
                            names = [str(v) for v in np.load(member, allow_pickle=False)]
                        break
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile / numpy raise many types
            raise InputError(f"cannot read npz source {uri}: {_one_line(exc)}") from None
        self._shape, self._fortran, self._dtype = shape, fortran, dtype
        self._layout = _npz_layout(shape, uri)
        if not (
            np.issubdtype(dtype, np.integer)
            or np.issubdtype(dtype, np.floating)
            or dtype == np.bool_
        ):
            raise InputError(
                f"npz source {uri}: array 'x' has dtype {dtype}; expected uint8 or float"
            )
        if y.ndim != 1 or len(y) != shape[0]:
            raise InputError(
                f"npz source {uri}: array 'y' has shape {y.shape}; expected ({shape[0]},) like x"
            )
        if shape[0] == 0:
            raise InputError(f"source {uri} has no rows")
        self._labels = pa.array(y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y)
        self._image_column = data.image_column
        self._scale = 1.0
        if np.issubdtype(dtype, np.floating):
            peak = max((float(np.nanmax(b)) for b in self._x_blocks(4096) if b.size), default=0.0)
            self._scale = 255.0 if peak <= 1.0 else 1.0
        super().__init__(
            uri=uri,
            num_rows=int(shape[0]),
            schema=hf_schema(data.image_column, data.label_column, self._labels.type, names),
            class_names=names,
            filesystem=fs,
        )

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
