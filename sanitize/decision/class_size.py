"""Class sizes against the other classes' (or the expected shares): which classes grew.

A class is *inflated* when its size is a robust outlier above the other classes' (log
sizes, median and MAD of the other classes, the MAD floored at the binomial spread of a
class of the median size) and more than twice their median: its excess over a typical
class, the poison count if the classes were balanced before the attack, is then most of
it. Naturally imbalanced sets (GTSRB: class sizes spread over a factor 10) have a wide
MAD, so a large class there is rarely an outlier.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from sanitize.detect.base import MAD_TO_SD
from sanitize.errors import ConfigError

# Robust spreads above the others' size from which a class is left out of the reference
# classes whose rows' label agreement says what a class like the others looks like.
REFERENCE_MAX_Z = 1.0


class ClassSize(NamedTuple):
    """One class's size against the other classes' (:func:`class_size_z`).

    rows : int
        Its rows.
    like_others : float
        The rows it would have if it were like the other classes.
    z : float
        Robust z of its log size (or log ratio to its expected share) among theirs.
    log_spread : float
        The robust standard deviation that z is in units of (natural-log size).
    """

    rows: int
    like_others: float
    z: float
    log_spread: float


def class_size_z(labels: np.ndarray, expected: np.ndarray | None = None) -> dict[int, ClassSize]:
    """Per class: its rows, the rows it would have if it were like the other classes, the
    robust z of its log size among them and that z's unit (:class:`ClassSize`). Empty with
    fewer than three classes.

    Without ``expected`` the classes are compared by their sizes: the rows it would have
    are the other classes' median size. With ``expected`` (shape (n_classes,), the share
    or count of every class index to expect; > 0 for every class present) they are
    compared by ``rows / expected``, and the rows it would have are its expected share
    scaled by the other classes' median ratio.
    """
    classes, sizes = np.unique(np.asarray(labels), return_counts=True)
    if classes.size < 3:
        return {}
    scale = np.ones(classes.size)
    if expected is not None:
        scale = np.asarray(expected, dtype=np.float64)[classes]
        if not np.all(scale > 0):
            raise ValueError("expected class shares must be > 0 for every class present")
        scale = scale / scale.mean()
    log_ratio = np.log(sizes / scale)
    out: dict[int, ClassSize] = {}
    for i, c in enumerate(classes):
        others = np.delete(log_ratio, i)
        median = float(np.median(others))
        mad = float(np.median(np.abs(others - median)))
        # A class of n rows spreads by about 1/sqrt(n) in log size (binomial).
        floor = 1.0 / np.sqrt(float(np.median(np.delete(sizes, i))))
        spread = MAD_TO_SD * max(mad, floor)
        z = (log_ratio[i] - median) / spread
        out[int(c)] = ClassSize(
            int(sizes[i]), float(np.exp(median) * scale[i]), float(z), float(spread)
        )
    return out


def inflated_classes(
    labels: np.ndarray,
    z_threshold: float,
    expected: np.ndarray | None = None,
    min_gain: float = 2.0,
) -> dict[int, ClassSize]:
    """The entries of :func:`class_size_z` whose log size is ``z_threshold`` robust
    deviations above the other classes' and that hold more than ``min_gain`` times the
    rows they would have if they were like them."""
    return {
        c: entry
        for c, entry in class_size_z(labels, expected).items()
        if entry.z >= z_threshold and entry.rows > min_gain * entry.like_others
    }


def above_reference(labels: np.ndarray, expected: np.ndarray | None = None) -> dict[int, ClassSize]:
    """The entries of :func:`class_size_z` at least ``REFERENCE_MAX_Z`` robust spreads
    above the other classes' size: the classes that may have gained rows, and so no
    reference of what a class like the others looks like."""
    return {
        c: entry
        for c, entry in class_size_z(labels, expected).items()
        if entry.z >= REFERENCE_MAX_Z and entry.rows > entry.like_others
    }


def size_suspects(
    labels: np.ndarray,
    z_threshold: float,
    expected: np.ndarray | None = None,
    min_gain: float | None = None,
) -> dict[int, ClassSize]:
    """The classes the size rules judge: inflated ones (:func:`inflated_classes`) and,
    with ``expected`` and ``min_gain``, those above ``min_gain`` times their share."""
    suspects = inflated_classes(labels, z_threshold, expected)
    if expected is not None and min_gain is not None:
        suspects = inflated_classes(labels, z_threshold, expected, min_gain) | suspects
    return dict(sorted(suspects.items()))


def dominant_class(labels: np.ndarray, expected: np.ndarray | None = None) -> dict[int, ClassSize]:
    """The entry of :func:`class_size_z` of a class more than twice as large (by its ratio
    to ``expected`` when given) as every other class, and more than twice the rows it
    would have; empty when there is none. In a naturally imbalanced set (GTSRB: sizes over
    a factor 10) a dirty-label target is no robust outlier, but it outgrows the largest
    class: 843 rows against the next largest's 258 (blended noise at 12%)."""
    entries = class_size_z(labels, expected)
    if len(entries) < 3:
        return {}
    classes, sizes = np.unique(np.asarray(labels), return_counts=True)
    scale = np.ones(classes.size)
    if expected is not None:
        scale = np.asarray(expected, dtype=np.float64)[classes]
    ratio = sizes / scale
    top, second = np.argsort(ratio)[::-1][:2]
    c = int(classes[top])
    if ratio[top] > 2 * ratio[second] and entries[c].rows > 2 * entries[c].like_others:
        return {c: entries[c]}
    return {}


def expected_shares(
    counts: tuple[tuple[str, float], ...] | dict[str, float],
    names: list[str],
    values: list[Any],
    present: np.ndarray,
) -> np.ndarray | None:
    """``decision.expected_class_counts`` as one expected share per class index.

    A class is matched by its name or by its label value written as text. None when
    ``counts`` is empty. Classes in ``counts`` that the data lacks are ignored (a class can
    be absent from a delivery); a class present in the data (``present``: class indices)
    without an entry raises :class:`~sanitize.errors.ConfigError`.
    """
    mapping = dict(counts)
    if not mapping:
        return None
    shares = np.zeros(len(names), dtype=np.float64)
    missing = []
    for index, (name, value) in enumerate(zip(names, values, strict=True)):
        count = mapping.get(str(name), mapping.get(str(value)))
        if count is not None:
            shares[index] = float(count)
        elif index in set(np.asarray(present).tolist()):
            missing.append(str(name))
    if missing:
        raise ConfigError(
            f"decision.expected_class_counts has no entry for class(es) {', '.join(missing)}"
        )
    return shares / shares.sum()
