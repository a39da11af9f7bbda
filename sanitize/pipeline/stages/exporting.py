"""Export: the output tables, report.json, report.html and the dataset card."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sanitize.config import SanitizeConfig
from sanitize.data import open_source
from sanitize.data.read import id_column
from sanitize.pipeline.export import StagedOutputs, dataset_card, write_tables
from sanitize.pipeline.paths import (
    CLEAN_FILE,
    DATASET_CARD,
    QUARANTINE_FILE,
    REPORT_HTML,
    REPORT_JSON,
    RunPaths,
)
from sanitize.pipeline.stages.common import (
    check_unchanged,
    class_label_names,
    log,
    rate_text,
    usable_rows,
)
from sanitize.report.html import embedding_projection, render_report, with_projection
from sanitize.report.summary import build_report, provenance_of


def export_stage(
    source: str, config: SanitizeConfig, paths: RunPaths, stage_results: dict[str, dict]
) -> dict[str, Any]:
    """Write clean / quarantine / scores Parquet, report.html and report.json, renamed at once.

    scores.parquet also carries each row's 2-D embedding projection (``embedding_x``,
    ``embedding_y``), so report.html can be re-rendered after ``.work`` is gone.
    """
    start = time.perf_counter()
    src = open_source(source, config.data)
    usable, _, _ = usable_rows(paths)
    decision = with_projection(
        pq.read_table(paths.decision),
        embedding_projection(np.load(paths.features, mmap_mode="r"), usable, seed=config.seed),
    )
    provenance = provenance_of(source, config, stage_results)
    classes = json.loads(paths.classes.read_text())
    with StagedOutputs(paths.out) as staged:
        counts = write_tables(
            src.iter_batches(config.data.batch_rows),
            src.schema,
            decision,
            staged,
            provenance,
            id_column(src.schema, config.data),
            class_names=class_label_names(classes),
        )
        # The rows streamed are the ones decided on: same ids above, same content here.
        check_unchanged(src, stage_results["read"]["source_fingerprint"], "during the run")
        seconds = time.perf_counter() - start
        export_result = {"seconds": seconds, "rows": decision.num_rows, **counts}
        report = build_report(
            source=source,
            config=config,
            decision=decision,
            detector_info={
                name: json.loads(paths.detector_info(name).read_text()) for name in config.detectors
            },
            decision_info=json.loads(paths.decision_info.read_text()),
            classes=classes,
            stage_results={**stage_results, "export": export_result},
        )
        html = render_report(
            report,
            decision,
            clean_path=staged.staged(CLEAN_FILE),
            quarantine_path=staged.staged(QUARANTINE_FILE),
        )
        staged.write_text(REPORT_HTML, html)
        staged.write_text(DATASET_CARD, dataset_card([str(n) for n in classes["names"]], counts))
        staged.write_json(REPORT_JSON, report)  # last: its presence says the run finished
        staged.commit()
    log.info("export    %s -> %s", rate_text(decision.num_rows, seconds), paths.out)
    return export_result
