"""The shared-direction detector: a trigger direction in every class, and none in clean data."""

import numpy as np
import pytest

from sanitize.detect import DetectorContext, get_detector
from sanitize.errors import ConfigError


def _classes(rng: np.random.Generator, n_per_class: int, n_classes: int, dim: int):
    centres = rng.normal(0.0, 4.0, size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    features = centres[labels] + rng.normal(size=(labels.size, dim))
    return features, labels


def test_finds_one_trigger_put_into_every_class():
    rng = np.random.default_rng(0)
    features, labels = _classes(rng, 300, 10, 64)
    poisoned = rng.random(labels.size) < 0.05
    trigger = rng.normal(size=64)
    features[poisoned] += 8.0 * trigger / np.linalg.norm(trigger)
    result = get_detector("shared_direction").score(
        features.astype(np.float32), labels, DetectorContext(n_classes=10, seed=0)
    )
    assert result.flagged[poisoned].mean() >= 0.9
    assert result.flagged[~poisoned].mean() <= 0.01
    assert np.unique(labels[result.flagged]).size == 10
    assert result.info["components"], "the trigger's component is reported"


def test_flags_nothing_without_a_trigger():
    rng = np.random.default_rng(1)
    features, labels = _classes(rng, 300, 10, 64)
    # Heavy-tailed natural variation is not a group.
    features[:, 0] += rng.standard_t(3, size=labels.size)
    result = get_detector("shared_direction").score(
        features.astype(np.float32), labels, DetectorContext(n_classes=10, seed=0)
    )
    assert not result.flagged.any()


def test_identical_rows_within_each_class_give_no_component():
    labels = np.repeat(np.arange(4), 30)
    features = np.eye(4, 8, dtype=np.float32)[labels]  # each row is its class's centre
    result = get_detector("shared_direction").score(
        features, labels, DetectorContext(n_classes=4, seed=0)
    )
    assert not result.flagged.any() and result.info["n_components"] == 0


def test_rejects_out_of_range_parameters():
    with pytest.raises(ConfigError, match="max_group_weight"):
        get_detector("shared_direction", max_group_weight=0.9).score(
            np.zeros((40, 4), np.float32), np.repeat([0, 1], 20), DetectorContext(n_classes=2)
        )
