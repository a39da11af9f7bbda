"""A source seen through a callback: every batch passes unchanged, and someone is told.

The read stage streams a source once; wrapping the source lets a caller follow that stream
(progress of the read, a sample of the rows for ``sanitize inspect``) without a second pass
and without the read stage knowing about it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa

from sanitize.data.source import Source

# on_batch(batch, base_dir, start): the batch, the directory its relative image paths
# resolve against, and the ordinal of its first row in the source.
BatchCallback = Callable[[pa.RecordBatch, str, int], None]


class ObservedSource(Source):
    """``inner``, with ``on_batch`` called once each batch has been consumed.

    The call comes when the consumer asks for the next batch (or finishes), so a progress
    count made from it counts rows the consumer is done with, not rows merely handed over.

    Parameters
    ----------
    inner : Source
    on_batch : callable(batch, base_dir, start)
    """

    def __init__(self, inner: Source, on_batch: BatchCallback) -> None:
        super().__init__(
            uri=inner.uri,
            num_rows=inner.num_rows,
            schema=inner.schema,
            class_names=inner.class_names,
            filesystem=inner.filesystem,
        )
        self.kind = inner.kind
        self._inner = inner
        self._on_batch = on_batch

    def iter_located_batches(self, batch_rows: int) -> Iterator[tuple[pa.RecordBatch, str]]:
        start = 0
        for batch, base_dir in self._inner.iter_located_batches(batch_rows):
            yield batch, base_dir
            self._on_batch(batch, base_dir, start)
            start += batch.num_rows

    def _files(self) -> list[tuple[str, str]]:
        return self._inner._files()
