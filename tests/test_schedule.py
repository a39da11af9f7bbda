"""The nightly deployment's cron schedule creates flow runs on a real Prefect server, and they run.

The README's ingestion steps, as a user types them: ``prefect server start`` (here on a free
loopback port, with a temporary ``PREFECT_HOME``), then ``python -m flows.deploy`` serving
``sanitize-ingest/nightly``. The server's scheduler must create scheduled runs (SQLAlchemy
2.1 broke that under Prefect 3.8: every loop failed with "Can't evaluate bulk DML
statement" and no run was ever created), and the served process must run one of them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

STARTUP_S = 120  # server start: 8-25 s measured, more on a loaded CI machine
SCHEDULED_S = 60  # the scheduler loops every 2 s here (PREFECT_SERVER_SERVICES_SCHEDULER_...)
COMPLETED_S = 150  # a "* * * * *" run is due within 60 s, then an empty landing runs in seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        env=env,
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait(what: str, condition, timeout_s: float, logs: list[Path]):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
    pytest.fail(f"{what} not within {timeout_s} s\n{tails}")


def _runs(api_url: str, deployment_name: str) -> list[dict]:
    """The deployment's flow runs, read from the REST API as any client would."""
    body = {"deployments": {"name": {"any_": [deployment_name]}}}
    try:
        response = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=10)
    except httpx.HTTPError:
        return []
    return response.json() if response.status_code == 200 else []


def test_cron_schedule_creates_and_runs_flow_runs(tmp_path):
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    landing, dest = tmp_path / "landing", tmp_path / "dest"
    landing.mkdir()
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    server = _spawn(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
        ],
        env,
        server_log,
    )
    served = None
    try:
        _wait(
            "the server's health check",
            lambda: _healthy(api_url),
            STARTUP_S,
            [server_log],
        )
        served = _spawn(
            [
                sys.executable,
                "-m",
                "flows.deploy",
                "--landing",
                str(landing),
                "--dest",
                str(dest),
                "--cron",
                "* * * * *",
            ],
            env,
            serve_log,
        )
        scheduled = _wait(
            "a scheduled run of sanitize-ingest/nightly",
            lambda: [r for r in _runs(api_url, "nightly") if r["state_name"] == "Scheduled"],
            STARTUP_S + SCHEDULED_S,
            [server_log, serve_log],
        )
        assert scheduled[0]["auto_scheduled"]
        completed = _wait(
            "a completed scheduled run",
            lambda: [
                r
                for r in _runs(api_url, "nightly")
                if r["state_name"] == "Completed" and r["auto_scheduled"]
            ],
            COMPLETED_S,
            [server_log, serve_log],
        )
        assert completed[0]["parameters"]["landing"] == str(landing)
        assert "bulk DML" not in server_log.read_text()
    finally:
        for proc in (served, server):
            if proc is not None:
                _terminate(proc)


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
