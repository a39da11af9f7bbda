"""Detectors on seeded synthetic features with a planted poison cluster."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from sanitize.detect import (
    CBD,
    ActivationClustering,
    DetectorContext,
    DetectorResult,
    EarlyLoss,
    SpectralSignature,
    Spectre,
    available_detectors,
    get_detector,
)
from sanitize.detect.cbd import confounder_loss
from sanitize.detect.mixture import separated_group, small_sample_separation
from sanitize.errors import ConfigError, InputError

N_CLASSES = 10
PLANT_CLASS = 3


def make_features(
    seed: int = 0,
    *,
    per_class: int = 300,
    dim: int = 64,
    n_plant: int = 40,
    shift: float = 10.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian classes with anisotropic covariance, plus a compact cluster in one class.

    Each class has its own mean and a randomly rotated covariance with a power-law
    spectrum (standard deviations 2 / sqrt(j), as in penultimate-layer features). The plant
    is ``n_plant`` rows around the class mean shifted by ``shift`` along a random
    direction, with a spread of 0.3, labelled ``PLANT_CLASS``.

    Returns features (float32), labels, and the poison mask.
    """
    rng = np.random.default_rng(seed)
    sd = 2.0 * np.arange(1, dim + 1) ** -0.5
    xs, ys = [], []
    for c in range(N_CLASSES):
        rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        mean = rng.normal(scale=3.0, size=dim)
        xs.append(mean + (rng.normal(size=(per_class, dim)) * sd) @ rotation.T)
        ys.append(np.full(per_class, c))
    poison = np.zeros(N_CLASSES * per_class, dtype=bool)
    if n_plant:
        u = rng.normal(size=dim)
        u /= np.linalg.norm(u)
        centre = xs[PLANT_CLASS].mean(axis=0) + shift * u
        xs.append(centre + rng.normal(scale=0.3, size=(n_plant, dim)))
        ys.append(np.full(n_plant, PLANT_CLASS))
        poison = np.concatenate([poison, np.ones(n_plant, dtype=bool)])
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys), poison


@pytest.fixture(scope="module")
def planted():
    return make_features(0)


@pytest.fixture(scope="module")
def clean():
    return make_features(0, n_plant=0)


@pytest.fixture(scope="module")
def heavy():
    # 245 of 545 rows: the class is 45% poisoned.
    return make_features(1, n_plant=245)


CTX = DetectorContext(n_classes=N_CLASSES, seed=0)


def rates(result: DetectorResult, poison: np.ndarray) -> tuple[float, float]:
    return float(result.flagged[poison].mean()), float(result.flagged[~poison].mean())


def check_result(result: DetectorResult, n: int) -> None:
    assert result.score.shape == (n,) and result.score.dtype == np.float32
    assert np.array_equal(result.score >= 0.5, result.flagged)
    json.dumps(result.info)


# --- activation clustering ---------------------------------------------------------------


def test_activation_clustering_flags_planted_cluster(planted):
    x, y, poison = planted
    result = ActivationClustering().score(x, y, CTX)
    check_result(result, len(y))
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.02
    assert result.info["classes_flagged"] == [PLANT_CLASS]
    figures = result.info["per_class"][str(PLANT_CLASS)]
    assert figures["flagged"] and figures["relative_size"] <= 0.35
    assert figures["reclassification_own_share"] is not None


@pytest.mark.parametrize("reduction", ["pca", "ica"])
def test_activation_clustering_flags_no_class_when_clean(clean, reduction):
    x, y, _ = clean
    result = ActivationClustering(reduction=reduction).score(x, y, CTX)
    check_result(result, len(y))
    # Every class has a smaller cluster; none of them may be flagged.
    assert all(v["relative_size"] <= 0.5 for v in result.info["per_class"].values())
    assert result.info["classes_flagged"] == []
    assert not result.flagged.any()


def test_activation_clustering_skips_small_classes_and_too_few_classes(planted):
    x, y, _ = planted
    keep = (y != 5) | (np.arange(len(y)) < 5 + np.flatnonzero(y == 5)[0])
    result = ActivationClustering().score(x[keep], y[keep], CTX)
    assert result.info["classes_skipped"] == [5]
    assert np.all(result.score[y[keep] == 5] == 0.0)

    two = y < 2
    result = ActivationClustering().score(x[two], y[two], CTX)
    assert not result.flagged.any() and "nothing flagged" in result.info["note"]


def test_activation_clustering_leaves_a_cluster_of_a_few_rows():
    """A split-off handful is an outlier set, not a poisoned group: below
    ``min_cluster_size`` rows the cluster is neither flagged nor a candidate."""
    x, y, poison = make_features(0, n_plant=8)
    small = ActivationClustering(min_cluster_size=5).score(x, y, CTX)
    assert small.info["classes_flagged"] == [PLANT_CLASS]
    assert small.flagged[poison].all()
    default = ActivationClustering().score(x, y, CTX)
    check_result(default, len(y))
    assert not default.flagged.any() and not default.candidate[y == PLANT_CLASS].any()
    with pytest.raises(ConfigError, match="min_cluster_size"):
        ActivationClustering(min_cluster_size=0).score(x, y, CTX)


# --- spectral signatures -----------------------------------------------------------------


def test_spectral_flags_planted_cluster(planted):
    x, y, poison = planted
    result = SpectralSignature().score(x, y, CTX)
    check_result(result, len(y))
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.02
    assert result.info["classes_flagged"] == [PLANT_CLASS]
    figures = result.info["per_class"][str(PLANT_CLASS)]
    assert figures["group"] and figures["separation"] >= 4.0 and figures["minor_weight"] < 0.5


def test_spectral_flags_at_most_one_percent_when_clean(clean):
    x, y, _ = clean
    result = SpectralSignature().score(x, y, CTX)
    check_result(result, len(y))
    assert result.flagged.mean() <= 0.01
    assert not any(v["group"] for v in result.info["per_class"].values())


def test_spectral_catches_a_class_45_percent_poisoned(heavy):
    x, y, poison = heavy
    assert poison[y == PLANT_CLASS].mean() == pytest.approx(0.45, abs=0.01)
    result = SpectralSignature().score(x, y, CTX)
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.02


def _projection(x: np.ndarray) -> np.ndarray:
    xc = x.astype(np.float64) - x.mean(axis=0)
    _, vecs = np.linalg.eigh(xc.T @ xc)
    return xc @ vecs[:, -1]


def test_spectral_score_is_monotone_in_the_projection(planted):
    x, y, _ = planted
    result = SpectralSignature().score(x, y, CTX)
    # Split class: monotone in the projection oriented toward the flagged group.
    rows = np.flatnonzero(y == PLANT_CLASS)
    p = _projection(x[rows])
    p = p if p[result.flagged[rows]].mean() > 0 else -p
    s = result.score[rows][np.argsort(p)]
    assert np.all(np.diff(s) >= -1e-5)
    # Class without a group: monotone in the robust deviation |p - median|.
    rows = np.flatnonzero(y == 0)
    p = _projection(x[rows])
    s = result.score[rows][np.argsort(np.abs(p - np.median(p)))]
    assert np.all(np.diff(s) >= -1e-5)


# --- CBD ---------------------------------------------------------------------------------


def make_losses(seed: int = 0, n: int = 2000, n_poison: int = 60):
    rng = np.random.default_rng(seed)
    l_b = rng.lognormal(np.log(0.3), 0.8, size=n)
    l_c = l_b * rng.lognormal(0.0, 0.3, size=n)
    poison = np.zeros(n, dtype=bool)
    poison[rng.choice(n, n_poison, replace=False)] = True
    l_b[poison] = rng.uniform(1e-4, 1e-2, size=n_poison)
    l_c[poison] = rng.uniform(2.0, 6.0, size=n_poison)
    labels = rng.integers(0, N_CLASSES, size=n)
    features = rng.normal(size=(n, 8)).astype(np.float32)
    context = DetectorContext(
        n_classes=N_CLASSES,
        loss_bootstrap=l_b.astype(np.float32),
        loss_clean=l_c.astype(np.float32),
    )
    return features, labels, context, poison


def test_cbd_flags_rows_fit_by_bootstrap_only_and_weights_them_down():
    x, y, context, poison = make_losses()
    result = CBD().score(x, y, context)
    check_result(result, len(y))
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.02
    assert result.weight is not None and result.weight.dtype == np.float32
    assert np.all((result.weight > 0) & (result.weight <= 1))
    # w relative to its class's median: about 1 where both models fit a row alike, near 0
    # on the poison.
    assert np.median(result.weight[~poison]) > 0.9
    assert result.weight[poison].max() < 0.02
    # Within a class, the score decreases with the weight (below the weight's cap of 1).
    for c in range(N_CLASSES):
        rows = np.flatnonzero((y == c) & (result.weight < 1))
        order = rows[np.argsort(result.weight[rows])]
        assert np.all(np.diff(result.score[order].astype(np.float64)) <= 1e-6)
    assert result.info["threshold_weight"] <= 0.2


def test_cbd_reads_the_early_stopped_bootstrap_loss_off_the_loss_history():
    rng = np.random.default_rng(3)
    n, n_poison, epochs = 2000, 60, 8
    poison = np.zeros(n, dtype=bool)
    poison[rng.choice(n, n_poison, replace=False)] = True
    # Clean rows are learned over the whole run, poisons (a shortcut) by the second epoch;
    # at the end f_B fits both, so its final loss alone cannot tell them apart.
    decay = np.geomspace(2.0, 0.02, epochs)
    history = decay * rng.lognormal(0.0, 0.3, size=(n, epochs))
    history[poison, 1:] = rng.uniform(1e-4, 1e-3, size=(n_poison, epochs - 1))
    history[rng.choice(n, 5, replace=False), :] = np.nan  # rows never trained on
    final = rng.uniform(1e-3, 2e-2, size=n)
    l_c = 0.05 * rng.lognormal(0.0, 0.5, size=n)
    l_c[poison] = rng.uniform(2.0, 6.0, size=n_poison)  # f_C did not learn the shortcut
    reference = confounder_loss(history, final)
    unrecorded = np.isnan(history).all(axis=1)
    assert np.array_equal(reference[unrecorded], final[unrecorded])
    assert np.median(reference[~poison & ~unrecorded]) > 30 * np.median(reference[poison])
    assert np.array_equal(confounder_loss(history[:, :0], final), final)  # from a checkpoint

    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, size=n)
    with_history = DetectorContext(
        n_classes=N_CLASSES,
        loss_history=history.astype(np.float32),
        loss_bootstrap=final.astype(np.float32),
        loss_clean=l_c.astype(np.float32),
    )
    result = CBD().score(x, y, with_history)
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.01
    assert result.weight[poison].max() < 0.01 < np.quantile(result.weight[~poison], 0.05)
    assert "over 8 epochs" in result.info["reference"]


def test_cbd_reads_a_class_learned_fast_as_a_whole_as_easy_not_poisoned():
    x, y, context, poison = make_losses()
    l_b = context.loss_bootstrap.copy()
    easy = (y == 4) & ~poison
    l_b[easy] /= 50.0  # f_B fits the whole class far better than f_C does
    result = CBD().score(x, y, dataclasses.replace(context, loss_bootstrap=l_b))
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.02
    assert result.flagged[easy].mean() <= 0.02
    # The class keeps its share of the weight: its rows weigh what other classes' rows do.
    other = (y == 5) & ~poison
    assert abs(np.median(result.weight[easy]) - np.median(result.weight[other])) < 0.1


def test_cbd_flags_nothing_when_models_agree():
    x, y, context, poison = make_losses(n_poison=0)
    result = CBD().score(x, y, context)
    assert result.flagged.mean() <= 0.01


# --- errors and registry -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["activation_clustering", "spectral", "spectre", "cbd"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_refused_naming_detector_and_row(name, bad):
    x, y, context, _ = make_losses(n=200, n_poison=5)
    x[7, 3] = bad
    with pytest.raises(InputError, match=rf"'{name}'.*row 7"):
        get_detector(name).score(x, y, context)


def test_non_finite_row_is_named_past_the_first_slice_of_a_memory_map(tmp_path, monkeypatch):
    from sanitize.detect import base

    monkeypatch.setattr(base, "_FINITE_CHECK_ROWS", 50)
    x, y, context, _ = make_losses(n=200, n_poison=5)
    x[123, 0] = np.nan
    np.save(tmp_path / "f.npy", x)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    with pytest.raises(InputError, match=r"row 123 "):
        get_detector("spectral").score(mapped, y, context)


def test_bad_labels_are_refused():
    x, y, context, _ = make_losses(n=200, n_poison=5)
    y = y.copy()
    y[11] = N_CLASSES
    with pytest.raises(InputError, match="row 11"):
        SpectralSignature().score(x, y, context)
    with pytest.raises(InputError, match="integer"):
        SpectralSignature().score(x, y.astype(float), context)
    with pytest.raises(InputError, match="shape"):
        SpectralSignature().score(x, y[:-1], context)


def test_missing_context_is_named():
    x, y, context, _ = make_losses(n=200, n_poison=5)
    partial = DetectorContext(n_classes=N_CLASSES, loss_bootstrap=context.loss_bootstrap)
    with pytest.raises(InputError, match="'cbd' requires context field.*loss_clean"):
        CBD().score(x, y, partial)
    short = DetectorContext(
        n_classes=N_CLASSES, loss_bootstrap=context.loss_bootstrap, loss_clean=np.ones(3)
    )
    with pytest.raises(InputError, match="loss_clean has shape"):
        CBD().score(x, y, short)


def test_registry():
    known = (
        "activation_clustering",
        "adversarial_overlap",
        "cbd",
        "contrast_spectral",
        "early_loss",
        "linf_activation",
        "pixel_spectral",
        "shared_direction",
        "spectral",
        "spectre",
        "stamp",
    )
    assert available_detectors() == known
    with pytest.raises(ConfigError) as err:
        get_detector("x")
    assert str(err.value) == "unknown detector 'x'; known: " + ", ".join(known)
    assert isinstance(get_detector("spectral", z_threshold=5.0), SpectralSignature)
    with pytest.raises(ConfigError, match="no parameter"):
        get_detector("spectral", bogus=1)
    with pytest.raises(ConfigError, match="max_relative_size"):
        get_detector("activation_clustering", max_relative_size=0.9)


def test_result_contract_is_enforced():
    with pytest.raises(ValueError, match="contract"):
        DetectorResult(score=np.array([0.7, 0.2]), flagged=np.array([False, False]))
    with pytest.raises(ValueError, match="weight"):
        DetectorResult(score=np.array([0.1]), flagged=np.array([False]), weight=np.array([0.0]))
    with pytest.raises(ValueError, match="oriented rows must be flagged"):
        DetectorResult(
            score=np.array([0.7, 0.2]),
            flagged=np.array([True, False]),
            oriented=np.array([True, True]),
        )


# --- the mixture test shared by the 1-D detectors ----------------------------------------


def _group(values: np.ndarray, threshold: float = 3.0):
    return separated_group(
        (values - values.mean()) / values.std(),
        separation_threshold=threshold,
        z_threshold=6.0,
        min_group_size=1,
        max_fit_rows=20000,
        rng=np.random.default_rng(0),
        seed=0,
        side="low",
        max_group_weight=0.75,
    )


def test_small_sample_separation_falls_to_its_floor():
    bars = [small_sample_separation(n) for n in (25, 50, 100, 1000, 100000)]
    assert bars == sorted(bars, reverse=True)
    assert bars[0] > 6.0 and bars[2] > 3.0 and bars[3] < 2.0
    assert bars[-1] == pytest.approx(1.8, abs=0.01)


def test_mixture_test_finds_no_group_in_small_unimodal_classes():
    """A fixed bar of 3 finds a group in about one Gaussian class of 40 rows in ten; the
    bar for the class's size finds one in at most about one in a thousand."""
    rng = np.random.default_rng(1)
    tests = [_group(rng.normal(size=40)) for _ in range(300)]
    assert np.mean([t.separation >= 3.0 for t in tests]) >= 0.05
    assert sum(t.group for t in tests) <= 1
    assert tests[0].details["separation_bar"] == pytest.approx(small_sample_separation(40))


def test_mixture_test_still_finds_a_clear_group_in_a_small_class():
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(-12.0, 1.0, 12), rng.normal(0.0, 1.0, 18)])
    test = _group(values)
    assert test.group and test.separation > small_sample_separation(30)
    assert (test.strength >= 1.0).sum() == 12


def make_history(seed: int = 0, per_class: int = 300, epochs: int = 6, n_fast: int = 30):
    """Per-epoch losses: every class decays alike; ``n_fast`` rows of class 3 fit at once."""
    rng = np.random.default_rng(seed)
    n = N_CLASSES * per_class
    labels = np.repeat(np.arange(N_CLASSES), per_class)
    rate = rng.lognormal(mean=-1.0, sigma=0.4, size=n)[:, None]
    history = 2.3 * np.exp(-rate * np.arange(epochs)[None, :]) * rng.lognormal(0, 0.2, (n, 1))
    fast = np.flatnonzero(labels == PLANT_CLASS)[:n_fast]
    history[fast] = 2.3 * np.exp(-4.0 * np.arange(1, epochs + 1))[None, :]
    poison = np.zeros(n, dtype=bool)
    poison[fast] = True
    return history.astype(np.float32), labels, poison


def test_early_loss_flags_rows_learned_first():
    history, labels, poison = make_history()
    ctx = DetectorContext(n_classes=N_CLASSES, seed=0, loss_history=history)
    result = EarlyLoss().score(np.zeros((labels.size, 2), np.float32), labels, ctx)
    check_result(result, labels.size)
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.005
    assert result.info["classes_flagged"] == [PLANT_CLASS]


def test_early_loss_flags_nothing_when_classes_learn_alike():
    history, labels, _ = make_history(n_fast=0)
    ctx = DetectorContext(n_classes=N_CLASSES, seed=0, loss_history=history)
    result = EarlyLoss().score(np.zeros((labels.size, 2), np.float32), labels, ctx)
    assert result.flagged.sum() == 0


def test_early_loss_ignores_rows_never_trained():
    history, labels, poison = make_history()
    history[::2] = np.nan  # half the rows outside the training sample
    ctx = DetectorContext(n_classes=N_CLASSES, seed=0, loss_history=history)
    result = EarlyLoss().score(np.zeros((labels.size, 2), np.float32), labels, ctx)
    assert not result.flagged[::2].any()
    assert result.flagged[1::2][poison[1::2]].mean() >= 0.9


def test_early_loss_flags_a_fast_group_that_is_most_of_its_class():
    """At a 10% rate in ten classes the target class is half poison: still caught."""
    history, labels, poison = make_history(n_fast=180)  # 60% of class 3
    ctx = DetectorContext(n_classes=N_CLASSES, seed=0, loss_history=history)
    result = EarlyLoss().score(np.zeros((labels.size, 2), np.float32), labels, ctx)
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.005
    assert result.info["per_class"][str(PLANT_CLASS)]["group_weight"] > 0.5


def test_early_loss_leaves_fast_groups_that_every_class_has():
    """Classes of near-duplicate images (GTSRB's sign tracks) each fit a share of their rows
    early: a group no stronger than the other classes' is not singled out, and is kept."""
    history, labels, _ = make_history(n_fast=0)
    rng = np.random.default_rng(5)
    for c in range(N_CLASSES):
        fast = np.flatnonzero(labels == c)[: int(rng.integers(60, 120))]
        history[fast] = 2.3 * np.exp(-rng.uniform(2.5, 3.5) * np.arange(1, 7))[None, :]
    ctx = DetectorContext(n_classes=N_CLASSES, seed=0, loss_history=history)
    result = EarlyLoss().score(np.zeros((labels.size, 2), np.float32), labels, ctx)
    per_class = result.info["per_class"]
    assert sum(f["group"] for f in per_class.values()) >= N_CLASSES - 1
    assert result.flagged.sum() == 0
    assert {f.get("rule") for f in per_class.values() if f["group"]} == {"not_singled_out"}
    unbarred = EarlyLoss(minority_z=-np.inf).score(np.zeros((labels.size, 2)), labels, ctx)
    assert unbarred.flagged.sum() >= 60 * (N_CLASSES - 1)


# --- SPECTRE (robust whitening + QUE) ------------------------------------------------------


@pytest.mark.parametrize("data", ["planted", "heavy"])
def test_spectre_flags_planted_cluster_at_12_and_45_percent(data, request):
    x, y, poison = request.getfixturevalue(data)
    result = Spectre().score(x, y, CTX)
    check_result(result, len(y))
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.01
    assert result.info["classes_flagged"] == [PLANT_CLASS]


def test_spectre_flags_at_most_one_percent_when_clean(clean):
    x, y, _ = clean
    result = Spectre().score(x, y, CTX)
    check_result(result, len(y))
    assert result.flagged.mean() <= 0.01
    assert not any(v.get("group") for v in result.info["per_class"].values())


def test_spectre_whitens_with_the_other_classes():
    """A class that is broad in every direction alike is not split by its own breadth."""
    x, y, _ = make_features(2, n_plant=0)
    x = x.copy()
    rows = y == 0
    x[rows] = x[rows].mean(axis=0) + 3.0 * (x[rows] - x[rows].mean(axis=0))
    result = Spectre().score(x, y, CTX)
    assert result.flagged.mean() <= 0.01
