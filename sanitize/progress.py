"""Progress of the long stages, shown by whoever listens.

Stages report their work through :func:`track`; nothing is shown, and next to nothing is
spent, unless a listener is installed with :func:`listening`. The ``sanitize`` command
installs a :class:`TerminalProgress` when stderr is a terminal. The listener is process-wide
rather than per thread because Prefect runs each task in a worker thread of the process that
runs the flow; tasks that run in other processes (a Dask or Ray cluster) report nothing here.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TextIO


class Listener(Protocol):
    """Receives the progress of stages; calls may come from several threads."""

    def started(self, stage: str, total: int | None, unit: str) -> None: ...

    def advanced(self, stage: str, done: int, note: str) -> None: ...

    def finished(self, stage: str) -> None: ...


_listener: Listener | None = None
_listener_lock = threading.Lock()


@contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    """Send every stage's progress to ``listener`` for the duration of the block."""
    global _listener
    with _listener_lock:
        previous, _listener = _listener, listener
    try:
        yield listener
    finally:
        with _listener_lock:
            _listener = previous


class Tracker:
    """One stage's progress: :meth:`advance` by the units done, :meth:`note` a status text."""

    def __init__(self, stage: str, total: int | None, listener: Listener | None) -> None:
        self.stage = stage
        self.total = total
        self.done = 0
        self._note = ""
        self._listener = listener

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._listener is not None:
            self._listener.advanced(self.stage, self.done, self._note)

    def note(self, text: str) -> None:
        self._note = text
        if self._listener is not None:
            self._listener.advanced(self.stage, self.done, text)


@contextmanager
def track(stage: str, total: int | None = None, unit: str = "rows") -> Iterator[Tracker]:
    """Report a stage to the installed listener, if any, while the block runs.

    Parameters
    ----------
    stage : str
        Name shown (``"bootstrap"``, ``"embed"``, ...).
    total : int, optional
        Units the stage will do (rows, or rows times epochs for training); None when unknown.
    unit : str, default="rows"
        What :meth:`Tracker.advance` counts; rates are shown in ``unit``/s.
    """
    listener = _listener
    if listener is not None:
        listener.started(stage, total, unit)
    try:
        yield Tracker(stage, total, listener)
    finally:
        if listener is not None:
            listener.finished(stage)


# --- terminal rendering -----------------------------------------------------------------------


@dataclass
class _Stage:
    total: int | None
    unit: str
    start: float
    done: int = 0
    note: str = ""


class TerminalProgress:
    """A live status line on a terminal, with the log lines printed above it.

    The line reads ``stage [####......] done/total unit  rate unit/s  elapsed  note``; it is
    redrawn in place (carriage return, erase line) at most every ``interval`` seconds, and
    every ``tick`` seconds while a stage runs so the elapsed time moves during stages that
    report no steps. :meth:`handler` gives a logging handler that writes each record on its
    own line above the live line.

    Parameters
    ----------
    stream : text stream
        A terminal (``sys.stderr``).
    interval : float, default=0.1
        Least seconds between two redraws caused by progress.
    tick : float or None, default=0.5
        Seconds between redraws while nothing reports; None: no background thread.
    columns : int, optional
        Width the line is cut to; default: the terminal's, read at every redraw.
    clock : callable, default=time.monotonic
    """

    BAR = 20

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = 0.1,
        tick: float | None = 0.5,
        columns: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.columns = columns
        self.interval = interval
        self.clock = clock
        self._stages: dict[str, _Stage] = {}
        self._current: str | None = None
        self._drawn = False
        self._last_draw = 0.0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if tick is not None:
            self._ticker = threading.Thread(target=self._tick, args=(tick,), daemon=True)
            self._ticker.start()

    def close(self) -> None:
        """Stop the background redraws and erase the live line."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._erase()
            self.stream.flush()

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Listener
    def started(self, stage: str, total: int | None, unit: str) -> None:
        with self._lock:
            self._stages[stage] = _Stage(total, unit, self.clock())
            self._current = stage
            self._draw()

    def advanced(self, stage: str, done: int, note: str) -> None:
        with self._lock:
            state = self._stages.get(stage)
            if state is None:
                return
            state.done, state.note = done, note
            self._current = stage
            if self.clock() - self._last_draw >= self.interval:
                self._draw()

    def finished(self, stage: str) -> None:
        with self._lock:
            self._stages.pop(stage, None)
            if self._current == stage:
                self._current = next(reversed(self._stages), None)
            self._erase()
            self._draw()

    def write_line(self, text: str) -> None:
        """Print ``text`` on its own line above the live line."""
        with self._lock:
            self._erase()
            self.stream.write(text + "\n")
            self._draw()

    def handler(self) -> logging.Handler:
        """A logging handler that prints through :meth:`write_line`."""
        return _LineHandler(self)

    def line(self, stage: str) -> str:
        """The status text of a running stage (without control characters)."""
        state = self._stages[stage]
        elapsed = max(self.clock() - state.start, 0.0)
        parts = [f"{stage:<11}"]
        if state.total:
            filled = min(self.BAR, int(self.BAR * state.done / state.total))
            parts.append("[" + "#" * filled + "." * (self.BAR - filled) + "]")
            parts.append(f"{state.done:,}/{state.total:,} {state.unit}")
        elif state.done:
            parts.append(f"{state.done:,} {state.unit}")
        if state.done and elapsed > 0:
            parts.append(f"{state.done / elapsed:,.0f} {state.unit}/s")
        parts.append(f"{elapsed:.1f} s")
        if state.note:
            parts.append(state.note)
        return "  ".join(parts)

    def _draw(self) -> None:
        self._last_draw = self.clock()
        if self._current is None or self._current not in self._stages:
            return
        width = (self.columns or shutil.get_terminal_size((80, 24)).columns) - 1
        self.stream.write("\r\x1b[K" + self.line(self._current)[:width])
        self.stream.flush()
        self._drawn = True

    def _erase(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False

    def _tick(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            with self._lock:
                if self._current is not None:
                    self._draw()


class _LineHandler(logging.Handler):
    def __init__(self, progress: TerminalProgress) -> None:
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress.write_line(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)
