"""The embedding projection: computed at run time and saved into scores.parquet
(:func:`embedding_projection`, :func:`with_projection`), drawn on the page as a sampled
scatter plot (:func:`projection_section`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sanitize.report import plots
from sanitize.report.page import legend

EMBEDDING_X = "embedding_x"
EMBEDDING_Y = "embedding_y"

PROJECTION_FIT_ROWS = 20_000  # rows the PCA is fitted on (all rows are projected)
PROJECTION_CHUNK_ROWS = 65_536  # rows projected at a time (bounds memory)
SCATTER_KEPT_POINTS = 2_500  # kept rows drawn in the projection, sampled
SCATTER_REMOVED_POINTS = 1_000  # removed rows drawn on top, sampled


def embedding_projection(
    features: np.ndarray,
    rows: np.ndarray,
    *,
    seed: int = 0,
    fit_rows: int = PROJECTION_FIT_ROWS,
    chunk_rows: int = PROJECTION_CHUNK_ROWS,
) -> np.ndarray:
    """First two principal components of the features of ``rows``.

    Parameters
    ----------
    features : ndarray of shape (n_rows, feature_dim)
        Penultimate-layer features, one row a source row (a memory map is read in chunks).
    rows : ndarray of int
        The rows that have features (usable rows); the others get NaN.
    seed : int, default=0
        Seeds the subsample the components are fitted on.
    fit_rows : int, default=PROJECTION_FIT_ROWS
        At most this many rows (drawn at random) fit the mean and the components.

    Returns
    -------
    ndarray of shape (n_rows, 2), float32
        Each component's sign is fixed (largest loading positive), so the same features
        always give the same picture.
    """
    out = np.full((features.shape[0], 2), np.nan, dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) < 3:
        return out
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(rows, size=min(fit_rows, len(rows)), replace=False))
    sample = np.asarray(features[fit], dtype=np.float64)
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    for start in range(0, len(rows), chunk_rows):
        idx = rows[start : start + chunk_rows]
        projected = (np.asarray(features[idx], dtype=np.float64) - mean) @ components.T
        out[idx, : projected.shape[1]] = projected
    return out


def with_projection(scores: pa.Table, projection: np.ndarray) -> pa.Table:
    """``scores`` with the projection as float32 ``embedding_x`` and ``embedding_y`` columns."""
    projection = np.asarray(projection, dtype=np.float32)
    return scores.append_column(EMBEDDING_X, pa.array(projection[:, 0])).append_column(
        EMBEDDING_Y, pa.array(projection[:, 1])
    )


def projection_section(scores: pa.Table, flagged: np.ndarray) -> str:
    if EMBEDDING_X not in scores.column_names:
        return '<p class="note">This run saved no projection.</p>'
    x = scores.column(EMBEDDING_X).to_numpy(zero_copy_only=False)
    y = scores.column(EMBEDDING_Y).to_numpy(zero_copy_only=False)
    finite = np.isfinite(x) & np.isfinite(y)
    rng = np.random.default_rng(0)
    picked = []
    shown = {}
    for mask, cap, name in (
        (finite & ~flagged, SCATTER_KEPT_POINTS, "kept"),
        (finite & flagged, SCATTER_REMOVED_POINTS, "removed"),
    ):
        rows = np.flatnonzero(mask)
        if len(rows) > cap:
            rows = np.sort(rng.choice(rows, size=cap, replace=False))
        picked.append(rows)
        shown[name] = (len(rows), int(mask.sum()))
    rows = np.concatenate(picked)
    svg = plots.scatter(x[rows], y[rows], flagged[rows], label="embedding projection")
    kept, removed = shown["kept"], shown["removed"]
    return (
        '<p class="lead">The bootstrap model\'s penultimate-layer features of every '
        "scored row, projected on their first two principal components. A backdoor "
        "often shows as a tight cluster of its own. "
        f"{legend()} &middot; drawn: {kept[0]:,} of {kept[1]:,} kept, "
        f"{removed[0]:,} of {removed[1]:,} removed.</p>"
        f'<div class="panel wide">{svg}</div>'
    )
