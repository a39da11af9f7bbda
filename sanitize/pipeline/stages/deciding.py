"""The decision over every detector's results."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sanitize.config import SanitizeConfig
from sanitize.data.schema import (
    FLAGGED,
    LABEL,
    POISON_SCORE,
    REASONS,
    SAMPLE_ID,
    SAMPLE_WEIGHT,
    issue_column,
    score_column,
)
from sanitize.decision import decide
from sanitize.decision.decide import size_rule_agreement
from sanitize.detect import DetectorResult
from sanitize.pipeline.paths import RunPaths
from sanitize.pipeline.stages.common import (
    expected_class_shares,
    images_of,
    json_default,
    log,
    optional_rows,
)
from sanitize.pipeline.stages.detecting import shares_class_stats


def decide_stage(config: SanitizeConfig, paths: RunPaths) -> dict[str, Any]:
    """Combine the detectors into poison_score, flagged, sample_weight and reasons per row."""
    start = time.perf_counter()
    rows = pq.read_table(paths.rows)
    usable = np.flatnonzero(rows.column("ok").to_numpy(zero_copy_only=False))
    results = {}
    for name in config.detectors:
        saved = np.load(paths.detector_scores(name))
        info = json.loads(paths.detector_info(name).read_text())
        weight = saved["weight"] if "weight" in saved.files else None
        results[name] = DetectorResult(
            score=saved["score"],
            flagged=saved["flagged"],
            info=info,
            weight=weight,
            candidate=saved["candidate"] if "candidate" in saved.files else None,
            oriented=saved["oriented"] if "oriented" in saved.files else None,
        )
    y = rows.column("y").to_numpy().astype(np.int64)
    coordinates = None
    if shares_class_stats(config):
        coordinates = np.load(paths.class_projections, mmap_mode="r")
    expected = expected_class_shares(config, paths)
    decision = decide(
        results,
        len(usable),
        config.decision,
        labels=y[usable],
        coordinates=coordinates,
        seed=config.seed,
        expected_shares=expected,
        row_loss=optional_rows(paths.loss_bootstrap, usable),
        label_agreement=size_rule_agreement(
            images_of(paths),
            y[usable],
            config.decision,
            expected_shares=expected,
            image_rows=usable,
            seed=config.seed,
        ),
    )

    n = rows.num_rows
    poison_score = np.ones(n, dtype=np.float32)  # rows that could not be scored are removed
    sample_weight = np.zeros(n, dtype=np.float32)
    flagged = np.ones(n, dtype=bool)
    reasons: list[list[str]] = [[r] for r in rows.column("reason").to_pylist()]
    poison_score[usable] = decision.poison_score
    sample_weight[usable] = decision.sample_weight
    flagged[usable] = decision.flagged
    for i, row in enumerate(usable):
        reasons[row] = decision.reasons[i]
    columns: dict[str, Any] = {SAMPLE_ID: rows.column("sample_id"), LABEL: rows.column("label")}
    for name, result in results.items():
        full = np.full(n, np.nan, dtype=np.float32)
        full[usable] = result.score
        columns[score_column(name)] = pa.array(full)
        own_flags = np.zeros(n, dtype=bool)  # rows set aside unread are no detector's issue
        own_flags[usable] = result.flagged
        columns[issue_column(name)] = pa.array(own_flags)
    columns[POISON_SCORE] = pa.array(poison_score)
    columns[SAMPLE_WEIGHT] = pa.array(sample_weight)
    columns[FLAGGED] = pa.array(flagged)
    columns[REASONS] = pa.array(reasons, type=pa.list_(pa.string()))
    pq.write_table(pa.table(columns), paths.decision)
    paths.decision_info.write_text(json.dumps(decision.info, default=json_default))
    seconds = time.perf_counter() - start
    log.info("decide    %d of %d rows removed", int(flagged.sum()), n)
    return {"seconds": seconds, "rows": n, "removed": int(flagged.sum())}
