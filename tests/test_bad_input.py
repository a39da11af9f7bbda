"""Bad input, a broken finished run, a full disk: one line on stderr and the documented exit
status, never a traceback."""

import errno
import io
import json
import os
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sanitize.config import DataConfig
from sanitize.data import open_source, read_source
from sanitize.pipeline.paths import CLEAN_FILE, QUARANTINE_FILE, REPORT_JSON, SCORES_FILE
from sanitize_cli.main import EXIT_BAD_INPUT, EXIT_OUTPUT, main
from tests.conftest import SAMPLE_SOURCE


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sanitize: error: ")
    return err[0]


def _png(size: int = 8, value: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _image_folder(root, per_class: int = 3, size: int = 8):
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(_png(size, (13 * i) % 256))
    return root


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_config_file_that_is_no_toml_exits_2(tmp_path, capsys, kind):
    config = tmp_path / "conf.toml"
    if kind == "directory":
        config.mkdir()
    else:
        config.write_bytes(b"\x00\xff\xfe\x89PNG\x00" * 10)
    code = main(["inspect", str(SAMPLE_SOURCE), "--config", str(config)])
    assert code == EXIT_BAD_INPUT
    assert "conf.toml" in _one_line_error(capsys)


def _fake_run(out, report: bytes = b"{}"):
    """An output directory with every file of a finished run; only report.json is real."""
    out.mkdir()
    pq.write_table(
        pa.table({"sample_id": [0, 1], "flagged": [False, True], "poison_score": [0.1, 0.9]}),
        out / SCORES_FILE,
    )
    for name in (CLEAN_FILE, QUARANTINE_FILE):
        (out / name).write_bytes(b"")
    (out / REPORT_JSON).write_bytes(report)
    return out


@pytest.mark.parametrize(
    "truth, message",
    [
        (None, "not found"),
        (b"\x00\x01\xff\xfe garbage \x00\n\x02", "ground-truth file"),
        (b"sample_id,poisoned\n0,maybe\n1,1\n", "poisoned"),
        ("dir", "ground-truth file"),
    ],
)
def test_metrics_with_a_bad_truth_file_exits_2(tmp_path, capsys, truth, message):
    out = _fake_run(tmp_path / "out")
    path = tmp_path / "truth.csv"
    if truth == "dir":
        path.mkdir()
    elif truth is not None:
        path.write_bytes(truth)
    code = main(["metrics", str(out), "--truth", str(path)])
    assert code == EXIT_BAD_INPUT
    assert message in _one_line_error(capsys)


def test_metrics_of_a_directory_without_a_run_exits_2(tmp_path, capsys):
    truth = tmp_path / "truth.csv"
    truth.write_text("sample_id,poisoned\n0,1\n")
    code = main(["metrics", str(tmp_path), "--truth", str(truth)])
    assert code == EXIT_BAD_INPUT
    assert SCORES_FILE in _one_line_error(capsys)


@pytest.mark.parametrize("report", [b"{not json", b"\xff\xfe\x00", b"[1, 2]"])
def test_report_of_a_broken_report_json_exits_2(tmp_path, capsys, report):
    out = _fake_run(tmp_path / "out", report)
    code = main(["report", str(out)])
    assert code == EXIT_BAD_INPUT
    assert REPORT_JSON in _one_line_error(capsys)


def test_dangling_symlink_in_an_image_folder_is_an_unreadable_row(tmp_path):
    root = _image_folder(tmp_path / "images")
    os.symlink(tmp_path / "nowhere.png", root / "cat" / "gone.png")
    summary = read_source(open_source(root, DataConfig()), DataConfig(), tmp_path / "work")
    assert (summary.n_rows, summary.n_unreadable) == (7, 1)


def test_dangling_symlink_shows_in_inspect(tmp_path, capsys):
    root = _image_folder(tmp_path / "images")
    os.symlink(tmp_path / "nowhere.png", root / "dog" / "gone.png")
    assert main(["inspect", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unreadable"] == 1


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB filesystem (tmpfs), unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_exits_3(tmp_path, small_disk, capsys):
    # 1,200 RGB images of 32 x 32 decode to 3.7 MB of images.npy under OUT/.work.
    rng = np.random.default_rng(0)
    images = [
        {"bytes": _png_rgb(rng.integers(0, 256, (32, 32, 3), np.uint8)), "path": None}
        for _ in range(1200)
    ]
    source = tmp_path / "big.parquet"
    pq.write_table(pa.table({"image": images, "label": [i % 2 for i in range(1200)]}), source)
    code = main(["run", str(source), "--out", str(small_disk / "out"), "--local"])
    assert code == EXIT_OUTPUT
    line = _one_line_error(capsys)
    assert "no space left on device" in line.lower()


def _png_rgb(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _pyarrow_full(*args, **kwargs):
    # What pyarrow raises: an OSError whose errno is None, the cause only in its text.
    raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")


def _report_full(self, name, payload):
    open(self.path(name), "w").close()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.out / name))


@pytest.mark.parametrize(
    "target, fill",
    [("sanitize.pipeline.stages.exporting.write_tables", _pyarrow_full), ("report", _report_full)],
)
def test_full_disk_while_exporting_exits_3(tmp_path, capsys, monkeypatch, target, fill):
    """ENOSPC in the export stage, after training: exit 3, no temporary file left."""
    from sanitize.pipeline.export import StagedOutputs

    if target == "report":
        monkeypatch.setattr(StagedOutputs, "write_json", fill)
    else:
        monkeypatch.setattr(target, fill)
    root = _image_folder(tmp_path / "images", per_class=20)
    out = tmp_path / "out"
    argv = ["run", str(root), "--out", str(out), "--local", "--set", "bootstrap.epochs=1"]
    argv += ["--set", "bootstrap.width=4", "--set", "bootstrap.clean_epochs=1"]
    code = main(argv)
    assert code == EXIT_OUTPUT
    assert "no space left on device" in _one_line_error(capsys).lower()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_stale_temporary_outputs_are_removed_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".clean.parquet.0123abcd.tmp", out / ".report.json.deadbeef.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    (out / "mine.tmp").write_bytes(b"not ours")
    source = tmp_path / "one_class.parquet"
    pq.write_table(pa.table({"image": [_png()] * 2, "label": [0, 0]}), source)
    assert main(["run", str(source), "--out", str(out), "--local"]) == EXIT_BAD_INPUT
    assert not any(p.exists() for p in stale)
    assert (out / "mine.tmp").exists()
