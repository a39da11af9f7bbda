"""Flags a class's size does not account for: a dirty-label group is rows the class gained.

A dirty-label attack adds its poisons to the target class: the class holds its clean rows
plus the poisons, so a poisoned group of ``g`` rows comes with about ``g`` rows more than
the class would have if it were like the others. A group of the same size that a feature
detector splits off a class that did not grow is a natural mode of the class (upright and
slanted ones on MNIST), not a gained group. A clean-label attack (SIG) adds no rows either,
but its poisons are learned first, and the oriented detectors (early loss) find them.

The same count bounds a class that did grow: its poisons are about the rows it gained, so
flags well beyond that gain (more than a couple of size spreads) are clean rows a detector
swept in with the group, and the class keeps only as many as its gain allows, those the
decision scores highest.

Size cannot tell a gain from a class that is naturally more common: the ones of MNIST are
1.14 times the other digits, and a detector that splits them by slant finds a group their
surplus seems to account for. Where the images' nearest neighbours in pixel space mostly
carry their label (MNIST: 0.87 of them; CIFAR-10: 0.27), a gained dirty-label group is
images of other classes and agrees with its label less often than the rest of its class
(:mod:`sanitize.decision.pixel_neighbours`); a group that does not is withdrawn however the
class grew.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from sanitize.decision.class_size import ClassSize, class_size_z


@dataclass
class GrowthCheck:
    """Outcome of :func:`flags_without_growth`.

    withdrawn : ndarray of shape (n_rows,)
        bool; the flags to withdraw (all the flags of the classes that fail the check).
    info : dict
        JSON-able: per class checked, its rows, the rows it would have, the spread of the
        class sizes in rows, its flags and whether they were withdrawn.
    """

    withdrawn: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def flags_without_growth(
    flagged: np.ndarray,
    labels: np.ndarray,
    *,
    oriented: np.ndarray | None,
    min_rows: int,
    min_share: float,
    min_spreads: float,
    expected: np.ndarray | None = None,
    skip: frozenset[int] = frozenset(),
    label_agreement: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    pixel_auc: float | None = None,
    pixel_reference: float = 0.5,
) -> GrowthCheck:
    """Withdraw the flags of classes whose size does not account for them.

    A class with ``min_rows`` flags, few of them ``oriented``, loses them when it grew by
    less than ``min_share`` of them or, where pixels tell classes apart, when they do not look
    like other classes' images. The check in full: docs/decision.md, "flags_without_growth".

    Parameters
    ----------
    flagged : ndarray of shape (n_rows,)
        bool; the decision's flags so far.
    labels : ndarray of shape (n_rows,)
        Class index of every row.
    oriented : ndarray of shape (n_rows,) or None
        bool; the rows the oriented detectors flag.
    min_rows : int
        Flags (>= 1) that make a group; a class with as many oriented flags is not checked.
    min_share : float
        Share of its flags (> 0) a class must have grown by, in rows, to keep them.
    min_spreads : float
        Flags, in robust spreads of the class sizes (>= 0), below which a class keeps them.
    expected : ndarray of shape (n_classes,), optional
        Share (> 0) of every class index to expect (see ``class_size_z``).
    skip : frozenset of int, default=frozenset()
        Classes left as they are (those the size rules judged).
    label_agreement : ndarray of shape (n_rows,), optional
        Share in [0, 1] of each row's nearest images that carry its label (NaN: not scored).
    reference : ndarray of shape (n_rows,), optional
        bool; rows of classes like the others, whose agreement says whether pixels can tell.
    pixel_auc : float or None, default=None
        AUROC in [0, 1] with which the flags must look less like their class; None: sizes only.
    pixel_reference : float, default=0.5
        Mean agreement in [0, 1] of the reference rows at which pixels can tell.
    """
    flagged = np.asarray(flagged, dtype=bool)
    labels = np.asarray(labels)
    withdrawn = np.zeros(flagged.shape[0], dtype=bool)
    checked: dict[str, dict[str, Any]] = {}
    pixels_tell = _pixels_tell(label_agreement, reference, pixel_auc, pixel_reference)
    for c, size in class_size_z(labels, expected).items():
        rows = labels == c
        n_flags = int((flagged & rows).sum())
        n_oriented = int((flagged & rows & oriented).sum()) if oriented is not None else 0
        if c in skip or n_flags < min_rows or n_oriented >= min_rows:
            continue
        agreement = label_agreement[rows] if pixels_tell else None
        entry = _check_class(size, flagged[rows], min_share, min_spreads, agreement, pixel_auc)
        if entry["withdrawn"]:
            withdrawn |= flagged & rows
        checked[str(c)] = entry
    info = {
        "min_share": min_share,
        "min_spreads": min_spreads,
        "expected_shares": expected is not None,
        "checked": checked,
        "pixels_tell": pixels_tell,
        "n_withdrawn": int(withdrawn.sum()),
    }
    return GrowthCheck(withdrawn=withdrawn, info=info)


def _pixels_tell(
    label_agreement: np.ndarray | None,
    reference: np.ndarray | None,
    pixel_auc: float | None,
    pixel_reference: float,
) -> bool | None:
    """Whether the scored ``reference`` rows' mean agreement reaches ``pixel_reference``;
    None without a pixel check (or without scored reference rows)."""
    if pixel_auc is None or label_agreement is None or reference is None:
        return None
    scored_reference = reference & ~np.isnan(label_agreement)
    if not scored_reference.any():
        return None
    return float(np.mean(label_agreement[scored_reference])) >= pixel_reference


def _check_class(
    size: ClassSize,
    flags: np.ndarray,
    min_share: float,
    min_spreads: float,
    agreement: np.ndarray | None,
    pixel_auc: float | None,
) -> dict[str, Any]:
    """The check of one class of ``size`` with the rows ``flags`` and, where pixels tell,
    the rows' label ``agreement``: its entry in ``info["checked"]``."""
    n_flags = int(flags.sum())
    spread_rows = size.like_others * size.log_spread
    growth = size.rows - size.like_others
    can_tell = n_flags >= min_spreads * spread_rows
    withdraw = can_tell and growth < min_share * n_flags
    looks_gained = None
    if not withdraw and agreement is not None and not np.isnan(agreement).any():
        # Fewer of a gained row's neighbours carry its label than of the class's own.
        looks_gained = rank_auc(flags, -agreement)
        withdraw = looks_gained < pixel_auc
    return {
        "rows": size.rows,
        "rows_like_others": size.like_others,
        "size_spread_rows": spread_rows,
        "flagged": n_flags,
        "withdrawn": bool(withdraw),
        "pixel_auc": looks_gained,
    }


def rank_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUROC of ``score`` for the ``positive`` rows against the others (ties count half);
    NaN when either side is empty."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, score))
