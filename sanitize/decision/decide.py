"""Turn the detectors' results into one poison score, flags and sample weights per row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sanitize.config import DecisionConfig
from sanitize.decision.class_size import above_reference, dominant_class, size_suspects
from sanitize.decision.growth import rank_auc
from sanitize.decision.pixel_neighbours import label_agreement
from sanitize.decision.rules import BELOW_HALF, RULES, DecisionState, Evidence
from sanitize.detect.base import DetectorResult, traits_of
from sanitize.errors import ConfigError

# The knobs of the steps around the class rules: the vote, the removal cap, the weights.
DECIDE_KNOBS = (
    "min_votes",
    "min_class_rows",
    "rules",
    "max_removal_fraction",
    "weight_clip",
    "weight_suspect_only",
    "weight_min_agreement",
)


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

    A row is flagged when ``k`` detectors vote for it; with ``labels`` the class rules
    (:data:`sanitize.decision.rules.RULES`) then add and drop flags, the removal cap keeps
    the highest scored, and kept rows are weighted. In full: docs/decision.md, "decide".

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
        Every row's coordinates on its class's top principal directions; None: no refinement.
    seed : int, default=0
        Seeds the refinement's fold split.
    expected_shares : ndarray of shape (n_classes,), optional
        Share or count (> 0) of every class index in ``labels`` to expect in a clean delivery.
    row_loss : ndarray of shape (n_rows,), optional
        Every row's final loss (nats) under the bootstrap model (for the size orientation).
    label_agreement : ndarray of shape (n_rows,), optional
        Share in [0, 1] of each row's nearest images that carry its label (NaN: not scored).

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
    names, k = _votes_needed(results, n_rows, config)
    traits = {nm: traits_of(nm, results[nm]) for nm in names}
    group_voters = [nm for nm in names if traits[nm].votes == "groups"]
    vote_flags, state, votes, flags = _vote(results, names, k, group_voters, labels, config)
    rule_info: dict[str, Any] = {rule.name: None for rule in RULES if rule.reports}
    if labels is not None:
        evidence = Evidence(
            results=results,
            traits=traits,
            vote_flags=vote_flags,
            labels=np.asarray(labels),
            config=config,
            coordinates=coordinates,
            expected_shares=expected_shares,
            row_loss=row_loss,
            label_agreement=label_agreement,
            seed=seed,
        )
        rule_info |= _apply_rules(state, evidence)
    head = {
        "detectors": names,
        "group_voters": group_voters,
        "min_votes": int(k),
        "min_votes_from": "config" if config.min_votes is not None else "majority",
        "n_rows": int(n_rows),
    }
    decision = _cap_and_weigh(state, votes, flags, results, names, n_rows, labels, config)
    decision.info = head | decision.info | rule_info
    return decision


def _votes_needed(
    results: dict[str, DetectorResult], n_rows: int, config: DecisionConfig
) -> tuple[list[str], int]:
    """The detectors' names, sorted, and the votes ``k`` a flag needs; raises as :func:`decide`."""
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
    return names, k


def _cap_and_weigh(
    state: DecisionState,
    votes: np.ndarray,
    flags: np.ndarray,
    results: dict[str, DetectorResult],
    names: list[str],
    n_rows: int,
    labels: np.ndarray | None,
    config: DecisionConfig,
) -> Decision:
    """The removal cap and the weights on the flags the class rules leave (see
    :func:`decide`); ``info`` holds their figures and the flags and votes per detector."""
    flagged, poison_score, reasons = state.flagged, state.poison_score, state.reasons
    n_before = int(flagged.sum())
    limit = int(np.floor(config.max_removal_fraction * n_rows))
    capped = n_before > limit
    if capped:
        flagged, poison_score = _removal_cap(flagged, poison_score, limit)
    poison_score = poison_score.astype(np.float32)

    weighted = [nm for nm in names if results[nm].weight is not None]
    sample_weight, weight_classes, weight_agreement = _sample_weights(
        [results[nm].weight for nm in weighted], flagged, labels, config
    )

    for i in np.flatnonzero(~flagged):
        reasons[i] = []  # removed by the cap

    info = {
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
    }
    return Decision(
        poison_score=poison_score,
        flagged=flagged,
        sample_weight=sample_weight,
        reasons=reasons,
        votes=votes,
        info=info,
    )


def _apply_rules(state: DecisionState, evidence: Evidence) -> dict[str, Any]:
    """Run :data:`RULES` in order on ``state``; the figures of the rules that report."""
    info = {}
    for rule in RULES:
        if rule.active(state, evidence):
            outcome = rule.apply(state, evidence)
            if rule.reports:
                info[rule.name] = state.info[rule.name] = outcome
    return info


def _vote(
    results: dict[str, DetectorResult],
    names: list[str],
    k: int,
    group_voters: list[str],
    labels: np.ndarray | None,
    config: DecisionConfig,
) -> tuple[dict[str, np.ndarray], DecisionState, np.ndarray, np.ndarray]:
    """The vote (see :func:`decide`): each detector's voting flags, the state it leaves,
    every row's votes, and the detectors' votes by row."""
    m = len(names)
    vote_flags = {nm: results[nm].flagged for nm in names}
    vote_scores = {nm: results[nm].score for nm in names}
    if labels is not None:
        for nm in group_voters:
            vote_flags[nm] = _in_groups(results[nm].flagged, np.asarray(labels), config)
            vote_scores[nm] = np.where(
                vote_flags[nm], results[nm].score, np.minimum(results[nm].score, BELOW_HALF)
            )
    scores = np.stack([vote_scores[nm] for nm in names]).astype(np.float32)
    flags = np.stack([vote_flags[nm] for nm in names])
    votes = flags.sum(axis=0).astype(np.int32)
    # k-th largest per row: the (m - k)-th smallest.
    state = DecisionState(
        poison_score=np.partition(scores, m - k, axis=0)[m - k].astype(np.float32),
        flagged=votes >= k,
        reasons=[[] for _ in range(votes.size)],
    )
    for i in np.flatnonzero(state.flagged):
        state.reasons[i] = [names[j] for j in np.flatnonzero(flags[:, i])]
    return vote_flags, state, votes, flags


def _removal_cap(
    flagged: np.ndarray, poison_score: np.ndarray, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Only the ``limit`` flags of highest score stay (ties broken by row order, so the cut
    is deterministic); the others' scores drop just below 0.5."""
    cand = np.flatnonzero(flagged)
    order = cand[np.lexsort((cand, -poison_score[cand].astype(np.float64)))]
    flagged = np.zeros(flagged.size, dtype=bool)
    flagged[order[:limit]] = True
    return flagged, np.where(flagged, poison_score, np.minimum(poison_score, BELOW_HALF))


def _sample_weights(
    weights: list[np.ndarray],
    flagged: np.ndarray,
    labels: np.ndarray | None,
    config: DecisionConfig,
) -> tuple[np.ndarray, list[int] | None, dict[str, float | None] | None]:
    """Kept rows' training weights (mean 1, removed rows 0), the weighted classes and each
    suspect class's agreement AUROC; see docs/decision.md, "decide"."""
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
        suspect = removed >= config.min_class_rows
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
    if "size_orient" in config.rules:
        scored |= set(size_suspects(labels, config.size_z, expected_shares, config.size_gain))
        scored |= set(dominant_class(labels, expected_shares))
    above = set(above_reference(labels, expected_shares))
    if "growth" in config.rules and config.growth_pixel_auc is not None:
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


def _in_groups(flagged: np.ndarray, labels: np.ndarray, config: DecisionConfig) -> np.ndarray:
    """The flags in classes where at least ``config.min_class_rows`` rows are flagged."""
    counts = np.bincount(labels[flagged], minlength=int(labels.max()) + 1)
    return flagged & (counts >= config.min_class_rows)[labels]
