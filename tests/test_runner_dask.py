"""The flow on a real Dask cluster (two worker processes): same outputs as the local runner."""

from __future__ import annotations

import socket
import time

import pytest
from distributed import Client, LocalCluster, get_task_stream

from flows.runners import check_reachable, run_sanitize_flow, task_runner_for
from sanitize import sanitize_dataset
from sanitize.config import BootstrapConfig, SanitizeConfig
from sanitize.errors import ConfigError
from sanitize.pipeline.paths import CLEAN_FILE, QUARANTINE_FILE, SCORES_FILE
from sanitize.pipeline.plan import build_plan
from tests.conftest import SAMPLE_SOURCE

CONFIG = SanitizeConfig(bootstrap=BootstrapConfig(epochs=2, clean_epochs=2, width=8))


def test_dask_runner_matches_the_local_runner(prefect_harness, tmp_path, monkeypatch):
    # The worker processes start with one BLAS/OpenMP thread, the local run with one a core
    # (torch's default): unpinned, the two bootstrap models would differ. The stages pin
    # the count the flow's process chose (one here, the fastest on a busy 2-core runner).
    monkeypatch.setenv("SANITIZE_NUM_THREADS", "1")
    # Three embedding shards (rows 0-1023, 1024-2047, 2048-2999) mapped over the workers;
    # the local run below embeds in one pass, in the same batches of 512.
    monkeypatch.setattr("sanitize.pipeline.plan.EMBED_SHARD_ROWS", 1024)
    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
        get_task_stream(client) as stream,
    ):
        address = cluster.scheduler_address.removeprefix("tcp://")
        counts = run_sanitize_flow(
            str(SAMPLE_SOURCE), str(tmp_path / "dask"), CONFIG.to_dict(), runner=f"dask://{address}"
        )
        workers = set(cluster.scheduler_info["workers"])
    assert counts["rows"] == 3000
    # Every stage ran as a task on the cluster's workers (which ones is the scheduler's call:
    # the detectors take about a second here, too little for it to spread them).
    assert len(stream.data) == len(build_plan(CONFIG, 3000, shard_rows=1024))
    assert {task["worker"] for task in stream.data} <= workers

    sanitize_dataset(SAMPLE_SOURCE, tmp_path / "local", CONFIG)
    for name in (CLEAN_FILE, QUARANTINE_FILE, SCORES_FILE):
        dask_bytes = (tmp_path / "dask" / name).read_bytes()
        assert dask_bytes == (tmp_path / "local" / name).read_bytes(), name


@pytest.mark.parametrize("spec", ["dask://", "dask://host", "spark://host:1", "host:8786"])
def test_bad_runner_is_a_config_error(spec):
    with pytest.raises(ConfigError, match="--runner"):
        task_runner_for(spec)


def test_unreachable_runner_is_a_config_error_at_once():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"dask://127.0.0.1:{port}: cannot connect"):
        check_reachable(f"dask://127.0.0.1:{port}")
    assert time.monotonic() - started < 10
    check_reachable("local")


def test_runner_addresses():
    assert task_runner_for("dask://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert type(task_runner_for("local")).__name__ == "ThreadPoolTaskRunner"
