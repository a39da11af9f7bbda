"""The nightly ingestion flow under a real Prefect server (the test harness).

Partitions are slices of the sample dataset written with pyarrow; a fast config (two
detectors, two epochs) keeps each sanitize run to a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from flows.deploy import build_deployment
from flows.ingest_flow import (
    OUTCOMES_KEY,
    PROGRESS_KEY,
    PUBLISHED_EVENT,
    PartitionsFailed,
    ingest_flow,
)
from flows.landing import LEDGER_DIR, Destination, discover_partitions
from sanitize.config import DataConfig
from sanitize.data.source import open_source
from sanitize.pipeline.paths import (
    CLEAN_FILE,
    OUTPUT_FILES,
    QUARANTINE_FILE,
    REPORT_JSON,
    SCORES_FILE,
)
from tests.conftest import SAMPLE_SOURCE

DETECTORS = ("spectral", "early_loss")


@pytest.fixture(scope="module")
def sample() -> pa.Table:
    return pq.read_table(SAMPLE_SOURCE)


def _fingerprint(uri: Path) -> str:
    return open_source(str(uri), DataConfig()).fingerprint()


def _ledger(dest: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (dest / LEDGER_DIR).glob("*.json")}


def _artifacts(flow_run_id) -> dict[str, dict]:
    """Artifacts of one flow run by key, read back from the server.

    A raw request: ``PrefectClient.read_artifacts`` sends nulls that the server's request
    model refuses (422) under the pinned FastAPI.
    """
    from prefect import get_client

    with get_client(sync_client=True) as client:
        response = client.request(
            "POST",
            "/artifacts/filter",
            json={"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}}, "limit": 200},
        )
    found = {}
    for artifact in response.json():
        data = artifact["data"]
        if artifact["type"] == "table":
            data = json.loads(data)
        if artifact["key"]:
            found[artifact["key"]] = {**artifact, "data": data}
    return found


def _published_events(flow_run_id, expected: int) -> list:
    """Published events related to one flow run; they reach the server asynchronously."""
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + 30
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                filter=EventFilter(event=EventNameFilter(name=[PUBLISHED_EVENT])), limit=50
            )
        events = [
            e
            for e in page.events
            if any(r.id == f"prefect.flow-run.{flow_run_id}" for r in e.related)
        ]
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def _check_published(dest: Path, name: str, rows: int) -> None:
    out = dest / name
    files = {p.name for p in out.iterdir()}
    assert set(OUTPUT_FILES) <= files
    assert not [f for f in files if f.startswith(".")]
    clean = pq.read_metadata(out / CLEAN_FILE).num_rows
    quarantine = pq.read_metadata(out / QUARANTINE_FILE).num_rows
    assert clean + quarantine == rows == pq.read_metadata(out / SCORES_FILE).num_rows


def _leftovers(dest: Path) -> list[str]:
    """Temporary names left in the destination (staging runs, half-published directories)."""
    found = [p.name for p in dest.iterdir() if p.name.startswith(".") and p.name != ".staging"]
    found += [p.name for p in (dest / ".staging").glob("*")]
    found += [p.name for p in (dest / LEDGER_DIR).glob(".*")]
    return found


def test_discovery_finds_partitions_by_content(tmp_path, sample):
    landing = tmp_path / "landing"
    (landing / "day2").mkdir(parents=True)
    pq.write_table(sample.slice(0, 50), landing / "day1.parquet")
    shutil.copy(landing / "day1.parquet", landing / "day1-again.parquet")
    pq.write_table(sample.slice(50, 30), landing / "day2" / "part-0.parquet")
    pq.write_table(sample.slice(80, 30), landing / "day2" / "part-1.parquet")
    (landing / "day2.parquet").write_bytes((landing / "day1.parquet").read_bytes())
    (landing / "broken.parquet").write_bytes(b"PAR1 not really")
    (landing / "_SUCCESS").touch()
    (landing / ".day3.parquet.uploading").touch()
    (landing / "notes").mkdir()
    (landing / "notes" / "readme.txt").write_text("not a partition")

    partitions = discover_partitions(str(landing), DataConfig())
    assert [p.name for p in partitions] == ["broken", "day1", "day1-again", "day2", "day2"]
    broken, day1, day1_again, day2, day2_file = partitions
    assert day1.fingerprint == day1_again.fingerprint
    assert (day1.rows, day2.rows) == (50, 60)
    assert day2.uri == str(landing / "day2")
    assert day2.fingerprint not in (None, day1.fingerprint)
    assert broken.fingerprint is None and "broken.parquet" in broken.error
    # "day2/" and "day2.parquet" would share a destination: the second is refused.
    assert day2_file.error == "another partition is also named 'day2'"


def test_publish_to_an_fsspec_uri_replaces_outputs_and_their_ledger_entry(tmp_path):
    dest_uri = f"memory://ingest-{uuid.uuid4().hex}"
    dest = Destination(dest_uri)
    fs = fsspec.filesystem("memory")
    root = dest_uri.removeprefix("memory://")

    def run_dir(fingerprint: str) -> Path:
        out = tmp_path / fingerprint
        (out / ".work").mkdir(parents=True)
        (out / ".work" / "features.npy").write_bytes(b"stage file")
        (out / CLEAN_FILE).write_bytes(fingerprint.encode())
        (out / REPORT_JSON).write_text(json.dumps({"source": {"fingerprint": fingerprint}}))
        return out

    for fingerprint in ("first", "second"):
        assert dest.done(fingerprint) is None
        assert dest.publish(run_dir(fingerprint), "p") == [CLEAN_FILE, REPORT_JSON]
        dest.record(fingerprint, {"name": "p"})
        assert fs.cat_file(f"/{root}/p/{CLEAN_FILE}") == fingerprint.encode()
    assert dest.done("second") == {"name": "p"}
    # "first" no longer has outputs anywhere: its content must be done again if it returns.
    assert dest.done("first") is None
    assert sorted(fs.ls(f"/{root}", detail=False)) == [f"/{root}/{LEDGER_DIR}", f"/{root}/p"]
    assert dest.uri_of("p") == f"memory:///{root}/p"


def test_deployment_is_registered_with_its_cron_schedule(prefect_harness, tmp_path):
    from prefect import get_client

    deployment = build_deployment(
        landing=str(tmp_path / "landing"),
        dest=str(tmp_path / "dest"),
        cron="30 1 * * *",
        timezone="Europe/Paris",
        name="nightly-test",
        config={"seed": 3},
    )
    deployment_id = asyncio.run(deployment.aapply())

    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
        assert client.read_deployment_by_name("sanitize-ingest/nightly-test").id == deployment_id
    [schedule] = stored.schedules
    assert schedule.active
    assert schedule.schedule.cron == "30 1 * * *"
    assert schedule.schedule.timezone == "Europe/Paris"
    assert stored.parameters == {
        "landing": str(tmp_path / "landing"),
        "dest": str(tmp_path / "dest"),
        "config": {"seed": 3},
        "work_dir": None,
    }
    assert stored.entrypoint == "flows.ingest_flow.ingest_flow"
    assert stored.global_concurrency_limit.limit == 1

    with pytest.raises(ValueError, match="Invalid cron string"):
        build_deployment(landing="l", dest="d", cron="30 1 * *")


def test_ingest_runs_each_new_partition_once(prefect_harness, tmp_path, fast_config, sample):
    landing, dest = tmp_path / "landing", tmp_path / "dest"
    landing.mkdir()
    config = fast_config.replace(detectors=DETECTORS).to_dict()
    pq.write_table(sample.slice(0, 300), landing / "a.parquet")
    (landing / "b").mkdir()
    pq.write_table(sample.slice(300, 150), landing / "b" / "part-0.parquet")
    pq.write_table(sample.slice(450, 150), landing / "b" / "part-1.parquet")
    fingerprints = {"a": _fingerprint(landing / "a.parquet"), "b": _fingerprint(landing / "b")}

    # Run 1: both partitions are new.
    state = ingest_flow(str(landing), str(dest), config, return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == {"published": ["a", "b"], "skipped": [], "failed": []}
    for name in ("a", "b"):
        _check_published(dest, name, 300)
        report = json.loads((dest / name / REPORT_JSON).read_text())
        assert report["source"]["fingerprint"] == fingerprints[name]
    assert {fp: e["name"] for fp, e in _ledger(dest).items()} == {
        fingerprints["a"]: "a",
        fingerprints["b"]: "b",
    }
    assert _leftovers(dest) == []

    run_id = state.state_details.flow_run_id
    artifacts = _artifacts(run_id)
    assert artifacts[PROGRESS_KEY]["type"] == "progress"
    assert float(artifacts[PROGRESS_KEY]["data"]) == 100.0
    outcomes = {row["partition"]: row for row in artifacts[OUTCOMES_KEY]["data"]}
    assert {n: (o["status"], o["rows"]) for n, o in outcomes.items()} == {
        "a": ("published", 300),
        "b": ("published", 300),
    }
    for name in ("a", "b"):
        table = artifacts[f"ingest-{name}"]["data"]
        report = json.loads((dest / name / REPORT_JSON).read_text())
        [total] = [r for r in table if r["what"] == "total"]
        assert (total["rows"], total["removed"]) == (300, report["counts"]["removed"])
        assert [r["name"] for r in table if r["what"] == "detector"] == list(DETECTORS)
        assert sum(r["rows"] for r in table if r["what"] == "class") == 300
        link = artifacts[f"ingest-{name}-report"]
        assert link["type"] == "markdown"  # Prefect stores a link as markdown
        url = link["data"].split("](", 1)[1].rstrip(")")
        assert url.startswith("file://") and Path(url.removeprefix("file://")).is_file()
        assert url.removeprefix("file://").startswith(str(dest / name) + "/report.")

    events = _published_events(run_id, expected=2)
    assert sorted(e.resource.get("prefect.resource.name") for e in events) == ["a", "b"]
    for event in events:
        assert event.payload["fingerprint"] == fingerprints[event.payload["partition"]]
        assert event.payload["destination"] == str(dest / event.payload["partition"])

    # Run 2: nothing new; a renamed copy of a done partition is not done again.
    shutil.copy(landing / "a.parquet", landing / "a-copy.parquet")
    (landing / "_SUCCESS").touch()
    stamps = {n: os.stat(dest / n / CLEAN_FILE).st_mtime_ns for n in ("a", "b")}
    state = ingest_flow(str(landing), str(dest), config, return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == {"published": [], "skipped": ["a", "a-copy", "b"], "failed": []}
    assert not (dest / "a-copy").exists()
    assert {n: os.stat(dest / n / CLEAN_FILE).st_mtime_ns for n in ("a", "b")} == stamps
    assert float(_artifacts(state.state_details.flow_run_id)[PROGRESS_KEY]["data"]) == 100.0

    # Run 3: a new partition and a changed one are done; bad ones fail without stopping them.
    pq.write_table(sample.slice(600, 300), landing / "c.parquet")
    pq.write_table(sample.slice(900, 150), landing / "b" / "part-1.parquet")
    (landing / "broken.parquet").write_bytes(b"PAR1 truncated upload")
    one_class = sample.filter(pc.equal(sample["label"], 0)).slice(0, 60)
    pq.write_table(one_class, landing / "one.parquet")
    fingerprints["b2"] = _fingerprint(landing / "b")
    fingerprints["c"] = _fingerprint(landing / "c.parquet")

    state = ingest_flow(str(landing), str(dest), config, return_state=True)
    assert state.is_failed()
    # The engine raises a failed run's result at its end: it must be an exception.
    with pytest.raises(PartitionsFailed, match="2 of 6 partition"):
        state.result()
    assert state.result(raise_on_failure=False).outcomes == {
        "published": ["b", "c"],
        "skipped": ["a", "a-copy"],
        "failed": ["broken", "one"],
    }
    assert "2 of 6 partition(s) failed" in state.message
    assert "broken: cannot read parquet file" in state.message
    assert "one: only one class" in state.message
    _check_published(dest, "b", 300)
    _check_published(dest, "c", 300)
    assert os.stat(dest / "a" / CLEAN_FILE).st_mtime_ns == stamps["a"]
    report_b = json.loads((dest / "b" / REPORT_JSON).read_text())
    assert report_b["source"]["fingerprint"] == fingerprints["b2"]
    # The replaced content of b has no outputs any more, so it is no longer done.
    assert {fp: e["name"] for fp, e in _ledger(dest).items()} == {
        fingerprints["a"]: "a",
        fingerprints["b2"]: "b",
        fingerprints["c"]: "c",
    }
    assert not (dest / "broken").exists() and not (dest / "one").exists()
    assert _leftovers(dest) == []
    run_id = state.state_details.flow_run_id
    outcomes = {row["partition"]: row for row in _artifacts(run_id)[OUTCOMES_KEY]["data"]}
    assert outcomes["one"]["status"] == "failed"
    assert outcomes["one"]["reason"].startswith("only one class")
    assert outcomes["a-copy"]["reason"].endswith("as a")
    events = _published_events(run_id, expected=2)
    assert sorted(e.resource.get("prefect.resource.name") for e in events) == ["b", "c"]
