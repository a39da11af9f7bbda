"""Orientation by class size: a class inflated by a dirty-label attack is mostly poison."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sanitize.config import DecisionConfig
from sanitize.decision import decide
from sanitize.decision.class_size import (
    above_reference,
    class_size_z,
    dominant_class,
    expected_shares,
    inflated_classes,
    size_suspects,
)
from sanitize.decision.decide import REFERENCE_ROWS, size_rule_agreement
from sanitize.decision.size_orient import orient_by_size, pixel_excess
from sanitize.detect import DetectorResult
from sanitize.errors import ConfigError


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
    inflated = [c for c, (n, med, z, _) in zs.items() if z >= 3.5 and n > 2 * med]
    assert inflated == ([] if poisons == 0 else [3])
    # Flags that are the poisons themselves (most of the class) are never turned over.
    out = orient_by_size(poison, labels, z_threshold=3.5, min_rows=10)
    assert np.array_equal(out.flagged, poison)


def test_an_imbalanced_clean_set_has_no_inflated_class():
    rng = np.random.default_rng(3)
    sizes = np.round(np.exp(rng.uniform(np.log(50), np.log(800), 40))).astype(int)
    sizes[0] = 1600  # the largest class, twice the next largest bound
    labels = np.repeat(np.arange(40), sizes)
    assert all(size.z < 3.5 for size in class_size_z(labels).values())
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
    cfg = DecisionConfig(
        rules=("orient", "size_orient", "growth", "settled"), max_removal_fraction=1.0
    )
    d = decide(results, labels.size, cfg, labels=labels)
    assert np.array_equal(d.flagged, poison)
    assert np.array_equal(d.poison_score >= 0.5, d.flagged)
    assert all(d.reasons[i] == ["class_size"] for i in np.flatnonzero(poison))
    assert d.info["size_orient"]["inflated"]["3"]["turned_over"]
    off = decide(
        results, labels.size, cfg.replace(rules=("orient", "growth", "settled")), labels=labels
    )
    assert np.array_equal(off.flagged, clean_rest)


def test_size_rule_agreement_scores_the_grown_classes_and_leaves_them_out_of_the_reference():
    rng = np.random.default_rng(10)
    labels, _ = inflated_set(rng, clean_per_class=450, poisons=150)
    images = rng.integers(0, 256, size=(labels.size, 1, 8, 8), dtype=np.uint8)
    cfg = DecisionConfig()
    agreement = size_rule_agreement(images, labels, cfg, seed=0)
    assert agreement is not None
    above = above_reference(labels)
    assert 3 in above
    assert not np.isnan(agreement[np.isin(labels, list(above))]).any()  # every row
    reference = ~np.isin(labels, list(above))
    assert (~np.isnan(agreement) & reference).sum() == min(REFERENCE_ROWS, reference.sum())
    off = cfg.replace(growth_pixel_auc=None)
    assert size_rule_agreement(images, labels, off) is None


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
    cfg = DecisionConfig(
        rules=("orient", "size_orient", "growth", "settled"), max_removal_fraction=1.0
    )
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


def test_size_suspicion_is_on_only_with_an_expected_distribution():
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
    cfg = DecisionConfig(
        rules=("orient", "size_orient", "growth", "settled"), max_removal_fraction=1.0
    )
    off = decide(results, labels.size, cfg, labels=labels)  # off without one
    assert not off.flagged.any()
    d = decide(results, labels.size, cfg.replace(size_suspect=True), labels=labels)
    assert np.array_equal(d.flagged, poison)
    assert all(d.reasons[i] == ["class_size"] for i in np.flatnonzero(poison))
    balanced = np.ones(10)
    by_shares = decide(results, labels.size, cfg, labels=labels, expected_shares=balanced)
    assert np.array_equal(by_shares.flagged, poison)
    assert by_shares.info["size_orient"]["expected_shares"]
    forced_off = cfg.replace(size_suspect=False)
    assert not decide(
        results, labels.size, forced_off, labels=labels, expected_shares=balanced
    ).flagged.any()


def test_sizes_are_judged_against_the_expected_distribution():
    # A clean set whose class 0 is naturally three times the others: an outlier by size
    # alone, and not against its own distribution (the last delivery's, say).
    labels = np.repeat(np.arange(10), [1200] + [400] * 9)
    assert list(inflated_classes(labels, 3.5)) == [0]
    natural = np.array([3.0] + [1.0] * 9)
    assert inflated_classes(labels, 3.5, natural) == {}
    # A naturally imbalanced set (sizes spread over a factor 10), poisoned into class 5:
    # not an outlier among such sizes, but far beyond its own expected share.
    rng = np.random.default_rng(9)
    shares = np.exp(rng.uniform(np.log(30), np.log(300), 40))
    shares[5] = 100.0
    sizes = np.round(shares).astype(int)
    sizes[5] += 250
    labels = np.repeat(np.arange(40), sizes)
    assert 5 not in inflated_classes(labels, 3.5)
    inflated = inflated_classes(labels, 3.5, shares)
    assert list(inflated) == [5]
    rows, like_others, z, _ = inflated[5]
    assert rows == 350 and 80 < like_others < 120 and z > 3.5
    with pytest.raises(ValueError, match="> 0"):
        class_size_z(labels, np.zeros(40))


def test_expected_counts_resolve_by_class_name_or_label_value():
    names, values = ["cat", "dog", "emu"], [3, 5, 7]
    shares = expected_shares({"cat": 2, "5": 1, "emu": 1, "yak": 9}, names, values, [0, 1, 2])
    assert np.allclose(shares, [0.5, 0.25, 0.25])  # "yak" is not in the data: ignored
    # An expected class the delivery lacks is fine; a delivered class without one is not.
    assert np.allclose(expected_shares({"cat": 1, "dog": 1}, names, values, [0, 1]), [0.5, 0.5, 0])
    with pytest.raises(ConfigError, match="no entry for class.*emu"):
        expected_shares({"cat": 1, "dog": 1}, names, values, [0, 1, 2])
    assert expected_shares((), names, values, [0, 1, 2]) is None


def test_flags_the_model_cannot_fit_are_the_poison_and_stay():
    # A warp the bootstrap model did not learn: the poisons a detector groups are rows it
    # cannot fit with their label (loss above log 2); the rest of the class it fits.
    rng = np.random.default_rng(10)
    labels, poison = inflated_set(rng, poisons=900)
    found = poison & (rng.random(poison.size) < 0.5)  # 450 of the 900 poisons: a minority
    loss = np.where(found, 1.5, 0.1)
    out = orient_by_size(found, labels, z_threshold=3.5, min_rows=10, row_loss=loss)
    assert np.array_equal(out.flagged, found)
    entry = out.info["inflated"]["3"]
    assert entry["not_backed_misfit"] and not entry["turned_over"]
    assert orient_by_size(found, labels, z_threshold=3.5, min_rows=10).info["inflated"]["3"][
        "turned_over"
    ]  # without the losses it would have been turned over
    # A clean rest the model fits (MNIST: digits learned as fast as the patch) still turns.
    clean_rest = (labels == 3) & ~poison
    fitted = orient_by_size(
        clean_rest, labels, z_threshold=3.5, min_rows=10, row_loss=np.full(labels.size, 0.3)
    )
    assert np.array_equal(fitted.flagged, poison)


def test_the_size_rules_remove_no_more_than_the_class_gained():
    # The flags cover only part of the clean rest: turned over, they would take the rest
    # of the clean rows too. The class gained 900 rows over its like (100 + 122 clean).
    rng = np.random.default_rng(11)
    labels, poison = inflated_set(rng, poisons=900)
    clean = np.flatnonzero((labels == 3) & ~poison)
    part = np.zeros_like(poison)
    part[clean[:60]] = True  # 60 of the 122 clean rows
    score = np.where(part, 0.9, np.where(poison, 0.05, 0.3)).astype(np.float32)
    results = {"spectral": DetectorResult(score=score, flagged=part)}
    cfg = DecisionConfig(
        rules=("orient", "size_orient", "growth", "settled"), max_removal_fraction=1.0
    )
    d = decide(results, labels.size, cfg, labels=labels)
    entry = d.info["size_orient"]["inflated"]["3"]
    like = entry["rows_like_others"]
    assert entry["turned_over"] and entry["removal_cap"] == int(entry["rows"] - 0.9 * like)
    removed = d.flagged & (labels == 3)
    assert removed.sum() == entry["removal_cap"] and d.info["size_orient"]["n_capped"] > 0
    assert removed[poison].sum() == 900  # the poisons rank first (least like the flags)
    assert np.array_equal(d.poison_score >= 0.5, d.flagged)


def test_a_class_above_its_expected_share_is_judged_by_splits_of_about_its_gain():
    # 150 poisons into a class of 500 (1.3 times its share): not inflated, but it gained
    # rows against the expected distribution. One split's side is the poisons and a few
    # clean rows; another's is far larger than the gain, so it cannot be the poison.
    rng = np.random.default_rng(12)
    labels = np.repeat(np.arange(10), 500)
    poison = np.zeros(labels.size, dtype=bool)
    poison[rng.choice(np.flatnonzero(labels != 1), 150, replace=False)] = True
    labels[poison] = 1
    rows = labels == 1
    clean = rows & ~poison
    few_clean = clean & (rng.random(labels.size) < 0.03)
    tight = poison | few_clean
    wide = poison | (clean & (rng.random(labels.size) < 0.4))  # about 150 + 200 rows
    early = poison & (rng.random(labels.size) < 0.5)
    kwargs = dict(z_threshold=3.5, min_rows=10, oriented=early, expected=np.ones(10))
    none = np.zeros_like(poison)
    both = orient_by_size(none, labels, splits={"a": tight, "b": tight.copy()}, **kwargs)
    assert not both.flagged.any()  # not inflated, and no min_gain: nothing judged
    gained = orient_by_size(
        none, labels, splits={"a": tight, "b": tight.copy()}, min_gain=1.25, **kwargs
    )
    entry = gained.info["inflated"]["1"]
    assert not entry["poison_majority"] and np.array_equal(gained.flagged, tight)
    assert entry["removal_cap"] == int(entry["rows"] - 0.9 * entry["rows_like_others"])
    too_wide = orient_by_size(none, labels, splits={"a": tight, "b": wide}, min_gain=1.25, **kwargs)
    assert set(too_wide.info["inflated"]["1"]["split_sides"]) == {"a"}
    assert not too_wide.flagged.any()  # one split left: no agreement
    without_shares = dict(kwargs, expected=None)
    assert not orient_by_size(
        none, labels, splits={"a": tight, "b": tight.copy()}, min_gain=1.25, **without_shares
    ).flagged.any()


def test_where_no_oriented_detector_singles_the_class_out_the_pixels_orient_it():
    # MNIST-like: the early loss says nothing in the class. When the flags are the clean
    # rest (their nearest images share their label), they turn over; when they are the
    # poison (images of other classes), they stay, whatever the early loss's side backs.
    rng = np.random.default_rng(13)
    labels, poison = inflated_set(rng, poisons=900)
    rows = labels == 3
    clean_rest = rows & ~poison
    agreement = np.where(poison, 0.2, 0.9)
    agreement[~rows] = np.nan
    early_side = clean_rest.copy()  # misleading: it backs the clean rest
    kwargs = dict(z_threshold=3.5, min_rows=10, oriented=early_side, label_agreement=agreement)
    turned = orient_by_size(clean_rest, labels, oriented_classes=set(), **kwargs)
    entry = turned.info["inflated"]["3"]
    assert entry["oriented_by"] == "pixels" and entry["turned_over"]
    assert np.array_equal(turned.flagged, poison)
    found = poison & (rng.random(poison.size) < 0.45)  # a minority of the class, all poison
    kept = orient_by_size(found, labels, oriented_classes=set(), **kwargs)
    assert np.array_equal(kept.flagged, found) and not kept.info["inflated"]["3"]["turned_over"]
    # Where the early loss singles the class out, its side decides, as without the pixels.
    backed = orient_by_size(clean_rest, labels, oriented_classes={3}, **kwargs)
    assert backed.info["inflated"]["3"]["oriented_by"] == "oriented_detectors"
    assert np.array_equal(backed.flagged, clean_rest)


def test_without_a_distribution_pixels_say_whether_a_large_class_gained_other_images():
    # An inflated class without flags: judged by its splits only when its rows' nearest
    # images disagree with their label far more often than other classes' rows do.
    rng = np.random.default_rng(14)
    labels, poison = inflated_set(rng, poisons=900)
    split = poison | ((labels == 3) & ~poison & (rng.random(labels.size) < 0.05))
    reference_agreement = rng.uniform(0.5, 1.0, labels.size)  # other classes, clean
    poisoned = np.where(poison, rng.uniform(0.0, 0.3, labels.size), reference_agreement)
    kwargs = dict(
        z_threshold=3.5,
        min_rows=10,
        splits={"a": split, "b": split.copy()},
        oriented_classes=set(),
        suspect_by_size=False,
    )
    found = orient_by_size(np.zeros_like(poison), labels, label_agreement=poisoned, **kwargs)
    entry = found.info["inflated"]["3"]
    assert entry["pixel_excess"]["suspect"] and entry["pixel_excess"]["z"] > 3.5
    assert np.array_equal(found.flagged, split)
    # The same sizes, every row clean: the large class agrees with its labels as the others
    # do (or more), and nothing is flagged.
    clean = orient_by_size(
        np.zeros_like(poison), labels, label_agreement=reference_agreement, **kwargs
    )
    assert not clean.info["inflated"]["3"]["pixel_excess"]["suspect"]
    assert not clean.flagged.any()
    for out in (found, clean):  # report.json stays strict JSON: no NaN
        json.dumps(out.info, allow_nan=False)


def test_pixel_excess_weighs_a_class_against_the_spread_between_classes():
    # Some classes are harder to tell by pixels: here 5-35% of each clean class's rows have
    # no neighbour with their label. A class as hard as the hardest of them is far above
    # the pooled share in binomial errors, but not among the classes; one that is 80%
    # images of other classes is both.
    rng = np.random.default_rng(15)
    labels = np.repeat(np.arange(10), 200)
    hard = np.r_[np.linspace(0.05, 0.35, 9)[:3], 0.35, np.linspace(0.05, 0.35, 9)[3:]]
    agreement = np.where(rng.random(labels.size) < hard[labels], 0.0, rng.uniform(0.2, 1.0))
    rows, reference = labels == 3, labels != 3
    pooled = pixel_excess(agreement, rows, reference, 3.5, 10)
    assert pooled["suspect"] and pooled["z"] > 3.5 and "class_z" not in pooled
    by_class = pixel_excess(agreement, rows, reference, 3.5, 10, labels=labels)
    assert by_class["z"] == pooled["z"] and by_class["class_z"] < 3.5
    assert not by_class["suspect"]
    agreement[rows] = np.where(rng.random(rows.sum()) < 0.8, 0.0, 0.5)
    foreign = pixel_excess(agreement, rows, reference, 3.5, 10, labels=labels)
    assert foreign["suspect"] and foreign["class_z"] > 3.5


def test_a_class_twice_the_largest_other_is_judged_in_an_imbalanced_set():
    # GTSRB-like sizes spread over a factor 10: the target is no robust outlier, but it
    # outgrows every other class by more than twice.
    rng = np.random.default_rng(15)
    sizes = np.round(np.exp(rng.uniform(np.log(30), np.log(300), 40))).astype(int)
    sizes[7] = 900
    labels = np.repeat(np.arange(40), sizes)
    assert 7 not in inflated_classes(labels, 3.5) and 7 not in size_suspects(labels, 3.5)
    assert list(dominant_class(labels)) == [7]
    sizes[7] = 500  # less than twice the largest other class
    assert dominant_class(np.repeat(np.arange(40), sizes)) == {}
    # Judged by its pixels only: its flags, images of its own class, turn over when the
    # rest of the class looks foreign (agrees with its label less than the others do).
    labels = np.repeat(np.arange(40), np.where(np.arange(40) == 7, 900, sizes))
    rows = labels == 7
    flags = rows & (np.cumsum(rows) <= 250)
    agreement = np.where(flags, 0.6, np.where(rows, 0.2, 0.3))
    kwargs = dict(z_threshold=3.5, min_rows=10, oriented_classes=set())
    out = orient_by_size(flags, labels, label_agreement=agreement, **kwargs)
    assert out.info["inflated"]["7"]["turned_over"] and np.array_equal(out.flagged, rows & ~flags)
    own_rest = np.where(flags, 0.6, np.where(rows, 0.5, 0.3))  # a clean dominant class
    kept = orient_by_size(flags, labels, label_agreement=own_rest, **kwargs)
    assert np.array_equal(kept.flagged, flags)
    assert np.array_equal(orient_by_size(flags, labels, **kwargs).flagged, flags)  # no pixels
