"""Shapes of a clean set for benchmarks: long-tailed class sizes, near-duplicate rows, and
images larger than the source's.

A defence must remove next to nothing from a clean set whatever its shape: a rare class
is not a target because it is small, and two copies of one photo are not a trigger. These
helpers build such sets from a balanced one; they change no label and poison no row.

References
----------
.. [1] K. Cao, C. Wei, A. Gaidon, N. Arechiga and T. Ma, "Learning Imbalanced Datasets
   with Label-Distribution-Aware Margin Loss", NeurIPS 2019. CIFAR-10-LT: class c of K
   keeps a share ``ratio ** (-c / (K - 1))`` of the largest class's size.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from sanitize.attacks.checks import check_labels, check_number
from sanitize.errors import ConfigError, InputError

NAME = "variants"


def long_tail_sizes(rows: int, n_classes: int, *, ratio: float) -> np.ndarray:
    """Class sizes summing to ``rows`` that decay exponentially from class 0 to class K - 1,
    the first ``ratio`` times the last [1]_ (largest remainders get the rounding)."""
    check_number(NAME, "rows", rows, low=0, integer=True)
    check_number(NAME, "n_classes", n_classes, low=1, integer=True)
    check_number(NAME, "ratio", ratio, low=1)
    share = float(ratio) ** (-np.arange(n_classes) / max(n_classes - 1, 1))
    exact = rows * share / share.sum()
    sizes = np.floor(exact).astype(np.int64)
    sizes[np.argsort(sizes - exact, kind="stable")[: rows - int(sizes.sum())]] += 1
    return sizes


def long_tail_rows(labels: np.ndarray, rows: int, *, ratio: float) -> np.ndarray:
    """Positions of a long-tailed subset of ``rows`` rows: the first rows of each class, in
    the order given, as many as :func:`long_tail_sizes` says; sorted.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,), integer
        Classes 0..K-1 (K is the largest label plus one), e.g. a shuffled train split's.
    rows : int
        Size of the subset.
    ratio : float
        Largest class size over the smallest, >= 1 (1: balanced).

    Raises
    ------
    ConfigError
        A class has fewer rows than its share asks for.
    """
    labels = check_labels(labels)
    if len(labels) == 0:
        raise InputError("labels are empty")
    sizes = long_tail_sizes(rows, int(labels.max()) + 1, ratio=ratio)
    chosen = []
    for c, size in enumerate(sizes):
        members = np.flatnonzero(labels == c)
        if len(members) < size:
            raise ConfigError(f"class {c} has {len(members)} rows; the long tail asks {size}")
        chosen.append(members[:size])
    return np.sort(np.concatenate(chosen))


def near_duplicate(payload: bytes, rng: np.random.Generator, *, quality: int = 90) -> bytes:
    """A near-duplicate of an encoded image: shifted by up to one pixel each way (edges
    repeated), grey-level noise of standard deviation 2, recompressed as JPEG at ``quality``.

    Returns JPEG bytes of the same size and mode (grey or RGB) as the image.
    """
    check_number(NAME, "quality", quality, low=1, high=95, integer=True)
    with Image.open(io.BytesIO(payload)) as image:
        mode = _mode(image)
        pixels = np.asarray(image.convert(mode), dtype=np.float32)
    dy, dx = rng.integers(-1, 2, size=2)
    pad = ((1, 1), (1, 1)) + ((0, 0),) * (pixels.ndim - 2)
    padded = np.pad(pixels, pad, mode="edge")
    h, w = pixels.shape[:2]
    shifted = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    noisy = np.clip(np.rint(shifted + rng.normal(0.0, 2.0, shifted.shape)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(noisy.astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def resized(payload: bytes, side: int) -> bytes:
    """An encoded image resized (bilinear) to ``side`` x ``side``, as PNG in its own mode."""
    check_number(NAME, "side", side, low=8, integer=True)
    with Image.open(io.BytesIO(payload)) as image:
        out = image.convert(_mode(image)).resize((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def _mode(image: Image.Image) -> str:
    """ "L" for a grey image, else "RGB" (as :func:`sanitize.data.decode_image` reads them)."""
    return "L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB"
