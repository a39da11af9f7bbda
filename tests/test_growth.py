"""The growth check: a dirty-label group is rows its class gained."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sanitize.config import DecisionConfig
from sanitize.decision import decide
from sanitize.decision.growth import flags_without_growth
from sanitize.decision.size_orient import keep_highest
from sanitize.detect import DetectorResult
from sanitize.errors import ConfigError


def sized_set(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def first_rows(labels: np.ndarray, c: int, n: int) -> np.ndarray:
    out = np.zeros(labels.size, dtype=bool)
    out[np.flatnonzero(labels == c)[:n]] = True
    return out


# Ten classes of about 450 rows, spread as a balanced 5,000-row subset's.
BALANCED = [452, 470, 447, 461, 439, 455, 466, 444, 458, 449]


def check(flags, labels, **kwargs):
    params = {"min_rows": 10, "min_share": 0.5, "min_spreads": 2.0, "oriented": None}
    return flags_without_growth(flags, labels, **(params | kwargs))


def test_a_group_split_off_a_class_that_did_not_grow_is_withdrawn():
    labels = sized_set(BALANCED)
    flags = first_rows(labels, 1, 200)  # a natural mode: half the class, no rows gained
    out = check(flags, labels)
    assert np.array_equal(out.withdrawn, flags)
    entry = out.info["checked"]["1"]
    assert entry["withdrawn"] and entry["flagged"] == 200 and entry["rows"] == 470
    json.dumps(out.info)


def test_a_group_the_class_gained_stays():
    sizes = list(BALANCED)
    sizes[1] += 250  # 250 poisons added to class 1
    labels = sized_set(sizes)
    flags = first_rows(labels, 1, 290)  # the poisons and 40 clean rows
    out = check(flags, labels)
    assert not out.withdrawn.any() and not out.info["checked"]["1"]["withdrawn"]


def test_a_group_within_the_size_noise_stays():
    # 1% into a class: 50 rows gained, as much as the classes' natural spread.
    sizes = list(BALANCED)
    sizes[4] += 50
    labels = sized_set(sizes)
    flags = first_rows(labels, 4, 49)
    assert not check(flags, labels).withdrawn.any()
    # Even where the class happens not to have grown beyond the others, 49 flags are less
    # than two spreads of the class sizes: the sizes cannot tell.
    labels = sized_set(BALANCED)
    assert not check(first_rows(labels, 4, 49), labels).withdrawn.any()


def _naturally_large_class(rng, informative: float):
    """Class 1 naturally 1.2 times the others (no poison); a detector flags 150 of its
    rows. Pixel label agreement: ``informative`` on the reference rows, and the same
    for the flagged rows as for the rest of class 1 (a natural mode)."""
    sizes = list(BALANCED)
    sizes[1] = 560
    labels = sized_set(sizes)
    flags = first_rows(labels, 1, 150)
    agreement = np.clip(informative + rng.normal(0, 0.05, labels.size), 0, 1)
    return labels, flags, agreement


def test_a_grown_class_whose_flags_look_like_its_own_images_loses_them():
    rng = np.random.default_rng(0)
    labels, flags, agreement = _naturally_large_class(rng, informative=0.87)
    reference = labels != 1
    pixels = {"label_agreement": agreement, "reference": reference, "pixel_auc": 0.75}
    assert not check(flags, labels).withdrawn.any()  # the sizes alone keep them
    out = check(flags, labels, **pixels)
    assert np.array_equal(out.withdrawn, flags)
    entry = out.info["checked"]["1"]
    assert entry["withdrawn"] and 0.35 < entry["pixel_auc"] < 0.65
    assert out.info["pixels_tell"] is True

    # Poisons are images of other classes: fewer of their neighbours carry the label.
    gained = agreement.copy()
    gained[flags] -= 0.5
    out = check(flags, labels, **(pixels | {"label_agreement": gained}))
    assert not out.withdrawn.any() and out.info["checked"]["1"]["pixel_auc"] > 0.99


def test_a_long_tail_head_class_whose_flags_look_like_its_own_images_loses_them():
    # Sizes from 1,223 down to 122 (a long tail): the head class's flags are fewer than
    # two spreads of such sizes, so the size cannot tell; the pixels still can.
    rng = np.random.default_rng(2)
    labels = sized_set([1223, 947, 733, 568, 440, 341, 264, 204, 158, 122])
    flags = first_rows(labels, 1, 465)
    agreement = np.clip(0.87 + rng.normal(0, 0.05, labels.size), 0, 1)
    pixels = {"label_agreement": agreement, "reference": labels > 1, "pixel_auc": 0.75}
    out = check(flags, labels, **pixels)
    entry = out.info["checked"]["1"]
    assert np.array_equal(out.withdrawn, flags) and entry["withdrawn"]
    gained = np.where(flags, agreement - 0.5, agreement)  # images of other classes
    assert not check(flags, labels, **(pixels | {"label_agreement": gained})).withdrawn.any()


def test_the_pixel_test_waits_for_pixels_that_tell_classes_apart():
    rng = np.random.default_rng(1)
    labels, flags, agreement = _naturally_large_class(rng, informative=0.27)  # CIFAR-10
    out = check(flags, labels, label_agreement=agreement, reference=labels != 1, pixel_auc=0.75)
    assert not out.withdrawn.any() and out.info["pixels_tell"] is False
    assert out.info["checked"]["1"]["pixel_auc"] is None
    # A class not scored (NaN agreement) is judged by its size alone.
    agreement = np.where(labels == 1, np.nan, 0.87)
    out = check(flags, labels, label_agreement=agreement, reference=labels != 1, pixel_auc=0.75)
    assert not out.withdrawn.any() and out.info["pixels_tell"] is True


def test_keep_highest_keeps_the_top_scores_of_each_capped_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    flagged = np.array([True, True, True, False, True, True, True])
    score = np.array([0.6, 0.9, 0.6, 0.99, 0.7, 0.8, 0.9])
    out = keep_highest(flagged, score, labels, {0: 2})
    # Class 0 keeps its best flag and, of the tie, the first row; class 1 is not capped.
    assert out.tolist() == [True, True, False, False, True, True, True]
    assert keep_highest(flagged, score, labels, {0: 5}).tolist() == flagged.tolist()


def test_oriented_groups_and_skipped_classes_keep_their_flags():
    labels = sized_set(BALANCED)
    flags = first_rows(labels, 1, 200)
    # A clean-label attack adds no rows, but the early loss finds its poisons.
    oriented = first_rows(labels, 1, 60)
    assert not check(flags, labels, oriented=oriented).withdrawn.any()
    assert not check(flags, labels, skip=frozenset({1})).withdrawn.any()
    assert check(flags, labels, min_spreads=100.0).withdrawn.sum() == 0


def test_the_growth_is_measured_against_the_expected_shares():
    # Class 0 is expected at twice the others' size and has it: a 300-row group there is
    # a mode of a large class, not a gain; against the other classes' sizes it would be.
    sizes = [900] + BALANCED[1:]
    labels = sized_set(sizes)
    flags = first_rows(labels, 0, 300)
    expected = np.array([2.0] + [1.0] * 9)
    assert check(flags, labels, expected=expected).withdrawn.sum() == 300
    assert not check(flags, labels).withdrawn.any()


def result(score: np.ndarray) -> DetectorResult:
    return DetectorResult(score=score.astype(np.float32), flagged=score >= 0.5)


def test_decide_withdraws_a_natural_mode_and_keeps_a_gained_group():
    sizes = list(BALANCED)
    sizes[3] += 200
    labels = sized_set(sizes)
    poison = first_rows(labels, 3, 200)
    mode = first_rows(labels, 7, 180)
    score = np.where(poison | mode, 0.8, 0.1)
    results = {"activation_clustering": result(score)}
    config = DecisionConfig(rules=("orient", "size_orient", "growth", "settled"))
    decision = decide(results, labels.size, config, labels=labels)
    assert np.array_equal(decision.flagged, poison)
    assert np.array_equal(decision.poison_score >= 0.5, decision.flagged)
    assert all(decision.reasons[i] == [] for i in np.flatnonzero(mode))
    assert decision.info["growth"]["n_withdrawn"] == 180
    json.dumps(decision.info)
    off = decide(
        results,
        labels.size,
        DecisionConfig(rules=("orient", "size_orient", "settled")),
        labels=labels,
    )
    assert np.array_equal(off.flagged, poison | mode) and off.info["growth"] is None


def test_decide_withdraws_a_naturally_large_class_mode_that_looks_like_its_class():
    rng = np.random.default_rng(2)
    labels, mode, agreement = _naturally_large_class(rng, informative=0.87)
    results = {"activation_clustering": result(np.where(mode, 0.8, 0.1))}
    config = DecisionConfig(rules=("orient", "size_orient", "growth", "settled"))
    kept = decide(results, labels.size, config, labels=labels)
    assert np.array_equal(kept.flagged, mode)  # without the pixels, the size keeps it
    decision = decide(results, labels.size, config, labels=labels, label_agreement=agreement)
    assert not decision.flagged.any()
    assert decision.info["growth"]["checked"]["1"]["pixel_auc"] < 0.75
    off = decide(
        results,
        labels.size,
        DecisionConfig(rules=("orient", "size_orient", "growth", "settled"), growth_pixel_auc=None),
        labels=labels,
        label_agreement=agreement,
    )
    assert np.array_equal(off.flagged, mode)


@pytest.mark.parametrize(
    "bad",
    [
        {"growth_share": 0.0},
        {"growth_share": 1.5},
        {"growth_spreads": -1},
        {"growth_pixel_auc": 0.5},
        {"growth_pixel_auc": 1.2},
        {"growth_pixel_reference": 0.0},
    ],
)
def test_growth_settings_are_checked(bad):
    with pytest.raises(ConfigError, match="growth_"):
        DecisionConfig(**bad)
