"""One run at a time in an output directory: an OS file lock that dies with its process.

``OUT/.sanitize.lock`` is locked with ``flock``; the kernel releases the lock when the
holding process ends in any way, SIGKILL included, so a killed run never leaves a stale
lock behind, only the file, which the next run locks again. The file holds the holder's
pid, for the message a refused run prints. A run removes the file when it ends.

The lock is re-entrant within one thread, so the CLI can take it before Prefect starts (a
second run is refused at once) and the flow it runs can take it again.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sanitize.errors import OutputError

LOCK_FILE = ".sanitize.lock"

_held: dict[Path, tuple[int, int, int]] = {}  # directory -> (fd, owning thread, depth)
_guard = threading.Lock()


class RunLockedError(OutputError):
    """Another run holds the output directory."""

    def __init__(self, out: Path, holder: str):
        self.out = out
        self.holder = holder
        super().__init__(
            f"output directory {out} is in use by another sanitize run ({holder}); "
            "wait for it to finish or choose another --out"
        )


@contextmanager
def run_lock(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the lock of output directory ``out`` (created if missing) for the block.

    Raises
    ------
    RunLockedError
        At once, without waiting, when another process or thread holds it.
    """
    out = Path(out).resolve()
    me = threading.get_ident()
    with _guard:
        if out in _held:
            fd, owner, depth = _held[out]
            if owner != me:
                raise RunLockedError(out, f"pid {os.getpid()}, another thread")
            _held[out] = (fd, owner, depth + 1)
        else:
            _held[out] = (_acquire(out), me, 1)
    try:
        yield out
    finally:
        with _guard:
            fd, owner, depth = _held[out]
            if depth > 1:
                _held[out] = (fd, owner, depth - 1)
            else:
                del _held[out]
                _release(out, fd)


def _acquire(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            raise RunLockedError(out, f"pid {holder}" if holder else "pid unknown") from None
        # The holder before us may have removed the file between our open and our lock:
        # a lock on a file no longer at `path` guards nothing, so start again.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _release(out: Path, fd: int) -> None:
    # Removed while still locked, so no other run can lock this file after us and then
    # find a new one at the path.
    (out / LOCK_FILE).unlink(missing_ok=True)
    os.close(fd)
