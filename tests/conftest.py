"""Shared fixtures: Prefect isolated in a temporary home, one test harness per session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Prefect reads its settings at import time: set them before anything imports it.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="sanitize-test-prefect-")
# Removed when the test process exits (after Prefect's own exit handlers, registered later).
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SOURCE = REPO / "sample_data" / "digits_poisoned.parquet"
SAMPLE_TRUTH = REPO / "sample_data" / "ground_truth.csv"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def prefect_harness():
    """A real Prefect server (the test harness), started once for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def fast_config():
    """A config that trains briefly: end-to-end tests check wiring and contracts, not quality."""
    from sanitize.config import BootstrapConfig, SanitizeConfig

    return SanitizeConfig(bootstrap=BootstrapConfig(epochs=2, clean_epochs=2, width=8))
