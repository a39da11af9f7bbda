"""The `sanitize` command as a user runs it: exit codes and one-line errors."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sanitize.cli import EXIT_BAD_INPUT, EXIT_OK, main
from tests.conftest import SAMPLE_SOURCE, SAMPLE_TRUTH


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sanitize: error: ")
    return err[0]


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"image": [b"x"], "y": [1]}), "missing column 'label'"),
        (pa.table({"label": [0, 1]}), "missing column 'image'"),
        (
            pa.table({"image": pa.array([], pa.binary()), "label": pa.array([], pa.int64())}),
            "no rows",
        ),
    ],
)
def test_structural_problems_exit_2_with_one_line(tmp_path, capsys, table, message):
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--local"])
    assert code == EXIT_BAD_INPUT
    assert message in _one_line_error(capsys)


def test_unknown_uri_scheme(tmp_path, capsys):
    code = main(["run", "nosuch://bucket/data.parquet", "--out", str(tmp_path / "o"), "--local"])
    assert code == EXIT_BAD_INPUT
    assert "unknown URI scheme 'nosuch'" in _one_line_error(capsys)


def test_bad_option(tmp_path, capsys):
    code = main(["run", str(SAMPLE_SOURCE), "--out", str(tmp_path), "--detectors", "magic"])
    assert code == EXIT_BAD_INPUT
    assert "unknown detector 'magic'" in _one_line_error(capsys)


def test_run_through_prefect_then_metrics(tmp_path):
    """`sanitize run` as a user types it: a new process, the flow on an embedded server."""
    config = tmp_path / "fast.toml"
    config.write_text("[bootstrap]\nepochs = 2\nclean_epochs = 2\nwidth = 8\n")
    out = tmp_path / "out"
    env_python = sys.executable
    run = subprocess.run(
        [
            env_python,
            "-m",
            "sanitize.cli",
            "run",
            str(SAMPLE_SOURCE),
            "--out",
            str(out),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == EXIT_OK, run.stderr[-3000:]
    assert "3,000 rows: kept" in run.stdout
    assert "bootstrap epoch 2/2" in run.stderr  # per-stage progress lines
    assert "Traceback" not in run.stderr
    metrics = subprocess.run(
        [
            env_python,
            "-m",
            "sanitize.cli",
            "metrics",
            str(out),
            "--truth",
            str(SAMPLE_TRUTH),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert metrics.returncode == 0, metrics.stderr
    decision = json.loads(metrics.stdout)["decision"]
    assert decision["poisoned"] == 120 and 0 <= decision["tpr"] <= 1
