"""Progress of the long stages, shown by whoever listens.

Stages report their work through :func:`track`; nothing is shown, and next to nothing is
spent, unless a listener is installed with :func:`listening`. The ``sanitize`` command
installs a :class:`TerminalProgress` when stderr is a terminal. The listener is process-wide
rather than per thread because Prefect runs each task in a worker thread of the process that
runs the flow; tasks that run in other processes (a Dask or Ray cluster) report nothing here.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


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

    def update(self, done: int) -> None:
        """Set the units done so far (for a stage whose progress is not a running count)."""
        self.done = done
        if self._listener is not None:
            self._listener.advanced(self.stage, self.done, self._note)


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


def announce(text: str) -> None:
    """Tell the installed listener, if any, what happens before the next stage starts."""
    listener = _listener
    if listener is not None and hasattr(listener, "announced"):
        listener.announced(text)


class TrainingProgress:
    """How far training is, on a scale whose end is where training stops.

    With a fixed epoch count the scale is rows seen of ``epochs x rows``. Training that stops
    once its mean loss falls below ``stop_below`` may end at any epoch, so the scale is in
    percent: the further of the epoch budget used and the way the loss has come from chance
    (log K, K classes) to ``stop_below`` on a log scale; either reaches 100 exactly when
    training stops.
    """

    def __init__(self, epochs: int, rows: int, n_classes: int, stop_below: float | None):
        self.epochs, self.rows, self.stop_below = epochs, rows, stop_below
        self.start_loss = math.log(max(n_classes, 2))
        self.unit = "%" if stop_below else "rows"
        self.total = 100 if stop_below else epochs * rows
        self._seen = 0
        self._loss_part = 0.0

    @property
    def done(self) -> int:
        if not self.stop_below:
            return self._seen
        budget = self._seen / (self.epochs * self.rows)
        return min(100, int(100 * max(budget, self._loss_part)))

    def step_done(self, rows: int) -> int:
        self._seen += rows
        return self.done

    def epoch_done(self, loss: float) -> None:
        self._seen = -(-self._seen // self.rows) * self.rows  # a whole epoch, skipped rows too
        if self.stop_below and loss > 0 and self.start_loss > self.stop_below:
            way = math.log(self.start_loss / max(loss, 1e-12))
            whole = math.log(self.start_loss / self.stop_below)
            self._loss_part = max(self._loss_part, min(1.0, way / whole))


# --- terminal rendering -----------------------------------------------------------------------


class _CountColumn(ProgressColumn):
    """``done/total unit`` (or ``37%`` for a stage counted in percent), then the rate."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        done = int(task.completed)
        if unit == "%":
            return Text(f"{done}%")
        if task.total:
            count = f"{done:,}/{int(task.total):,} {unit}"
        else:
            count = f"{done:,} {unit}" if done else ""
        if task.speed and done:
            count += f"  {task.speed:,.0f} {unit}/s"
        return Text(count)


class _RemainingColumn(TimeRemainingColumn):
    """``eta 0:01:23`` once a stage with a total has a rate to go by; blank before."""

    def render(self, task: Task) -> Text:
        if not task.total or task.time_remaining is None:
            return Text("")
        return Text("eta ") + super().render(task)


class TerminalProgress:
    """Live progress of the running stages on a terminal (rich), log lines printed above it.

    Each stage shows ``name [bar] done/total unit  rate  elapsed  eta  note``; a stage with
    no total shows a spinner. :meth:`announced` shows what happens before the first stage
    (the Prefect server's start) until a stage starts. :meth:`handler` gives a logging
    handler that prints each record on its own line above the live display.

    Parameters
    ----------
    console : rich.console.Console, optional
        Where to draw; default: stderr.
    refresh_per_second : float, default=4
        Redraws a second (the elapsed time moves during stages that report no steps).
    """

    def __init__(self, console: Console | None = None, *, refresh_per_second: float = 4) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<17}"),
            BarColumn(bar_width=20),
            _CountColumn(),
            TimeElapsedColumn(),
            _RemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=self.console,
            transient=True,
            refresh_per_second=refresh_per_second,
        )
        self._tasks: dict[str, TaskID] = {}
        self._waiting: TaskID | None = None
        self._lock = threading.RLock()
        self._progress.start()

    def close(self) -> None:
        """Stop the live display and erase it."""
        self._progress.stop()

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def announced(self, text: str) -> None:
        with self._lock:
            self._stop_waiting()
            self._waiting = self._progress.add_task(text, total=None, unit="", note="")

    def started(self, stage: str, total: int | None, unit: str) -> None:
        with self._lock:
            self._stop_waiting()
            self._tasks[stage] = self._progress.add_task(stage, total=total, unit=unit, note="")

    def advanced(self, stage: str, done: int, note: str) -> None:
        with self._lock:
            if stage in self._tasks:
                self._progress.update(self._tasks[stage], completed=done, note=note)

    def finished(self, stage: str) -> None:
        with self._lock:
            task = self._tasks.pop(stage, None)
            if task is not None:
                self._progress.remove_task(task)

    def write_line(self, text: str) -> None:
        """Print ``text`` on its own line above the live display."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def handler(self) -> logging.Handler:
        """A logging handler that prints through :meth:`write_line`."""
        return _LineHandler(self)

    def rows(self) -> list[str]:
        """The live display's lines as plain text (what a terminal shows now)."""
        plain = Console(file=io.StringIO(), width=self.console.width, color_system=None)
        plain.print(self._progress.make_tasks_table(self._progress.tasks))
        return [line.rstrip() for line in plain.file.getvalue().splitlines() if line.strip()]

    def _stop_waiting(self) -> None:
        if self._waiting is not None:
            self._progress.remove_task(self._waiting)
            self._waiting = None


class _LineHandler(logging.Handler):
    def __init__(self, progress: TerminalProgress) -> None:
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress.write_line(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)
