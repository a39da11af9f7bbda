"""``sanitize run``: the stages in this process or as the Prefect flow, stopped cleanly by
SIGINT and SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from sanitize.config import SanitizeConfig
from sanitize.errors import ConfigError, OutputError
from sanitize.pipeline.lock import run_lock
from sanitize.pipeline.paths import check_locations
from sanitize.report.progress import announce
from sanitize_cli.exits import EXIT_OK, SIGNAL_EXITS
from sanitize_cli.options import config_from_args


def _prepare_prefect(verbose: bool) -> None:
    """Prefect settings must be in the environment before Prefect is imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The client's telemetry too: its first-run notice would land in the progress display.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_INTERNAL_LEVEL", "WARNING" if verbose else "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING" if verbose else "CRITICAL")


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write to output directory {out}: {exc.strerror}") from None


def _on_signal(signum: int, frame: object) -> None:
    """SIGINT / SIGTERM during a run: one line, stop the embedded Prefect server, exit.

    Exits at once, without unwinding: the stage threads are mid-stage and interpreter
    shutdown would wait for them. The kernel releases the run lock; the next run in OUT
    removes the temporary files this one leaves.
    """
    message, code = SIGNAL_EXITS[signum]
    # Other threads would log the server's going away (Prefect's event client) after the
    # one line; nothing is logged from here on.
    logging.disable(logging.CRITICAL)
    print(message, file=sys.stderr, flush=True)
    runners = sys.modules.get("flows.runners")
    if runners is not None:
        runners.stop_embedded_server()
    os._exit(code)


@contextmanager
def _signals_stop_the_run() -> Iterator[None]:
    """Route SIGINT and SIGTERM to :func:`_on_signal` for the block (main thread only)."""
    try:
        previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNAL_EXITS}
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    # A parent that blocked them (the mask is inherited across exec) would leave them
    # pending forever: unblocked here, before the threads that inherit the mask start.
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, set(SIGNAL_EXITS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _off_main_thread(work: Callable[[], dict]) -> dict:
    """``work()`` in a thread of its own, so the main thread stays free for signals.

    Prefect's flow engine replaces the main thread's SIGTERM handler with one that unwinds
    the flow and then waits for its running tasks (minutes of training) before the default
    action kills the process and orphans the embedded server.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="sanitize-run") as pool:
        return pool.submit(work).result()


def cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    check_locations(args.source, args.out)
    out = Path(args.out)
    _check_out(out)
    if args.local and args.runner != "local":
        raise ConfigError("--local runs the stages in this process; drop it to use --runner")
    start = time.perf_counter()
    with _signals_stop_the_run():
        if args.local:
            counts = _run_local(args, config, out)
        else:
            announce("starting Prefect (an embedded server takes 10-30 s)")
            _prepare_prefect(args.verbose)
            counts = _off_main_thread(lambda: _run_flow(args, config, out))
    seconds = time.perf_counter() - start
    print(
        f"{counts['rows']:,} rows: kept {counts['kept']:,}, removed {counts['removed']:,} "
        f"({100 * counts['removed_fraction']:.1f}%) in {seconds:.1f} s -> {out}"
    )
    print(counts["verdict"])
    return EXIT_OK


def _run_local(args: argparse.Namespace, config: SanitizeConfig, out: Path) -> dict:
    from sanitize.api import sanitize_dataset

    with run_lock(out):
        result = sanitize_dataset(args.source, out, config, keep_work=args.keep_work)
    return {**result.counts, "verdict": result.verdict["text"]}


def _run_flow(args: argparse.Namespace, config: SanitizeConfig, out: Path) -> dict:
    from flows.runners import run_sanitize_flow

    # Locked before Prefect starts, so a second run into OUT is refused at once.
    with run_lock(out):
        return run_sanitize_flow(
            str(args.source),
            str(out),
            config.to_dict(),
            keep_work=args.keep_work,
            runner=args.runner,
        )
