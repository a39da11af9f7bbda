"""The image side of the read stage: an image column's cells, fetching their bytes (image
paths resolved and refused here), probing the working size and mode from the first images,
and decoding in threads or in worker processes (:func:`decode_workers`)."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

from sanitize.config import MAX_WORKING_SIZE, MIN_IMAGE_SIZE
from sanitize.data.decode import PathRefused, decode_many, image_bytes, probe_image
from sanitize.data.source_base import Source
from sanitize.errors import ConfigError

log = logging.getLogger("sanitize")

DECODE_THREADS = min(8, os.cpu_count() or 1)
# Images of the first batch whose headers set the working size and mode.
PROBED_IMAGES = 256
DECODE_WORKERS_ENV = "SANITIZE_DECODE_WORKERS"
# Rule: the fork server starts in a few seconds (a fresh interpreter importing sanitize);
# one CPU decodes about 5,000 CIFAR-10 images a second, so below 20,000 rows the start-up
# would eat the gain. Threads do not help with decoding small images: Pillow's per-image
# Python work holds the GIL (1 thread 5,600 rows/s, 2 threads 5,500). On 2 CPUs processes
# did not pay either (40,000 CIFAR-10 rows: 3.4 s in threads, 3.7 s with 2 warm workers,
# 6.5 s with the fork server's start): the parent's Parquet reading and fetching needs a
# CPU too, so processes start at 4 CPUs.
DECODE_PROCESS_MIN_ROWS = 20_000
DECODE_PROCESS_MIN_CPUS = 4
MAX_DECODE_WORKERS = 8


def image_cells(column: pa.Array) -> list[Any]:
    """Cells of an image column as Python values (HF structs as dicts)."""
    if not pa.types.is_struct(column.type):
        return column.to_pylist()
    # flatten() folds the struct's own null bitmap into its children.
    fields = dict(zip((f.name for f in column.type), column.flatten(), strict=True))
    raw = fields["bytes"].to_pylist() if "bytes" in fields else [None] * len(column)
    paths = fields["path"].to_pylist() if "path" in fields else [None] * len(column)
    return [{"bytes": b, "path": p} for b, p in zip(raw, paths, strict=True)]


def fetcher(
    source: Source, base_dir: str, allow_external: bool, refused: list[tuple[int, str]]
) -> Callable[[int, Any], bytes | None]:
    """fetch(row, cell): a cell's bytes, None when unreadable; refused paths go to ``refused``."""

    def fetch(row: int, cell: Any) -> bytes | None:
        try:
            return image_bytes(
                cell,
                filesystem=source.filesystem,
                base_dir=base_dir,
                allow_external=allow_external,
            )
        except PathRefused as exc:
            refused.append((row, str(exc)))
            return None
        except ValueError:
            return None

    return fetch


def probe_payloads(payloads: list[bytes | None]) -> list[tuple[int, int]]:
    """(channels, side) of the first ``PROBED_IMAGES`` readable images, from their headers."""
    probes: list[tuple[int, int]] = []
    for payload in payloads:
        if payload is None:
            continue
        try:
            probes.append(probe_image(payload))
        except ValueError:
            continue
        if len(probes) == PROBED_IMAGES:
            break
    return probes


def working_shape(probes: list[tuple[int, int]], *, warn: bool = True) -> tuple[int, int] | None:
    """(channels, side) every image is decoded to, from the probes of the first images.

    The mode most of them have, and their median side within [``MIN_IMAGE_SIZE``,
    ``MAX_WORKING_SIZE``]: one odd first image sets nothing, and a set of large images
    costs what a 64 x 64 one does. None when no image could be probed.
    """
    if not probes:
        return None
    channels = Counter(c for c, _ in probes).most_common(1)[0][0]
    sides = np.array([side for _, side in probes])
    size = int(min(max(int(np.median(sides)), MIN_IMAGE_SIZE), MAX_WORKING_SIZE))
    far = int(np.sum((sides > 2 * size) | (2 * sides < size)))
    if far and warn:
        log.warning(
            "%d of the first %d images are far from the working size %dx%d (sides %d to %d); "
            "every image is resized to it (set data.image_size to choose another)",
            far,
            len(sides),
            size,
            size,
            int(sides.min()),
            int(sides.max()),
        )
    return channels, size


def decode_workers(n_rows: int) -> int:
    """Worker processes that decode a source of ``n_rows`` rows; 0 decodes in this process.

    ``$SANITIZE_DECODE_WORKERS`` sets the number (0 turns processes off). Otherwise:
    min(8, usable CPUs) from ``DECODE_PROCESS_MIN_ROWS`` rows on, when there are
    ``DECODE_PROCESS_MIN_CPUS`` CPUs or more; never inside a daemonic process (a Dask
    worker), which may not have children.
    """
    if multiprocessing.current_process().daemon:
        return 0
    raw = os.environ.get(DECODE_WORKERS_ENV)
    if raw:
        try:
            return max(0, int(raw))
        except ValueError:
            raise ConfigError(
                f"{DECODE_WORKERS_ENV} must be an integer >= 0, got {raw!r}"
            ) from None
    cpus = len(os.sched_getaffinity(0))
    if cpus < DECODE_PROCESS_MIN_CPUS or n_rows < DECODE_PROCESS_MIN_ROWS:
        return 0
    return min(MAX_DECODE_WORKERS, cpus)


@contextlib.contextmanager
def decode_executor(workers: int) -> Iterator[Executor | None]:
    """A pool of ``workers`` decoding processes; None when ``workers`` is 0."""
    if workers < 1:
        yield None
        return
    # forkserver, not fork: the stage may run in a thread of a process that holds locks
    # (Prefect's task runner, torch's thread pools), and a forked child would inherit them.
    context = multiprocessing.get_context("forkserver")
    # Imported once by the fork server, shared by the workers it forks.
    context.set_forkserver_preload(["sanitize.data.decode"])
    with ProcessPoolExecutor(workers, mp_context=context) as executor:
        yield executor


def decode_batch(
    executor: Executor, parts: int, payloads: list[bytes | None], size: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``payloads`` in ``parts`` chunks on ``executor``: pixels (n, C, S, S), ok mask."""
    if not payloads:
        return np.zeros((0, channels, size, size), dtype=np.uint8), np.zeros(0, dtype=bool)
    step = max(1, -(-len(payloads) // parts))
    chunks = [payloads[i : i + step] for i in range(0, len(payloads), step)]
    results = list(executor.map(decode_many, chunks, repeat(size), repeat(channels)))
    return (
        np.concatenate([pixels for pixels, _ in results]),
        np.concatenate([good for _, good in results]),
    )
