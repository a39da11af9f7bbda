"""The nightly ingestion flow: sanitize each new Parquet partition of a landing location once.

A run lists the landing location (:func:`flows.landing.discover_partitions`), skips every
partition whose content fingerprint the destination's ledger already holds, runs
:func:`flows.sanitize_flow` on each new one (one after another: one run already uses every
core), publishes its outputs to ``DEST/<partition>/`` and only then records it as done.

What a run leaves in Prefect:

- a progress artifact (``sanitize-ingest-progress``), updated after each partition;
- per published partition a table artifact ``ingest-<partition>`` (rows in, removed, per
  detector, per class), a link artifact ``ingest-<partition>-report`` to its report, and an
  event ``sanitize.partition.published``;
- a table artifact ``sanitize-ingest-partitions`` with every partition's outcome
  (published, skipped, failed) and, for a failure, its one-line reason.

A partition that cannot be sanitized (a corrupt file, one class, ...) does not stop the
others; the run then ends Failed and its message names them, so a scheduled run that lost
a partition is seen. It is not recorded as done, so the next run tries it again.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.states import Failed, State

from flows.landing import (
    Destination,
    Partition,
    discover_partitions,
    one_line,
    publish_partition,
)
from flows.sanitize_flow import sanitize_flow
from sanitize.config import SanitizeConfig
from sanitize.pipeline.paths import REPORT_JSON

PUBLISHED_EVENT = "sanitize.partition.published"
PROGRESS_KEY = "sanitize-ingest-progress"
OUTCOMES_KEY = "sanitize-ingest-partitions"
REPORT_HTML = "report.html"

discover_task = task(
    discover_partitions, name="discover", cache_policy=NO_CACHE, persist_result=False
)
# Publishing touches remote storage: retry it. It is idempotent (a fresh temporary name
# each time, the ledger written last).
publish_task = task(
    publish_partition,
    name="publish",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=10,
)


@flow(name="sanitize-ingest", log_prints=False, persist_result=False)
def ingest_flow(
    landing: str,
    dest: str,
    config: SanitizeConfig | None = None,
    work_dir: str | None = None,
) -> dict[str, list[str]] | State:
    """Sanitize every partition of ``landing`` not done yet and publish it under ``dest``.

    Returns the partition names by outcome: ``{"published": [...], "skipped": [...],
    "failed": [...]}``; when a partition failed, a Failed state whose result is a
    :class:`PartitionsFailed` carrying that dict as ``outcomes``.

    Args:
        landing: Landing directory or fsspec URI; each .parquet file or directory in it is
            a partition.
        dest: Destination directory or fsspec URI; one subdirectory a partition.
        config: Sanitize options as nested sections, as in a run.toml
            ({"seed": 0, "bootstrap": {"epochs": 8}}); unset options keep their defaults.
        work_dir: Local directory for runs in progress; default DEST/.staging, or the
            system's temporary directory for a remote DEST.
    """
    logger = get_run_logger()
    cfg = SanitizeConfig.coerce(config)
    destination = Destination(dest)
    partitions: list[Partition] = discover_task(landing, cfg.data)
    todo, outcomes = _select(partitions, destination)
    logger.info("%d partition(s) in %s, %d new", len(partitions), landing, len(todo))

    progress = create_progress_artifact(
        0.0 if todo else 100.0,
        key=PROGRESS_KEY,
        description=f"{len(todo)} new partition(s) of {landing}",
    )
    for done, part in enumerate(todo, start=1):
        try:
            outcome = _ingest(part, destination, cfg, work_dir)
        except Exception as exc:  # noqa: BLE001 - reported in the outcomes and the final state
            logger.exception("%s: unexpected failure", part.name)
            outcome = _outcome(part, "failed", one_line(exc))
        logger.info("%s: %s %s", part.name, outcome["status"], outcome["reason"] or "")
        outcomes.append(outcome)
        update_progress_artifact(
            progress, 100.0 * done / len(todo), description=f"{done} of {len(todo)}: {part.name}"
        )

    outcomes.sort(key=lambda o: o["partition"])
    create_table_artifact(
        outcomes, key=OUTCOMES_KEY, description=f"Partitions of {landing} -> {dest}"
    )
    by_status = {
        status: [o["partition"] for o in outcomes if o["status"] == status]
        for status in ("published", "skipped", "failed")
    }
    failed = [o for o in outcomes if o["status"] == "failed"]
    if failed:
        reasons = "; ".join(f"{o['partition']}: {o['reason']}" for o in failed)
        message = f"{len(failed)} of {len(outcomes)} partition(s) failed: {reasons}"
        # A Failed state's data must be an exception: Prefect's engine raises it at the end.
        return Failed(message=message, data=PartitionsFailed(message, by_status))
    return by_status


class PartitionsFailed(Exception):
    """Some partitions of an ingest run failed; ``outcomes`` holds the names by outcome."""

    def __init__(self, message: str, outcomes: dict[str, list[str]]):
        super().__init__(message)
        self.outcomes = outcomes

    def __reduce__(self):
        return (type(self), (str(self), self.outcomes))


def _outcome(part: Partition, status: str, reason: str | None = None, **extra: Any) -> dict:
    """One row of the outcomes table (same keys in every row)."""
    row = {
        "partition": part.name,
        "status": status,
        "reason": reason,
        "rows": part.rows,
        "removed": None,
        "fingerprint": part.fingerprint,
        "destination": None,
    }
    row.update(extra)
    return row


def _select(
    partitions: list[Partition], destination: Destination
) -> tuple[list[Partition], list[dict]]:
    """Partitions to run, and the outcome rows of those that will not run (failed, skipped)."""
    todo: list[Partition] = []
    outcomes: list[dict] = []
    seen: dict[str, str] = {}
    for part in partitions:
        if part.error is not None:
            outcomes.append(_outcome(part, "failed", part.error))
        elif (entry := destination.done(part.fingerprint)) is not None:
            reason = f"done {entry.get('published_at', '')} as {entry.get('name')}"
            outcomes.append(_outcome(part, "skipped", reason, destination=entry.get("destination")))
        elif part.fingerprint in seen:
            outcomes.append(_outcome(part, "skipped", f"same content as {seen[part.fingerprint]}"))
        else:
            todo.append(part)
        if part.fingerprint is not None:
            seen.setdefault(part.fingerprint, part.name)
    return todo, outcomes


def _ingest(
    part: Partition, destination: Destination, cfg: SanitizeConfig, work_dir: str | None
) -> dict:
    """Sanitize one partition in a staging directory, publish it, record its artifacts."""
    staging = destination.staging_dir(part.name, work_dir)
    try:
        state = sanitize_flow.with_options(flow_run_name=f"sanitize-{part.name}")(
            source=part.uri, out=str(staging), config=cfg, return_state=True
        )
        if not state.is_completed():
            return _outcome(part, "failed", _reason(state))
        report = json.loads((staging / REPORT_JSON).read_text())
        ledger_entry = {
            "landing": part.uri,
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "counts": report["counts"],
            "verdict": report["verdict"]["text"],
            "config_fingerprint": cfg.fingerprint(),
        }
        state = publish_task(
            str(staging),
            destination.uri,
            part.name,
            part.fingerprint,
            ledger_entry,
            return_state=True,
        )
        if not state.is_completed():
            return _outcome(part, "failed", "publishing failed: " + _reason(state))
        entry = state.result()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _record_published(part, destination, report, entry)
    counts = report["counts"]
    return _outcome(
        part,
        "published",
        report["verdict"]["text"],
        rows=counts["rows"],
        removed=counts["removed"],
        destination=entry["destination"],
    )


def _reason(state: State) -> str:
    """One line on why the sanitize run of a partition failed."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, BaseException):
        return one_line(exc)
    return (state.message or state.name).strip().splitlines()[0]


def _artifact_key(name: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return "ingest-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "partition")


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary table of one run: the totals, then one row a detector, then a class.

    ``removed`` of a detector row is the number of removed rows that name that detector.
    """
    counts = report["counts"]
    rows = [
        {"what": "total", "name": "all rows", "rows": counts["rows"], "removed": counts["removed"]}
    ]
    rows += [
        {"what": "detector", "name": name, "rows": counts["rows"], "removed": info["removed"]}
        for name, info in report["per_detector"].items()
    ]
    rows += [
        {
            "what": "class",
            "name": f"{label} ({c['name']})",
            "rows": c["rows"],
            "removed": c["removed"],
        }
        for label, c in report["per_class"].items()
    ]
    return rows


def _record_published(
    part: Partition, destination: Destination, report: dict[str, Any], entry: dict[str, Any]
) -> None:
    key = _artifact_key(part.name)
    create_table_artifact(
        summary_rows(report),
        key=key,
        description=f"{part.name}: {report['verdict']['text']}",
    )
    report_file = REPORT_HTML if REPORT_HTML in entry["files"] else REPORT_JSON
    create_link_artifact(
        destination.url_of(part.name, report_file),
        link_text=f"{part.name} {report_file}",
        key=f"{key}-report",
        description=f"Report of partition {part.name} ({part.fingerprint})",
    )
    emit_event(
        event=PUBLISHED_EVENT,
        resource={
            "prefect.resource.id": f"sanitize.partition.{part.fingerprint}",
            "prefect.resource.name": part.name,
        },
        payload={
            "partition": part.name,
            "fingerprint": part.fingerprint,
            "landing": part.uri,
            "destination": entry["destination"],
            "files": entry["files"],
            "counts": report["counts"],
            "verdict": report["verdict"]["text"],
        },
    )
