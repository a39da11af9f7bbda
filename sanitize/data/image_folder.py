"""The ``image_folder`` source kind: images under ``root/<class>/...``, presented in the
Hugging Face layout, with the path safety of a folder source (links out of the root and
special files are never read)."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from sanitize.config import DataConfig
from sanitize.data.decode import special_file
from sanitize.data.hf_layout import HF_IMAGE_TYPE, hf_schema
from sanitize.data.source_base import Source, ignored_name
from sanitize.errors import InputError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


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
