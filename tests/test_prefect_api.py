"""The pinned Prefect client and server agree on the API (guards the FastAPI pin).

Prefect 3.8.8's client sends unset filter fields as JSON null (``"limit": null``,
``"flow_runs": null``) and its server declares them ``limit: int = Body(None)``. FastAPI up to
0.150 treats a null body field as missing and uses the default; from 0.151 it validates the null
and answers 422, which breaks ``read_artifacts``, ``read_flow_runs`` and ``prefect flow-run ls``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

from prefect import flow
from prefect.artifacts import create_markdown_artifact


@flow(name="api-pin-probe")
def _probe(key: str) -> None:
    create_markdown_artifact("# probe", key=key)


def test_client_reads_back_artifacts_and_flow_runs(prefect_harness):
    from prefect import get_client
    from prefect.artifacts import Artifact
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.settings import PREFECT_API_URL

    key = f"api-pin-{uuid.uuid4().hex[:12]}"
    state = _probe(key, return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id

    async def read_back():
        async with get_client() as client:
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
            everything = await client.read_flow_runs()
        return artifacts, runs, everything

    artifacts, runs, everything = asyncio.run(read_back())
    assert [a.key for a in artifacts] == [key]
    assert artifacts[0].flow_run_id == run_id
    assert [r.id for r in runs] == [run_id]
    assert run_id in {r.id for r in everything}
    assert Artifact.get(key).flow_run_id == run_id

    # The CLI a user types against a server: one process, same API.
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "250"}
    listed = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "ls"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert runs[0].name in listed.stdout
