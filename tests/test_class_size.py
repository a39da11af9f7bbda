"""Orientation by class size: a class inflated by a dirty-label attack is mostly poison."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sanitize.config import DecisionConfig
from sanitize.detect import DetectorResult, decide
from sanitize.detect.class_size import class_size_z, orient_by_size


def inflated_set(rng, clean_per_class=100, poisons=200, target=3, classes=10):
    """Balanced classes, then ``poisons`` rows of the others relabelled to ``target``."""
    labels = np.repeat(np.arange(classes), clean_per_class + poisons // (classes - 1))
    others = np.flatnonzero(labels != target)
    poison = np.zeros(labels.size, dtype=bool)
    poison[rng.choice(others, poisons, replace=False)] = True
    labels = labels.copy()
    labels[poison] = target
    return labels, poison


def test_minority_flags_of_an_inflated_class_are_turned_over():
    rng = np.random.default_rng(0)
    labels, poison = inflated_set(rng, poisons=900)  # target: 122 clean + 900 poisons
    clean_rest = (labels == 3) & ~poison
    out = orient_by_size(clean_rest, labels, z_threshold=3.5, min_rows=10)
    assert np.array_equal(out.flagged, poison)
    entry = out.info["inflated"]["3"]
    assert entry["turned_over"] and entry["z"] > 3.5 and list(out.info["inflated"]) == ["3"]
    assert out.info["n_added"] == 900 and out.info["n_dropped"] == clean_rest.sum()


def test_flags_stay_where_an_oriented_detector_backs_them_or_they_are_few():
    rng = np.random.default_rng(1)
    labels, poison = inflated_set(rng, poisons=900)
    part = poison & (np.cumsum(poison) <= 300)  # 300 of the 900 poisons, found by early loss
    kept = orient_by_size(part, labels, z_threshold=3.5, min_rows=10, oriented=part)
    assert np.array_equal(kept.flagged, part) and not kept.info["inflated"]["3"]["turned_over"]
    few = np.zeros_like(poison)
    few[np.flatnonzero((labels == 3) & ~poison)[:5]] = True
    assert np.array_equal(orient_by_size(few, labels, z_threshold=3.5, min_rows=10).flagged, few)


@pytest.mark.parametrize("poisons", [0, 180])
def test_only_the_target_class_is_inflated_and_majority_flags_stay(poisons):
    rng = np.random.default_rng(2)
    labels, poison = inflated_set(rng, poisons=poisons)  # target: 120 + 180 rows, others 100
    zs = class_size_z(labels)
    inflated = [c for c, (n, med, z) in zs.items() if z >= 3.5 and n > 2 * med]
    assert inflated == ([] if poisons == 0 else [3])
    # Flags that are the poisons themselves (most of the class) are never turned over.
    out = orient_by_size(poison, labels, z_threshold=3.5, min_rows=10)
    assert np.array_equal(out.flagged, poison)


def test_an_imbalanced_clean_set_has_no_inflated_class():
    rng = np.random.default_rng(3)
    sizes = np.round(np.exp(rng.uniform(np.log(50), np.log(800), 40))).astype(int)
    sizes[0] = 1600  # the largest class, twice the next largest bound
    labels = np.repeat(np.arange(40), sizes)
    assert all(z < 3.5 for _, _, z in class_size_z(labels).values())
    flags = (labels == 0) & (np.arange(labels.size) % 3 == 0)
    assert np.array_equal(
        orient_by_size(flags, labels, z_threshold=3.5, min_rows=10).flagged, flags
    )


def test_decision_turns_an_inflated_class_over_with_scores_and_reasons():
    rng = np.random.default_rng(4)
    labels, poison = inflated_set(rng, poisons=900)
    clean_rest = (labels == 3) & ~poison
    score = np.where(clean_rest, 0.9, 0.1).astype(np.float32)
    results = {"spectral": DetectorResult(score=score, flagged=score >= 0.5)}
    cfg = DecisionConfig(refine=False, consensus=False, max_removal_fraction=1.0)
    d = decide(results, labels.size, cfg, labels=labels)
    assert np.array_equal(d.flagged, poison)
    assert np.array_equal(d.poison_score >= 0.5, d.flagged)
    assert all(d.reasons[i] == ["class_size"] for i in np.flatnonzero(poison))
    assert d.info["size_orient"]["inflated"]["3"]["turned_over"]
    off = decide(results, labels.size, replace(cfg, size_orient=False), labels=labels)
    assert np.array_equal(off.flagged, clean_rest)


def _class_result(labels, evidence, candidate):
    per_class = {str(c): {"evidence": float(e)} for c, e in enumerate(evidence)}
    score = np.where(candidate, 0.4, 0.1).astype(np.float32)
    return DetectorResult(
        score=score,
        flagged=np.zeros(labels.size, dtype=bool),
        info={"per_class": per_class},
        candidate=candidate,
    )


def test_consensus_bar_is_lower_in_an_inflated_class_only():
    rng = np.random.default_rng(5)
    labels, poison = inflated_set(rng, poisons=900)
    # Two detectors single out the target (3) and another class (6) at z of about 2.5: under
    # the usual bar of 3; their candidate groups are the poisons and 40 rows of class 6.
    evidence = np.array([1.0, 1.1, 0.9, 1.37, 1.0, 0.95, 1.37, 1.05, 1.0, 0.9])
    candidate = poison.copy()
    candidate[np.flatnonzero(labels == 6)[:40]] = True
    results = {nm: _class_result(labels, evidence, candidate) for nm in ("spectral", "spectre")}
    cfg = DecisionConfig(refine=False, max_removal_fraction=1.0)
    z = decide(results, labels.size, replace(cfg, consensus_inflated_z=10.0), labels=labels)
    assert not z.flagged.any()
    d = decide(results, labels.size, cfg, labels=labels)
    assert d.info["consensus"]["suspect_classes"] == [3]
    assert np.array_equal(d.flagged, poison)


def test_candidates_of_the_early_loss_back_a_minority_in_an_inflated_class():
    rng = np.random.default_rng(6)
    labels, poison = inflated_set(rng, poisons=900)
    part = poison & (np.cumsum(poison) <= 300)
    spectral = np.where(part, 0.9, 0.1).astype(np.float32)
    early = DetectorResult(
        score=np.full(labels.size, 0.2, np.float32),
        flagged=np.zeros(labels.size, dtype=bool),
        candidate=poison,
    )
    results = {"spectral": DetectorResult(score=spectral, flagged=spectral >= 0.5)}
    cfg = DecisionConfig(refine=False, consensus=False, max_removal_fraction=1.0)
    alone = decide(results, labels.size, cfg, labels=labels)
    assert alone.info["size_orient"]["inflated"]["3"]["turned_over"]
    backed = decide({**results, "early_loss": early}, labels.size, cfg, labels=labels)
    assert np.array_equal(backed.flagged, part)
    assert backed.info["size_orient"]["inflated"]["3"]["flagged_by_oriented"] == 300


def test_an_inflated_class_without_flags_is_flagged_on_the_oriented_side_of_its_splits():
    rng = np.random.default_rng(7)
    labels, poison = inflated_set(rng, poisons=900)
    rows = labels == 3
    clean = rows & ~poison
    # Two detectors split the class: their smaller side is the clean rest plus a few
    # poisons; the early loss's candidates are mostly poisons.
    split_a = clean | (poison & (rng.random(poison.size) < 0.05))
    split_b = clean | (poison & (rng.random(poison.size) < 0.05))
    early = (poison & (rng.random(poison.size) < 0.6)) | (clean & (rng.random(poison.size) < 0.2))
    none = np.zeros_like(poison)
    out = orient_by_size(
        none,
        labels,
        z_threshold=3.5,
        min_rows=10,
        oriented=early,
        splits={"a": split_a, "b": split_b},
    )
    flagged = out.flagged
    assert flagged[poison].mean() > 0.9 and not flagged[clean].any()
    assert not flagged[~rows].any()
    entry = out.info["inflated"]["3"]
    assert entry["flagged_by_splits"] == flagged.sum() and set(entry["split_sides"]) == {"a", "b"}
    # One split is not an agreement, and without oriented rows no side is the poison's.
    one = orient_by_size(
        none, labels, z_threshold=3.5, min_rows=10, oriented=early, splits={"a": split_a}
    )
    assert not one.flagged.any()
    blind = orient_by_size(
        none,
        labels,
        z_threshold=3.5,
        min_rows=10,
        oriented=none,
        splits={"a": split_a, "b": split_b},
    )
    assert not blind.flagged.any()


def test_size_suspicion_is_opt_in():
    rng = np.random.default_rng(8)
    labels, poison = inflated_set(rng, poisons=900)
    clean = (labels == 3) & ~poison
    split = DetectorResult(
        score=np.full(labels.size, 0.1, np.float32),
        flagged=np.zeros(labels.size, dtype=bool),
        candidate=clean,
    )
    early = DetectorResult(
        score=np.full(labels.size, 0.1, np.float32),
        flagged=np.zeros(labels.size, dtype=bool),
        candidate=poison,
    )
    results = {"spectral": split, "spectre": split, "early_loss": early}
    cfg = DecisionConfig(refine=False, consensus=False, max_removal_fraction=1.0)
    off = decide(results, labels.size, cfg, labels=labels)  # off by default
    assert not off.flagged.any()
    d = decide(results, labels.size, replace(cfg, size_suspect=True), labels=labels)
    assert np.array_equal(d.flagged, poison)
    assert all(d.reasons[i] == ["class_size"] for i in np.flatnonzero(poison))
