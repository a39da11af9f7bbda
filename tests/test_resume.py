"""Resume and locking with real processes: SIGKILL between stages, a second run refused.

One uninterrupted ``sanitize run --local`` is the reference; while it runs, a second run
into the same directory must be refused. Another run is SIGKILLed once its bootstrap
stage is marked done, started again, and must reuse what was finished and end with the
same bytes as the reference.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sanitize
from sanitize.config import BootstrapConfig, DecisionConfig, SanitizeConfig
from sanitize.pipeline.lock import LOCK_FILE
from sanitize.pipeline.paths import CLEAN_FILE, QUARANTINE_FILE, REPORT_JSON, SCORES_FILE
from sanitize.pipeline.plan import build_plan
from tests.conftest import REPO, SAMPLE_SOURCE

PARQUET_OUTPUTS = (CLEAN_FILE, QUARANTINE_FILE, SCORES_FILE)
THREADS = "1"  # the same in every process here: the thread count is part of the stage keys
CONFIG_TOML = "[bootstrap]\nepochs = 2\nclean_epochs = 2\nwidth = 8\n"
CONFIG = SanitizeConfig(bootstrap=BootstrapConfig(epochs=2, clean_epochs=2, width=8))


def test_plan_orders_stages_after_their_needs():
    from sanitize.pipeline.plan import build_plan

    plan = build_plan(CONFIG, 150_000, shard_rows=65_536)
    names = [stage.name for stage in plan]
    assert len(set(names)) == len(names) and names[0] == "read" and names[-1] == "export"
    for i, stage in enumerate(plan):
        assert set(stage.needs) <= set(names[:i])
    shards = [stage.rows for stage in plan if stage.kind == "embed_shard"]
    assert shards == [(0, 65_536), (65_536, 131_072), (131_072, 150_000)]
    detects = [stage for stage in plan if stage.kind == "detect"]
    assert [s.detector for s in detects] == list(CONFIG.detectors)
    sharing = {"activation_clustering", "spectral", "spectre"}
    for s in detects:
        shared = ("class_stats",) if s.detector in sharing else ()
        assert s.needs == ("embed", "clean_model", *shared)
    assert next(s for s in plan if s.name == "class_stats").needs == ("embed",)
    cbd_only = build_plan(CONFIG.replace(detectors=("cbd",)), 3000)
    assert "class_stats" not in [s.name for s in cbd_only]
    assert [s.name for s in build_plan(CONFIG, 3000)][:3] == ["read", "bootstrap", "embed"]


def _sanitize(out: Path, config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SANITIZE_NUM_THREADS": THREADS}
    command = [sys.executable, "-m", "sanitize_cli", "run", "--local", str(SAMPLE_SOURCE)]
    return subprocess.Popen(
        [*command, "--out", str(out), "--config", str(config), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended (status {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _holder(lock: Path) -> str:
    try:
        return lock.read_text().strip()
    except FileNotFoundError:
        return ""


def _report_without_timings(out: Path) -> dict:
    report = json.loads((out / REPORT_JSON).read_text())
    del report["created_at"], report["stage_timings"]
    return report


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "fast.toml"
    path.write_text(CONFIG_TOML)
    assert SanitizeConfig.from_toml(path) == CONFIG
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config_file):
    """An uninterrupted run, and a second run started into the same directory meanwhile."""
    out = tmp_path_factory.mktemp("reference")
    first = _sanitize(out, config_file)
    lock = out / LOCK_FILE
    _wait_for(lambda: _holder(lock), first, "the lock")
    second = _sanitize(out, config_file)
    _, second_err = second.communicate(timeout=120)
    first_still_running = first.poll() is None
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    return out, first, second, second_err, first_still_running


def test_second_run_into_the_same_directory_is_refused(reference):
    out, first, second, err, first_still_running = reference
    assert second.returncode == 4
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(out) in lines[0] and f"pid {first.pid}" in lines[0]
    assert first_still_running  # refused at once, not after waiting for the first run
    # Nothing corrupted: the first run finished with complete outputs, and the lock is gone.
    names = {p.name for p in out.iterdir()}
    assert {*PARQUET_OUTPUTS, REPORT_JSON} <= names
    assert not [name for name in names if name.startswith(".")]  # no lock, work or temp file
    assert json.loads((out / REPORT_JSON).read_text())["counts"]["rows"] == 3000


@pytest.fixture(scope="module")
def resumed(reference, tmp_path_factory, config_file):
    """A run SIGKILLed once bootstrap is done, then the same command again (keeping work)."""
    out = tmp_path_factory.mktemp("killed")
    done = out / ".work" / "done"
    killed = _sanitize(out, config_file, "--keep-work")
    _wait_for((done / "bootstrap.json").exists, killed, "the bootstrap marker")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    finished = {p.stem: p.stat().st_mtime_ns for p in done.glob("*.json")}
    assert not (out / REPORT_JSON).exists(), "the run ended before it was killed"
    assert (out / LOCK_FILE).exists()  # the file stays; the lock died with the process

    again = _sanitize(out, config_file, "--keep-work")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    return out, finished, err


def test_killed_run_resumes_and_reuses_finished_stages(resumed):
    out, finished, _ = resumed
    assert {"read", "bootstrap"} <= set(finished)
    done = out / ".work" / "done"
    now = {p.stem: p.stat().st_mtime_ns for p in done.glob("*.json")}
    # The stages finished before the kill were not run again (their markers and files are
    # untouched); every other stage ran, export included.
    reused = {stage for stage, mtime in finished.items() if now[stage] == mtime}
    assert reused == set(finished)
    assert set(now) - set(finished) >= {"embed", "decide", "export"}
    model = out / ".work" / "model_bootstrap.safetensors"
    assert model.stat().st_mtime_ns <= finished["bootstrap"]


def test_resumed_outputs_are_byte_identical(reference, resumed):
    ref_out, out = reference[0], resumed[0]
    for name in PARQUET_OUTPUTS:
        assert (out / name).read_bytes() == (ref_out / name).read_bytes(), name
    assert _report_without_timings(out) == _report_without_timings(ref_out)


def test_changed_decision_reruns_only_decide_and_export(resumed, tmp_path, monkeypatch):
    from sanitize import sanitize_dataset

    monkeypatch.setenv("SANITIZE_NUM_THREADS", THREADS)
    out = tmp_path / "out"
    shutil.copytree(resumed[0], out)
    done = out / ".work" / "done"
    before = {p.stem: p.stat().st_mtime_ns for p in done.glob("*.json")}
    config = CONFIG.replace(decision=DecisionConfig(max_removal_fraction=0.02))
    result = sanitize_dataset(SAMPLE_SOURCE, out, config, keep_work=True)
    assert result.counts["removed"] <= 0.02 * 3000
    after = {p.stem: p.stat().st_mtime_ns for p in done.glob("*.json")}
    rerun = {stage for stage in before if after[stage] != before[stage]}
    assert rerun == {"decide", "export"}


def test_flow_reuses_the_same_stages(prefect_harness, resumed, tmp_path, monkeypatch):
    from flows import sanitize_flow

    monkeypatch.setenv("SANITIZE_NUM_THREADS", THREADS)
    out = tmp_path / "out"
    shutil.copytree(resumed[0], out)
    done = out / ".work" / "done"
    before = {p.stem: p.stat().st_mtime_ns for p in done.glob("*.json")}
    counts = sanitize_flow(
        source=str(SAMPLE_SOURCE), out=str(out), config=CONFIG.to_dict(), keep_work=True
    )
    assert counts["rows"] == 3000
    assert len(before) == len(build_plan(CONFIG, 3000))  # every stage was done once
    assert {p.stem: p.stat().st_mtime_ns for p in done.glob("*.json")} == before
    for name in PARQUET_OUTPUTS:
        assert (out / name).read_bytes() == (resumed[0] / name).read_bytes(), name


def test_a_stage_key_moves_only_with_the_code_the_stage_runs():
    from sanitize.pipeline.resume import STAGE_CODE, stage_code_files

    root = Path(sanitize.__file__).parent
    files = {
        kind: {path.relative_to(root).as_posix() for path in stage_code_files(kind)}
        for kind in STAGE_CODE
    }
    assert "report/html.py" in files["export"]
    assert not any("report/html.py" in files[kind] for kind in STAGE_CODE if kind != "export")
    assert "model/train.py" in files["bootstrap"] and "detect/spectral.py" not in files["bootstrap"]
    assert "decision/decide.py" in files["decide"] and "decision/decide.py" not in files["detect"]
    config = SanitizeConfig(detectors=("cbd", "spectral"))
    kinds = {stage.kind for stage in build_plan(config, 100, shard_rows=40)}
    assert kinds <= set(STAGE_CODE)
