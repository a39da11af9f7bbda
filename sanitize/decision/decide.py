"""Turn the detectors' results into one poison score, flags and sample weights per row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sanitize.config import DecisionConfig
from sanitize.decision.class_size import (
    above_reference,
    cap_to_excess,
    dominant_class,
    orient_by_size,
    size_suspects,
)
from sanitize.decision.growth import flags_without_growth, rank_auc
from sanitize.decision.orient import orient_by_shortcut
from sanitize.decision.pixel_neighbours import label_agreement
from sanitize.decision.refine import refine_by_class
from sanitize.detect.base import DetectorResult, available_detectors, get_detector
from sanitize.detect.mixture import class_evidence_z
from sanitize.errors import ConfigError

_BELOW_HALF = np.nextafter(np.float32(0.5), np.float32(0.0))
# The reason of a row the size rules flagged (:mod:`sanitize.decision.class_size`).
SIZE_REASON = "class_size"
# A class an oriented detector singles out: its class evidence this many robust deviations
# above the other classes' (:func:`sanitize.detect.mixture.class_evidence_z`, with that
# floor on the deviation relative to the median).
SINGLED_OUT_Z = 2.0
CLASS_MAD_FLOOR = 0.1


@dataclass
class Decision:
    """The per-row verdict of the ensemble.

    Attributes
    ----------
    poison_score : ndarray of shape (n_rows,)
        float32 in [0, 1]; ``>= 0.5`` exactly where ``flagged``.
    flagged : ndarray of shape (n_rows,)
        bool; the rows to remove.
    sample_weight : ndarray of shape (n_rows,)
        float32; 0 where flagged, > 0 on kept rows with mean exactly 1 over them (up to
        float32 rounding).
    reasons : list of list of str
        For a flagged row, the sorted names of the detectors that flagged it; empty for a
        kept row.
    votes : ndarray of shape (n_rows,)
        int32 number of detectors that voted for the row.
    info : dict
        JSON-serialisable: votes needed, counts before and after the removal cap, the cap,
        per-detector flag counts.
    """

    poison_score: np.ndarray
    flagged: np.ndarray
    sample_weight: np.ndarray
    reasons: list[list[str]]
    votes: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def decide(
    results: dict[str, DetectorResult],
    n_rows: int,
    config: DecisionConfig,
    labels: np.ndarray | None = None,
    coordinates: np.ndarray | None = None,
    seed: int = 0,
    expected_shares: np.ndarray | None = None,
    row_loss: np.ndarray | None = None,
    label_agreement: np.ndarray | None = None,
) -> Decision:
    """Combine detector results by vote into one poison score, flags and weights.

    A row is flagged when at least ``k`` detectors flagged it, ``k`` being
    ``config.min_votes`` or else a strict majority of the detectors that ran (1 of 1, 2 of
    2, 2 of 3, 3 of 4). A detector with ``Detector.votes == "groups"`` (CBD) votes, with
    ``labels``, only in the classes where it flags at least
    ``config.group_vote_min_rows`` rows; its score elsewhere counts as just below 0.5. A
    row's ``poison_score`` is the k-th largest of its detector scores, so that, each
    detector keeping ``score >= 0.5 <=> flagged``, ``poison_score >= 0.5`` exactly when
    ``k`` detectors voted for it. With
    ``labels`` and ``config.orient``, a class where the oriented detectors
    (``Detector.oriented``, and a result's ``oriented`` rows) flag a majority, or a group
    that most of the other flags there lie off, keeps only the flags on their side
    (:func:`sanitize.decision.orient.orient_by_shortcut`); the others get a score just below
    0.5. With ``labels`` and ``config.size_orient``, a class inflated far beyond the
    others' size, where the flags are a minority, has them replaced by the rest of the
    class (:func:`sanitize.decision.class_size.orient_by_size`; reason ``class_size``, the
    class's scores turned over); with ``config.size_suspect`` (by default: when
    ``expected_shares`` is given, or when ``label_agreement`` says the class holds far more
    images of other classes than the others do) such a class without flags is flagged by
    its detectors' splits. Sizes are measured against ``expected_shares`` when given. Flags that
    ``row_loss`` says the bootstrap model cannot fit are not turned over, and a class the
    size rules acted on keeps at most the rows it gained flagged (its ``removal_cap``,
    applied after the refinement, highest scores first). With ``labels``,
    ``coordinates`` and ``config.refine``, the flags of each class are then re-drawn by
    :func:`sanitize.decision.refine.refine_by_class`: a row it adds gets
    ``poison_score = 0.5 + 0.5 * p`` (``p`` its cross-fitted probability) and the reason
    ``refine``; a row it drops, a score just below 0.5. With ``labels`` and
    ``config.growth_check``, a class whose size does not account for its flags, none of
    them a group of the oriented detectors', loses them
    (:func:`sanitize.decision.growth.flags_without_growth`; scores just below 0.5). When
    more than ``floor(config.max_removal_fraction * n_rows)`` rows are flagged, only that
    many, those of highest poison score, stay flagged; the scores of the others are lowered
    to just below 0.5 so the contract holds.

    Kept rows are weighted by the raw training weight of the results that carry one (the
    product when several do; only CBD does), clipped to ``config.weight_clip`` and divided
    by their mean over the kept rows; without such a result every kept row weighs 1.
    With ``labels`` and ``config.weight_suspect_only``, only the classes with at least
    ``config.weight_min_flagged`` removed rows, whose raw weights rank the removed rows
    below the kept ones with an AUROC of at least ``config.weight_min_agreement``
    (``info["weight_agreement"]``), are weighted so (``info["weight_classes"]``); the kept
    rows of the others take the clip's upper end before the normalisation.
    Removed rows weigh 0.

    Parameters
    ----------
    results : dict of str to DetectorResult
        Results by detector name, each over the same ``n_rows`` rows.
    n_rows : int
        Number of rows scored.
    config : DecisionConfig
        ``min_votes``, ``max_removal_fraction``, ``weight_clip`` and each rule's settings.
    labels : ndarray of shape (n_rows,), optional
        Class index of every row; without it only the vote and the removal cap run.
    coordinates : ndarray of shape (n_rows, k), optional
        Every row's coordinates on its class's top principal directions (the shared class
        statistics' projections); without them there is no refinement.
    seed : int, default=0
        Seeds the refinement's fold split.
    expected_shares : ndarray of shape (n_classes,), optional
        The share (or count) of every class index to expect in a clean delivery
        (``config.expected_class_counts`` resolved to class indices); > 0 for every class
        in ``labels``.
    row_loss : ndarray of shape (n_rows,), optional
        Every row's final loss under the bootstrap model; flags it cannot fit are not
        turned over by the size orientation (see
        :func:`sanitize.decision.class_size.orient_by_size`).
    label_agreement : ndarray of shape (n_rows,), optional
        Share of each row's nearest images that carry its label, in the classes the size
        rules judge and a sample of the others (:func:`size_rule_agreement`); it orients
        the classes the oriented detectors do not single out (their class evidence under
        ``SINGLED_OUT_Z``), and tells which large classes without flags hold
        images of other classes.

    Returns
    -------
    Decision

    Raises
    ------
    ConfigError
        No results, or ``min_votes`` larger than the number of detectors that ran.
    ValueError
        A result does not cover ``n_rows`` rows.
    """
    if not results:
        raise ConfigError("no detector results to decide on; run at least one detector")
    names = sorted(results)
    for name in names:
        got = results[name].score.shape[0]
        if got != n_rows:
            raise ValueError(f"detector {name!r} scored {got} rows, expected {n_rows}")
    m = len(names)
    k = config.min_votes if config.min_votes is not None else m // 2 + 1
    if k > m:
        raise ConfigError(f"decision.min_votes={k} exceeds the {m} detector(s) that ran")

    # A detector that votes by groups (``Detector.votes == "groups"``: CBD) votes only in
    # the classes where it flags a group; elsewhere its flags are scattered outliers.
    group_voters = [nm for nm in names if _detector_attr(nm, "votes", "rows") == "groups"]
    vote_flags = {nm: results[nm].flagged for nm in names}
    vote_scores = {nm: results[nm].score for nm in names}
    if labels is not None:
        for nm in group_voters:
            vote_flags[nm] = _in_groups(results[nm].flagged, np.asarray(labels), config)
            vote_scores[nm] = np.where(
                vote_flags[nm], results[nm].score, np.minimum(results[nm].score, _BELOW_HALF)
            )
    scores = np.stack([vote_scores[nm] for nm in names]).astype(np.float32)
    flags = np.stack([vote_flags[nm] for nm in names])
    votes = flags.sum(axis=0).astype(np.int32)
    # k-th largest per row: the (m - k)-th smallest.
    poison_score = np.partition(scores, m - k, axis=0)[m - k].astype(np.float32)
    flagged = votes >= k
    reasons: list[list[str]] = [[] for _ in range(n_rows)]
    for i in np.flatnonzero(flagged):
        reasons[i] = [names[j] for j in np.flatnonzero(flags[:, i])]

    orient_info = None
    oriented = [nm for nm in names if _detector_attr(nm, "oriented", False)]
    # The oriented detectors' own flags, and the flags a detector oriented itself in some
    # classes: their signal says which side is the poison.
    shortcut = _oriented_side(results, oriented, with_candidates=False)
    if labels is not None and config.orient and shortcut is not None:
        orientation = orient_by_shortcut(
            flagged,
            shortcut,
            np.asarray(labels),
            side=_oriented_side(results, oriented),
            others=np.any([vote_flags[nm] for nm in names if nm not in oriented], axis=0)
            if len(oriented) < len(names)
            else None,
            min_rows=config.refine_min_rows,
        )
        _unflag(orientation.dropped, poison_score, reasons)
        flagged = orientation.flagged
        orient_info = orientation.info | {
            "by": oriented + [nm for nm in names if results[nm].oriented is not None]
        }

    size_info = None
    suspect_by_size = config.size_suspect
    if suspect_by_size is None:
        suspect_by_size = expected_shares is not None
    if labels is not None and config.size_orient:
        sized = orient_by_size(
            flagged,
            np.asarray(labels),
            z_threshold=config.size_z,
            min_rows=config.refine_min_rows,
            oriented=_oriented_side(results, oriented),
            splits={
                nm: results[nm].candidate
                for nm in names
                if nm not in oriented and results[nm].candidate is not None
            },
            suspect_by_size=bool(suspect_by_size),
            expected=expected_shares,
            row_loss=row_loss,
            min_gain=config.size_gain,
            label_agreement=label_agreement,
            oriented_classes=_singled_out(results, oriented, config)
            if label_agreement is not None
            else None,
        )
        added = sized.flagged & ~flagged
        dropped = flagged & ~sized.flagged
        # The class's ranking turns over with its flags: the rows the detectors found least
        # like the flagged minority are the likeliest poisons.
        poison_score[added] = (0.5 + 0.5 * (1.0 - poison_score[added])).astype(np.float32)
        poison_score[dropped] = np.minimum(0.5 * (1.0 - poison_score[dropped]), _BELOW_HALF)
        for i in np.flatnonzero(added):
            reasons[i] = [SIZE_REASON]
        for i in np.flatnonzero(dropped):
            reasons[i] = []
        flagged = sized.flagged
        size_info = sized.info

    refine_info = None
    if labels is not None and coordinates is not None and config.refine:
        refined = refine_by_class(
            flagged,
            np.asarray(labels),
            coordinates[:, : config.refine_components],
            keep=config.refine_keep,
            min_rows=config.refine_min_rows,
            folds=config.refine_folds,
            add=config.refine_add,
            min_kept=config.refine_min_kept,
            skip=_input_space_only(names, flagged, np.asarray(labels), reasons),
            seed=seed,
        )
        added = refined.flagged & ~flagged
        p = refined.probability
        poison_score[added] = (0.5 + 0.5 * p[added]).astype(np.float32)
        for i in np.flatnonzero(added):
            reasons[i] = ["refine"]
        _unflag(flagged & ~refined.flagged, poison_score, reasons)
        flagged = refined.flagged
        refine_info = refined.info

    if size_info is not None:
        capped_by_size = cap_to_excess(flagged, poison_score, np.asarray(labels), size_info)
        size_info["n_capped"] = _unflag(flagged & ~capped_by_size, poison_score, reasons)
        flagged = capped_by_size

    growth_info = None
    if labels is not None and config.growth_check:
        growth = flags_without_growth(
            flagged,
            np.asarray(labels),
            oriented=shortcut,
            min_rows=config.refine_min_rows,
            min_share=config.growth_share,
            min_spreads=config.growth_spreads,
            expected=expected_shares,
            skip=frozenset(int(c) for c in (size_info or {}).get("inflated", {})),
            label_agreement=label_agreement,
            reference=~np.isin(labels, list(above_reference(np.asarray(labels), expected_shares))),
            pixel_auc=config.growth_pixel_auc,
            pixel_reference=config.growth_pixel_reference,
        )
        _unflag(growth.withdrawn, poison_score, reasons)
        flagged = flagged & ~growth.withdrawn
        growth_info = growth.info

    settled_info = None
    settlers = [nm for nm in names if _detector_attr(nm, "settles_classes", False)]
    if labels is not None and settlers:
        flagged, settled_info = _settle_classes(
            results, settlers, flagged, np.asarray(labels), poison_score, reasons, config
        )

    n_before = int(flagged.sum())
    limit = int(np.floor(config.max_removal_fraction * n_rows))
    capped = n_before > limit
    if capped:
        cand = np.flatnonzero(flagged)
        # Highest scores first; ties broken by row order so the cut is deterministic.
        order = cand[np.lexsort((cand, -poison_score[cand].astype(np.float64)))]
        flagged = np.zeros(n_rows, dtype=bool)
        flagged[order[:limit]] = True
        poison_score = np.where(flagged, poison_score, np.minimum(poison_score, _BELOW_HALF))
    poison_score = poison_score.astype(np.float32)

    weighted = [nm for nm in names if results[nm].weight is not None]
    sample_weight, weight_classes, weight_agreement = _sample_weights(
        [results[nm].weight for nm in weighted], flagged, labels, config
    )

    for i in np.flatnonzero(~flagged):
        reasons[i] = []  # removed by the cap

    info = {
        "detectors": names,
        "group_voters": group_voters,
        "min_votes": int(k),
        "min_votes_from": "config" if config.min_votes is not None else "majority",
        "n_rows": int(n_rows),
        "n_flagged_before_cap": n_before,
        "n_flagged": int(flagged.sum()),
        "removal_cap": limit,
        "cap_applied": bool(capped),
        "flags_per_detector": {nm: int(results[nm].flagged.sum()) for nm in names},
        "votes_per_detector": {nm: int(flags[j].sum()) for j, nm in enumerate(names)},
        "weights_from": weighted,
        "weight_clip": [float(x) for x in config.weight_clip],
        "weight_classes": weight_classes,
        "weight_agreement": weight_agreement,
        "orient": orient_info,
        "size_orient": size_info,
        "refine": refine_info,
        "growth": growth_info,
        "settled": settled_info,
    }
    return Decision(
        poison_score=poison_score,
        flagged=flagged,
        sample_weight=sample_weight,
        reasons=reasons,
        votes=votes,
        info=info,
    )


def _sample_weights(
    weights: list[np.ndarray],
    flagged: np.ndarray,
    labels: np.ndarray | None,
    config: DecisionConfig,
) -> tuple[np.ndarray, list[int] | None, dict[str, float | None] | None]:
    """Kept rows' training weights (mean 1, removed rows 0), the weighted classes and each
    suspect class's agreement AUROC; see :func:`decide`."""
    n_rows = flagged.shape[0]
    kept = ~flagged
    sample_weight = np.zeros(n_rows, dtype=np.float64)
    if not kept.any():
        return sample_weight.astype(np.float32), None, None
    raw = np.ones(n_rows, dtype=np.float64)
    for weight in weights:
        raw *= weight
    lo, hi = config.weight_clip
    w = np.clip(raw, lo, hi)
    weight_classes = weight_agreement = None
    if labels is not None and config.weight_suspect_only and weights:
        labels = np.asarray(labels)
        removed = np.bincount(labels[flagged], minlength=int(labels.max()) + 1)
        suspect = removed >= config.weight_min_flagged
        weight_agreement = {}
        for c in np.flatnonzero(suspect):
            rows = labels == c
            agreement = rank_auc(flagged[rows], -raw[rows])
            weight_agreement[str(c)] = None if np.isnan(agreement) else agreement
            suspect[c] = agreement >= config.weight_min_agreement
        w = np.where(suspect[labels], w, hi)
        weight_classes = [int(c) for c in np.flatnonzero(suspect)]
    sample_weight[kept] = w[kept] / w[kept].mean()
    return sample_weight.astype(np.float32), weight_classes, weight_agreement


def _input_space_only(
    names: list[str], flagged: np.ndarray, labels: np.ndarray, reasons: list[list[str]]
) -> frozenset[int]:
    """Classes whose every flagged row only input-space detectors (``Detector.feature_space``
    False) flagged: groups drawn in the input, which feature coordinates need not hold."""
    inputs = {nm for nm in names if not _detector_attr(nm, "feature_space", True)}
    if not inputs:
        return frozenset()
    classes = set()
    for c in np.unique(labels[flagged]):
        by = [set(reasons[i]) for i in np.flatnonzero(flagged & (labels == c))]
        if all(voters and voters <= inputs for voters in by):
            classes.add(int(c))
    return frozenset(classes)


def _settle_classes(
    results: dict[str, DetectorResult],
    settlers: list[str],
    flagged: np.ndarray,
    labels: np.ndarray,
    poison_score: np.ndarray,
    reasons: list[list[str]],
    config: DecisionConfig,
) -> tuple[np.ndarray, dict[str, Any]]:
    """In each class where a detector with ``Detector.settles_classes`` flags at least
    ``config.refine_min_rows`` rows, and at least half of the rows flagged there, keep
    exactly its flags there (``poison_score`` and ``reasons`` updated in place); the flags
    and figures per class.

    An exact stamp holds every poison of a patch attack, so the other flags of its class
    are clean rows; where the stamp is a small part of the class's flags (a blend whose
    trigger is exact only where the images saturate) it is part of a larger attack, and
    its rows are only added to the flags."""
    exact = np.any([results[nm].flagged for nm in settlers], axis=0)
    exact_score = np.max([results[nm].score for nm in settlers], axis=0)
    flagged = flagged.copy()
    per_class: dict[str, dict[str, Any]] = {}
    counts = np.bincount(labels[exact], minlength=int(labels.max()) + 1)
    for c in np.flatnonzero(counts >= config.refine_min_rows):
        rows = labels == c
        settled = counts[c] >= 0.5 * (rows & (flagged | exact)).sum()
        added = rows & exact & ~flagged
        dropped = rows & flagged & ~exact if settled else np.zeros_like(flagged)
        poison_score[added] = np.maximum(exact_score[added], 0.5)
        for i in np.flatnonzero(added):
            reasons[i] = [nm for nm in settlers if results[nm].flagged[i]]
        _unflag(dropped, poison_score, reasons)
        flagged = (flagged | added) & ~dropped
        per_class[str(c)] = {
            "settled": bool(settled),
            "kept": int(counts[c]),
            "added": int(added.sum()),
            "dropped": int(dropped.sum()),
        }
    return flagged, {"by": settlers, "per_class": per_class}


def _detector_attr(name: str, attr: str, default: Any) -> Any:
    """A registered detector's class-level attribute (``votes``, ``oriented``); ``default``
    for a result whose name is not registered (one built by hand)."""
    if name not in available_detectors():
        return default
    return getattr(get_detector(name), attr)


def _oriented_side(
    results: dict[str, DetectorResult], oriented: list[str], with_candidates: bool = True
) -> np.ndarray | None:
    """Rows the oriented detectors flag or hold in their candidate group (the side their
    own signal calls the poison; without the groups, their flags), and the rows any result
    marks ``oriented``; None when there are none of either."""
    side = [results[nm].flagged for nm in oriented]
    if with_candidates:
        side += [results[nm].candidate for nm in oriented if results[nm].candidate is not None]
    side += [r.oriented for r in results.values() if r.oriented is not None]
    return np.any(side, axis=0) if side else None


# Rows of the other classes whose label agreement is the reference of a suspect class's:
# enough for its 10th percentile to be known within a point or two.
REFERENCE_ROWS = 2000


def size_rule_agreement(
    images: np.ndarray,
    labels: np.ndarray,
    config: DecisionConfig,
    *,
    expected_shares: np.ndarray | None = None,
    image_rows: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray | None:
    """The ``label_agreement`` argument of :func:`decide`: computed on the rows of the
    classes the size rules and the growth rule's pixel check will judge, and on a seeded
    sample of the rows of the classes no size outlier above the others (their reference);
    None when there are none (or the rules are off)."""
    scored: set[int] = set()
    if config.size_orient:
        scored |= set(size_suspects(labels, config.size_z, expected_shares, config.size_gain))
        scored |= set(dominant_class(labels, expected_shares))
    above = set(above_reference(labels, expected_shares))
    if config.growth_check and config.growth_pixel_auc is not None:
        scored |= above
    if not scored:
        return None
    others = np.flatnonzero(~np.isin(labels, sorted(scored | above)))
    if others.size > REFERENCE_ROWS:
        rng = np.random.default_rng(seed)
        others = rng.choice(others, size=REFERENCE_ROWS, replace=False)
    return label_agreement(
        images, labels, sorted(scored), seed=seed, image_rows=image_rows, also=others
    )


def _unflag(dropped: np.ndarray, poison_score: np.ndarray, reasons: list[list[str]]) -> int:
    """Lower the ``dropped`` rows' scores to just below 0.5 and clear their reasons, in
    place, so that ``poison_score >= 0.5`` stays exactly the flags; returns their count."""
    poison_score[dropped] = np.minimum(poison_score[dropped], _BELOW_HALF)
    for i in np.flatnonzero(dropped):
        reasons[i] = []
    return int(dropped.sum())


def _singled_out(
    results: dict[str, DetectorResult], names: list[str], config: DecisionConfig
) -> set[int]:
    """Classes whose evidence, for any of the detectors ``names``, is a robust outlier
    (z >= ``SINGLED_OUT_Z``) among the classes."""
    singled: set[int] = set()
    for nm in names:
        per_class = results[nm].info.get("per_class") or {}
        z = class_evidence_z(per_class, CLASS_MAD_FLOOR)
        singled |= {c for c, zc in z.items() if zc >= SINGLED_OUT_Z}
    return singled


def _in_groups(flagged: np.ndarray, labels: np.ndarray, config: DecisionConfig) -> np.ndarray:
    """The flags in classes where at least ``config.group_vote_min_rows`` rows are flagged."""
    counts = np.bincount(labels[flagged], minlength=int(labels.max()) + 1)
    return flagged & (counts >= config.group_vote_min_rows)[labels]
