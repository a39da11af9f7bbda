"""Label agreement of nearest images: a dirty-label poison's neighbours carry other labels."""

from __future__ import annotations

import numpy as np

from sanitize.decision.pixel_neighbours import balanced_pool, block_means, label_agreement


def test_block_means_average_each_block_of_each_channel():
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    means = block_means(images, 2)
    assert means.shape == (2, 12)
    expected = images.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5)).reshape(2, 12)
    assert np.allclose(means, expected)
    odd = block_means(np.ones((1, 1, 28, 28), np.uint8) * 7, 8)  # 28 is not a multiple of 8
    assert odd.shape == (1, 64) and np.allclose(odd, 7)


def _layouts(rng, n, layout, noise=20):
    base = np.zeros((1, 16, 16))
    base[0, layout[0] : layout[0] + 8, layout[1] : layout[1] + 8] = 200
    return np.clip(base + rng.normal(0, noise, (n, 1, 16, 16)), 0, 255).astype(np.uint8)


def test_images_of_another_class_under_a_label_disagree_with_it():
    rng = np.random.default_rng(0)
    a = _layouts(rng, 200, (0, 0))  # class 0: a bright top-left block
    b = _layouts(rng, 200, (8, 8))  # class 1: bottom-right
    poisons = _layouts(rng, 60, (0, 0))  # images of class 0 labelled 1
    images = np.concatenate([a, b, poisons])
    labels = np.repeat([0, 1, 1], [200, 200, 60])
    agreement = label_agreement(images, labels, [1], k=10, side=8)
    assert np.isnan(agreement[:200]).all()  # class 0 was not asked for
    assert agreement[200:400].mean() > 0.9 and agreement[400:].mean() < 0.3
    # The same rows through a map from labels to image rows, e.g. the usable rows of a set.
    padded = np.concatenate([np.zeros((5, 1, 16, 16), np.uint8), images])
    mapped = label_agreement(padded, labels, [1], k=10, side=8, image_rows=np.arange(5, 465))
    assert np.allclose(mapped[200:], agreement[200:])
    # A pool smaller than the set still scores every row of the asked classes.
    small = label_agreement(images, labels, [1], k=10, side=8, max_pool=300)  # 65% of rows
    assert not np.isnan(small[200:]).any() and small[400:].mean() < 0.3


def test_balanced_pool_takes_the_median_class_size_of_every_class():
    labels = np.repeat([0, 1, 2, 3], [50, 100, 100, 400])
    pool = balanced_pool(labels, max_rows=10_000, seed=0)
    assert np.array_equal(np.bincount(labels[pool]), [50, 100, 100, 100])
    assert np.array_equal(pool, np.unique(pool))  # sorted, no row twice
    assert np.array_equal(pool, balanced_pool(labels, max_rows=10_000, seed=0))
    small = balanced_pool(labels, max_rows=200, seed=0)
    assert small.size <= 200 and len(set(np.bincount(labels[small]))) == 1


def test_a_large_class_of_images_alike_agrees_with_its_label_as_the_others_do():
    # Pixels that say nothing of the class (noise): from the whole set, a row of a class
    # four times the others' size would find its label among its neighbours about half the
    # time, the others' rows an eighth; from a balanced pool, all about a quarter.
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2, 3], [150, 150, 150, 600])
    images = rng.integers(0, 256, (labels.size, 1, 16, 16), dtype=np.uint8)
    agreement = label_agreement(images, labels, [0, 1, 2, 3], k=10, side=8)
    per_class = np.array([agreement[labels == c].mean() for c in range(4)])
    assert np.all(np.abs(per_class - 0.25) < 0.05), per_class
