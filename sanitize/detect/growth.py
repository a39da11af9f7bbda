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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sanitize.detect.class_size import class_size_z


@dataclass
class GrowthCheck:
    """Outcome of :func:`flags_without_growth`.

    withdrawn : ndarray of shape (n_rows,)
        bool; the flags to withdraw (all the flags of the classes that fail the check).
    caps : dict of int to int
        Per class that keeps more flags than its growth accounts for, the most flags it
        may keep (see :func:`sanitize.detect.class_size.keep_highest`).
    info : dict
        JSON-able: per class checked, its rows, the rows it would have, the spread of the
        class sizes in rows, its flags, whether they were withdrawn and its cap.
    """

    withdrawn: np.ndarray
    caps: dict[int, int] = field(default_factory=dict)
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
) -> GrowthCheck:
    """Withdraw the flags of classes whose size does not account for them.

    A class is checked when it holds at least ``min_rows`` flags, fewer than ``min_rows``
    of them ``oriented`` (flagged by a detector whose own signal says which side is the
    poison), and it is not in ``skip`` (the classes the size rules judged). With ``n`` its
    rows, ``m`` the rows it would have if it were like the other classes and ``s`` the
    robust spread of the class sizes in rows (both from
    :func:`sanitize.detect.class_size.class_size_z`, against ``expected`` when given), its
    ``f`` flags are withdrawn when the sizes could tell (``f >= min_spreads * s``) and the
    class grew by less than ``min_share`` of them (``n - m < min_share * f``): the growth
    lies nearer to no gain than to a gain of ``f`` rows. When the sizes could tell and
    the class keeps its flags, it may keep at most ``ceil(n - m + min_spreads * s)`` of
    them (``caps``): its gain, and the same margin of spreads for the natural spread of
    its size.

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
    """
    flagged = np.asarray(flagged, dtype=bool)
    labels = np.asarray(labels)
    withdrawn = np.zeros(flagged.shape[0], dtype=bool)
    sizes = class_size_z(labels, expected)
    checked: dict[str, dict[str, Any]] = {}
    caps: dict[int, int] = {}
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
        cap = int(np.ceil(growth + min_spreads * spread_rows))
        if withdraw:
            withdrawn |= flagged & rows
        elif can_tell and n_flags > cap:
            caps[int(c)] = cap
        checked[str(c)] = {
            "rows": size.rows,
            "rows_like_others": size.like_others,
            "size_spread_rows": spread_rows,
            "flagged": n_flags,
            "withdrawn": bool(withdraw),
            "cap": caps.get(int(c)),
        }
    info = {
        "min_share": min_share,
        "min_spreads": min_spreads,
        "expected_shares": expected is not None,
        "checked": checked,
        "n_withdrawn": int(withdrawn.sum()),
    }
    return GrowthCheck(withdrawn=withdrawn, caps=caps, info=info)
