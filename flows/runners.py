"""Task-runner choice: the same flow in threads of this process, on Dask, or on Ray.

``local`` runs the tasks in a thread pool here; ``dask://HOST:PORT`` connects
prefect-dask's ``DaskTaskRunner`` to a running Dask scheduler; ``ray://HOST:PORT``
connects prefect-ray's ``RayTaskRunner`` to a Ray cluster's client server. Workers need
the ``sanitize`` package installed, the output directory at the same path (shared
storage), and a reachable Prefect API (they report task states to it).
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from prefect.settings import get_current_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.sanitize_flow import sanitize_flow
from sanitize.errors import ConfigError

log = logging.getLogger("sanitize")

RUNNER_SCHEMES = ("local", "dask://HOST:PORT", "ray://HOST:PORT")
CONNECT_TIMEOUT_S = 5.0


def task_runner_for(spec: str) -> TaskRunner:
    """The task runner that ``spec`` (``local``, ``dask://HOST:PORT``, ``ray://HOST:PORT``) names.

    Raises
    ------
    ConfigError
        Unknown scheme, no port, or the extra the scheme needs is not installed.
    """
    if spec in ("", "local"):
        return ThreadPoolTaskRunner()
    scheme, sep, address = spec.partition("://")
    host, colon, port = address.rpartition(":")
    if not sep or scheme not in ("dask", "ray") or not colon or not host or not port.isdigit():
        raise ConfigError(
            f"unknown --runner {spec!r}; expected one of: {', '.join(RUNNER_SCHEMES)}"
        )
    if scheme == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError(
                "--runner dask://... needs the dask extra: pip install 'sanitize[dask]'"
            ) from None
        return DaskTaskRunner(address=f"tcp://{address}")
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise ConfigError(
            "--runner ray://... needs the ray extra: pip install 'sanitize[ray]'"
        ) from None
    return RayTaskRunner(address=spec)


def check_reachable(spec: str) -> None:
    """Fail at once on a runner address nobody listens at, not after the client's 30 s retry.

    Raises
    ------
    ConfigError
        Nothing accepts a connection at the address of a ``dask://`` or ``ray://`` spec.
    """
    scheme, sep, address = spec.partition("://")
    if not sep:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"--runner {scheme}://{host}:{port}: cannot connect ({reason})") from None


def run_sanitize_flow(
    source: str,
    out: str,
    config: dict[str, Any] | None = None,
    *,
    keep_work: bool = False,
    runner: str = "local",
) -> dict[str, Any]:
    """Run :func:`~flows.sanitize_flow.sanitize_flow` under the task runner ``runner`` names."""
    task_runner = task_runner_for(runner)
    check_reachable(runner)
    if runner not in ("", "local") and not get_current_settings().api.url:
        log.warning(
            "no PREFECT_API_URL: each worker starts a temporary Prefect server of its own, and "
            "the task runs are not seen in one place; point PREFECT_API_URL at a Prefect "
            "server the workers can reach"
        )
    flow = sanitize_flow.with_options(task_runner=task_runner)
    return flow(source=source, out=out, config=config, keep_work=keep_work)


def stop_embedded_server() -> None:
    """Stop the temporary Prefect server this process started, if any.

    Prefect stops it at interpreter exit (``atexit``), which a process ended by a signal
    never reaches; the server, a uvicorn process of some 230 MB, would outlive it.
    """
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:
        return
    for server in list(server_module.SubprocessASGIServer._instances.values()):
        server.stop()
