"""The GPU code path exercised where there is no GPU (device, precision, layout); CPU decoding."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sanitize.config import BootstrapConfig, DataConfig, SanitizeConfig
from sanitize.data import open_source, read_source
from sanitize.data.npyfile import NpyWriter, release_pages
from sanitize.data.read import DECODE_PROCESS_MIN_ROWS, DECODE_WORKERS_ENV, decode_workers
from sanitize.errors import ConfigError
from sanitize.model import NetSpec, embed_rows, resolve_device, train_model
from sanitize.model.device import autocast, memory_format
from sanitize_cli.main import main
from tests.conftest import REPO, SAMPLE_SOURCE

WAIT_BLAS = "OPENBLAS_THREAD_TIMEOUT"

CPU = torch.device("cpu")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")


def test_auto_picks_cuda_only_when_torch_sees_a_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device().type == expected
    assert resolve_device("cpu") == CPU


@no_gpu
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_config_error_that_says_what_to_use(name):
    with pytest.raises(ConfigError) as err:
        resolve_device(name)
    message = str(err.value)
    assert f"device {name!r} requested but no CUDA GPU is available" in message
    assert "'auto' or 'cpu'" in message and "\n" not in message


@pytest.mark.parametrize("name", ["gpu", "tpu", "mps", "CUDA", ""])
def test_unknown_device_names_are_refused_by_the_config(name):
    with pytest.raises(ConfigError, match="bootstrap.device: must be auto, cpu, cuda or cuda:N"):
        SanitizeConfig(bootstrap=BootstrapConfig(device=name))


@no_gpu
def test_cli_run_with_cuda_and_no_gpu_exits_2_with_one_line(tmp_path, capsys):
    code = main(
        ["run", str(SAMPLE_SOURCE), "--out", str(tmp_path / "out"), "--local"]
        + [
            "--device",
            "cuda",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("sanitize: error: device 'cuda' requested but no CUDA GPU")
    assert not (tmp_path / "out" / "clean.parquet").exists()


def test_cpu_precision_is_fp32_and_layout_contiguous():
    assert memory_format(CPU) == torch.contiguous_format
    net = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    with autocast(CPU):
        assert not torch.is_autocast_enabled("cpu")
        y = net(x)
    assert y.dtype == torch.float32
    assert y.is_contiguous()


def _toy(n: int = 96, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 3, 12, 12)) * 255).astype(np.uint8), rng.integers(0, 3, n)


def test_training_and_embedding_on_cpu_run_in_fp32_with_data_on_the_device(tmp_path):
    images, labels = _toy()
    path = tmp_path / "images.npy"
    np.save(path, images)
    mapped = np.load(path, mmap_mode="r")
    rows = np.arange(0, 96, 2)
    kwargs = dict(epochs=2, batch_size=16, lr=1e-3, seed=3, device=CPU)
    result = train_model(mapped, labels, rows, NetSpec(3, 3, width=4), **kwargs)
    # A memory map and the same array in RAM train the same model: only the rows are read.
    again = train_model(images, labels, rows, NetSpec(3, 3, width=4), **kwargs)
    for a, b in zip(result.model.parameters(), again.model.parameters(), strict=True):
        assert a.device == CPU and a.dtype == torch.float32 and a.is_contiguous()
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (
        np.isnan(result.loss_history[1::2]).all() and np.isfinite(result.loss_history[rows]).all()
    )

    feats, loss = embed_rows(result.model, result.normalizer, mapped, labels, rows, device=CPU)
    assert feats.dtype == np.float32 and loss.dtype == np.float32
    with torch.no_grad():
        x = result.normalizer.apply(torch.from_numpy(images[rows]))
        direct = result.model.features(x).numpy()
    np.testing.assert_allclose(feats[rows], direct, rtol=1e-5, atol=1e-6)
    assert not feats[1::2].any() and np.isnan(loss[1::2]).all()


# --- the CPU path: decode worker processes ------------------------------------------------


def _with_a_corrupt_row(tmp_path):
    table = pq.read_table(SAMPLE_SOURCE).slice(0, 600)
    cells = table.column("image").to_pylist()
    cells[5] = {"bytes": b"not an image", "path": None}
    index = table.schema.get_field_index("image")
    table = table.set_column(index, "image", pa.array(cells, type=table.schema.field(index).type))
    path = tmp_path / "source.parquet"
    pq.write_table(table, path)
    return path


def test_decode_worker_processes_write_what_threads_write(tmp_path, monkeypatch):
    source = _with_a_corrupt_row(tmp_path)
    outputs = {}
    for workers in ("0", "2"):
        monkeypatch.setenv(DECODE_WORKERS_ENV, workers)
        assert decode_workers(10) == int(workers)
        work = tmp_path / f"work{workers}"
        summary = read_source(
            open_source(str(source), DataConfig(batch_rows=256)), DataConfig(batch_rows=256), work
        )
        outputs[workers] = (
            summary,
            np.load(work / "images.npy"),
            pq.read_table(work / "rows.parquet"),
        )
    (s0, img0, rows0), (s2, img2, rows2) = outputs["0"], outputs["2"]
    assert s0 == s2 and s2.n_unreadable == 1
    np.testing.assert_array_equal(img0, img2)
    assert img2[5].sum() == 0 and img2[6].any()
    assert rows0.equals(rows2) and rows2.column("reason")[5].as_py() == "unreadable"


def test_decode_workers_default_rule(monkeypatch):
    monkeypatch.delenv(DECODE_WORKERS_ENV, raising=False)
    assert decode_workers(DECODE_PROCESS_MIN_ROWS - 1) == 0
    cpus = len(os.sched_getaffinity(0))
    assert decode_workers(DECODE_PROCESS_MIN_ROWS) == (0 if cpus < 4 else min(8, cpus))
    monkeypatch.setenv(DECODE_WORKERS_ENV, "two")
    with pytest.raises(ConfigError, match="SANITIZE_DECODE_WORKERS must be an integer >= 0"):
        decode_workers(10)


# --- the CPU path: stage arrays written and read without growing RSS ----------------------


def test_npy_writer_writes_what_an_array_holds_for_any_row_order(tmp_path):
    rng = np.random.default_rng(0)
    expected = np.zeros((50, 3, 2), dtype=np.float32)
    with NpyWriter(tmp_path / "a.npy", expected.shape, np.float32) as writer:
        for rows in (np.array([3, 4, 5, 9]), np.array([30, 2, 31, 1]), np.arange(40, 50)):
            values = rng.normal(size=(len(rows), 3, 2)).astype(np.float32)
            writer.write_rows(rows, values)
            expected[rows] = values
        writer.write(20, np.ones((2, 3, 2), dtype=np.float32))
        expected[20:22] = 1
        with pytest.raises(ValueError, match="outside"):
            writer.write(49, np.ones((2, 3, 2), dtype=np.float32))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), expected)


def _rss_file_kib() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssFile:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_release_pages_drops_a_read_memory_map_from_rss(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.ones((64, 1024, 1024), dtype=np.uint8))  # 64 MiB
    mapped = np.load(path, mmap_mode="r")
    before = _rss_file_kib()
    assert int(mapped[::2].sum(dtype=np.int64)) == 32 * 1024 * 1024  # touches every page
    touched = _rss_file_kib()
    release_pages(mapped[10:20])  # a slice shares its parent's map
    after = _rss_file_kib()
    assert touched - before > 48 * 1024
    assert touched - after > 48 * 1024
    assert int(mapped[0].sum(dtype=np.int64)) == 1024 * 1024  # still readable


def test_embedding_to_a_file_matches_embedding_in_ram(tmp_path):
    images, labels = _toy(n=80)
    path = tmp_path / "images.npy"
    np.save(path, images)
    mapped = np.load(path, mmap_mode="r")
    model = train_model(
        images,
        labels,
        np.arange(80),
        NetSpec(3, 3, width=4),
        epochs=1,
        batch_size=16,
        lr=1e-3,
        seed=0,
        device=CPU,
    )
    rows = np.setdiff1d(np.arange(80), [0, 7, 8, 79])  # unreadable rows leave gaps
    kwargs = dict(device=CPU, batch_size=16, release_every=32)
    in_ram, loss = embed_rows(model.model, model.normalizer, images, labels, rows, **kwargs)
    out = tmp_path / "features.npy"
    on_disk, loss2 = embed_rows(
        model.model, model.normalizer, mapped, labels, rows, features_out=out, **kwargs
    )
    assert isinstance(on_disk, np.memmap)
    np.testing.assert_array_equal(np.load(out), in_ram)
    np.testing.assert_array_equal(loss, loss2)
    none, loss3 = embed_rows(
        model.model, model.normalizer, mapped, labels, rows, keep_features=False, **kwargs
    )
    assert none is None
    np.testing.assert_array_equal(loss, loss3)


@pytest.mark.parametrize(
    ("preset", "expected"), [(None, "PASSIVE 4"), ("ACTIVE", "ACTIVE 4")], ids=["default", "user"]
)
def test_importing_sanitize_makes_idle_threads_sleep_unless_the_user_said_otherwise(
    preset, expected
):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", WAIT_BLAS)}
    env["PYTHONPATH"] = str(REPO)
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = (
        "import sys, os, sanitize; assert 'numpy' in sys.modules; "
        f"print(os.environ['OMP_WAIT_POLICY'], os.environ['{WAIT_BLAS}'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[0] == expected
