"""The vote that turns detector results into one poison score, flags and weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sanitize.config import DecisionConfig
from sanitize.decision import decide
from sanitize.decision.refine import refine_by_class
from sanitize.detect import DetectorResult
from sanitize.errors import ConfigError


def result(score, weight=None) -> DetectorResult:
    score = np.asarray(score, dtype=np.float32)
    return DetectorResult(score=score, flagged=score >= 0.5, weight=weight)


def random_results(rng, n: int, m: int, p_flag: float = 0.1) -> dict[str, DetectorResult]:
    out = {}
    for j in range(m):
        flagged = rng.random(n) < p_flag
        score = np.where(flagged, rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.49, n))
        out[f"d{j}"] = result(score)
    return out


def test_majority_of_three_needs_two_votes():
    results = {
        "a": result([0.9, 0.9, 0.1, 0.1]),
        "b": result([0.8, 0.2, 0.2, 0.1]),
        "c": result([0.1, 0.3, 0.6, 0.1]),
    }
    d = decide(results, 4, DecisionConfig(min_votes=None))
    assert d.info["min_votes"] == 2
    assert d.flagged.tolist() == [True, False, False, False]
    assert d.votes.tolist() == [2, 1, 1, 0]
    # The second-largest score of each row.
    assert d.poison_score.tolist() == pytest.approx([0.8, 0.3, 0.2, 0.1])
    assert d.reasons == [["a", "b"], [], [], []]
    json.dumps(d.info)


@pytest.mark.parametrize(("m", "k"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_strict_majority_and_kth_largest_score(m, k):
    rng = np.random.default_rng(m)
    results = random_results(rng, 500, m, p_flag=0.4)
    d = decide(results, 500, DecisionConfig(min_votes=None, max_removal_fraction=1.0))
    assert d.info["min_votes"] == k
    scores = np.stack([r.score for r in results.values()])
    assert np.array_equal(d.poison_score, np.sort(scores, axis=0)[::-1][k - 1])
    assert np.array_equal(d.flagged, d.votes >= k)
    assert np.array_equal(d.poison_score >= 0.5, d.flagged)


def test_min_votes_from_config():
    results = {"a": result([0.9, 0.1]), "b": result([0.2, 0.1]), "c": result([0.1, 0.1])}
    d = decide(results, 2, DecisionConfig(min_votes=1, max_removal_fraction=1.0))
    assert d.flagged.tolist() == [True, False]
    assert d.info["min_votes_from"] == "config"
    with pytest.raises(ConfigError, match="min_votes=4 exceeds the 3"):
        decide(results, 2, DecisionConfig(min_votes=4))


@pytest.mark.parametrize("seed", range(5))
def test_contract_holds_with_and_without_cap(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 6))
    for fraction in (1.0, 0.25, 0.05, 0.001):
        results = random_results(rng, 400, m, p_flag=float(rng.uniform(0.05, 0.8)))
        d = decide(results, 400, DecisionConfig(max_removal_fraction=fraction))
        assert d.poison_score.dtype == np.float32
        assert np.all((d.poison_score >= 0) & (d.poison_score <= 1))
        assert np.array_equal(d.poison_score >= 0.5, d.flagged)
        assert d.flagged.sum() <= int(np.floor(fraction * 400))


def test_cap_keeps_the_highest_scores():
    n = 100
    score = np.full(n, 0.1)
    score[:40] = np.linspace(0.6, 0.99, 40)
    d = decide({"a": result(score)}, n, DecisionConfig(max_removal_fraction=0.25))
    assert d.info["cap_applied"] and d.info["n_flagged_before_cap"] == 40
    assert d.info["n_flagged"] == 25 == d.flagged.sum()
    assert np.array_equal(np.flatnonzero(d.flagged), np.arange(15, 40))
    assert np.all(d.poison_score[:15] < 0.5)
    assert d.votes[:15].tolist() == [1] * 15
    assert all(r == [] for r in d.reasons[:15]) and d.reasons[20] == ["a"]


def test_weights_are_clipped_and_normalised_over_kept_rows():
    rng = np.random.default_rng(0)
    n = 1000
    w = rng.uniform(0.001, 0.7, n).astype(np.float32)
    score = np.where(rng.random(n) < 0.1, 0.8, 0.2)
    cfg = DecisionConfig(weight_clip=(0.05, 1.0))
    d = decide({"cbd": result(score, weight=w), "spectral": result(score)}, n, cfg)
    kept = ~d.flagged
    assert d.sample_weight.dtype == np.float32
    assert np.all(d.sample_weight[d.flagged] == 0)
    assert np.all(d.sample_weight[kept] > 0)
    assert float(d.sample_weight[kept].astype(np.float64).mean()) == pytest.approx(1.0, abs=1e-6)
    ratio = d.sample_weight[kept].max() / d.sample_weight[kept].min()
    assert ratio <= 1.0 / 0.05 + 1e-3
    # Ordering of the raw weights is kept.
    assert np.all(np.diff(d.sample_weight[kept][np.argsort(w[kept])]) >= -1e-6)
    assert d.info["weights_from"] == ["cbd"]


def test_weights_act_only_in_the_classes_the_decision_found_poisoned():
    rng = np.random.default_rng(1)
    n = 2000
    labels = rng.integers(0, 4, n)
    w = rng.uniform(0.01, 1.0, n).astype(np.float32)
    score = np.full(n, 0.2)
    class_2 = np.flatnonzero(labels == 2)
    score[class_2[:30]] = 0.9  # class 2 loses 30 rows, which the weights rank lowest
    w[class_2[:30]] = rng.uniform(0.001, 0.01, 30)
    class_1 = np.flatnonzero(labels == 1)
    score[class_1[:20]] = 0.9  # class 1 loses 20 rows the weights rank highest
    w[class_1[:20]] = 1.0
    score[np.flatnonzero(labels == 3)[:3]] = 0.9  # class 3 a few outliers only
    off = {"rules": ("size_orient", "growth", "settled")}
    results = {"cbd": result(score, weight=w), "spectral": result(score)}
    d = decide(results, n, DecisionConfig(**off), labels=labels)
    kept = ~d.flagged
    assert d.info["weight_classes"] == [2]
    agreement = d.info["weight_agreement"]
    assert sorted(agreement) == ["1", "2"]
    assert agreement["2"] == pytest.approx(1.0) and agreement["1"] < 0.1
    json.dumps(d.info, allow_nan=False)
    for c in (0, 1, 3):
        rows = kept & (labels == c)
        assert np.ptp(d.sample_weight[rows]) == 0  # one weight for every kept row
    rows = kept & (labels == 2)
    order = np.argsort(w[rows])
    assert np.all(np.diff(d.sample_weight[rows][order]) >= -1e-6)
    assert d.sample_weight[rows].min() < 0.1 * d.sample_weight[kept & (labels == 0)].max()
    assert float(d.sample_weight[kept].astype(np.float64).mean()) == pytest.approx(1.0, abs=1e-6)
    # With the restriction off, every class is weighted.
    d_all = decide(results, n, DecisionConfig(**off, weight_suspect_only=False), labels=labels)
    assert d_all.info["weight_classes"] is None
    assert np.ptp(d_all.sample_weight[~d_all.flagged & (labels == 0)]) > 0


def test_weights_are_one_without_a_weighting_detector():
    d = decide({"a": result([0.9, 0.1, 0.2])}, 3, DecisionConfig(max_removal_fraction=0.5))
    assert d.sample_weight.tolist() == [0.0, 1.0, 1.0]


def test_bad_inputs():
    with pytest.raises(ConfigError, match="no detector results"):
        decide({}, 3, DecisionConfig())
    with pytest.raises(ValueError, match="scored 2 rows, expected 3"):
        decide({"a": result([0.1, 0.2])}, 3, DecisionConfig())


# --- candidate groups ------------------------------------------------------------------


def test_a_candidate_group_without_flags_removes_nothing():
    """Class evidence and a candidate group are what the size rules read; without a flag
    (or a class the size rules judge) they remove no row, however far a class stands out."""
    labels = np.repeat(np.arange(10), 100)
    candidate = np.zeros(labels.size, dtype=bool)
    candidate[np.flatnonzero(labels == 4)[:20]] = True
    per_class = {str(c): {"evidence": 4.0 if c == 4 else 1.8, "n_flagged": 0} for c in range(10)}
    results = {
        nm: DetectorResult(
            score=np.where(candidate, 0.45, 0.05).astype(np.float32),
            flagged=np.zeros(labels.size, dtype=bool),
            info={"per_class": per_class},
            candidate=candidate,
        )
        for nm in ("a", "b")
    }
    decision = decide(results, labels.size, DecisionConfig(), labels=labels)
    assert not decision.flagged.any()
    assert np.all(decision.poison_score < 0.5)


# --- refinement inside classes -------------------------------------------------------------


def planted_coordinates(
    seed: int = 0, per_class: int = 400, n_poison: int = 120, k: int = 16, grown: bool = False
):
    """Class coordinates: Gaussian classes, and in class 2 a group offset along one axis;
    with ``grown``, added to the class (a dirty-label target holds its own rows plus the
    poison), else among its rows."""
    rng = np.random.default_rng(seed)
    sizes = np.full(5, per_class)
    sizes[2] += n_poison if grown else 0
    labels = np.repeat(np.arange(5), sizes)
    coords = rng.normal(size=(labels.size, k))
    poison = np.zeros(labels.size, dtype=bool)
    poison[np.flatnonzero(labels == 2)[:n_poison]] = True
    coords[poison, 0] += 5.0
    return labels, coords, poison


def test_refinement_recovers_missed_poisons_and_drops_stray_flags():
    labels, coords, poison = planted_coordinates()
    rng = np.random.default_rng(1)
    # A detector that caught 70% of the group and 15 clean rows of the class at random.
    flags = poison & (rng.random(poison.size) < 0.7)
    flags[rng.choice(np.flatnonzero((labels == 2) & ~poison), 15, replace=False)] = True
    out = refine_by_class(flags, labels, coords, keep=0.05, min_rows=10, folds=5)
    assert out.flagged[poison].mean() >= 0.97
    assert out.flagged[~poison].sum() <= 3
    assert out.info["per_class"]["2"]["added"] >= 30 and out.info["per_class"]["2"]["dropped"] >= 12
    assert np.isnan(out.probability[labels != 2]).all()


def test_refinement_leaves_classes_with_too_few_flags_alone():
    labels, coords, poison = planted_coordinates()
    flags = np.zeros(labels.size, dtype=bool)
    flags[np.flatnonzero(poison)[:9]] = True  # under min_rows
    out = refine_by_class(flags, labels, coords, keep=0.05, min_rows=10, folds=5)
    assert np.array_equal(out.flagged, flags) and out.info["per_class"] == {}
    none = refine_by_class(np.zeros_like(flags), labels, coords, keep=0.05, min_rows=10, folds=5)
    assert not none.flagged.any()


def test_refinement_withdraws_a_group_without_a_direction_of_its_own():
    """Flags scattered over a class (no shared direction) are mostly not recognised by a
    discriminant that never saw them: the class loses them all; a small planted group of the
    same size keeps its flags."""
    labels, coords, poison = planted_coordinates(per_class=1500, n_poison=25)
    rng = np.random.default_rng(3)
    scattered = np.zeros(labels.size, dtype=bool)
    scattered[rng.choice(np.flatnonzero(labels == 4), 25, replace=False)] = True
    flags = poison | scattered
    out = refine_by_class(flags, labels, coords, keep=0.05, min_rows=10, folds=5, min_kept=0.75)
    planted, loose = out.info["per_class"]["2"], out.info["per_class"]["4"]
    assert not planted["withdrawn"] and planted["kept_share"] >= 0.9
    assert out.flagged[poison].mean() >= 0.9
    assert loose["withdrawn"] and loose["kept_share"] < 0.75
    assert not out.flagged[labels == 4].any() and loose["dropped"] == 25
    # Without the check the scattered flags are only thinned, as before.
    off = refine_by_class(flags, labels, coords, keep=0.05, min_rows=10, folds=5)
    assert not off.info["per_class"]["4"]["withdrawn"] and off.flagged[labels == 4].any()
    json.dumps(out.info)


def test_decide_refines_with_coordinates_and_keeps_the_contract():
    labels, coords, poison = planted_coordinates(grown=True)
    rng = np.random.default_rng(2)
    caught = poison & (rng.random(poison.size) < 0.6)
    score = np.where(caught, 0.8, rng.uniform(0.0, 0.4, poison.size))
    results = {"a": result(score)}
    plain = decide(results, poison.size, DecisionConfig(), labels=labels)
    refined = decide(results, poison.size, DecisionConfig(), labels=labels, coordinates=coords)
    assert np.array_equal(plain.flagged, caught)
    # refine_add = 0.15 trades a few clean rows of the poisoned class for missed poisons.
    assert refined.flagged[poison].mean() >= 0.9
    assert refined.flagged[~poison].sum() <= 3 and not refined.flagged[labels != 2].any()
    assert np.array_equal(refined.poison_score >= 0.5, refined.flagged)
    added = refined.flagged & ~caught
    assert all(refined.reasons[i] == ["refine"] for i in np.flatnonzero(added))
    assert refined.info["refine"]["n_added"] == int(added.sum())
    off = decide(
        results,
        poison.size,
        DecisionConfig(rules=("orient", "size_orient", "growth", "settled")),
        labels=labels,
        coordinates=coords,
    )
    assert np.array_equal(off.flagged, caught) and off.info["refine"] is None
    json.dumps(refined.info)


def test_decide_leaves_a_group_only_the_input_space_detector_found_unrefined():
    """The refinement's discriminant reads feature coordinates; a group drawn in the input
    (pixel_spectral) is left as its detector drew it, unless a feature detector flags
    rows of the class too."""
    labels, coords, poison = planted_coordinates(grown=True)
    rng = np.random.default_rng(2)
    caught = poison & (rng.random(poison.size) < 0.6)
    score = np.where(caught, 0.8, rng.uniform(0.0, 0.4, poison.size))
    pixel = decide(
        {"pixel_spectral": result(score)},
        poison.size,
        DecisionConfig(),
        labels=labels,
        coordinates=coords,
    )
    assert np.array_equal(pixel.flagged, caught)
    assert pixel.info["refine"]["skipped"] == [2] and pixel.info["refine"]["per_class"] == {}
    one = np.zeros(poison.size, dtype=bool)
    one[np.flatnonzero(caught)[:1]] = True
    both = decide(
        {"pixel_spectral": result(score), "a": result(np.where(one, 0.8, 0.1))},
        poison.size,
        DecisionConfig(),
        labels=labels,
        coordinates=coords,
    )
    assert both.info["refine"]["skipped"] == [] and "2" in both.info["refine"]["per_class"]
    assert both.flagged[poison].mean() >= 0.9


def test_decide_leaves_a_group_the_input_detector_alone_flagged_unrefined():
    """A group only an input-space detector flagged is kept as drawn; the same group from a
    feature-space detector is re-drawn by the refinement."""
    labels, coords, poison = planted_coordinates(grown=True)
    rng = np.random.default_rng(3)
    group = poison & (rng.random(poison.size) < 0.6)
    group[rng.choice(np.flatnonzero((labels == 2) & ~poison), 10, replace=False)] = True
    for name, unrefined in (("pixel_spectral", True), ("spectral", False)):
        decision = decide(
            {name: result(np.where(group, 0.9, 0.1))},
            labels.size,
            DecisionConfig(rules=("orient", "size_orient", "refine", "settled")),
            labels=labels,
            coordinates=coords,
        )
        assert np.array_equal(decision.flagged, group) == unrefined
        assert (decision.info["refine"]["skipped"] == [2]) == unrefined
        if unrefined:
            assert decision.reasons[int(np.flatnonzero(group)[0])] == [name]
        else:
            assert decision.flagged[poison].mean() >= 0.95


def test_input_space_only_classes_need_every_flag_from_the_input_detector():
    from sanitize.decision.rules import input_space_only

    labels = np.repeat(np.arange(4), 10)
    flagged = np.zeros(40, dtype=bool)
    flagged[[0, 1, 10, 11, 20, 21, 30, 31]] = True
    reasons: list[list[str]] = [[] for _ in range(40)]
    reasons[0] = reasons[1] = reasons[10] = ["pixel_spectral"]
    reasons[11] = ["pixel_spectral", "spectral"]  # a feature detector flags class 1 too
    reasons[20] = reasons[21] = ["pixel_spectral"]
    reasons[30] = ["pixel_spectral"]
    reasons[31] = ["class_size"]  # a decision rule's flag, no detector's
    assert input_space_only({"pixel_spectral"}, flagged, labels, reasons) == frozenset({0, 2})
    assert input_space_only(set(), flagged, labels, reasons) == frozenset()


@pytest.mark.parametrize(
    "bad",
    [
        {"refine_components": 0},
        {"refine_keep": 0.6},
        {"refine_folds": 1},
        {"min_class_rows": 3, "refine_folds": 5},
        {"refine_add": 0.01},
        {"refine_min_kept": 1.5},
        {"refine_add": 1.5},
    ],
)
def test_refine_config_is_validated(bad):
    with pytest.raises(ConfigError, match="refine"):
        DecisionConfig(**bad)


# --- orientation by the shortcut detector ----------------------------------------------------


def _majority_poison_case():
    """Class 1 of six: 80 of its 100 rows poisoned. Early loss flags 70 of them; a cluster
    detector flags the class's 20 clean rows (its smaller side); in class 2 the cluster
    detector alone flags 10 poisons of a minority group."""
    labels = np.repeat(np.arange(6), 100)
    poison = np.zeros(600, dtype=bool)
    poison[100:180] = True
    poison[200:210] = True
    early = np.zeros(600, dtype=bool)
    early[100:170] = True
    cluster = np.zeros(600, dtype=bool)
    cluster[180:200] = True
    cluster[200:210] = True
    results = {
        "early_loss": result(np.where(early, 0.9, 0.1)),
        "activation_clustering": result(np.where(cluster, 0.8, 0.1)),
    }
    return results, labels, poison, early, cluster


def test_orientation_drops_the_other_side_of_a_shortcut_majority_class():
    results, labels, poison, early, cluster = _majority_poison_case()
    decision = decide(results, labels.size, DecisionConfig(), labels=labels)
    # Class 1: only the early-loss majority stays; class 2 (no majority) is untouched.
    assert np.array_equal(decision.flagged, early | (cluster & (labels == 2)))
    assert not decision.flagged[180:200].any() and decision.flagged[200:210].all()
    assert np.array_equal(decision.poison_score >= 0.5, decision.flagged)
    assert all(decision.reasons[i] == [] for i in range(180, 200))
    info = decision.info["orient"]
    assert info["by"] == ["early_loss"] and info["n_dropped"] == 20
    assert info["classes"] == {
        "1": {"rows": 100, "shortcut": 70, "rule": "majority", "dropped": 20}
    }
    json.dumps(decision.info)

    off = decide(
        results,
        labels.size,
        DecisionConfig(rules=("size_orient", "refine", "growth", "settled")),
        labels=labels,
    )
    assert np.array_equal(off.flagged, early | cluster) and off.info["orient"] is None


def test_a_results_oriented_rows_orient_their_class_as_an_oriented_detector_would():
    """A detector that is not oriented as a whole (``contrast_spectral``) but marks the
    flags it turned over: they settle the class as the early loss's would."""
    results, labels, _, early, cluster = _majority_poison_case()
    results["contrast_spectral"] = DetectorResult(
        score=np.where(early, 0.9, 0.1).astype(np.float32), flagged=early, oriented=early
    )
    del results["early_loss"]
    decision = decide(results, labels.size, DecisionConfig(min_votes=1), labels=labels)
    assert np.array_equal(decision.flagged, early | (cluster & (labels == 2)))
    info = decision.info["orient"]
    assert info["by"] == ["contrast_spectral"]
    assert info["classes"]["1"] == {"rows": 100, "shortcut": 70, "rule": "majority", "dropped": 20}
    # The same flags without the mark orient nothing (and, without the growth check, stay).
    results["contrast_spectral"] = result(np.where(early, 0.9, 0.1))
    config = DecisionConfig(min_votes=1, rules=("orient", "size_orient", "refine", "settled"))
    plain = decide(results, labels.size, config, labels=labels)
    assert np.array_equal(plain.flagged, early | cluster) and plain.info["orient"] is None


def test_orientation_drops_flags_that_contradict_a_shortcut_minority_group():
    results, labels, _, early, cluster = _majority_poison_case()
    # Early loss flags half of class 1 (no majority); every other flag there is off its side.
    half = np.zeros_like(early)
    half[100:150] = True
    results["early_loss"] = result(np.where(half, 0.9, 0.1))
    decision = decide(results, labels.size, DecisionConfig(), labels=labels)
    assert np.array_equal(decision.flagged, half | (cluster & (labels == 2)))
    assert decision.info["orient"]["classes"]["1"]["rule"] == "contradicted"
    assert np.array_equal(decision.poison_score >= 0.5, decision.flagged)


def test_orientation_needs_a_majority_or_a_contradiction_and_an_oriented_detector():
    results, labels, _, early, cluster = _majority_poison_case()
    half = np.zeros_like(early)
    half[100:150] = True
    results["early_loss"] = result(np.where(half, 0.9, 0.1))
    # Early loss flagging half of class 1, with most other flags on its side, settles nothing.
    agreeing = cluster.copy()
    agreeing[180:200] = False
    agreeing[135:160] = True  # 15 on the early loss's side, 10 off it
    results["activation_clustering"] = result(np.where(agreeing, 0.8, 0.1))
    decision = decide(results, labels.size, DecisionConfig(), labels=labels)
    assert np.array_equal(decision.flagged, half | agreeing)
    # Nor does a shortcut group below min_class_rows.
    few = np.zeros_like(early)
    few[100:105] = True
    results = {
        "early_loss": result(np.where(few, 0.9, 0.1)),
        "activation_clustering": result(np.where(cluster, 0.8, 0.1)),
    }
    decision = decide(results, labels.size, DecisionConfig(), labels=labels)
    assert np.array_equal(decision.flagged, few | cluster)
    # Without an oriented detector among the results there is no orientation.
    only_cluster = {"activation_clustering": results["activation_clustering"]}
    alone = decide(only_cluster, labels.size, DecisionConfig(), labels=labels)
    assert np.array_equal(alone.flagged, cluster) and alone.info["orient"] is None


def test_cbd_votes_only_where_it_flags_a_group():
    n = 200
    labels = np.repeat(np.arange(4), 50)
    spectral = np.full(n, 0.1)
    spectral[:20] = 0.9  # class 0 loses 20 rows by spectral's vote
    cbd = np.full(n, 0.1)
    cbd[:30] = 0.8  # them, and 10 rows of class 0 spectral keeps: a group
    cbd[60:63] = 0.95  # and three scattered rows of class 1
    cbd[100:112] = 0.7  # and a group of 12 in class 2 nobody else flags
    w = np.where(cbd >= 0.5, 0.02, 0.9).astype(np.float32)
    off = {"rules": ("settled",)}
    results = {"cbd": result(cbd, weight=w), "spectral": result(spectral)}
    d = decide(results, n, DecisionConfig(**off, min_votes=1), labels=labels)
    assert np.array_equal(np.flatnonzero(d.flagged), np.r_[0:30, 100:112])
    assert d.info["group_voters"] == ["cbd"]
    assert d.info["flags_per_detector"]["cbd"] == 45 and d.info["votes_per_detector"]["cbd"] == 42
    assert d.reasons[0] == ["cbd", "spectral"] and d.reasons[25] == ["cbd"]
    # Scattered flags neither vote nor lift the poison score.
    assert np.all(d.poison_score[60:63] < 0.5) and d.votes[60:63].tolist() == [0, 0, 0]
    assert d.info["weight_classes"] == [0, 2]
    # Without labels there are no classes: every flag votes.
    d = decide(results, n, DecisionConfig(**off, min_votes=1))
    assert d.flagged[60:63].all()


def test_cbd_alone_votes_by_groups():
    n = 100
    labels = np.repeat(np.arange(4), 25)
    cbd = np.full(n, 0.1)
    cbd[:12] = 0.8
    cbd[50:57] = 0.8
    w = np.where(cbd >= 0.5, 0.02, 0.9).astype(np.float32)
    d = decide({"cbd": result(cbd, weight=w)}, n, DecisionConfig(), labels=labels)
    assert np.array_equal(np.flatnonzero(d.flagged), np.arange(12))
    assert all(r == ["cbd"] for r in d.reasons[:12])


def test_a_stamp_settles_its_class():
    """Where the exact stamp detector flags a group, its flags are the class's: a feature
    detector's stray flags there go and the stamp's rows it missed come in; other classes
    keep the vote."""
    labels = np.repeat(np.arange(3), 100)
    stamp = np.zeros(300, dtype=bool)
    stamp[100:120] = True
    feature = np.zeros(300, dtype=bool)
    feature[[*range(100, 110), *range(150, 160), *range(200, 215)]] = True
    results = {
        "stamp": result(np.where(stamp, 1.0, 0.0)),
        "spectral": result(np.where(feature, 0.8, 0.1)),
    }
    config = DecisionConfig(rules=("orient", "size_orient", "settled"))
    decision = decide(results, 300, config, labels=labels)
    assert np.flatnonzero(decision.flagged).tolist() == [*range(100, 120), *range(200, 215)]
    assert decision.reasons[115] == ["stamp"] and decision.reasons[150] == []
    assert (decision.poison_score[150:160] < 0.5).all()
    assert decision.info["settled"]["per_class"] == {
        "1": {
            "settled": True,
            "kept": 20,
            "added": 0,
            "dropped": 10,
        }
    }
    # Fewer stamp flags in a class than a group: the vote stands there.
    results["stamp"] = result(np.where((np.arange(300) >= 100) & (np.arange(300) < 105), 1.0, 0.0))
    few = decide(results, 300, config, labels=labels)
    assert few.info["settled"]["per_class"] == {}
    # A stamp that is a small part of its class's flags (a blend exact only where the
    # images saturate) votes as any detector, and the class's other flags stay.
    feature[100:150] = True
    results["spectral"] = result(np.where(feature, 0.8, 0.1))
    results["stamp"] = result(np.where((np.arange(300) >= 140) & (np.arange(300) < 160), 1.0, 0.0))
    part = decide(results, 300, config, labels=labels)
    assert np.flatnonzero(part.flagged).tolist() == [*range(100, 160), *range(200, 215)]
    assert part.info["settled"]["per_class"]["1"] == {
        "settled": False,
        "kept": 20,
        "added": 0,
        "dropped": 0,
    }
    assert "stamp" in part.reasons[155] and part.poison_score[155] == 1.0


def _with_candidate(score, candidate) -> DetectorResult:
    out = result(score)
    out.candidate = np.asarray(candidate, dtype=bool)
    return out


def test_every_decision_knob_belongs_to_one_step():
    from sanitize.decision.decide import DECIDE_KNOBS
    from sanitize.decision.rules import RULES

    owned = [knob for rule in RULES for knob in rule.knobs] + list(DECIDE_KNOBS)
    assert sorted(owned) == sorted(DecisionConfig.model_fields)
    assert len({rule.name for rule in RULES}) == len(RULES)
