"""Column names and file layouts shared by the stages and the outputs.

Read stage output (under the run's work directory):

``images.npy``
    uint8 array of shape (n_rows, channels, size, size), one slot per source row, in source
    order; slots of unreadable rows are zero.
``rows.parquet``
    one row per source row, in source order: ``row`` (int64 ordinal in the source),
    ``sample_id`` (the source's id column when present, else the ordinal), ``label`` (the
    source label, its own type), ``y`` (int32 class index, -1 when unusable), ``ok`` (bool)
    and ``reason`` (string, null when ok).
``classes.json``
    ``{"names": [...], "values": [...], "image_size": s, "channels": c, "n_rows": n}``.
"""

SAMPLE_ID = "sample_id"
SAMPLE_WEIGHT = "sample_weight"
POISON_SCORE = "poison_score"
FLAGGED = "flagged"
REASONS = "reasons"
LABEL = "label"
SCORE_PREFIX = "score_"

# Reasons a row lands in quarantine without being scored.
REASON_UNREADABLE = "unreadable"
REASON_MISSING_LABEL = "missing_label"

IMAGES_FILE = "images.npy"
ROWS_FILE = "rows.parquet"
CLASSES_FILE = "classes.json"


def score_column(detector_name: str) -> str:
    """Column of ``scores.parquet`` that holds a detector's per-row score."""
    return f"{SCORE_PREFIX}{detector_name}"


def issue_column(detector_name: str) -> str:
    """Column of ``scores.parquet`` that holds a detector's own flags (cleanlab's naming)."""
    return f"is_{detector_name}_issue"
