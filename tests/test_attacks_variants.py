"""Clean-set shapes for benchmarks: long-tailed subsets, near-duplicates, larger images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sanitize.attacks.variants import long_tail_rows, long_tail_sizes, near_duplicate, resized
from sanitize.errors import ConfigError


def encoded(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def decoded(payload: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(payload)) as image:
        return np.asarray(image)


def test_long_tail_sizes_decay_by_the_ratio_and_sum_to_rows():
    sizes = long_tail_sizes(5000, 10, ratio=10)
    assert sizes.sum() == 5000 and (np.diff(sizes) < 0).all()
    assert sizes[0] / sizes[-1] == pytest.approx(10, rel=0.01)
    assert long_tail_sizes(7, 3, ratio=1).tolist() == [3, 2, 2]


def test_long_tail_rows_take_the_first_rows_of_each_class():
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(4), 50))
    rows = long_tail_rows(labels, 80, ratio=8)
    sizes = long_tail_sizes(80, 4, ratio=8)
    assert np.array_equal(np.bincount(labels[rows], minlength=4), sizes)
    for c in range(4):
        assert np.array_equal(rows[labels[rows] == c], np.flatnonzero(labels == c)[: sizes[c]])
    with pytest.raises(ConfigError, match="class 0 has 50 rows; the long tail asks"):
        long_tail_rows(labels, 190, ratio=8)


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 3)], ids=["grey", "rgb"])
def test_near_duplicate_is_close_but_not_equal(shape):
    y, x = np.mgrid[:16, :16]
    smooth = 128 + 60 * np.sin(x / 3.0) * np.cos(y / 4.0)  # JPEG keeps a smooth picture
    pixels = np.broadcast_to(smooth[..., None], (16, 16, 3)).astype(np.uint8)
    pixels = pixels[..., 0] if len(shape) == 2 else pixels
    copy = near_duplicate(encoded(pixels), np.random.default_rng(2))
    assert copy[:2] == b"\xff\xd8"  # JPEG
    out = decoded(copy)
    assert out.shape == pixels.shape and not np.array_equal(out, pixels)
    shifts = [
        np.abs(out.astype(int) - np.roll(pixels, (dy, dx), axis=(0, 1)))[1:-1, 1:-1].mean()
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ]
    assert min(shifts) < 4  # one of the one-pixel shifts matches up to noise and JPEG


def test_resized_keeps_the_mode_and_scales_the_content():
    grey = np.zeros((8, 8), np.uint8)
    grey[:4] = 255
    out = decoded(resized(encoded(grey), 64))
    assert out.shape == (64, 64) and out[:24].min() == 255 and out[40:].max() == 0
    rgb = np.full((8, 8, 3), (10, 120, 250), np.uint8)
    assert np.array_equal(
        decoded(resized(encoded(rgb, "JPEG"), 32))[5, 5], decoded(encoded(rgb, "JPEG"))[5, 5]
    )
    with pytest.raises(ConfigError, match="side must be an integer >= 8"):
        resized(encoded(grey), 4)
