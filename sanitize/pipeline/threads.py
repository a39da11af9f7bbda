"""A fixed number of CPU threads inside every stage, so results do not depend on where it runs.

Float sums in torch's CPU kernels and in BLAS are split across threads, and the split
changes the rounding: on the sample digits, one thread against two gave a different
bootstrap model and different scores. A Dask worker starts with ``OMP_NUM_THREADS=1``, a
laptop with all its cores, so the thread count is fixed by the process that plans the run
and applied by :func:`pinned_threads` wherever the stage runs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits

from sanitize.errors import ConfigError

THREADS_ENV = "SANITIZE_NUM_THREADS"
DEFAULT_MAX_THREADS = 4

# torch's and BLAS's thread counts are process-wide: two stages running at once in one
# process (threads of a Dask worker) would change each other's, so they take turns.
_STAGE_LOCK = threading.Lock()


def stage_threads() -> int:
    """Threads a stage uses: ``$SANITIZE_NUM_THREADS``, else min(4, CPUs this process may use).

    Rule for the default: past four threads the small bootstrap network gains little, and a
    cap keeps results equal between machines with four cores or more.
    """
    raw = os.environ.get(THREADS_ENV)
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(f"{THREADS_ENV} must be an integer >= 1, got {raw!r}")
        return value
    return max(1, min(DEFAULT_MAX_THREADS, len(os.sched_getaffinity(0))))


@contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch and BLAS/OpenMP threads, one block a process at a time."""
    with _STAGE_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            with threadpool_limits(limits=n):
                yield
        finally:
            torch.set_num_threads(before)
