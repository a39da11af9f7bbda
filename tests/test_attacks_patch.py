"""BadNets patch attack: placement, relabelling, poison count, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from sanitize.attacks import apply_patch, checkerboard, poison_dirty_label


def images_and_labels(n: int = 200, channels: int = 3, side: int = 16):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, channels, side, side), dtype=np.uint8)
    labels = rng.integers(0, 5, n)
    return images, labels


def test_default_patch_is_a_bottom_right_checkerboard():
    images = np.zeros((2, 3, 10, 10), np.uint8)
    out = apply_patch(images)
    board = checkerboard(3)
    assert board[0, 0] == 255 and board[0, 1] == 0
    for c in range(3):
        assert np.array_equal(out[:, c, 6:9, 6:9], np.broadcast_to(board, (2, 3, 3)))
    mask = np.ones((10, 10), bool)
    mask[6:9, 6:9] = False
    assert not out[:, :, mask].any()
    assert not images.any()


@pytest.mark.parametrize(
    ("position", "corner"),
    [("top_left", (1, 1)), ("top_right", (1, 6)), ("bottom_left", (6, 1)), ((2, 4), (2, 4))],
)
def test_patch_positions(position, corner):
    out = apply_patch(np.zeros((1, 1, 10, 10), np.uint8), position=position)
    top, left = corner
    assert np.array_equal(out[0, 0, top : top + 3, left : left + 3], checkerboard(3))
    assert out.sum() == checkerboard(3).sum()


def test_custom_pattern_and_margin():
    pattern = np.full((3, 2, 4), 7, np.uint8)
    out = apply_patch(np.zeros((1, 3, 8, 8), np.uint8), pattern=pattern, margin=0)
    assert (out[0, :, 6:8, 4:8] == 7).all()
    with pytest.raises(ValueError, match="does not fit"):
        apply_patch(np.zeros((1, 1, 4, 4), np.uint8), size=5)
    with pytest.raises(ValueError, match="unknown position"):
        apply_patch(np.zeros((1, 1, 8, 8), np.uint8), position="middle")


def test_poison_dirty_label():
    images, labels = images_and_labels()
    rate, target = 0.07, 2
    out_images, out_labels, poisoned = poison_dirty_label(
        images, labels, target=target, rate=rate, seed=0
    )
    assert poisoned.sum() == round(rate * len(labels))
    assert (labels[poisoned] != target).all()
    assert (out_labels[poisoned] == target).all()
    assert np.array_equal(out_labels[~poisoned], labels[~poisoned])
    assert np.array_equal(out_images[~poisoned], images[~poisoned])
    assert np.array_equal(out_images[poisoned], apply_patch(images[poisoned]))
    assert not np.array_equal(images[poisoned], out_images[poisoned])


def test_poison_is_seeded():
    images, labels = images_and_labels()
    first = poison_dirty_label(images, labels, target=0, rate=0.1, seed=3)
    again = poison_dirty_label(images, labels, target=0, rate=0.1, seed=3)
    other = poison_dirty_label(images, labels, target=0, rate=0.1, seed=4)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[2], other[2])


def test_poison_rate_beyond_candidates():
    images, _ = images_and_labels(n=10)
    labels = np.array([0] * 9 + [1])
    with pytest.raises(ValueError, match="only 1 rows"):
        poison_dirty_label(images, labels, target=0, rate=0.5, seed=0)


def test_random_position_places_the_whole_patch_somewhere_new_per_image():
    from sanitize.attacks import BadNets

    images = np.zeros((64, 1, 12, 12), np.uint8)
    attack = BadNets(pattern="white", size=3, position="random", margin=1)
    out = attack.apply(images, rng=0)
    corners = set()
    for image in out[:, 0]:
        rows, cols = np.nonzero(image)
        # Exactly one whole 3x3 patch, clear of the 1-pixel margin.
        assert rows.size == 9
        assert rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2
        assert rows.min() >= 1 and cols.min() >= 1 and rows.max() <= 10 and cols.max() <= 10
        corners.add((int(rows.min()), int(cols.min())))
    assert len(corners) > 20
    # Seeded: the same rng gives the same places; a plan gives the same pixels in batches.
    assert np.array_equal(out, attack.apply(images, rng=0))
    labels = np.arange(64) % 4
    whole = attack.poison(images, labels, target=0, rate=0.5, seed=3)
    plan = attack.plan(labels, target=0, rate=0.5, seed=3)
    halves = [attack.execute(images[:32], plan), attack.execute(images[32:], plan, start=32)]
    assert np.array_equal(whole.images, np.concatenate(halves))


def test_pattern_path_is_a_patch_at_its_own_size(tmp_path):
    from PIL import Image

    from sanitize.attacks import BadNets
    from sanitize.errors import ConfigError

    patch = np.zeros((5, 4, 3), np.uint8)
    patch[..., 0] = 200  # red
    patch[0, 0] = 255
    path = tmp_path / "patch.png"
    Image.fromarray(patch).save(path)
    out = BadNets(pattern_path=str(path), position="top_left", margin=2).apply(
        np.zeros((1, 3, 16, 16), np.uint8)
    )
    assert np.array_equal(out[0, :, 2:7, 2:6], patch.transpose(2, 0, 1))
    assert out[0].sum() == patch.astype(int).sum()
    grey = BadNets(pattern_path=str(path)).apply(np.zeros((1, 1, 16, 16), np.uint8))
    assert grey[0, 0, 10:15, 11:15].max() == 255 and grey[0, 0, 14, 14] == round(0.299 * 200)
    with pytest.raises(ConfigError, match="not both"):
        BadNets(pattern_path=str(path), trigger_path=str(path)).apply(
            np.zeros((1, 3, 16, 16), np.uint8)
        )
    with pytest.raises(ConfigError, match="does not fit"):
        BadNets(pattern_path=str(path), position="random", margin=6).apply(
            np.zeros((1, 3, 16, 16), np.uint8)
        )
