"""Class-level consensus: act on a class that several detectors single out at once.

Each detector judges every class against an absolute bar (a mixture separation, a
silhouette z) that must hold on clean data by itself. A weak backdoor (a faint blend, a
filter, a small patch at 1%) often leaves its target class the most split class for
several detectors at once while staying under each bar. Singling out the same class is
evidence that one detector alone cannot give: on clean data the most split class of one
detector is rarely the most split class of another.

For each detector that reports a class statistic (``info["per_class"][c]["evidence"]``,
higher = more split) the classes are compared by robust z (median / MAD over classes).
A class is suspect when at least ``votes`` detectors give it ``z >= z_threshold``; in a
suspect class, the rows that at least ``agree`` of those detectors put in their candidate
group (``DetectorResult.candidate``) are flagged. Both counts must be at least 2: one
detector's candidate group in a class it alone singles out is exactly what its own
absolute bar rejected.

One exception: a detector that singles a class out by far (``z >= solo_z``, twice the
vote bar) flags its candidate group there alone, in the classes the caller allows
(``solo_classes``: the decision's classes too small to be mostly poison). A faint blend of
a natural picture moves only the pixels; the input-space detector sees its target class
as no clean class is seen (z 6.7 for a Hello Kitty JPEG at alpha 0.10) while its
separation stays under the absolute bar, and no feature detector agrees. In a class that
is mostly poison the candidate group is the clean rest, so the exception stays out of
classes the poison could have doubled.

A second exception: in a class whose size already says it gained rows, but under twice
what it would hold (the poison, if any, a minority), a detector at a lower bar
(``confirm_z``) flags its candidate group alone when an independent check
(``confirm``) backs the group: the decision asks whether the group's images look like
other classes' in pixel space, as a dirty-label poison's do (Gu et al. 2017) and a
natural subgroup's do not (:mod:`sanitize.decision.pixel_neighbours`).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sanitize.detect.base import DetectorResult
from sanitize.detect.mixture import class_evidence_z


@dataclass
class Consensus:
    """Outcome of :func:`class_consensus`.

    flagged : ndarray of shape (n_rows,)
        bool; rows the consensus flags (on top of what the detectors flag themselves).
    strength : ndarray of shape (n_rows,)
        float in [0, 1); mean score of the agreeing detectors on a flagged row, 0 elsewhere.
    voters : dict of int to list of str
        For each flagged row (by index), the detectors whose candidate group holds it.
    info : dict
        JSON-able: per detector the class z-scores, the suspect classes and their voters.
    """

    flagged: np.ndarray
    strength: np.ndarray
    voters: dict[int, list[str]]
    info: dict[str, Any] = field(default_factory=dict)


def class_consensus(
    results: dict[str, DetectorResult],
    labels: np.ndarray,
    *,
    z_threshold: float,
    votes: int,
    agree: int,
    relative_mad_floor: float,
    class_z_thresholds: dict[int, float] | None = None,
    solo_z: float | None = None,
    solo_classes: Container[int] = frozenset(),
    confirm: Callable[[str, int, np.ndarray], bool] | None = None,
    confirm_z: float | None = None,
    confirm_classes: Container[int] = frozenset(),
) -> Consensus:
    """Flag the candidate rows of classes that ``votes`` detectors single out.

    Parameters
    ----------
    results : dict of str to DetectorResult
        Detector results over the same rows; those without ``candidate`` or per-class
        ``evidence`` take no part.
    labels : ndarray of shape (n_rows,)
        Class index of every row.
    z_threshold : float
        Robust z of a class's evidence, among the classes, that counts as a vote.
    votes : int
        Detectors that must vote for a class to make it suspect.
    agree : int
        Voting detectors whose candidate group must hold a row for it to be flagged.
    relative_mad_floor : float
        Floor on the MAD of a detector's evidence over classes, as a share of its median
        (see :func:`sanitize.detect.mixture.class_evidence_z`; three classes at least).
    class_z_thresholds : dict of int to float, optional
        ``z_threshold`` for particular classes (the decision lowers it for a class whose
        size already says it gained rows).
    solo_z : float or None, default=None
        Robust z at which one detector makes a class of ``solo_classes`` suspect alone;
        its candidate group there is flagged without a second detector's. None: never.
    solo_classes : container of int, default=frozenset()
        The classes where a lone detector may act.
    confirm : callable or None, default=None
        ``confirm(name, c, group)`` (``group`` a bool mask over all rows: the detector's
        candidate rows of class ``c``) says whether an independent signal backs the group.
        None: never asked.
    confirm_z : float or None, default=None
        Robust z at which a detector's group in a class of ``confirm_classes`` is put to
        ``confirm``; a group it backs is flagged without a second detector's.
    confirm_classes : container of int, default=frozenset()
        The classes where ``confirm`` may stand in for a second detector.
    """
    n = labels.shape[0]
    z_by_detector: dict[str, dict[int, float]] = {}
    for name, result in results.items():
        if result.candidate is None:
            continue
        z = class_evidence_z(result.info.get("per_class", {}), relative_mad_floor)
        if z:
            z_by_detector[name] = z

    class_voters: dict[int, list[str]] = {}
    solo_voters: dict[int, list[str]] = {}
    confirmed: dict[int, list[str]] = {}
    for name, zs in z_by_detector.items():
        for c, zc in zs.items():
            solo = solo_z is not None and zc >= solo_z and c in solo_classes
            if (
                not solo
                and confirm is not None
                and confirm_z is not None
                and zc >= confirm_z
                and c in confirm_classes
                and confirm(name, c, results[name].candidate & (labels == c))
            ):
                confirmed.setdefault(c, []).append(name)
                solo = True
            if solo:
                solo_voters.setdefault(c, []).append(name)
            if solo or zc >= (class_z_thresholds or {}).get(c, z_threshold):
                class_voters.setdefault(c, []).append(name)
    suspects = sorted(
        c for c, names in class_voters.items() if len(names) >= votes or c in solo_voters
    )

    flagged = np.zeros(n, dtype=bool)
    strength = np.zeros(n)
    voters: dict[int, list[str]] = {}
    per_suspect: dict[str, dict] = {}
    for c in suspects:
        names = sorted(class_voters[c])
        rows = np.flatnonzero(labels == c)
        held = np.stack([results[nm].candidate[rows] for nm in names])
        agreeing = held.sum(axis=0) >= agree
        if len(names) < votes:
            agreeing = np.zeros(rows.size, dtype=bool)
        for j, nm in enumerate(names):
            if nm in solo_voters.get(c, ()):
                agreeing |= held[j]
        chosen = rows[agreeing]
        flagged[chosen] = True
        scores = np.stack([results[nm].score[chosen] for nm in names])
        strength[chosen] = np.where(held[:, agreeing], scores, 0.0).sum(axis=0) / np.maximum(
            1, held[:, agreeing].sum(axis=0)
        )
        for i, row in zip(np.flatnonzero(agreeing), chosen, strict=True):
            voters[int(row)] = [nm for j, nm in enumerate(names) if held[j, i]]
        per_suspect[str(c)] = {
            "voters": names,
            "solo": solo_voters.get(c, []),
            "confirmed": confirmed.get(c, []),
            "z": {nm: z_by_detector[nm][c] for nm in names},
            "n_flagged": int(agreeing.sum()),
            "n": int(rows.size),
        }
    info = {
        "z_threshold": z_threshold,
        "votes": votes,
        "agree": agree,
        "solo_z": solo_z,
        "confirm_z": confirm_z if confirm is not None else None,
        "detectors": sorted(z_by_detector),
        "class_z": {nm: {str(c): z for c, z in zs.items()} for nm, zs in z_by_detector.items()},
        "suspect_classes": suspects,
        "per_suspect": per_suspect,
        "n_flagged": int(flagged.sum()),
    }
    return Consensus(
        flagged=flagged, strength=np.clip(strength, 0.0, 0.999), voters=voters, info=info
    )
