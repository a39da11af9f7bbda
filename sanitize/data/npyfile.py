"""Stage arrays on disk (``.npy``) written and read without their pages piling up in RSS.

A page of a memory-mapped file that a process has touched counts in its resident set until
the mapping is dropped, even when it is only cached file data. Writing a whole
``images.npy`` or ``features.npy`` through ``np.lib.format.open_memmap``, or embedding
every row of a mapped ``images.npy``, would therefore show the whole file in the process's
RSS: memory that grows with the number of rows. :class:`NpyWriter` writes blocks with
ordinary file writes (the data go to the page cache, not to this process), and
:func:`release_pages` drops the pages a reader has touched so far.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np


class NpyWriter:
    """A ``.npy`` file of a fixed shape, written block by block; unwritten rows are zero.

    Parameters
    ----------
    path : Path
        Created (or truncated) at once, full size; ``np.load`` reads it after :meth:`close`.
    shape : tuple of int
        Shape of the whole array; blocks are runs of rows along the first axis.
    dtype : numpy dtype
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed by close() / __exit__
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self._fh, {**header, "shape": self.shape})
        self._data_start = self._fh.tell()
        self._fh.truncate(self._data_start + self.shape[0] * self._row_bytes)  # sparse zeros

    def write(self, start: int, block: np.ndarray) -> None:
        """Write ``block`` (shape ``(k, *shape[1:])``) as rows ``[start, start + k)``."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or not 0 <= start <= self.shape[0] - len(block):
            raise ValueError(f"block of shape {block.shape} at row {start} outside {self.shape}")
        self._fh.seek(self._data_start + start * self._row_bytes)
        self._fh.write(memoryview(block).cast("B"))

    def write_rows(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Write ``values[i]`` to row ``rows[i]``, one file write a run of consecutive rows."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], np.asarray(values)[order]
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run, block in zip(np.split(rows, breaks), np.split(values, breaks), strict=True):
            self.write(int(run[0]), block)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def release_pages(array: np.ndarray) -> None:
    """Drop the pages of a read-only memory map that this process has touched.

    The data stay in the page cache (a later read faults them back in); only this process's
    resident set shrinks. A no-op for arrays that are not memory maps.
    """
    # np.memmap keeps its mmap object in ``_mmap`` (shared by its slices); numpy has no
    # public handle for it.
    handle = getattr(array, "_mmap", None)
    # Read-only maps only: on a copy-on-write map, MADV_DONTNEED would discard changes.
    read_only = getattr(array, "mode", None) == "r"
    if read_only and isinstance(handle, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)
