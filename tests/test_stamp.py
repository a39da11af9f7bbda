"""The stamp detector: a planted patch, clean and natural look-alikes, errors, real data."""

from pathlib import Path

import numpy as np
import pytest

from sanitize.detect import DetectorContext, get_detector
from sanitize.detect import stamp as stamp_module
from sanitize.detect.stamp import PackedPixels, column_modes, pack_pixels
from sanitize.errors import ConfigError, InputError
from tests.conftest import SHARED_DATASETS as SHARED

N_CLASSES = 4


def noise_set(seed: int = 0, per_class: int = 150, channels: int = 3, side: int = 16):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(N_CLASSES), per_class)
    images = rng.integers(0, 256, size=(labels.size, channels, side, side), dtype=np.uint8)
    return images, labels


def stamped(images, labels, n_poison=20, target=1, top=10, left=11, size=3, seed=1):
    """Dirty-label BadNets by hand: a fixed random patch on rows of other classes."""
    rng = np.random.default_rng(seed)
    images, labels = images.copy(), labels.copy()
    poison = np.zeros(labels.size, dtype=bool)
    poison[rng.choice(np.flatnonzero(labels != target), n_poison, replace=False)] = True
    patch = rng.integers(0, 256, size=(images.shape[1], size, size), dtype=np.uint8)
    images[poison, :, top : top + size, left : left + size] = patch
    labels[poison] = target
    return images, labels, poison


def score(images, labels, **params):
    features = np.zeros((labels.size, 1), dtype=np.float32)  # not read by this detector
    context = DetectorContext(n_classes=int(labels.max()) + 1, images=images)
    return get_detector("stamp", **params).score(features, labels, context)


def test_pack_pixels_and_column_modes():
    images = np.zeros((3, 3, 1, 2), dtype=np.uint8)
    images[0, :, 0, 0] = (1, 2, 3)
    assert pack_pixels(images)[0, 0] == (1 << 16) | (2 << 8) | 3
    values = np.array([[5, 1], [7, 2], [5, 2], [9, 1], [5, 3]])
    modes, counts = column_modes(values)
    assert modes.tolist() == [5, 1] and counts.tolist() == [3, 2]


@pytest.mark.parametrize("channels", [1, 3])
def test_packed_pixels_read_in_blocks_equal_the_whole(channels):
    images, _ = noise_set(per_class=30, channels=channels, side=8)
    images[::3, :, 2:4, 2:4] = 7
    whole, blocks = PackedPixels(images), PackedPixels(images, budget=4 * 8 * 8 + 1)
    assert blocks._whole is None and whole._whole is not None
    rows, pixels = np.arange(5, 90, 2), np.array([0, 18, 19, 26, 63])
    assert np.array_equal(whole.take(rows, pixels), blocks.take(rows, pixels))
    assert np.array_equal(whole.take(slice(3, 40), pixels), blocks.take(slice(3, 40), pixels))
    modes = whole.column_modes(rows)
    assert all(np.array_equal(a, b) for a, b in zip(modes, blocks.column_modes(rows), strict=True))
    values = modes[0][pixels]
    assert np.array_equal(whole.holding(pixels, values), blocks.holding(pixels, values))
    per_row = whole.holding(pixels, values, per_row=True)
    assert np.array_equal(per_row, blocks.holding(pixels, values, per_row=True))
    assert per_row[::3].min() >= 0.4  # the 7s at (2-3, 2-3) are pixels 18, 19 and 26
    # Counts off the sorted pixels: a background value (a pixel's mode) and any other.
    for asked in (values, values ^ 1, whole.column_modes(np.arange(images.shape[0]))[0][pixels]):
        assert np.array_equal(whole.holding(pixels, asked), blocks.holding(pixels, asked))


def test_stamp_on_large_images_reads_them_in_blocks(monkeypatch):
    """160 x 160 images: seeds every 3 pixels, pixels read a block at a time; a 4 x 4
    patch (the smallest the stride guarantees) is still found exactly."""
    images, labels = noise_set(per_class=60, side=160)
    images, labels, poison = stamped(images, labels, top=41, left=58, size=4)
    monkeypatch.setattr(stamp_module, "PACKED_BUDGET", 1 << 20)
    result = score(images, labels)
    assert np.array_equal(result.flagged, poison)
    (found,) = [s for s in result.info["stamps"] if s["accepted"]]
    assert found["box"] == [41, 58, 44, 61] and found["seed_tile"] == [42, 60]


@pytest.mark.parametrize("channels,size", [(3, 3), (1, 2), (3, 5)])
def test_stamp_finds_a_planted_patch_exactly(channels, size):
    images, labels = noise_set(channels=channels)
    images, labels, poison = stamped(images, labels, size=size)
    result = score(images, labels)
    assert np.array_equal(result.flagged, poison)
    assert (result.score[poison] == 1.0).all() and (result.score[~poison] < 0.5).all()
    (found,) = [s for s in result.info["stamps"] if s["accepted"]]
    assert found["class"] == 1 and found["n_rows"] == 20 and found["near"] == 0
    assert found["box"] == [10, 11, 10 + size - 1, 11 + size - 1]


def test_stamp_flags_nothing_on_clean_data_or_a_background_every_class_shares():
    images, labels = noise_set()
    assert not score(images, labels).flagged.any()
    images[:, :, :4, :] = 0  # a black band on every image of every class
    assert not score(images, labels).flagged.any()


def test_stamp_leaves_a_patch_other_classes_hold_as_often():
    images, labels = noise_set()
    images, labels, poison = stamped(images, labels)
    patch = images[np.flatnonzero(poison)[0], :, 10:13, 11:14]
    # Class 3 holds the same patch on a share close to class 1's.
    holders = np.flatnonzero(labels == 3)[:12]
    images[holders, :, 10:13, 11:14] = patch
    result = score(images, labels)
    assert not result.flagged.any()
    assert max((s.get("exclusivity", 0) for s in result.info["stamps"]), default=0) < 10


def test_stamp_leaves_a_shared_structure_that_comes_in_degrees():
    """Rows that share a shape in degrees (a stroke some rows hold whole, many in part)
    are a natural mode, not a pasted trigger."""
    images, labels = noise_set()
    rows = np.flatnonzero(labels == 2)
    images[rows[:40], :, 4:8, 4:8] = 255  # whole
    rng = np.random.default_rng(5)
    for r in rows[40:140]:  # in part: 8-14 of the 16 pixels, anywhere in the square
        block = images[r, :, 4:8, 4:8].reshape(images.shape[1], -1)
        block[:, rng.choice(16, rng.integers(8, 15), replace=False)] = 255
        images[r, :, 4:8, 4:8] = block.reshape(images.shape[1], 4, 4)
    result = score(images, labels)
    assert not result.flagged.any()
    grown = [s for s in result.info["stamps"] if s.get("n_rows", 0) >= 40]
    assert grown and all(s["near"] > 0.05 * s["n_rows"] for s in grown)


def test_stamp_leaves_exact_pixels_its_class_holds_by_nature():
    """A low-resolution stroke: 12 rows hold it whole and the class's other rows hold
    each of its pixels a third of the time. Foreign to no other class, and all or nothing
    over its 40 pixels, but the class's own: only ``max_class_rate`` tells."""
    images, labels = noise_set()
    rows = np.flatnonzero(labels == 2)
    rng = np.random.default_rng(6)
    stroke = rng.integers(0, 256, size=(images.shape[1], 40), dtype=np.uint8)
    ys, xs = np.divmod(np.arange(40), 5)
    ys, xs = ys + 3, xs + 4  # an 8 x 5 block at (3, 4)
    for i, r in enumerate(rows):
        held = np.ones(40, dtype=bool) if i < 12 else rng.random(40) < 1 / 3
        images[r][:, ys[held], xs[held]] = stroke[:, held]
    result = score(images, labels)
    assert not result.flagged.any()
    (grown,) = {s["n_rows"]: s for s in result.info["stamps"] if s.get("n_rows") == 12}.values()
    assert grown["class_rate"] > 0.25 and grown["near"] == 0
    loose = score(images, labels, max_class_rate=1.0).flagged
    assert np.array_equal(np.flatnonzero(loose), rows[:12])


def test_stamp_leaves_near_copies_of_one_image():
    """A class holding the same frame many times shares every pixel, off any stamp too."""
    images, labels = noise_set()
    rows = np.flatnonzero(labels == 0)[:15]
    images[rows] = images[rows[0]]
    images[rows, :, 0, 0] = np.arange(15, dtype=np.uint8)[:, None]  # not bit-identical
    assert not score(images, labels).flagged.any()


def test_stamp_params_and_inputs_are_checked():
    images, labels = noise_set(per_class=20)
    for bad in (
        {"block": 0},
        {"stride": 0},
        {"min_group_size": 1},
        {"seed_exclusivity": 20.0},
        {"agreement": 0.0},
        {"match_share": 1.5},
        {"max_near": -1.0},
        {"min_spread": -0.1},
        {"max_class_rate": 0.0},
    ):
        with pytest.raises(ConfigError):
            score(images, labels, **bad)
    features = np.zeros((labels.size, 1), dtype=np.float32)
    with pytest.raises(InputError, match="requires context field"):
        get_detector("stamp").score(features, labels, DetectorContext(n_classes=N_CLASSES))
    context = DetectorContext(n_classes=N_CLASSES, images=images.astype(np.float32))
    with pytest.raises(InputError, match="context.images must be uint8"):
        get_detector("stamp").score(features, labels, context)


@pytest.mark.skipif(not (SHARED / "cifar10").exists(), reason="needs ../shared/datasets")
def test_stamp_on_real_cifar10_clean_and_badnets_one_percent():
    """3,000 real CIFAR-10 rows: nothing flagged clean; BadNets at 1% found whole."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    from sanitize.attacks import get_attack

    table = pq.read_table(SHARED / "cifar10" / "train.parquet").slice(0, 3000)
    images = np.stack(
        [np.asarray(Image.open(io.BytesIO(cell["bytes"]))) for cell in table["image"].to_pylist()]
    ).transpose(0, 3, 1, 2)
    labels = table["label"].to_numpy()
    assert not score(images, labels).flagged.any()
    poisoned = get_attack("badnets").poison(images, labels, target=3, rate=0.01, seed=0)
    result = score(poisoned.images, poisoned.labels)
    assert np.array_equal(result.flagged, poisoned.poisoned)


def test_stamp_on_the_sample_data_flags_exactly_its_poisons():
    """scikit-learn's 8 x 8 digits upscaled share exact strokes within a class; only the
    planted patch is flagged."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    root = Path(__file__).resolve().parents[1] / "sample_data"
    table = pq.read_table(root / "digits_poisoned.parquet")
    images = np.stack(
        [np.asarray(Image.open(io.BytesIO(cell["bytes"]))) for cell in table["image"].to_pylist()]
    )[:, None]
    truth = dict(
        line.split(",") for line in (root / "ground_truth.csv").read_text().splitlines()[1:]
    )
    poison = np.array([truth[i] == "1" for i in table["sample_id"].to_pylist()])
    result = score(images, table["label"].to_numpy())
    assert poison.sum() == 120 and np.array_equal(result.flagged, poison)
