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
import scipy.stats

from sanitize.decision.class_size import class_size_z


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

    A class is checked when it holds at least ``min_rows`` flags, fewer than ``min_rows``
    of them ``oriented`` (flagged by a detector whose own signal says which side is the
    poison), and it is not in ``skip`` (the classes the size rules judged). With ``n`` its
    rows, ``m`` the rows it would have if it were like the other classes and ``s`` the
    robust spread of the class sizes in rows (both from
    :func:`sanitize.decision.class_size.class_size_z`, against ``expected`` when given), its
    ``f`` flags are withdrawn when the sizes could tell (``f >= min_spreads * s``) and the
    class grew by less than ``min_share`` of them (``n - m < min_share * f``): the growth
    lies nearer to no gain than to a gain of ``f`` rows. Where pixels tell classes apart,
    a class keeps its flags only if they look like other classes' images (``pixel_auc``),
    whether or not its size could tell: in a long-tailed set a head class's size looks
    like a gain that no size spread rules out.

    Parameters
    ----------
    flagged : ndarray of shape (n_rows,)
        bool; the decision's flags so far.
    labels : ndarray of shape (n_rows,)
        Class index of every row.
    oriented : ndarray of shape (n_rows,) or None
        bool; the rows the oriented detectors flag.
    min_rows : int
        Flags that make a group.
    min_share : float
        Share of its flags a class must have grown by to keep them.
    min_spreads : float
        Flags, in robust spreads of the class sizes, below which sizes cannot tell a gain
        from a natural spread and the class keeps its flags.
    expected : ndarray of shape (n_classes,), optional
        Share of every class index to expect (see ``class_size_z``).
    skip : frozenset of int
        Classes left as they are.
    label_agreement : ndarray of shape (n_rows,), optional
        Share of each row's nearest images that carry its label, NaN where not scored
        (:func:`sanitize.decision.pixel_neighbours.label_agreement`).
    reference : ndarray of shape (n_rows,), optional
        bool; the rows of classes like the others whose agreement says whether pixels can
        tell classes apart at all.
    pixel_auc : float or None, default=None
        When the reference rows' mean agreement is at least ``pixel_reference``, a class
        that its size does not withdraw, every row of it scored, keeps its flags only if
        the flags agree with their label less often than its other rows do, with an AUROC
        of at least this. None: sizes alone decide.
    pixel_reference : float, default=0.5
        Mean agreement of the reference rows at which pixels can tell.
    """
    flagged = np.asarray(flagged, dtype=bool)
    labels = np.asarray(labels)
    withdrawn = np.zeros(flagged.shape[0], dtype=bool)
    sizes = class_size_z(labels, expected)
    checked: dict[str, dict[str, Any]] = {}
    pixels_tell = None
    if pixel_auc is not None and label_agreement is not None and reference is not None:
        scored_reference = reference & ~np.isnan(label_agreement)
        if scored_reference.any():
            pixels_tell = float(np.mean(label_agreement[scored_reference])) >= pixel_reference
    for c, size in sizes.items():
        rows = labels == c
        n_flags = int((flagged & rows).sum())
        n_oriented = int((flagged & rows & oriented).sum()) if oriented is not None else 0
        if c in skip or n_flags < min_rows or n_oriented >= min_rows:
            continue
        spread_rows = size.like_others * size.log_spread
        growth = size.rows - size.like_others
        can_tell = n_flags >= min_spreads * spread_rows
        withdraw = can_tell and growth < min_share * n_flags
        looks_gained = None
        if not withdraw and pixels_tell and not np.isnan(label_agreement[rows]).any():
            # Fewer of a gained row's neighbours carry its label than of the class's own.
            looks_gained = rank_auc(flagged[rows], -label_agreement[rows])
            withdraw = looks_gained < pixel_auc
        if withdraw:
            withdrawn |= flagged & rows
        checked[str(c)] = {
            "rows": size.rows,
            "rows_like_others": size.like_others,
            "size_spread_rows": spread_rows,
            "flagged": n_flags,
            "withdrawn": bool(withdraw),
            "pixel_auc": looks_gained,
        }
    info = {
        "min_share": min_share,
        "min_spreads": min_spreads,
        "expected_shares": expected is not None,
        "checked": checked,
        "pixels_tell": pixels_tell,
        "n_withdrawn": int(withdrawn.sum()),
    }
    return GrowthCheck(withdrawn=withdrawn, info=info)


def rank_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUROC of ``score`` for the ``positive`` rows against the others (ties count half);
    NaN when either side is empty."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = scipy.stats.rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
