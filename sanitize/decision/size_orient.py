"""Orient a class's flags by its size when the poison would be most of the class.

A dirty-label all-to-one attack relabels rows of the other classes to its target, so the
target class grows by the number of poisons (Gu et al. 2017; at a 15% rate in a balanced
10-class set it is 2.5 times its natural size, 60% of it poison). Activation clustering
and spectral signatures split a class in two and call the smaller side the poison (Chen et
al. 2018, Sec. 3.2; Tran et al. 2018): in such a class the smaller side is the clean rest,
and removing it keeps every poison. The early loss orients a class where the backdoor is
learned first (:mod:`sanitize.decision.orient`); where it is not (MNIST, whose digits are
learned within the first epoch as fast as the patch), the class's size still says which
side the poison is on.

In an inflated class, the flags that the oriented detectors (their flags and candidate
groups: the side their own signal calls the poison) do not back are replaced by the rest
of the class when they are most of the flags and a minority of the class; the decision's
refinement re-draws that group afterwards. Flags mostly on the early loss's side are part
of the poison it found (blended trigger at 10%: half the target class poison, 404 of them
flagged by the early loss) and stay.

An inflated class without flags can also be judged by its splits (``splits``): the side
of each detector's split where the oriented candidates are denser is the poison's, and
rows on ``agree`` such sides are flagged. Sizes alone cannot tell a poisoned balanced set
from a clean set with one naturally large class, which is why the decision does this only
when it is given the class distribution to expect (``expected``: the shares of a
validation split, or of the last clean delivery). Sizes are then measured against it,
as ratios ``rows / expected share``: a class inflated against its own expectation has
gained rows whatever the natural imbalance of the set, and so has a class well above its
share (``min_gain``) where the poison is a minority; such a class is judged by its splits
too, with sides no larger than about the rows it gained.

Two guards bound what the size rules do: flags the bootstrap model cannot fit (a warp it
did not learn: WaNet at 15%) are the poison and are not turned over, and a class the size
rules acted on loses at most the rows it gained (``removal_cap``, :func:`cap_to_excess`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sanitize.decision.class_size import (
    above_reference,
    dominant_class,
    size_suspects,
)
from sanitize.detect.base import MAD_TO_SD, robust_z

# Share of the rows a class would have (``rows_like_others``) below which its clean part is
# not expected to fall: class sizes of a balanced set spread by several percent.
CLEAN_PART_FLOOR = 0.9
# Largest poison side of a split, as a multiple of the rows the class gained: the poison is
# about that many rows; on the vignette filter at 3% (150 poisons) the splits' sides held
# 250-280 rows, a third of them poison, and flagging them removed 208 clean rows.
SIDE_OF_EXCESS_MAX = 1.5
# A row disagrees with its label, by its nearest images, at or below this quantile of the
# other classes' agreement; fewer reference rows than the minimum make no reference.
DISAGREE_QUANTILE = 0.10
REFERENCE_MIN_ROWS = 100
# Fewest reference rows of a class for its share of disagreeing rows to count among the
# classes' (binomial error at most about 0.08).
SHARE_MIN_ROWS = 20


@dataclass
class SizeOrientation:
    """Outcome of :func:`orient_by_size`.

    flagged : ndarray of shape (n_rows,)
        bool; the flags with every inflated class's minority flags replaced by its rest.
    info : dict
        JSON-able: per inflated class, its rows, the rows it would have if it were like the
        other classes, the robust z of its log size, and what was done to its flags.
    """

    flagged: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def orient_by_size(
    flagged: np.ndarray,
    labels: np.ndarray,
    *,
    z_threshold: float,
    min_rows: int,
    oriented: np.ndarray | None = None,
    splits: dict[str, np.ndarray] | None = None,
    agree: int = 2,
    expected: np.ndarray | None = None,
    row_loss: np.ndarray | None = None,
    min_gain: float | None = None,
    label_agreement: np.ndarray | None = None,
    oriented_classes: set[int] | None = None,
    suspect_by_size: bool = True,
) -> SizeOrientation:
    """Turn over the minority flags of inflated classes; flag unflagged ones by their splits.

    In a class far larger than the others (or than its ``expected`` share), flags that the
    oriented side does not back are replaced by the rest of the class; one without flags is
    flagged where ``agree`` of its ``splits`` put a row on the poison's side. The rules, their
    guards and their evidence: docs/decision.md, "orient_by_size".

    Parameters
    ----------
    flagged : ndarray of shape (n_rows,)
        bool; the decision's flags so far.
    labels : ndarray of shape (n_rows,)
        Class index of every row.
    z_threshold : float
        Robust z (> 0) of a class's log size among the other classes that makes it inflated.
    min_rows : int
        Fewest flags (>= 1) a class needs to be turned over; fewer: judged by its splits.
    oriented : ndarray of shape (n_rows,), optional
        bool; the side the oriented detectors call the poison (their flags and candidates).
    splits : dict of str to ndarray of shape (n_rows,), optional
        bool; by name, the candidate groups of the detectors that call the smaller side poison.
    agree : int, default=2
        Splits (>= 1) that must put a row on the poison's side, in a class without flags.
    expected : ndarray of shape (n_classes,), optional
        Share (> 0) of every class index to expect (see :func:`class_size_z`).
    row_loss : ndarray of shape (n_rows,), optional
        Every row's final loss (nats) under the bootstrap model; flags it cannot fit stay.
    min_gain : float, optional
        With ``expected``, ratio of rows to expected rows (> 1) above which a class gained rows.
    label_agreement : ndarray of shape (n_rows,), optional
        Share in [0, 1] of each row's nearest images that carry its label (NaN: not scored).
    oriented_classes : set of int, optional
        Classes the oriented detectors single out; None: every class.
    suspect_by_size : bool, default=True
        Judge every inflated class without flags by its splits; False: only by its pixels.
    """
    rules = _SizeRules(
        flagged,
        labels,
        z_threshold,
        min_rows,
        oriented,
        splits,
        agree,
        expected,
        row_loss,
        min_gain,
        label_agreement,
        oriented_classes,
        suspect_by_size,
    )
    inflated: dict[str, dict[str, Any]] = {}
    for c, (size, like_others, z, _) in rules.suspects.items():
        inflated[str(c)] = rules.judge(c, size, like_others, z)
    info = {
        "z_threshold": z_threshold,
        "expected_shares": expected is not None,
        "inflated": inflated,
        "n_added": int((rules.out & ~rules.flagged).sum()),
        "n_dropped": int((rules.flagged & ~rules.out).sum()),
    }
    return SizeOrientation(flagged=rules.out, info=info)


@dataclass
class _SizeRules:
    """The arguments of :func:`orient_by_size`, the classes it judges (``suspects``: by size,
    and with ``label_agreement`` the dominant class), the reference rows of its pixel checks
    and the flags it returns (``out``); :meth:`judge` applies both rules to one class."""

    flagged: np.ndarray
    labels: np.ndarray
    z_threshold: float
    min_rows: int
    oriented: np.ndarray | None
    splits: dict[str, np.ndarray] | None
    agree: int
    expected: np.ndarray | None
    row_loss: np.ndarray | None
    min_gain: float | None
    label_agreement: np.ndarray | None
    oriented_classes: set[int] | None
    suspect_by_size: bool
    by_size: dict[int, Any] = field(init=False)
    suspects: dict[int, Any] = field(init=False)
    reference: np.ndarray | None = field(init=False)
    out: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.flagged = np.asarray(self.flagged, dtype=bool)
        self.labels = labels = np.asarray(self.labels)
        oriented = self.oriented
        self.oriented = (
            np.zeros_like(self.flagged) if oriented is None else np.asarray(oriented, dtype=bool)
        )
        self.out = self.flagged.copy()
        self.by_size = size_suspects(labels, self.z_threshold, self.expected, self.min_gain)
        self.suspects, self.reference = self.by_size, None
        if self.label_agreement is not None:
            # A dominant class is judged only by its pixels: its size alone proves nothing.
            dominant = dominant_class(labels, self.expected)
            self.suspects = dict(sorted((dominant | self.by_size).items()))
            grown = self.suspects | above_reference(labels, self.expected)
            self.reference = ~np.isnan(self.label_agreement) & ~np.isin(labels, list(grown))

    def judge(self, c: int, size: int, like_others: float, z: float) -> dict[str, Any]:
        """Both rules on the class ``c`` (``size`` rows, ``like_others`` if it were like the
        other classes, robust z ``z``): what was done, as its entry in ``info["inflated"]``."""
        rows = self.labels == c
        la = self.label_agreement
        by_pixels = (
            la is not None
            and self.oriented_classes is not None
            and c not in self.oriented_classes
            and not np.isnan(la[rows]).any()
        )
        entry: dict[str, Any] = {"rows": size, "rows_like_others": like_others, "z": z}
        turned = self._turn_over(c, rows, by_pixels, entry)
        self._flag_by_splits(c, rows, by_pixels, entry)
        if turned or entry.get("flagged_by_splits"):
            # The size rules claim the rows the class gained: no more than its excess over
            # the rows it would have (with room for a clean part 10% below that).
            entry["removal_cap"] = max(int(size - CLEAN_PART_FLOOR * like_others), 0)
        return entry

    def _turn_over(self, c: int, rows: np.ndarray, by_pixels: bool, entry: dict) -> bool:
        """Turn the minority flags of the class ``c`` over to its rest when the poison would
        be most of it, they are not its own class's images and its model fits them; adds the
        figures to ``entry``."""
        flagged, oriented, size = self.flagged, self.oriented, entry["rows"]
        majority = size > 2 * entry["rows_like_others"]  # the poison would be most of the class
        backed = int((oriented & flagged & rows).sum())
        # The flags to turn over: the smaller side the feature-space detectors call the
        # poison. Where the oriented detectors single the class out, those they do not back;
        # elsewhere all of them, if their rows agree with their label more than the rest.
        group = flagged & rows if by_pixels else flagged & rows & ~oriented
        n_group = int(group.sum())
        misfit = _misfit(self.row_loss, group, rows & ~group)
        minority = self.min_rows <= n_group and 2 * n_group < size
        if by_pixels:
            agree_group, agree_rest, like_own_class = self._agreement(c, rows, group)
        else:
            like_own_class = backed < n_group
        turned = majority and minority and like_own_class and not misfit
        if turned:
            self.out[rows] = ~group[rows]
        entry |= {
            "poison_majority": majority,
            "oriented_by": "pixels" if by_pixels else "oriented_detectors",
            "flagged_before": int((flagged & rows).sum()),
            "flagged_by_oriented": backed,
            "flagged_not_backed": int((flagged & rows & ~oriented).sum()),
            "not_backed_misfit": misfit,
            "turned_over": turned,
        }
        if by_pixels:
            entry["label_agreement_flagged"] = agree_group
            entry["label_agreement_rest"] = agree_rest
        return turned

    def _agreement(
        self, c: int, rows: np.ndarray, group: np.ndarray
    ) -> tuple[float | None, float, bool]:
        """The mean label agreement of the class ``c``'s ``group`` (None when empty) and of
        its rest, and whether the group agrees with its label more than the rest does."""
        la = self.label_agreement
        agree_group = float(np.mean(la[group])) if group.any() else None
        agree_rest = float(np.mean(la[rows & ~group]))
        like_own_class = agree_group is not None and agree_group > agree_rest
        if c not in self.by_size:
            # Only by its pixels: the rest must also look foreign, agreeing with its
            # label less often than the other classes' rows do.
            like_own_class &= agree_rest < float(np.mean(la[self.reference]))
        return agree_group, agree_rest, like_own_class

    def _flag_by_splits(self, c: int, rows: np.ndarray, by_pixels: bool, entry: dict) -> None:
        """Flag the class ``c``, with fewer than ``min_rows`` flags, where ``agree`` splits put
        a row on the poison's side, when its size (or its pixels) makes it suspect."""
        if entry["flagged_before"] >= self.min_rows or not self.splits:
            return
        judge_splits = self.suspect_by_size and c in self.by_size
        if not judge_splits and self.label_agreement is not None:
            excess = pixel_excess(
                self.label_agreement,
                rows,
                self.reference,
                self.z_threshold,
                self.min_rows,
                labels=self.labels,
            )
            entry["pixel_excess"] = excess
            judge_splits = bool(excess and excess["suspect"])
        if not judge_splits:
            return
        la = self.label_agreement if by_pixels else None
        evidence = _side_evidence(rows, self.oriented, la, self.min_rows)
        # A side far larger than the rows the class gained cannot be the poison.
        max_side = SIDE_OF_EXCESS_MAX * (entry["rows"] - entry["rows_like_others"])
        sides = {}
        if evidence is not None:
            sides = _poison_sides(rows, evidence, self.splits, self.min_rows, max_side)
        entry["split_sides"] = {name: int(side.sum()) for name, side in sides.items()}
        if len(sides) >= self.agree:
            chosen = np.sum(list(sides.values()), axis=0) >= self.agree
            self.out[chosen] = True
            entry["flagged_by_splits"] = int(chosen.sum())


def pixel_excess(
    label_agreement: np.ndarray,
    rows: np.ndarray,
    reference: np.ndarray | None,
    z_threshold: float,
    min_rows: int,
    *,
    labels: np.ndarray | None = None,
) -> dict[str, Any] | None:
    """How much more often the rows of a class disagree with their label than the
    ``reference`` rows (other classes) do, by their nearest images.

    Disagreeing means an agreement at or below the reference's 10th percentile. The
    class is ``suspect`` when its share of such rows exceeds the reference's by
    ``z_threshold`` binomial standard errors and by ``min_rows`` rows, and, with
    ``labels``, by ``z_threshold`` robust deviations of the reference classes' own shares
    (``class_z``): some classes are harder to tell by their pixels than others. Over 11
    clean CIFAR-10 sets (six with one class 1.3-2.2 times the others' size), a class's
    share stood at most 2.3 such deviations above the others' (birds); the class a 10%
    WaNet poison doubled, at 5.0. A naturally large clean class agrees with its label as
    often as the others (neighbours come from a pool balanced by class, see
    :mod:`sanitize.decision.pixel_neighbours`), so only a class filled with images of
    other classes passes. None with fewer than ``REFERENCE_MIN_ROWS`` reference rows.
    """
    if reference is None or int(reference.sum()) < REFERENCE_MIN_ROWS:
        return None
    ref = label_agreement[reference]
    cut = float(np.quantile(ref, DISAGREE_QUANTILE))
    p0 = float(np.mean(ref <= cut))
    n = int(rows.sum())
    p = float(np.mean(label_agreement[rows] <= cut))
    z = (p - p0) / np.sqrt(p0 * (1.0 - p0) / n) if 0.0 < p0 < 1.0 else 0.0
    excess = (p - p0) * n
    out = {
        "cut": cut,
        "reference_share": p0,
        "class_share": p,
        "z": float(z),
        "excess_rows": float(excess),
    }
    suspect = z >= z_threshold and excess >= min_rows
    if labels is not None:
        class_z = _share_z(p, n, label_agreement[reference] <= cut, np.asarray(labels)[reference])
        out["class_z"] = class_z
        suspect = suspect and class_z is not None and class_z >= z_threshold
    return out | {"suspect": bool(suspect)}


def _share_z(share: float, n_rows: int, below: np.ndarray, labels: np.ndarray) -> float | None:
    """Robust z of ``share`` among the shares of ``below`` in each class of ``labels``
    (classes of at least ``SHARE_MIN_ROWS`` rows; None with fewer than three), its unit
    at least the binomial standard error of a class of ``n_rows`` rows."""
    classes, counts = np.unique(labels, return_counts=True)
    classes = classes[counts >= SHARE_MIN_ROWS]
    if classes.size < 3:
        return None
    shares = np.array([below[labels == c].mean() for c in classes])
    median = float(np.median(shares))
    binomial = np.sqrt(max(median * (1.0 - median), 1e-12) / n_rows)
    _, median, scale = robust_z(shares, mad_floor=binomial / MAD_TO_SD)
    return float((share - median) / scale)


def _misfit(row_loss: np.ndarray | None, group: np.ndarray, rest: np.ndarray) -> bool:
    """Whether the bootstrap model gives most of ``group`` less than even odds for its
    label (median loss above log 2), and fits it worse than ``rest``."""
    if row_loss is None or not group.any() or not rest.any():
        return False
    median = float(np.median(row_loss[group]))
    return bool(median > np.log(2.0) and median > float(np.median(row_loss[rest])))


def cap_to_excess(
    flagged: np.ndarray, poison_score: np.ndarray, labels: np.ndarray, info: dict[str, Any]
) -> np.ndarray:
    """Flags with every class that :func:`orient_by_size` capped (``info["inflated"][c]
    ["removal_cap"]``) cut to its cap (see :func:`keep_highest`)."""
    caps = {
        int(c): entry["removal_cap"]
        for c, entry in info.get("inflated", {}).items()
        if entry.get("removal_cap") is not None
    }
    return keep_highest(flagged, poison_score, labels, caps)


def keep_highest(
    flagged: np.ndarray, poison_score: np.ndarray, labels: np.ndarray, caps: dict[int, int]
) -> np.ndarray:
    """Flags with every class ``c`` of ``caps`` cut to its ``caps[c]`` flags of highest
    ``poison_score`` (ties broken by row order, so the cut is deterministic)."""
    out = np.asarray(flagged, dtype=bool).copy()
    for c, cap in caps.items():
        members = np.flatnonzero(out & (np.asarray(labels) == int(c)))
        if members.size <= cap:
            continue
        order = members[np.lexsort((members, -poison_score[members].astype(np.float64)))]
        out[order[cap:]] = False
    return out


def _side_evidence(
    rows: np.ndarray,
    oriented: np.ndarray,
    label_agreement: np.ndarray | None,
    min_rows: int,
) -> np.ndarray | None:
    """Per row, the evidence of poison that orients a split of the class ``rows``: how
    little its nearest images share its label when ``label_agreement`` is given, else
    whether the oriented detectors put it on their side; None when the class holds fewer
    than ``min_rows`` such rows (nothing says which side is which)."""
    if label_agreement is not None:
        return 1.0 - np.nan_to_num(label_agreement, nan=1.0)
    if int((oriented & rows).sum()) < min_rows:
        return None
    return (oriented & rows).astype(np.float64)


def _poison_sides(
    rows: np.ndarray,
    evidence: np.ndarray,
    splits: dict[str, np.ndarray],
    min_rows: int,
    max_side: float,
) -> dict[str, np.ndarray]:
    """Per split of the class ``rows``, the side where the rows' ``evidence`` of poison
    (an oriented detector's side as 0 / 1, or how little a row's nearest images share its
    label) is higher on average.

    Splits with a side under ``min_rows`` rows are left out, and so are splits whose
    poison side holds more than ``max_side`` rows, or whose two sides are exactly even.
    """
    sides: dict[str, np.ndarray] = {}
    for name, candidate in splits.items():
        inside = candidate & rows
        outside = rows & ~candidate
        if min(int(inside.sum()), int(outside.sum())) < min_rows:
            continue
        mean_in = float(evidence[inside].mean())
        mean_out = float(evidence[outside].mean())
        if mean_in != mean_out:
            side = inside if mean_in > mean_out else outside
            if side.sum() <= max_side:
                sides[name] = side
    return sides
