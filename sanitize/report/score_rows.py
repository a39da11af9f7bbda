"""Row queries on scores.parquet that several parts of the page share: each row's class,
and the rows set aside before scoring."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sanitize.data.schema import LABEL, REASON_MISSING_LABEL, REASON_UNREADABLE, REASONS


def class_codes(scores: pa.Table) -> tuple[list[str], np.ndarray]:
    """The class keys as report.json writes them (str of the label), and each row's index
    into them (-1 without a label), without a Python loop a row."""
    encoded = pc.cast(scores.column(LABEL), pa.string()).combine_chunks().dictionary_encode()
    keys = encoded.dictionary.to_pylist()
    return keys, encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)


def unscored(scores: pa.Table) -> np.ndarray:
    """Rows set aside before scoring (unreadable image, missing label)."""
    reasons = scores.column(REASONS).combine_chunks()
    unscored = np.zeros(scores.num_rows, dtype=bool)
    flat = pc.list_flatten(reasons)
    if len(flat):
        hit = pc.is_in(flat, value_set=pa.array([REASON_UNREADABLE, REASON_MISSING_LABEL]))
        parents = pc.list_parent_indices(reasons).to_numpy(zero_copy_only=False)
        unscored[parents[hit.to_numpy(zero_copy_only=False)]] = True
    return unscored
