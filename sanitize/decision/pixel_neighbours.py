"""Label agreement of a row's nearest images in pixel space.

A dirty-label poison is an image of another class given the target's label (Gu et al.
2017): unless its trigger dominates the pixels, the images nearest to it are of its source
class and carry other labels, while a clean row's nearest images mostly share its label.
The bootstrap model cannot tell the two apart once it has learned the trigger, but the
pixels still can: on the benchmark's majority-poison classes (WaNet on CIFAR-10 and MNIST,
BadNets on MNIST) the side of a split whose rows' ten nearest images carry their label
less often was the poison every time. A trigger that dominates the pixels (a blended
image, a colour filter) makes the poisons each other's neighbours instead; such a trigger
is also learned first, and the early loss orients those classes (see
:mod:`sanitize.decision.size_orient`).

Images are reduced to ``side x side`` block means per channel, centred and scaled to unit
length (so a global brightness or contrast change moves no row), and compared by cosine.

Neighbours are drawn from a pool with the same number of rows of every class (the median
class size, or all of a smaller class): where pixels barely tell classes apart (CIFAR-10:
a row's ten nearest images carry its label a quarter of the time), a row's chance of a
neighbour with its label grows with its class's share of the pool. With neighbours from
the whole set, the CIFAR-10 class that a 10% WaNet poison doubled had fewer rows without
a single agreeing neighbour than the other classes (0.12 against 0.18), as had every
naturally large class (0.06-0.16, at 1.3-2.2 times the others' size); from a balanced
pool it had 0.31 against 0.16, the naturally large classes 0.10-0.22.
"""

from __future__ import annotations

import numpy as np

# Rows compared a block, bounding the (block x pool) similarity matrix to about 200 MB.
_BLOCK_ROWS = 1024


def block_means(images: np.ndarray, side: int) -> np.ndarray:
    """``images`` (n, C, H, W) reduced to (n, C * side * side) float32 block means."""
    n, channels, height, width = images.shape
    rows_at = np.linspace(0, height, side + 1).astype(int)[:-1]
    cols_at = np.linspace(0, width, side + 1).astype(int)[:-1]
    x = np.asarray(images, dtype=np.float32)
    sums = np.add.reduceat(np.add.reduceat(x, rows_at, axis=2), cols_at, axis=3)
    counts = np.outer(np.diff(np.append(rows_at, height)), np.diff(np.append(cols_at, width)))
    return (sums / counts).reshape(n, channels * side * side)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def label_agreement(
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[int] | np.ndarray,
    *,
    k: int = 10,
    side: int = 8,
    max_pool: int = 50_000,
    seed: int = 0,
    image_rows: np.ndarray | None = None,
    also: np.ndarray | None = None,
) -> np.ndarray:
    """Per row of ``classes``: the share of its ``k`` nearest images that carry its label.

    The neighbours are drawn from a seeded sample of the same number of rows of every class
    (at most the median class size; all of a smaller class), at most ``max_pool`` rows.
    ``image_rows`` gives the row of ``images`` each label belongs to (the usable rows of a
    larger set); by default row ``i`` is image ``i``.

    Parameters
    ----------
    images : ndarray of shape (n_rows, C, H, W), uint8
        Every scored row (a memory map is read a class and a block at a time).
    labels : ndarray of shape (n_rows,)
        Class index of every row.
    classes : list of int
        Classes whose rows are scored; NaN elsewhere.
    k : int, default=10
        Neighbours a row (itself excluded).
    side : int, default=8
        Block means a side (8 x 8 per channel: the layout of an object, not its texture).
    max_pool : int, default=50000
        Most rows the neighbours are drawn from (a seeded, class-balanced sample).
    seed : int, default=0
    image_rows : ndarray of shape (n_rows,), optional
        The row of ``images`` each label belongs to; default: row ``i`` is image ``i``.
    also : ndarray of int, optional
        Further rows to score (a sample of other classes, as a reference).

    Returns
    -------
    ndarray of shape (n_rows,), float
        In [0, 1] for the rows of ``classes`` and ``also``, NaN elsewhere.
    """
    labels = np.asarray(labels)
    out = np.full(labels.shape[0], np.nan)
    scored = np.flatnonzero(np.isin(labels, np.asarray(classes)))
    if also is not None:
        scored = np.union1d(scored, np.asarray(also, dtype=np.int64))
    if scored.size == 0:
        return out
    pool = balanced_pool(labels, max_pool, seed)
    image_of = np.arange(labels.shape[0]) if image_rows is None else np.asarray(image_rows)
    pool_x = _features(images, image_of[pool], side)
    pool_labels = labels[pool]
    k = min(k, pool.size - 1)
    for start in range(0, scored.size, _BLOCK_ROWS):
        query = scored[start : start + _BLOCK_ROWS]
        similarity = _features(images, image_of[query], side) @ pool_x.T
        in_pool = np.searchsorted(pool, query)
        mine = (in_pool < pool.size) & (pool[np.minimum(in_pool, pool.size - 1)] == query)
        similarity[np.flatnonzero(mine), in_pool[mine]] = -np.inf  # not its own neighbour
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        out[query] = (pool_labels[nearest] == labels[query][:, None]).mean(axis=1)
    return out


def balanced_pool(labels: np.ndarray, max_rows: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices: a seeded sample of the same number of rows of every class (all
    of a smaller class), the median class size or fewer, so that the pool holds at most
    ``max_rows`` rows."""
    classes, counts = np.unique(labels, return_counts=True)
    per_class = int(np.median(counts))
    while per_class > 1 and np.minimum(counts, per_class).sum() > max_rows:
        per_class = int(per_class * max_rows / np.minimum(counts, per_class).sum())
    rng = np.random.default_rng(seed)
    picked = []
    for c, n in zip(classes, counts, strict=True):
        rows = np.flatnonzero(labels == c)
        picked.append(rows if n <= per_class else rng.choice(rows, per_class, replace=False))
    return np.sort(np.concatenate(picked))


def _features(images: np.ndarray, rows: np.ndarray, side: int) -> np.ndarray:
    """Unit-length, centred block means of ``images[rows]``, read a block at a time."""
    return np.concatenate(
        [
            _unit_rows(block_means(images[rows[i : i + _BLOCK_ROWS]], side))
            for i in range(0, rows.size, _BLOCK_ROWS)
        ]
    )
