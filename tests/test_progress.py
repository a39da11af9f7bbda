"""sanitize.progress: stage tracking, the terminal line, and train_model's step reports."""

from __future__ import annotations

import io
import logging
import threading

import numpy as np
import pyarrow.parquet as pq
import torch

from sanitize import progress
from sanitize.config import DataConfig, SanitizeConfig
from sanitize.data.describe import describe_source
from sanitize.model import NetSpec, train_model
from sanitize.paths import RunPaths
from sanitize.stages import read_stage
from tests.conftest import SAMPLE_SOURCE


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def started(self, stage, total, unit):
        self.events.append(("started", stage, total, unit))

    def advanced(self, stage, done, note):
        self.events.append(("advanced", stage, done, note))

    def finished(self, stage):
        self.events.append(("finished", stage))


def test_track_reports_to_the_listener_only_while_installed():
    recorder = _Recorder()
    with progress.track("early", total=3) as bar:  # nobody listens: a no-op
        bar.advance(3)
    with progress.listening(recorder), progress.track("embed", total=10) as bar:
        bar.advance(4)
        bar.note("half")
        bar.advance(6)
    with progress.track("late") as bar:
        bar.advance()
    assert recorder.events == [
        ("started", "embed", 10, "rows"),
        ("advanced", "embed", 4, ""),
        ("advanced", "embed", 4, "half"),
        ("advanced", "embed", 10, "half"),
        ("finished", "embed"),
    ]


def test_a_failing_stage_still_finishes():
    recorder = _Recorder()
    with progress.listening(recorder):
        try:
            with progress.track("read"):
                raise ValueError("boom")
        except ValueError:
            pass
    assert recorder.events[-1] == ("finished", "read")


def test_terminal_line_shows_bar_counts_rate_and_note():
    clock, stream = _Clock(), io.StringIO()
    term = progress.TerminalProgress(stream, interval=0.0, tick=None, columns=200, clock=clock)
    term.started("bootstrap", 1000, "rows")
    clock.now += 2.0
    term.advanced("bootstrap", 500, "epoch 1/2")
    line = term.line("bootstrap")
    assert line.startswith("bootstrap ")
    assert "[##########..........]" in line and "500/1,000 rows" in line
    assert "250 rows/s" in line and "2.0 s" in line and "epoch 1/2" in line
    assert stream.getvalue().endswith("\r\x1b[K" + line)  # redrawn in place

    term.write_line("bootstrap epoch 1/2: done")  # a log line lands above the live line
    assert stream.getvalue().endswith("\r\x1b[Kbootstrap epoch 1/2: done\n\r\x1b[K" + line)
    term.finished("bootstrap")
    assert stream.getvalue().endswith("\r\x1b[K")  # nothing left on the line
    term.columns = 20
    term.started("embed", 10, "rows")
    assert stream.getvalue().endswith("\r\x1b[K" + term.line("embed")[:19])  # cut to the width
    term.close()


def test_terminal_redraws_are_throttled():
    clock, stream = _Clock(), io.StringIO()
    term = progress.TerminalProgress(stream, interval=0.5, tick=None, clock=clock)
    term.started("embed", 100, "rows")
    for done in range(1, 11):
        clock.now += 0.125
        term.advanced("embed", done, "")
    assert stream.getvalue().count("\r\x1b[K") == 3  # at start, then at 0.5 s and at 1.0 s
    term.close()


def test_ticker_moves_elapsed_time_without_progress():
    stream = io.StringIO()
    with progress.TerminalProgress(stream, tick=0.01) as term:
        term.started("read", None, "rows")
        drawn = threading.Event()
        for _ in range(200):
            if stream.getvalue().count("read") >= 3:
                drawn.set()
                break
            threading.Event().wait(0.01)
        assert drawn.is_set()


def test_log_handler_writes_through_the_live_line():
    stream = io.StringIO()
    term = progress.TerminalProgress(stream, interval=0.0, tick=None)
    logger = logging.getLogger("sanitize.test_progress")
    logger.addHandler(term.handler())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    term.started("embed", 10, "rows")
    logger.info("a log line")
    assert "\r\x1b[Ka log line\n\r\x1b[Kembed" in stream.getvalue()
    term.close()


def test_train_model_reports_every_step():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 1, 8, 8), dtype=np.uint8)
    labels = np.arange(40) % 2
    steps: list[int] = []
    train_model(
        images, labels, np.arange(40), NetSpec(channels=1, n_classes=2, width=4),
        epochs=2, batch_size=16, lr=1e-3, seed=0, device=torch.device("cpu"),
        on_step=steps.append,
    )  # fmt: skip
    assert steps == [16, 16, 8, 16, 16, 8]


def test_read_stage_reports_rows_as_batches_are_decoded(tmp_path):
    source = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(SAMPLE_SOURCE).slice(0, 300), source)
    recorder = _Recorder()
    with progress.listening(recorder):
        config = SanitizeConfig(data=DataConfig(batch_rows=64))
        result = read_stage(str(source), config, RunPaths.at(tmp_path / "out"))
    assert result["rows"] == 300
    assert recorder.events[0] == ("started", "read", 300, "rows")
    done = [e[2] for e in recorder.events if e[0] == "advanced"]
    assert done == [64, 128, 192, 256, 300]
    assert recorder.events[-1] == ("finished", "read")


def test_inspect_reports_rows_as_batches_are_decoded(tmp_path):
    source = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(SAMPLE_SOURCE).slice(0, 250), source)
    recorder = _Recorder()
    with progress.listening(recorder):
        described = describe_source(str(source), DataConfig(batch_rows=100))
    assert described.rows == 250
    assert recorder.events[0] == ("started", "inspect", 250, "rows")
    assert [e[2] for e in recorder.events if e[0] == "advanced"] == [100, 200, 250]
