"""The Prefect flow under a real Prefect server (the test harness), same outputs as the core."""

import pyarrow.parquet as pq

from flows import sanitize_flow
from sanitize import sanitize_dataset
from sanitize.pipeline.paths import SCORES_FILE
from tests.conftest import SAMPLE_SOURCE


def test_flow_runs_the_stages_and_matches_the_core(prefect_harness, tmp_path, fast_config):
    counts = sanitize_flow(
        source=str(SAMPLE_SOURCE), out=str(tmp_path / "flow"), config=fast_config.to_dict()
    )
    assert counts["rows"] == 3000
    assert counts["kept"] + counts["removed"] == 3000
    assert not (tmp_path / "flow" / ".work").exists()

    sanitize_dataset(SAMPLE_SOURCE, tmp_path / "core", fast_config)
    flow_scores = pq.read_table(tmp_path / "flow" / SCORES_FILE)
    core_scores = pq.read_table(tmp_path / "core" / SCORES_FILE)
    assert flow_scores.equals(core_scores)
