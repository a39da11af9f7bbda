"""What every source kind shares: the :class:`Source` interface and its content
fingerprint, the names a directory source leaves out, and the one-line error text."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator

import fsspec
import pyarrow as pa

_CHUNK_BYTES = 1 << 20
_IGNORED_PREFIXES = (".", "_")


def ignored_name(name: str) -> bool:
    """Whether a directory source (and the ingest flow's landing location) leaves out the
    file or folder ``name``: hidden (``.x``: ``.ipynb_checkpoints``, macOS's ``._x.png``) or
    private (``_x``: ``__MACOSX``, Spark's ``_SUCCESS``, a writer's ``_tmp.parquet``)."""
    return name.startswith(_IGNORED_PREFIXES)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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
