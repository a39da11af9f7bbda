"""Sharpen the flags inside a class with a discriminant learned from the flags themselves.

The detectors find a poisoned class reliably but draw its group's edge from one signal a
row (a 1-D projection, an early loss, a mixture cut), which leaves poisons on the clean
side and takes clean rows with them. Inside a class the flags are then treated as noisy
labels: a linear discriminant on the class's top principal coordinates, fitted on other
folds of the same class, predicts every row's membership in the flagged group. Where the
trigger gives the poisons a common direction in feature space (the premise of activation
clustering and spectral signatures, Chen et al. 2018; Tran et al. 2018), it recovers
poisons that one signal missed and drops clean rows that no direction ties to the group.
Cross-fitting (each row predicted by a model that never saw it) keeps the model from
simply returning the flags it was given.

The same cross-fit tests the premise. A trigger group has a direction of its own, so a
discriminant that never saw a flagged row still places it with the group; a group drawn
by a loss or a small cluster from rows with nothing in common (near-duplicate frames, a
natural sub-mode that one detector happened to cut) is recognised only in part. A class
whose flags the cross-fit mostly fails to recognise (``min_kept``) loses them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import StratifiedKFold


@dataclass
class Refinement:
    """Outcome of :func:`refine_by_class`.

    flagged : ndarray of shape (n_rows,)
        bool; the refined flags (unchanged outside refined classes).
    probability : ndarray of shape (n_rows,)
        Cross-fitted probability of belonging to the flagged group; NaN outside refined
        classes.
    info : dict
        JSON-able: the parameters and, per refined class, rows added and dropped.
    """

    flagged: np.ndarray
    probability: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def refine_by_class(
    flagged: np.ndarray,
    labels: np.ndarray,
    coordinates: np.ndarray,
    *,
    keep: float,
    min_rows: int,
    folds: int,
    add: float = 0.5,
    min_kept: float = 0.0,
    skip: frozenset[int] = frozenset(),
    seed: int = 0,
) -> Refinement:
    """Re-draw the flagged group of every class that has one, by cross-fitted LDA.

    In a class with ``min_rows`` flagged and unflagged rows, a discriminant fitted on other
    folds gives each row the probability ``p`` of the flagged group; a row is flagged when
    ``p >= add``, or when it was and ``p >= keep`` (docs/decision.md, "refine_by_class").

    Parameters
    ----------
    flagged : ndarray of shape (n_rows,)
        bool; the flags to refine.
    labels : ndarray of shape (n_rows,)
        Class index of every row.
    coordinates : ndarray of shape (n_rows, k)
        Every row's coordinates on its class's top principal directions.
    keep : float
        Probability in [0, 1] below which a flagged row loses its flag.
    min_rows : int
        Fewest flagged (and unflagged) rows (>= 1) a class needs to be refined.
    folds : int
        Cross-fitting folds (>= 2), stratified and seeded.
    add : float, default=0.5
        Probability in [0, 1] at or above which any row of the class is flagged.
    min_kept : float, default=0.0
        Share in [0, 1] of a class's flags that must keep ``p >= keep``, else all are withdrawn.
    skip : frozenset of int, default=frozenset()
        Classes left as they are (listed in ``info["skipped"]``).
    seed : int, default=0
        Seeds the fold split.
    """
    flagged = np.asarray(flagged, dtype=bool)
    out = flagged.copy()
    probability = np.full(flagged.shape[0], np.nan)
    per_class: dict[str, dict] = {}
    for c in np.unique(labels[flagged]):
        if int(c) in skip:
            continue
        rows = np.flatnonzero(labels == c)
        group = flagged[rows]
        if group.sum() < min_rows or (~group).sum() < min_rows:
            continue
        p = _cross_fit(np.asarray(coordinates[rows], dtype=np.float64), group, folds, seed)
        kept_share = float((group & (p >= keep)).sum() / group.sum())
        withdrawn = kept_share < min_kept
        refined = np.zeros_like(group) if withdrawn else (p >= add) | (group & (p >= keep))
        out[rows] = refined
        probability[rows] = p
        per_class[str(int(c))] = {
            "n": int(rows.size),
            "flagged_before": int(group.sum()),
            "added": int((refined & ~group).sum()),
            "dropped": int((group & ~refined).sum()),
            "kept_share": round(kept_share, 4),
            "withdrawn": bool(withdrawn),
        }
    info = {
        "add": add,
        "keep": keep,
        "min_kept": min_kept,
        "min_rows": min_rows,
        "folds": folds,
        "components": int(coordinates.shape[1]),
        "per_class": per_class,
        "skipped": sorted(int(c) for c in skip if (flagged & (labels == c)).any()),
        "n_added": int((out & ~flagged).sum()),
        "n_dropped": int((flagged & ~out).sum()),
    }
    return Refinement(flagged=out, probability=probability, info=info)


def _cross_fit(x: np.ndarray, group: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Every row's probability of ``group`` under a linear discriminant on ``x`` fitted on
    the other ``folds`` (stratified, shuffled with ``seed``)."""
    p = np.zeros(x.shape[0])
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train, test in split.split(x, group):
        model = LinearDiscriminantAnalysis().fit(x[train], group[train])
        p[test] = model.predict_proba(x[test])[:, 1]
    return p
