"""The ``parquet`` and ``parquet_dir`` source kinds: one Parquet file, or the top-level
``.parquet`` files of a directory, with one schema, read in name order."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from contextlib import contextmanager

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from sanitize.config import DataConfig
from sanitize.data.hf_layout import class_names_from_metadata
from sanitize.data.source_base import Source, ignored_name, one_line
from sanitize.errors import InputError


def parquet_files(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The ``.parquet`` files a directory source reads: its top level's, in name order."""
    return sorted(
        p
        for p in fs.ls(path, detail=False)
        if p.endswith(".parquet") and not ignored_name(posixpath.basename(p)) and fs.isfile(p)
    )


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
            raise InputError(f"cannot read parquet file {path}: {one_line(exc)}") from None

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
