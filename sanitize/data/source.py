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

This module detects the kind and opens the source; each kind lives in its own module
(:mod:`sanitize.data.parquet_source`, :mod:`sanitize.data.image_folder`,
:mod:`sanitize.data.npz_source`), the shared interface in :mod:`sanitize.data.source_base`
and the Hugging Face layout in :mod:`sanitize.data.hf_layout`. Their public names are
re-exported here.
"""

from __future__ import annotations

import os
import posixpath

import fsspec

from sanitize.config import DataConfig
from sanitize.data.hf_layout import (
    HF_IMAGE_TYPE,
    HF_METADATA_KEY,
    class_names_from_metadata,
    hf_metadata,
    hf_schema,
    malformed_hf_metadata,
)
from sanitize.data.image_folder import IMAGE_EXTENSIONS, ImageFolderSource
from sanitize.data.npz_source import NpzSource
from sanitize.data.parquet_source import ParquetSource, parquet_files
from sanitize.data.source_base import Source, ignored_name, one_line
from sanitize.errors import InputError

__all__ = [
    "HF_IMAGE_TYPE",
    "HF_METADATA_KEY",
    "IMAGE_EXTENSIONS",
    "DataConfig",
    "ImageFolderSource",
    "NpzSource",
    "ParquetSource",
    "Source",
    "class_names_from_metadata",
    "hf_metadata",
    "hf_schema",
    "ignored_name",
    "malformed_hf_metadata",
    "open_source",
    "parquet_files",
]

# Shown first in the "unknown URI scheme" message; the rest follow in alphabetical order.
_COMMON_PROTOCOLS = ("file", "memory", "s3", "gs", "gcs", "az", "abfs", "http", "https", "hf")


def open_source(uri: str | os.PathLike[str], data: DataConfig) -> Source:
    """Open a source and detect its kind; nothing but metadata is read.

    In ``data``, the label column names the class names looked up in the metadata, and image
    folders and ``.npz`` files present their columns under the configured image and label
    names (``image`` and ``label`` by default).

    Parameters
    ----------
    uri : str or path-like
        A local path or an fsspec URI (``file://``, ``memory://``, ``s3://``, ...).
    data : DataConfig
        Column names: for the metadata's class names and folder / ``.npz`` columns (see above).

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
        raise InputError(f"cannot access source {uri}: {one_line(exc)}") from None
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
        raise InputError(f"cannot open {uri}: {one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many types
        raise InputError(f"cannot open {uri}: {one_line(exc)}") from None
