"""The decision's class rules: each a unit with a name, the knobs it reads and an ``apply``.

:func:`sanitize.decision.decide.decide` votes, then runs :data:`RULES` in order on the
vote's flags, then caps the removals and weighs the kept rows. A rule reads the flags the
rules before it left (:class:`DecisionState`) and what the detectors and the data say
(:class:`Evidence`), adds or drops flags, and returns its figures for ``info[rule.name]``.
What each rule earns is measured in ``docs/decision.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from sanitize.config import RULE_NAMES, DecisionConfig
from sanitize.decision.class_size import above_reference
from sanitize.decision.growth import flags_without_growth
from sanitize.decision.orient import orient_by_shortcut
from sanitize.decision.refine import refine_by_class
from sanitize.decision.size_orient import cap_to_excess, orient_by_size
from sanitize.detect.base import DetectorResult, DetectorTraits
from sanitize.detect.mixture import class_evidence_z

BELOW_HALF = np.nextafter(np.float32(0.5), np.float32(0.0))
# The reason of a row the size rules flagged (:mod:`sanitize.decision.size_orient`).
SIZE_REASON = "class_size"
# A class an oriented detector singles out: its class evidence this many robust deviations
# above the other classes' (:func:`sanitize.detect.mixture.class_evidence_z`, with that
# floor on the deviation relative to the median).
SINGLED_OUT_Z = 2.0
CLASS_MAD_FLOOR = 0.1


@dataclass
class DecisionState:
    """The flags so far: ``poison_score >= 0.5`` exactly where ``flagged``."""

    poison_score: np.ndarray
    flagged: np.ndarray
    reasons: list[list[str]]
    info: dict[str, Any] = field(default_factory=dict)

    def unflag(self, dropped: np.ndarray) -> int:
        """Drop the ``dropped`` rows' flags: scores just below 0.5, reasons cleared."""
        self.poison_score[dropped] = np.minimum(self.poison_score[dropped], BELOW_HALF)
        for i in np.flatnonzero(dropped):
            self.reasons[i] = []
        self.flagged = self.flagged & ~dropped
        return int(dropped.sum())

    def flag(self, added: np.ndarray, score: np.ndarray, reason: list[str]) -> None:
        """Flag the ``added`` rows with ``score`` (>= 0.5 where added) and ``reason``."""
        self.poison_score[added] = score[added].astype(np.float32)
        for i in np.flatnonzero(added):
            self.reasons[i] = list(reason)
        self.flagged = self.flagged | added


@dataclass
class Evidence:
    """What the rules read besides the flags: the detectors' results and the data's."""

    results: dict[str, DetectorResult]
    traits: dict[str, DetectorTraits]
    vote_flags: dict[str, np.ndarray]
    labels: np.ndarray
    config: DecisionConfig
    coordinates: np.ndarray | None = None
    expected_shares: np.ndarray | None = None
    row_loss: np.ndarray | None = None
    label_agreement: np.ndarray | None = None
    seed: int = 0

    @property
    def names(self) -> list[str]:
        return sorted(self.results)

    @cached_property
    def oriented(self) -> list[str]:
        """The detectors whose own signal says which side of a class is the poison."""
        return [nm for nm in self.names if self.traits[nm].oriented]

    def oriented_side(self, with_candidates: bool = True) -> np.ndarray | None:
        """Rows the oriented detectors flag or hold in their candidate group (without the
        groups, their flags), and the rows any result marks ``oriented``; None when there
        are none of either."""
        side = [self.results[nm].flagged for nm in self.oriented]
        if with_candidates:
            side += [
                self.results[nm].candidate
                for nm in self.oriented
                if self.results[nm].candidate is not None
            ]
        side += [r.oriented for r in self.results.values() if r.oriented is not None]
        return np.any(side, axis=0) if side else None

    def singled_out(self, names: list[str]) -> set[int]:
        """Classes whose evidence, for any of the detectors ``names``, is a robust outlier
        (z >= ``SINGLED_OUT_Z``) among the classes."""
        singled: set[int] = set()
        for nm in names:
            per_class = self.results[nm].info.get("per_class") or {}
            z = class_evidence_z(per_class, CLASS_MAD_FLOOR)
            singled |= {c for c, zc in z.items() if zc >= SINGLED_OUT_Z}
        return singled


class Rule:
    """One class rule: ``knobs`` are the ``DecisionConfig`` fields it reads; a rule that
    ``reports`` puts its figures in ``info[name]`` (None when it did not run). A rule named in
    ``RULE_NAMES`` runs only while ``decision.rules`` lists it."""

    name: ClassVar[str]
    knobs: ClassVar[tuple[str, ...]] = ()
    reports: ClassVar[bool] = True

    def active(self, state: DecisionState, evidence: Evidence) -> bool:
        return self.name not in RULE_NAMES or self.name in evidence.config.rules

    def apply(self, state: DecisionState, evidence: Evidence) -> dict[str, Any] | None:
        raise NotImplementedError


class Orient(Rule):
    """Where the oriented detectors flag most of a class, or most other flags lie off
    their side, keep only the flags on their side (``sanitize.decision.orient``)."""

    name = "orient"

    def active(self, state, evidence):
        return (
            super().active(state, evidence)
            and evidence.oriented_side(with_candidates=False) is not None
        )

    def apply(self, state, evidence):
        names, oriented = evidence.names, evidence.oriented
        orientation = orient_by_shortcut(
            state.flagged,
            evidence.oriented_side(with_candidates=False),
            evidence.labels,
            side=evidence.oriented_side(),
            others=np.any([evidence.vote_flags[nm] for nm in names if nm not in oriented], axis=0)
            if len(oriented) < len(names)
            else None,
            min_rows=evidence.config.min_class_rows,
        )
        state.unflag(orientation.dropped)
        state.flagged = orientation.flagged
        by = oriented + [nm for nm in names if evidence.results[nm].oriented is not None]
        return orientation.info | {"by": by}


class SizeOrientation(Rule):
    """A class far larger than the others: minority flags turned over to the rest of the
    class, or, suspect by its size, flagged by its detectors' splits
    (``sanitize.decision.size_orient``)."""

    name = "size_orient"
    knobs = ("size_suspect", "size_z", "size_gain", "expected_class_counts")

    def apply(self, state, evidence):
        config = evidence.config
        suspect_by_size = config.size_suspect
        if suspect_by_size is None:
            suspect_by_size = evidence.expected_shares is not None
        oriented = evidence.oriented
        sized = orient_by_size(
            state.flagged,
            evidence.labels,
            z_threshold=config.size_z,
            min_rows=config.min_class_rows,
            oriented=evidence.oriented_side(),
            splits={
                nm: evidence.results[nm].candidate
                for nm in evidence.names
                if nm not in oriented and evidence.results[nm].candidate is not None
            },
            suspect_by_size=bool(suspect_by_size),
            expected=evidence.expected_shares,
            row_loss=evidence.row_loss,
            min_gain=config.size_gain,
            label_agreement=evidence.label_agreement,
            oriented_classes=evidence.singled_out(oriented)
            if evidence.label_agreement is not None
            else None,
        )
        added = sized.flagged & ~state.flagged
        dropped = state.flagged & ~sized.flagged
        # The class's ranking turns over with its flags: the rows the detectors found least
        # like the flagged minority are the likeliest poisons.
        score = state.poison_score
        score[added] = (0.5 + 0.5 * (1.0 - score[added])).astype(np.float32)
        score[dropped] = np.minimum(0.5 * (1.0 - score[dropped]), BELOW_HALF)
        for i in np.flatnonzero(added):
            state.reasons[i] = [SIZE_REASON]
        for i in np.flatnonzero(dropped):
            state.reasons[i] = []
        state.flagged = sized.flagged
        return sized.info


class Refine(Rule):
    """In each class with a group of flags, a cross-fitted linear discriminant on the
    class's top coordinates re-draws the group (``sanitize.decision.refine``)."""

    name = "refine"
    knobs = (
        "refine_components",
        "refine_keep",
        "refine_add",
        "refine_min_kept",
        "refine_folds",
    )

    def active(self, state, evidence):
        return super().active(state, evidence) and evidence.coordinates is not None

    def apply(self, state, evidence):
        config = evidence.config
        refined = refine_by_class(
            state.flagged,
            evidence.labels,
            evidence.coordinates[:, : config.refine_components],
            keep=config.refine_keep,
            min_rows=config.min_class_rows,
            folds=config.refine_folds,
            add=config.refine_add,
            min_kept=config.refine_min_kept,
            skip=input_space_only(
                {nm for nm in evidence.names if not evidence.traits[nm].feature_space},
                state.flagged,
                evidence.labels,
                state.reasons,
            ),
            seed=evidence.seed,
        )
        added = refined.flagged & ~state.flagged
        dropped = state.flagged & ~refined.flagged
        state.flag(added, 0.5 + 0.5 * refined.probability, ["refine"])
        state.unflag(dropped)
        return refined.info


class SizeCap(Rule):
    """A class the size orientation acted on keeps at most the rows it gained flagged,
    the highest scored (``info["size_orient"]["n_capped"]``)."""

    name = "size_cap"
    reports = False

    def active(self, state, evidence):
        return state.info.get("size_orient") is not None

    def apply(self, state, evidence):
        size_info = state.info["size_orient"]
        capped = cap_to_excess(state.flagged, state.poison_score, evidence.labels, size_info)
        size_info["n_capped"] = state.unflag(state.flagged & ~capped)
        return None


class Growth(Rule):
    """A class whose size does not account for its flags, few of them oriented, loses
    them; where pixels tell classes apart, so do flags that do not look like other
    classes' images (``sanitize.decision.growth``)."""

    name = "growth"
    knobs = (
        "growth_share",
        "growth_spreads",
        "growth_pixel_auc",
        "growth_pixel_reference",
    )

    def apply(self, state, evidence):
        config, labels = evidence.config, evidence.labels
        inflated = (state.info.get("size_orient") or {}).get("inflated", {})
        above = list(above_reference(labels, evidence.expected_shares))
        growth = flags_without_growth(
            state.flagged,
            labels,
            oriented=evidence.oriented_side(with_candidates=False),
            min_rows=config.min_class_rows,
            min_share=config.growth_share,
            min_spreads=config.growth_spreads,
            expected=evidence.expected_shares,
            skip=frozenset(int(c) for c in inflated),
            label_agreement=evidence.label_agreement,
            reference=~np.isin(labels, above),
            pixel_auc=config.growth_pixel_auc,
            pixel_reference=config.growth_pixel_reference,
        )
        state.unflag(growth.withdrawn)
        return growth.info


class Stamp(Rule):
    """In each class where a detector whose flags are exact evidence (``stamp``) flags a
    group that is at least half the class's flags, keep exactly its flags there; a smaller
    stamp group only adds its rows."""

    name = "settled"

    def active(self, state, evidence):
        settlers = any(evidence.traits[nm].settles_classes for nm in evidence.names)
        return super().active(state, evidence) and settlers

    def apply(self, state, evidence):
        settlers = [nm for nm in evidence.names if evidence.traits[nm].settles_classes]
        results, labels = evidence.results, evidence.labels
        exact = np.any([results[nm].flagged for nm in settlers], axis=0)
        exact_score = np.max([results[nm].score for nm in settlers], axis=0)
        per_class: dict[str, dict[str, Any]] = {}
        counts = np.bincount(labels[exact], minlength=int(labels.max()) + 1)
        for c in np.flatnonzero(counts >= evidence.config.min_class_rows):
            rows = labels == c
            settled = counts[c] >= 0.5 * (rows & (state.flagged | exact)).sum()
            added = rows & exact & ~state.flagged
            dropped = rows & state.flagged & ~exact if settled else np.zeros_like(rows)
            state.poison_score[added] = np.maximum(exact_score[added], 0.5)
            for i in np.flatnonzero(added):
                state.reasons[i] = [nm for nm in settlers if results[nm].flagged[i]]
            state.flagged = state.flagged | added
            state.unflag(dropped)
            per_class[str(c)] = {
                "settled": bool(settled),
                "kept": int(counts[c]),
                "added": int(added.sum()),
                "dropped": int(dropped.sum()),
            }
        return {"by": settlers, "per_class": per_class}


# The class rules, in the order they run.
RULES: tuple[Rule, ...] = (Orient(), SizeOrientation(), Refine(), SizeCap(), Growth(), Stamp())


def input_space_only(
    inputs: set[str], flagged: np.ndarray, labels: np.ndarray, reasons: list[list[str]]
) -> frozenset[int]:
    """Classes whose every flagged row only the detectors ``inputs`` (those whose traits
    say they do not read the features) flagged: groups drawn in the input, which feature
    coordinates need not hold."""
    if not inputs:
        return frozenset()
    classes = set()
    for c in np.unique(labels[flagged]):
        by = [set(reasons[i]) for i in np.flatnonzero(flagged & (labels == c))]
        if all(voters and voters <= inputs for voters in by):
            classes.add(int(c))
    return frozenset(classes)
