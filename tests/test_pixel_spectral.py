"""The input-space spectral detector: block means, a planted blend, a clean set, errors."""

import numpy as np
import pytest

from sanitize.detect import DetectorContext, PixelSpectral, get_detector
from sanitize.detect.pixel_spectral import block_means
from sanitize.errors import ConfigError, InputError

N_CLASSES = 5


def smooth_images(rng: np.random.Generator, n: int, side: int = 32) -> np.ndarray:
    """uint8 (n, 3, side, side) images: a class-free smooth field plus pixel noise, so the
    classes vary the same way and no class has a direction of its own."""
    coarse = rng.uniform(0, 255, size=(n, 3, 4, 4))
    fields = np.kron(coarse, np.ones((1, 1, side // 4, side // 4)))
    noisy = fields + rng.normal(0, 25, size=fields.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def blended_set(seed: int = 0, per_class: int = 300, n_poison: int = 45, alpha: float = 0.15):
    """Five classes of smooth images; with ``n_poison``, rows of class 2 blended with one
    fixed random picture at ``alpha`` (the blend attack's formula)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(N_CLASSES), per_class)
    images = smooth_images(rng, labels.size)
    poison = np.zeros(labels.size, dtype=bool)
    poison[np.flatnonzero(labels == 2)[:n_poison]] = True
    trigger = rng.uniform(0, 255, size=(3, 32, 32))
    mixed = (1 - alpha) * images[poison] + alpha * trigger
    images[poison] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return images, labels, poison


def score(images: np.ndarray, labels: np.ndarray, **params):
    pixels = block_means(images)
    features = np.zeros((labels.size, 1), dtype=np.float32)  # not read by this detector
    context = DetectorContext(n_classes=N_CLASSES, pixels=pixels)
    return get_detector("pixel_spectral", **params).score(features, labels, context)


def test_block_means_averages_blocks_in_row_order():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 3, 32, 32), dtype=np.uint8)
    means = block_means(images, grid=16)
    assert means.shape == (7, 3 * 16 * 16) and means.dtype == np.float32
    expected = images[3, 1, 2:4, 6:8].mean() / 255.0
    assert means[3].reshape(3, 16, 16)[1, 1, 3] == pytest.approx(expected, abs=1e-6)
    rows = np.array([5, 0, 5, 2])
    assert np.array_equal(block_means(images, rows), means[rows])
    # A side that is not a multiple of the grid, and a grid larger than the image.
    odd = rng.integers(0, 256, size=(2, 1, 24, 24), dtype=np.uint8)
    assert block_means(odd).shape == (2, 256)
    small = rng.integers(0, 256, size=(2, 1, 8, 8), dtype=np.uint8)
    assert np.allclose(block_means(small), small.reshape(2, -1) / 255.0)


def test_pixel_spectral_finds_a_faint_blend_in_its_class():
    images, labels, poison = blended_set()
    result = score(images, labels)
    assert result.flagged[poison].mean() >= 0.95
    assert result.flagged[~poison].sum() <= 3
    assert np.array_equal(result.score >= 0.5, result.flagged)
    per_class = result.info["per_class"]
    assert per_class["2"]["group"]
    ratios = {c: per_class[str(c)]["top_ratio"] for c in range(N_CLASSES)}
    assert max(ratios, key=ratios.get) == 2
    assert not any(per_class[str(c)]["group"] for c in (0, 1, 3, 4))


def test_pixel_spectral_leaves_a_looser_group_and_a_majority_alone():
    """A shifted group whose rows vary more than the rest is not what a trigger makes; a
    group that is most of its class is left to the class-size rules."""
    images, labels, poison = blended_set(alpha=0.0)
    rng = np.random.default_rng(5)
    shift = rng.normal(0, 40, size=(3, 32, 32))
    loose = images[poison] + shift + rng.normal(0, 40, size=images[poison].shape)
    images[poison] = np.clip(loose, 0, 255).astype(np.uint8)
    assert not score(images, labels).flagged.any()
    images, labels, poison = blended_set(n_poison=200)
    result = score(images, labels)
    assert not result.flagged.any()


def test_pixel_spectral_flags_nothing_in_a_clean_set():
    for seed in range(3):
        images, labels, _ = blended_set(seed=seed, n_poison=0)
        assert not score(images, labels).flagged.any()


def test_pixel_spectral_needs_pixels_and_checks_them():
    images, labels, _ = blended_set(n_poison=0)
    features = np.zeros((labels.size, 1), dtype=np.float32)
    with pytest.raises(InputError, match="'pixel_spectral' requires context field.*pixels"):
        PixelSpectral().score(features, labels, DetectorContext(n_classes=N_CLASSES))
    short = DetectorContext(n_classes=N_CLASSES, pixels=np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(InputError, match="pixels has shape"):
        PixelSpectral().score(features, labels, short)
    pixels = block_means(images)
    pixels[4, 0] = np.nan
    bad = DetectorContext(n_classes=N_CLASSES, pixels=pixels)
    with pytest.raises(InputError, match="pixels holds NaN"):
        PixelSpectral().score(features, labels, bad)
    with pytest.raises(ConfigError, match="shrinkage"):
        get_detector("pixel_spectral", shrinkage=0.0)
