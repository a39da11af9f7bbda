"""Serve the ingestion flow on a cron schedule.

::

    python -m flows.deploy --landing /data/landing --dest /data/sanitized --cron "0 2 * * *"

registers the deployment ``sanitize-ingest/nightly`` with the Prefect server that
``PREFECT_API_URL`` names (or Prefect Cloud after ``prefect cloud login``) and runs its
scheduled and manual runs (``prefect deployment run sanitize-ingest/nightly``) in this
process until it is stopped; stopping it pauses the schedule. At most one run of the
deployment goes at a time (a run started while another goes waits), so two runs never
sanitize the same partition at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from prefect import serve
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron
from pydantic import ValidationError

from flows.ingest_flow import ingest_flow
from sanitize.config import read_toml_options
from sanitize.errors import SanitizeError

DEFAULT_NAME = "nightly"
DEFAULT_CRON = "0 2 * * *"


def _absolute(location: str) -> str:
    """Served runs may start in another directory: local paths are made absolute."""
    return location if "://" in location else os.path.abspath(location)


def build_deployment(
    *,
    landing: str,
    dest: str,
    cron: str = DEFAULT_CRON,
    timezone: str = "UTC",
    name: str = DEFAULT_NAME,
    config: dict[str, Any] | None = None,
    work_dir: str | None = None,
) -> RunnerDeployment:
    """The deployment of :func:`flows.ingest_flow.ingest_flow` with its cron schedule.

    ``apply()`` registers it (async); :func:`prefect.serve` registers and runs it.

    Raises
    ------
    ValueError
        ``cron`` is not a cron string or ``timezone`` is not an IANA time zone.
    """
    try:  # one clear error before anything is registered
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        reasons = (e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ValueError("; ".join(reasons)) from None
    return ingest_flow.to_deployment(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        parameters={
            "landing": _absolute(landing),
            "dest": _absolute(dest),
            "config": config or {},
            "work_dir": _absolute(work_dir) if work_dir else None,
        },
        concurrency_limit=1,
        description=f"Sanitize new Parquet partitions of {landing} into {dest}",
        tags=["sanitize"],
        # Runs import the flow by module name, so they work from any directory.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.deploy",
        description="Serve the sanitize ingestion flow on a cron schedule.",
    )
    parser.add_argument("--landing", required=True, help="landing directory or fsspec URI")
    parser.add_argument("--dest", required=True, help="destination directory or fsspec URI")
    parser.add_argument(
        "--cron", default=DEFAULT_CRON, help=f"cron schedule (default {DEFAULT_CRON!r})"
    )
    parser.add_argument("--timezone", default="UTC", help="IANA time zone of the schedule")
    parser.add_argument("--name", default=DEFAULT_NAME, help="deployment name")
    parser.add_argument("--config", help="run.toml with sanitize options (see README)")
    parser.add_argument("--work-dir", help="local directory for runs in progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = read_toml_options(args.config) if args.config else {}
        deployment = build_deployment(
            landing=args.landing,
            dest=args.dest,
            cron=args.cron,
            timezone=args.timezone,
            name=args.name,
            config=config,
            work_dir=args.work_dir,
        )
    except (SanitizeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(deployment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
