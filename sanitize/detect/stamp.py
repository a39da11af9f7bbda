"""A stamped trigger: the same exact pixels, at the same place, on a group of one class.

A patch trigger (BadNets, Gu et al. 2017; the Trojan square, Liu et al. 2018) replaces the
pixels it covers with fixed values: every poison carries them, bit for bit, at one fixed
place. Natural images of a class share exact values at a place only where they saturate
(a black MNIST border, a white sign face), and then so do images of other classes, or the
rows are near-copies of one another (a GTSRB sign track). A stamp is caught at any poison
rate and whatever the model learned, since it is read off the pixels alone.
"""

from __future__ import annotations

import numpy as np

from sanitize.detect.base import (
    Detector,
    DetectorContext,
    DetectorResult,
    contract_score,
    register,
)
from sanitize.errors import ConfigError

PACKED_BUDGET = 256 << 20  # bytes of packed pixels a PackedPixels holds at a time


@register
class Stamp(Detector):
    """Flag the rows of a class that carry the same exact pixels at the same place, when
    that stamp is the class's own and the rows that carry it are otherwise unrelated.

    1. **Seeds.** The images are cut into ``block`` x ``block`` tiles (every channel); a
       tile value that at least ``min_group_size`` rows of a class share, at a share of the
       class at least ``seed_exclusivity`` times its share in any other class, is a seed.
       Tiles start every ``stride`` pixels.
    2. **The stamp.** The seed's rows give, at every pixel, their most common value and
       the share of them holding it; the pixels where at least ``agreement`` of them hold
       it, and fewer than ``base_rate`` of all rows do (not a background every image
       shares), are the stamp.
    3. **Its rows.** A row carries the stamp when it equals it on at least ``match_share``
       of the stamp's pixels.
    4. **The test.** The stamp is flagged in its class when every one of these holds:

       - at least ``min_group_size`` of the class's rows carry it;
       - their share of the class is at least ``exclusivity`` times its share in any
         other class;
       - at most ``max_near`` as many of the class's rows carry part of it (half of its
         pixels or more, short of ``match_share``) as carry it whole: a pasted patch is
         all or nothing, a shape shared by nature comes in degrees;
       - the class's other rows hold the stamp's values at its pixels at a rate of at most
         ``max_class_rate``: a trigger is foreign to its class, while exact pixels shared
         by nature (a stroke of a low-resolution digit) are the class's own and its other
         rows hold many of them;
       - off the stamp, the rows carrying it spread at least ``min_spread`` times as much
         as the class's rows do (mean squared distance from their mean): a trigger is
         pasted on unrelated images, rows that share exact pixels by nature (frames of one
         sign) look alike.

    Scores: a flagged row ``0.5 + 0.5 * m`` (``m`` its share of the stamp's pixels
    matched); every other row 0. Seeds are tried from the largest; a seed whose rows
    mostly carry a stamp already found in its class, or are the rows of a seed tried
    before, is skipped.

    Parameters
    ----------
    block : int, default=2
        Side of the seed tiles in pixels.
    stride : int or None, default=None
        Pixels between seed tiles; None: ``ceil(side / 64)``, ``side`` the image's longer side.
    min_group_size : int, default=10
        Fewest rows a seed and a flagged stamp hold.
    seed_exclusivity, exclusivity : float, default=2.0 and 10.0
        Share of its class over the largest share in another class a seed and a flagged stamp need.
    agreement : float, default=0.9
        Share of the seed's rows that must hold a pixel's most common value to add it to the stamp.
    base_rate : float, default=0.5
        Share of all rows holding that value from which a pixel is shared background, not stamp.
    match_share : float, default=0.9
        Share of the stamp's pixels a row must equal to carry it.
    max_near : float, default=0.05
        Rows of the class carrying part of the stamp, over the rows carrying it whole.
    max_class_rate : float, default=0.05
        Mean share, over the stamp's pixels, of the class's other rows holding its value there.
    min_spread : float, default=0.5
        Spread off the stamp of the rows carrying it, over their class's.

    References
    ----------
    .. [1] T. Gu, B. Dolan-Gavitt, S. Garg, "BadNets: Identifying Vulnerabilities in the
       Machine Learning Model Supply Chain", arXiv:1708.06733, 2017.
    .. [2] Y. Liu, S. Ma, Y. Aafer, W.-C. Lee, J. Zhai, W. Wang, X. Zhang, "Trojaning
       Attack on Neural Networks", NDSS 2018.
    """

    name = "stamp"
    requires = ("images",)
    feature_space = False
    settles_classes = True

    def __init__(
        self,
        *,
        block: int = 2,
        stride: int | None = None,
        min_group_size: int = 10,
        seed_exclusivity: float = 2.0,
        exclusivity: float = 10.0,
        agreement: float = 0.9,
        base_rate: float = 0.5,
        match_share: float = 0.9,
        max_near: float = 0.05,
        min_spread: float = 0.5,
        max_class_rate: float = 0.05,
    ) -> None:
        self.block = block
        self.stride = stride
        self.min_group_size = min_group_size
        self.seed_exclusivity = seed_exclusivity
        self.exclusivity = exclusivity
        self.agreement = agreement
        self.base_rate = base_rate
        self.match_share = match_share
        self.max_near = max_near
        self.min_spread = min_spread
        self.max_class_rate = max_class_rate

    def _check_params(self) -> None:
        if not (isinstance(self.block, int) and self.block >= 1):
            raise ConfigError(f"stamp.block must be an integer >= 1, got {self.block}")
        if self.stride is not None and not (isinstance(self.stride, int) and self.stride >= 1):
            raise ConfigError(f"stamp.stride must be None or an integer >= 1, got {self.stride}")
        if not (isinstance(self.min_group_size, int) and self.min_group_size >= 2):
            raise ConfigError(
                f"stamp.min_group_size must be an integer >= 2, got {self.min_group_size}"
            )
        if not 1 <= self.seed_exclusivity <= self.exclusivity:
            raise ConfigError(
                "stamp needs 1 <= seed_exclusivity <= exclusivity, got "
                f"{self.seed_exclusivity} and {self.exclusivity}"
            )
        for key in ("agreement", "base_rate", "match_share", "max_class_rate"):
            value = getattr(self, key)
            if not 0 < value <= 1:
                raise ConfigError(f"stamp.{key} must be in (0, 1], got {value}")
        if not self.max_near >= 0:
            raise ConfigError(f"stamp.max_near must be >= 0, got {self.max_near}")
        if not self.min_spread >= 0:
            raise ConfigError(f"stamp.min_spread must be >= 0, got {self.min_spread}")

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        images = np.asarray(context.images)
        n = images.shape[0]
        sizes = np.bincount(labels, minlength=context.n_classes)
        pixels = PackedPixels(images)
        flagged = np.zeros(n, dtype=bool)
        score = np.zeros(n, dtype=np.float64)
        stamps: list[dict] = []
        grown: set[tuple[int, bytes]] = set()
        for seed in self._seeds(images, labels, sizes):
            c, rows = seed["class"], seed["rows"]
            if flagged[rows].mean() >= 0.5 or (c, rows.tobytes()) in grown:
                continue  # a stamp depends on its class and its seed's rows only
            grown.add((c, rows.tobytes()))
            found = self._grow(pixels, labels, sizes, c, rows)
            found["seed_tile"] = seed["tile"]
            stamps.append(found)
            carriers, matched = found.pop("carriers"), found.pop("matched")
            if found["accepted"]:
                score[carriers] = np.maximum(score[carriers], 0.5 + 0.5 * matched[carriers])
                flagged |= carriers
        score = contract_score(score, flagged)
        info = {
            "n_flagged": int(flagged.sum()),
            "classes_flagged": [int(c) for c in np.unique(labels[flagged])],
            "stamps": stamps,
        }
        return DetectorResult(score=score, flagged=flagged, info=info)

    def _seeds(self, images: np.ndarray, labels: np.ndarray, sizes: np.ndarray) -> list[dict]:
        """Tile values a class holds at ``min_group_size`` rows or more and at
        ``seed_exclusivity`` times any other class's share, largest first."""
        n, channels, height, width = images.shape
        b = self.block
        step = self.stride or max(1, -(-max(height, width) // 64))
        n_classes = sizes.size
        seeds = []
        for top in range(0, height - b + 1, step):
            strip = np.ascontiguousarray(images[:, :, top : top + b, :])
            for left in range(0, width - b + 1, step):
                tile = np.ascontiguousarray(strip[:, :, :, left : left + b]).reshape(n, -1)
                keys = tile.view(np.dtype((np.void, tile.shape[1]))).ravel()
                _, key_of, key_count = np.unique(keys, return_inverse=True, return_counts=True)
                common = np.flatnonzero(key_count >= self.min_group_size)
                if common.size == 0:
                    continue
                for key in common:
                    rows = np.flatnonzero(key_of == key)
                    per_class = np.bincount(labels[rows], minlength=n_classes)
                    share = per_class / np.maximum(sizes, 1)
                    for c in np.flatnonzero(per_class >= self.min_group_size):
                        if share[c] >= self.seed_exclusivity * _largest_other(share, c):
                            seeds.append(
                                {
                                    "class": int(c),
                                    "rows": rows[labels[rows] == c],
                                    "tile": [top, left],
                                }
                            )
        seeds.sort(key=lambda s: -s["rows"].size)
        return seeds

    def _grow(
        self,
        pixels: PackedPixels,
        labels: np.ndarray,
        sizes: np.ndarray,
        c: int,
        rows: np.ndarray,
    ) -> dict:
        """The stamp around a seed's rows, the rows carrying it, and the test's figures."""
        values, counts = pixels.column_modes(rows)
        agreed = np.flatnonzero(counts >= self.agreement * rows.size)
        base = pixels.holding(agreed, values[agreed]) / labels.size
        stamp = agreed[base < self.base_rate]
        figures: dict = {"class": int(c), "n_pixels": int(stamp.size)}
        if stamp.size == 0:
            return figures | {"accepted": False, "carriers": None, "matched": None}
        matched = pixels.holding(stamp, values[stamp], per_row=True)
        carriers = matched >= self.match_share
        per_class = np.bincount(labels[carriers], minlength=sizes.size)
        share = per_class / np.maximum(sizes, 1)
        in_class = carriers & (labels == c)
        exclusivity = share[c] / max(_largest_other(share, c), 1.0 / max(int(sizes.max()), 1))
        near = (labels == c) & (matched >= 0.5) & ~carriers
        rest = (labels == c) & ~carriers
        # The mean over the rest's rows of their share matched is the mean over the
        # stamp's pixels of the share of the rest holding its value there.
        class_rate = float(matched[rest].mean()) if rest.any() else 0.0
        figures |= {
            "near": int(near.sum()),
            "full": int((in_class & (matched == 1.0)).sum()),
            "n_rows": int(in_class.sum()),
            "share": float(share[c]),
            "exclusivity": float(exclusivity),
            "class_rate": class_rate,
            "box": _box(stamp, pixels.width),
        }
        accepted = bool(
            in_class.sum() >= self.min_group_size
            and exclusivity >= self.exclusivity
            and near.sum() <= self.max_near * in_class.sum()
            and class_rate <= self.max_class_rate
        )
        # The spread reads every pixel of the class's rows: only for a stamp that passed.
        figures["spread_ratio"] = (
            _spread_ratio(pixels, labels == c, in_class, stamp) if accepted else None
        )
        accepted = accepted and figures["spread_ratio"] >= self.min_spread
        figures["accepted"] = accepted
        return figures | {"carriers": in_class, "matched": matched}


class PackedPixels:
    """The images' pixels with their channels packed into one int32 (:func:`pack_pixels`),
    read a block of rows or pixels at a time, so that memory stays within ``budget`` bytes
    whatever the image size; packed once and kept when all of it fits. Then every pixel's
    values are also kept sorted (a second copy, made at the first count) so that counting
    the rows holding a value there is a binary search rather than a pass over all rows:
    a seed's stamp is tried on hundreds of pixels, and a large set (60,000 MNIST digits)
    has thousands of seeds. Memory then holds up to twice ``budget``.

    Parameters
    ----------
    images : ndarray of shape (n_rows, channels, height, width)
        uint8 images (a memory map may be given).
    budget : int or None, default=None
        Bytes of packed pixels held at a time; None: ``PACKED_BUDGET`` (256 MiB).
    """

    def __init__(self, images: np.ndarray, budget: int | None = None) -> None:
        self.images = images
        self.n, self.channels, height, self.width = images.shape
        self.n_pixels = height * self.width
        self.budget = budget or PACKED_BUDGET
        fits = self.n * self.n_pixels * 4 <= self.budget
        # Pixel-major: a stamp's few pixels over every row are a few contiguous runs.
        self._whole = np.ascontiguousarray(pack_pixels(images).T) if fits else None
        self._sorted: np.ndarray | None = None  # (pixels, rows): each pixel's values, sorted
        self._modes: tuple[np.ndarray, np.ndarray] | None = None  # each pixel's mode, count
        self._is_sorted: np.ndarray | None = None  # the pixels sorted so far

    def take(self, rows: np.ndarray | slice, pixels: np.ndarray) -> np.ndarray:
        """Packed values of ``rows`` at flat pixel indices ``pixels``: (rows, pixels)."""
        if self._whole is not None:
            if isinstance(rows, slice):
                return self._whole[pixels, rows].T
            return self._whole[np.ix_(pixels, np.asarray(rows))].T
        rows = np.arange(self.n)[rows] if isinstance(rows, slice) else np.asarray(rows)
        ys, xs = np.divmod(pixels, self.width)
        channel = np.arange(self.channels)[None, :, None]
        # One gather of just these values: never a whole image row in memory.
        part = self.images[rows[:, None, None], channel, ys[None, None, :], xs[None, None, :]]
        return pack_pixels(part[:, :, None, :])

    def row_blocks(self, n_pixels: int):
        """Slices of rows, each holding at most ``budget`` bytes of ``n_pixels`` pixels."""
        step = max(1, self.budget // max(4 * n_pixels, 1))
        return (slice(i, min(i + step, self.n)) for i in range(0, self.n, step))

    def column_modes(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`column_modes` of ``rows`` at every pixel, a block of pixels at a time."""
        step = max(1, self.budget // max(4 * rows.size, 1))
        parts = [
            column_modes(self.take(rows, np.arange(i, min(i + step, self.n_pixels))))
            for i in range(0, self.n_pixels, step)
        ]
        return np.concatenate([v for v, _ in parts]), np.concatenate([k for _, k in parts])

    def holding(
        self, pixels: np.ndarray, values: np.ndarray, *, per_row: bool = False
    ) -> np.ndarray:
        """Rows holding ``values`` at ``pixels``: per pixel, how many rows (shape
        (pixels,)); with ``per_row``, each row's share of the pixels (shape (n_rows,))."""
        if per_row:
            out = np.zeros(self.n, dtype=np.float64)
            for block in self.row_blocks(pixels.size):
                out[block] = (self.take(block, pixels) == values).mean(axis=1)
            return out
        if self._whole is not None:
            return self._sorted_counts(pixels, np.asarray(values))
        counts = np.zeros(pixels.size, dtype=np.int64)
        for block in self.row_blocks(pixels.size):
            counts += (self.take(block, pixels) == values).sum(axis=0)
        return counts

    def _sorted_counts(self, pixels: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``holding`` counts off each pixel's sorted values: the pixel's most common value
        (a background) by lookup, any other by a binary search. A pixel is sorted the first
        time it is asked about (natural images' seeds touch few pixels)."""
        if self._sorted is None:
            self._sorted = np.empty_like(self._whole)
            self._modes = (np.zeros(self.n_pixels, np.int32), np.zeros(self.n_pixels, np.int64))
            self._is_sorted = np.zeros(self.n_pixels, dtype=bool)
        new = np.unique(pixels[~self._is_sorted[pixels]])
        if new.size:
            self._sorted[new] = np.sort(self._whole[new], axis=1)
            self._modes[0][new], self._modes[1][new] = _sorted_modes(self._sorted[new])
            self._is_sorted[new] = True
        mode_value, mode_count = self._modes
        counts = np.where(values == mode_value[pixels], mode_count[pixels], 0).astype(np.int64)
        for j in np.flatnonzero(values != mode_value[pixels]).tolist():
            column, v = self._sorted[pixels[j]], values[j]
            counts[j] = np.searchsorted(column, v, "right") - np.searchsorted(column, v, "left")
        return counts


def pack_pixels(images: np.ndarray) -> np.ndarray:
    """Every pixel's channels packed into one int32: shape (n_images, height * width)."""
    images = np.asarray(images, dtype=np.uint8)
    n, channels, height, width = images.shape
    packed = np.zeros((n, height * width), dtype=np.int32)
    for ch in range(channels):
        packed = (packed << 8) | images[:, ch].reshape(n, -1).astype(np.int32)
    return packed


def column_modes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's most common value and how many rows hold it (ties: the smallest)."""
    return _sorted_modes(np.sort(values, axis=0).T)


def _sorted_modes(by_column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`column_modes` of the columns given as the sorted rows of ``by_column``."""
    m, g = by_column.shape
    ordered = by_column.ravel()  # column by column
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]] | (np.arange(g * m) % g == 0))
    lengths = np.diff(np.r_[starts, g * m])
    column = starts // g
    # Longest run per column: sort runs by (column, -length) and take each column's first.
    order = np.lexsort((-lengths, column))
    first = order[np.r_[True, column[order][1:] != column[order][:-1]]]
    return ordered[starts[first]], lengths[first]


def _largest_other(share: np.ndarray, c: int) -> float:
    others = np.delete(share, c)
    return float(others.max()) if others.size else 0.0


def _spread_ratio(
    pixels: PackedPixels, in_class: np.ndarray, group: np.ndarray, stamp: np.ndarray
) -> float:
    """Mean squared distance from their mean, off the stamp's pixels, of the ``group``'s
    rows over the class's (channels unpacked; 0.0 for a group of fewer than two)."""
    if group.sum() < 2:
        return 0.0
    off = np.setdiff1d(np.arange(pixels.n_pixels), stamp)

    def spread(rows: np.ndarray) -> float:
        # Sum over the unpacked values of their variance, accumulated a block at a time.
        total = np.zeros(off.size * pixels.channels)
        squares = np.zeros_like(total)
        step = max(1, pixels.budget // max(4 * off.size * pixels.channels, 1))
        for i in range(0, rows.size, step):
            values = _unpack(pixels.take(rows[i : i + step], off), pixels.channels)
            total += values.sum(axis=0, dtype=np.float64)
            squares += (values * values).sum(axis=0, dtype=np.float64)
        mean = total / rows.size
        return float((squares / rows.size - mean**2).sum())

    whole = spread(np.flatnonzero(in_class))
    return spread(np.flatnonzero(group)) / whole if whole > 0 else 0.0


def _unpack(packed: np.ndarray, channels: int) -> np.ndarray:
    """float32 (rows, pixels * channels) of the ``channels`` low bytes of packed pixels."""
    return np.concatenate(
        [((packed >> (8 * shift)) & 0xFF).astype(np.float32) for shift in range(channels)],
        axis=1,
    )


def _box(pixels: np.ndarray, width: int) -> list[int]:
    """[top, left, bottom, right] (inclusive) of flat pixel indices in an image ``width``
    pixels wide."""
    row, col = pixels // width, pixels % width
    return [int(row.min()), int(col.min()), int(row.max()), int(col.max())]
