"""sanitize.report.progress: stage tracking, the terminal line, and train_model's step reports."""

from __future__ import annotations

import io
import logging
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from rich.console import Console

from sanitize.config import DataConfig, SanitizeConfig
from sanitize.data.describe import describe_source
from sanitize.model import NetSpec, train_model
from sanitize.pipeline.paths import RunPaths
from sanitize.pipeline.stages import read_stage
from sanitize.report import progress
from tests.conftest import SAMPLE_SOURCE


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


def _terminal() -> tuple[progress.TerminalProgress, io.StringIO]:
    stream = io.StringIO()
    console = Console(file=stream, width=200, force_terminal=True, color_system=None)
    return progress.TerminalProgress(console, refresh_per_second=20), stream


def test_terminal_rows_show_bar_counts_rate_eta_and_note():
    term, _ = _terminal()
    term.announced("starting Prefect")
    assert any("starting Prefect" in row for row in term.rows())
    term.started("bootstrap", 1000, "rows")
    assert not any("starting Prefect" in row for row in term.rows())  # a stage started
    term.advanced("bootstrap", 100, "")
    time.sleep(0.2)
    term.advanced("bootstrap", 500, "epoch 1/2")
    [row] = term.rows()
    assert row.split()[1] == "bootstrap"
    assert "500/1,000 rows" in row and "rows/s" in row and "epoch 1/2" in row
    assert "eta 0:00:0" in row
    term.started("embed", None, "rows")
    assert len(term.rows()) == 2
    term.finished("bootstrap")
    term.finished("embed")
    assert term.rows() == []
    term.close()


def test_training_progress_ends_where_training_stops():
    fixed = progress.TrainingProgress(epochs=4, rows=100, n_classes=10, stop_below=None)
    assert (fixed.total, fixed.unit) == (400, "rows")
    assert fixed.step_done(60) == 60
    fixed.epoch_done(1.0)
    assert fixed.done == 100

    auto = progress.TrainingProgress(epochs=60, rows=100, n_classes=10, stop_below=0.2)
    assert (auto.total, auto.unit) == (100, "%")
    seen = []
    for loss in (2.0, 1.2, 0.8, 0.5, 0.3, 0.19):  # stops after the epoch below 0.2
        auto.step_done(100)
        auto.epoch_done(loss)
        seen.append(auto.done)
    assert seen == sorted(seen) and seen[-1] == 100 and seen[-2] < 100

    budget = progress.TrainingProgress(epochs=3, rows=100, n_classes=10, stop_below=0.01)
    for _ in range(3):  # the loss never gets there: the epoch budget ends it
        budget.step_done(100)
        budget.epoch_done(1.5)
    assert budget.done == 100


def test_log_handler_prints_above_the_live_display():
    term, stream = _terminal()
    logger = logging.getLogger("sanitize.test_progress")
    logger.addHandler(term.handler())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    term.started("embed", 10, "rows")
    logger.info("a log line [not markup]")
    term.close()
    assert "a log line [not markup]\n" in stream.getvalue()


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
