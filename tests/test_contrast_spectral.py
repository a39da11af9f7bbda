"""The spectral signature whitened by the other classes, and the whitening it uses."""

from __future__ import annotations

import numpy as np
import pytest

from sanitize.detect import ContrastSpectral, DetectorContext, SpectralSignature, get_detector
from sanitize.detect.whitening import LeaveOneClassOutWhitening
from sanitize.errors import ConfigError
from tests.test_detectors import CTX, N_CLASSES, PLANT_CLASS, check_result, make_features, rates


@pytest.mark.parametrize("n_plant", [40, 245])
def test_contrast_spectral_flags_a_planted_group_at_12_and_45_percent(n_plant):
    x, y, poison = make_features(1, n_plant=n_plant)
    result = ContrastSpectral().score(x, y, CTX)
    check_result(result, len(y))
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.01
    assert result.info["classes_flagged"] == [PLANT_CLASS]
    assert result.info["per_class"][str(PLANT_CLASS)]["top_ratio"] > 2.0


def test_contrast_spectral_flags_at_most_one_percent_when_clean():
    x, y, _ = make_features(0, n_plant=0)
    result = ContrastSpectral().score(x, y, CTX)
    check_result(result, len(y))
    assert result.flagged.mean() <= 0.01
    assert not any(v.get("group") for v in result.info["per_class"].values())


def test_contrast_spectral_flags_the_clean_rest_of_a_class_a_tight_poison_is_most_of():
    """The group is at most half its class. A poison that is one tight cluster spreads no
    more than the class, so nothing turns the group over here: the decision's size rules
    may."""
    x, y, poison = make_features(2, n_plant=450)
    result = ContrastSpectral().score(x, y, CTX)
    in_class = y == PLANT_CLASS
    assert result.info["classes_flagged"] == [PLANT_CLASS]
    assert not result.flagged[poison].any()
    assert result.flagged[in_class & ~poison].mean() >= 0.95
    assert result.oriented is None
    figures = result.info["per_class"][str(PLANT_CLASS)]
    assert figures["spread_z_rest"] < ContrastSpectral().spread_z_threshold


def _poison_from_other_classes(n_poison: int, seed: int = 1):
    """Clean classes of :func:`make_features`, plus ``n_poison`` rows labelled
    ``PLANT_CLASS`` that are rows of the other classes (their content at 0.3 of its scale,
    as a model that learned the trigger keeps it) moved by a trigger offset of 12."""
    x, y, _ = make_features(seed, n_plant=0)
    rng = np.random.default_rng(seed + 100)
    sources = rng.choice(np.flatnonzero(y != PLANT_CLASS), n_poison, replace=False)
    trigger = rng.normal(size=x.shape[1])
    trigger /= np.linalg.norm(trigger)
    centre = x[y == PLANT_CLASS].mean(axis=0)
    plant = centre + 12.0 * trigger + 0.3 * (x[sources] - x.mean(axis=0))
    poison = np.r_[np.zeros(y.size, bool), np.ones(n_poison, bool)]
    return (
        np.concatenate([x, plant]).astype(np.float32),
        np.r_[y, np.full(n_poison, PLANT_CLASS)],
        poison,
    )


def test_contrast_spectral_turns_over_a_class_whose_rest_spreads_like_several_classes():
    """450 poisons drawn from the other classes against 300 clean rows: the group test
    flags the clean 300; the rest spreads like rows of several classes, so the flags
    turn over onto the poisons, and are marked oriented for the decision."""
    x, y, poison = _poison_from_other_classes(450)
    result = ContrastSpectral().score(x, y, CTX)
    check_result(result, len(y))
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.01
    assert result.oriented is not None and np.array_equal(result.oriented, result.flagged)
    figures = result.info["per_class"][str(PLANT_CLASS)]
    assert figures["rule"] == "turned_over_by_spread"
    assert figures["spread_z_rest"] >= 4.0 > figures["spread_z_group"]
    assert figures["n_flagged"] == result.info["n_flagged"] == int(result.flagged.sum())

    for kept_as_drawn in (
        ContrastSpectral(spread_z_threshold=1e6),
        ContrastSpectral(spread_margin=1e6),
    ):
        plain = kept_as_drawn.score(x, y, CTX)
        assert plain.oriented is None and not plain.flagged[poison].any()


def test_contrast_spectral_splits_a_class_without_a_group_that_spreads_like_several():
    """300 such poisons against 300 clean rows: no group passes the group test (each side
    is half the class), but the class spreads far beyond the others; split at its 2-means
    cut, the side that spreads is the poison."""
    x, y, poison = _poison_from_other_classes(300)
    result = ContrastSpectral().score(x, y, CTX)
    check_result(result, len(y))
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.01
    assert np.array_equal(result.oriented, result.flagged)
    figures = result.info["per_class"][str(PLANT_CLASS)]
    assert figures["rule"] == "split_by_spread"
    assert figures["spread_z"] >= 4.0 and figures["spread_z_group"] > figures["spread_z_rest"]
    # The flagged side ranks by its distance from the cut: every poison above every clean row.
    in_class = y == PLANT_CLASS
    assert result.score[in_class & poison].min() > result.score[in_class & ~poison].max()
    # No other class spreads that far, so none is split.
    assert result.info["classes_flagged"] == [PLANT_CLASS]


def test_contrast_spectral_splits_rather_than_turns_over_a_few_far_outliers():
    """As above, plus four clean rows pushed far from the poison along the class's top
    direction: they are flagged as outliers (no group), a tail rather than a side of the
    class. Turning them over would flag 596 of 600 rows; the class is split instead."""
    x, y, poison = _poison_from_other_classes(300)
    in_class = y == PLANT_CLASS
    away = x[in_class & ~poison].mean(axis=0) - x[poison].mean(axis=0)
    far = np.random.default_rng(5).choice(np.flatnonzero(in_class & ~poison), 4, replace=False)
    x[far] += 48.0 * away / np.linalg.norm(away)
    # Left as the group test drew them, the class's flags are those outliers.
    drawn = ContrastSpectral(spread_z_threshold=1e6).score(x, y, CTX)
    assert drawn.flagged[far].all() and not drawn.flagged[poison].any()
    assert drawn.info["per_class"][str(PLANT_CLASS)]["rule"] == "robust_outlier"

    result = ContrastSpectral().score(x, y, CTX)
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.01
    assert result.info["per_class"][str(PLANT_CLASS)]["rule"] == "split_by_spread"
    assert not result.flagged[far].any()


def test_contrast_spectral_keeps_a_minority_group_that_spreads_like_several_classes():
    """60 such poisons: the group is the poison and it is the side that spreads, so it
    stays as the group test drew it."""
    x, y, poison = _poison_from_other_classes(60)
    result = ContrastSpectral().score(x, y, CTX)
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.01
    assert result.oriented is None
    figures = result.info["per_class"][str(PLANT_CLASS)]
    assert figures["rule"] != "turned_over_by_spread"
    assert figures["spread_z_group"] > figures["spread_z_rest"]


def test_contrast_spectral_sees_past_a_direction_every_class_varies_along():
    """A group hidden under a broad direction every class shares: the class's own top
    direction is the broad one (the spectral signature finds no group there), while the
    other classes' covariance whitens it away."""
    rng = np.random.default_rng(3)
    dim, per_class, n_plant = 32, 300, 45
    shared = rng.normal(size=dim)
    shared /= np.linalg.norm(shared)
    trigger = rng.normal(size=dim)
    trigger -= (trigger @ shared) * shared
    trigger /= np.linalg.norm(trigger)
    xs, ys = [], []
    for c in range(N_CLASSES):
        rows = rng.normal(size=(per_class, dim)) + rng.normal(scale=3.0, size=dim)
        rows += np.outer(rng.normal(scale=8.0, size=per_class), shared)
        xs.append(rows)
        ys.append(np.full(per_class, c))
    plant = xs[PLANT_CLASS][:n_plant] + 6.0 * trigger
    x = np.concatenate([*xs, plant]).astype(np.float32)
    y = np.concatenate([*ys, np.full(n_plant, PLANT_CLASS)])
    poison = np.r_[np.zeros(N_CLASSES * per_class, bool), np.ones(n_plant, bool)]

    assert not SpectralSignature().score(x, y, CTX).flagged[poison].any()
    result = ContrastSpectral().score(x, y, CTX)
    tpr, fpr = rates(result, poison)
    assert tpr >= 0.95 and fpr <= 0.01


def test_whitening_leaves_each_class_out_of_its_own_covariance():
    x, y, _ = make_features(4, n_plant=0)
    x = x.astype(np.float64)
    whitening = LeaveOneClassOutWhitening(x, y, N_CLASSES, shrinkage=1e-6)
    idx = np.flatnonzero(y == 0)
    top = whitening.top_direction(idx)
    others = np.flatnonzero(y != 0)
    residual = x[others] - np.stack([x[y == c].mean(axis=0) for c in range(N_CLASSES)])[y[others]]
    cov = residual.T @ residual / (others.size - 1)
    values, vectors = np.linalg.eigh(cov)
    white = (x[idx] - x[idx].mean(axis=0)) @ (vectors / np.sqrt(values))
    assert np.allclose(np.abs(top.white @ top.direction), np.abs(white @ top.direction))
    assert np.allclose(top.white, white, atol=1e-6)
    assert np.allclose(np.linalg.norm(top.residual() @ top.direction), 0.0, atol=1e-8)


def test_contrast_spectral_checks_its_parameters():
    with pytest.raises(ConfigError, match="contrast_spectral.shrinkage"):
        get_detector("contrast_spectral", shrinkage=0.0)
    with pytest.raises(ConfigError, match="contrast_spectral.spread_z_threshold"):
        get_detector("contrast_spectral", spread_z_threshold=0.0)
    with pytest.raises(ConfigError, match="contrast_spectral.spread_margin"):
        get_detector("contrast_spectral", spread_margin=-1.0)
    with pytest.raises(ConfigError, match="contrast_spectral.separation_threshold"):
        ContrastSpectral(separation_threshold=0).score(
            np.zeros((60, 2), np.float32), np.arange(60) % 3, DetectorContext(n_classes=3)
        )
