"""Orient a class's flags by the shortcut when the shortcut is most of the class, or when
the other flags there contradict it.

Activation clustering and spectral signatures split a class in two and call the smaller
side the poison (Chen et al. 2018, Sec. 3.2; Tran et al. 2018). When the poisons are most
of their class, as in a clean-label attack that poisons most of its target class's images
(SIG, Barni et al. 2019) or a high rate into a small class, that smaller side is the clean
rest, and removing it is all loss. A detector whose own signal is oriented — the early
loss of Anti-Backdoor Learning: poisons are the rows learned first (Li et al. 2021,
Sec. 3) — says which side the shortcut is on. In a class where such a detector flags more
than half of the rows (a majority it only flags when the class stands out among the
classes), the flags of the class are reduced to the rows it flags: any other flag there
is on the side that the shortcut detector found to be learned as slowly as clean data.

The same holds where the shortcut flags a group but fewer than half of the rows, and most
of the other detectors' flags in the class lie off the shortcut's side (its flags and its
candidate group): a blended trigger at 5% into a GTSRB class of 227 rows made the class
52% poison; the early loss flagged 155 rows (99% poison) and spectral signatures the
other 225 (1% poison), the smaller side of their split. Where the detectors agree, most
flags lie on the shortcut's side (at most 19% off it on the benchmark cases, a third or
more of those poisons), and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Orientation:
    """Outcome of :func:`orient_by_shortcut`.

    flagged : ndarray of shape (n_rows,)
        bool; the flags with the other side of every oriented class removed.
    dropped : ndarray of shape (n_rows,)
        bool; the flags removed.
    info : dict
        JSON-able: per oriented class, its rows, the shortcut group's size and the flags
        dropped.
    """

    flagged: np.ndarray
    dropped: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def orient_by_shortcut(
    flagged: np.ndarray,
    shortcut: np.ndarray,
    labels: np.ndarray,
    *,
    side: np.ndarray | None = None,
    others: np.ndarray | None = None,
    min_rows: int | None = None,
) -> Orientation:
    """Keep only the shortcut's flags where it flags a majority or the others contradict it.

    With ``min_rows`` and ``others``, a class where the shortcut flags at least ``min_rows``
    rows, and where more than half of the other detectors' flags lie off ``side``, keeps
    only the flags on ``side``.

    Parameters
    ----------
    flagged : ndarray of shape (n_rows,)
        bool; the decision's flags so far.
    shortcut : ndarray of shape (n_rows,)
        bool; the flags of the oriented (shortcut) detectors.
    labels : ndarray of shape (n_rows,)
        Class index of every row.
    side : ndarray of shape (n_rows,), optional
        bool; the shortcut's side: its flags and its candidate group (default: its flags).
    others : ndarray of shape (n_rows,), optional
        bool; the flags of the other detectors.
    min_rows : int, optional
        Fewest shortcut flags in a class for the others' contradiction to count (see above).

    Returns
    -------
    Orientation
        Other classes are unchanged.
    """
    flagged = np.asarray(flagged, dtype=bool)
    shortcut = np.asarray(shortcut, dtype=bool)
    side = shortcut if side is None else np.asarray(side, dtype=bool) | shortcut
    labels = np.asarray(labels)
    out = flagged.copy()
    per_class: dict[str, dict[str, Any]] = {}
    for c in np.unique(labels[shortcut]):
        rows = labels == c
        size = int(rows.sum())
        group = int((shortcut & rows).sum())
        if 2 * group > size:
            dropped, rule = rows & flagged & ~shortcut, "majority"
        elif (
            others is not None
            and min_rows is not None
            and group >= min_rows
            and 2 * (others & rows & ~side).sum() > (others & rows).sum()
        ):
            dropped, rule = rows & flagged & ~side, "contradicted"
        else:
            continue
        out[dropped] = False
        per_class[str(int(c))] = {
            "rows": size,
            "shortcut": group,
            "rule": rule,
            "dropped": int(dropped.sum()),
        }
    dropped = flagged & ~out
    info = {"classes": per_class, "n_dropped": int(dropped.sum())}
    return Orientation(flagged=out, dropped=dropped, info=info)
