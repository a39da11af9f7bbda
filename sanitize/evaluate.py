"""Metrics of a finished run against ground truth the pipeline never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from sanitize.data.schema import FLAGGED, POISON_SCORE, SAMPLE_ID, SCORE_PREFIX
from sanitize.errors import InputError
from sanitize.pipeline.paths import SCORES_FILE


def read_truth(path: str | Path) -> dict:
    """Ground truth file ``sample_id,poisoned`` (poisoned 0/1) as ``{sample_id: bool}``.

    Raises
    ------
    InputError
        The file is missing, no CSV, lacks a column, or ``poisoned`` holds another value.
    """
    if not Path(path).exists():
        raise InputError(f"ground-truth file not found: {path}")
    try:
        table = pacsv.read_csv(path)
        names = table.column_names
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"ground-truth file {path} is not a CSV file: {reason}") from None
    for column in (SAMPLE_ID, "poisoned"):
        if column not in names:
            raise InputError(f"ground-truth file {path} has no column {column!r}")
    poisoned = table.column("poisoned").to_pylist()
    for row, value in enumerate(poisoned):
        if value not in (0, 1):  # True and False compare equal to 1 and 0
            raise InputError(
                f"ground-truth file {path}: poisoned is {value!r} at row {row}; expected 0 or 1"
            )
    ids = table.column(SAMPLE_ID).to_pylist()
    return dict(zip(ids, (bool(v) for v in poisoned), strict=True))


def detection_metrics(flagged: np.ndarray, score: np.ndarray, truth: np.ndarray) -> dict:
    """TPR, FPR, precision and AUROC of flags/scores against boolean ``truth``."""
    flagged = np.asarray(flagged, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    tp = int((flagged & truth).sum())
    fp = int((flagged & ~truth).sum())
    finite = np.isfinite(score)
    auroc = (
        float(roc_auc_score(truth[finite], score[finite]))
        if 0 < truth[finite].sum() < finite.sum()
        else float("nan")
    )
    return {
        "poisoned": positives,
        "clean": negatives,
        "removed": int(flagged.sum()),
        "tpr": tp / positives if positives else float("nan"),
        "fpr": fp / negatives if negatives else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "auroc": auroc,
    }


def evaluate_run(out: str | Path, truth_path: str | Path) -> dict:
    """Metrics of the final decision and of every detector column of ``out/scores.parquet``."""
    scores_path = Path(out) / SCORES_FILE
    if not scores_path.is_file():
        raise InputError(
            f"{out} has no {SCORES_FILE}; give the output directory of a finished `sanitize run`"
        )
    scores = pq.read_table(scores_path)
    truth_by_id = read_truth(truth_path)
    ids = scores.column(SAMPLE_ID).to_pylist()
    missing = [i for i in ids if i not in truth_by_id]
    if missing:
        raise InputError(
            f"{len(missing)} sample_id(s) of the run are not in {truth_path}, e.g. {missing[0]!r}"
        )
    truth = np.array([truth_by_id[i] for i in ids])
    flagged = scores.column(FLAGGED).to_numpy(zero_copy_only=False)
    result = {
        "decision": detection_metrics(
            flagged, scores.column(POISON_SCORE).to_numpy(zero_copy_only=False), truth
        )
    }
    for name in scores.column_names:
        if name.startswith(SCORE_PREFIX):
            score = scores.column(name).to_numpy(zero_copy_only=False)
            result[name[len(SCORE_PREFIX) :]] = detection_metrics(score >= 0.5, score, truth)
    return result
