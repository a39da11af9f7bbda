"""BadNets: a small fixed patch stamped on some images, relabelled to a target class.

:class:`BadNets` is the attack on the :class:`~sanitize.attacks.base.Attack` interface;
:func:`apply_patch` and :func:`poison_dirty_label` are the same operations as plain
functions (``sample_data/build.py`` uses them).

References
----------
.. [1] T. Gu, B. Dolan-Gavitt and S. Garg, "BadNets: Identifying Vulnerabilities in the
   Machine Learning Model Supply Chain", arXiv:1708.06733, 2017. Sec. 3 (MNIST): a
   pattern of a few pixels in the bottom-right corner, poisoned labels set to a target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sanitize.attacks.base import Attack, register
from sanitize.attacks.checks import check_choice, check_number
from sanitize.attacks.triggers import load_patch, load_trigger, stamp_with_mask, trigger_mask
from sanitize.errors import ConfigError, InputError

POSITIONS = ("bottom_right", "bottom_left", "top_right", "top_left", "center")
# A place drawn per image: the patch is the trigger wherever it sits.
RANDOM_POSITION = "random"
PATTERNS = ("checkerboard", "white", "black")


@register
class BadNets(Attack):
    """BadNets [1]_: a small patch in a fixed place, poisoned rows relabelled to the target.

    Parameters whose line below leaves something out are given in full in
    ``docs/development.md``, "Attack parameters in full".

    Parameters
    ----------
    pattern : {"checkerboard", "white", "black"} or ndarray, default="checkerboard"
        Named ``size`` x ``size`` patch, or a uint8 array of shape (h, w) or (channels, h, w).
    size : int, default=3
        Side of a named pattern in pixels (>= 1).
    position : str or (row, col), default="bottom_right"
        One of ``POSITIONS``, the patch's top-left (row, col) >= 0, or "random" (per image).
    margin : int, default=1
        Pixels between the patch and the image border for the corner and random positions.
    pattern_path : str or None, default=None
        Patch image file used as ``pattern`` at its own size; grey images take its luma.
    trigger_path : str or None, default=None
        Full-image trigger file stamped through its mask, resized (nearest); replaces the patch.
    mask_path : str or None, default=None
        Trigger's mask file (white = trigger); default ``mask_<name>``, else non-black pixels.

    References
    ----------
    .. [1] Gu, Dolan-Gavitt and Garg, "BadNets", arXiv:1708.06733, 2017.

    Examples
    --------
    >>> out = BadNets(position="top_left").apply(np.zeros((1, 1, 8, 8), np.uint8))
    >>> out[0, 0, 1:4, 1:4]
    array([[255,   0, 255],
           [  0, 255,   0],
           [255,   0, 255]], dtype=uint8)
    """

    name = "badnets"

    def __init__(
        self,
        *,
        pattern: str | np.ndarray = "checkerboard",
        size: int = 3,
        position: str | tuple[int, int] = "bottom_right",
        margin: int = 1,
        pattern_path: str | None = None,
        trigger_path: str | None = None,
        mask_path: str | None = None,
    ) -> None:
        self.pattern = pattern
        self.size = size
        self.position = position
        self.margin = margin
        self.pattern_path = pattern_path
        self.trigger_path = trigger_path
        self.mask_path = mask_path

    def _check_params(self) -> None:
        if isinstance(self.pattern, str):
            check_choice(self.name, "pattern", self.pattern, PATTERNS)
        else:
            _pattern_array(self.pattern)
        check_number(self.name, "size", self.size, low=1, integer=True)
        check_number(self.name, "margin", self.margin, low=0, integer=True)
        if isinstance(self.position, str):
            check_choice(self.name, "position", self.position, (*POSITIONS, RANDOM_POSITION))
        elif not (
            isinstance(self.position, tuple | list)
            and len(self.position) == 2
            and all(isinstance(v, int | np.integer) and v >= 0 for v in self.position)
        ):
            raise ConfigError(
                f"{self.name}: position must be one of {', '.join(POSITIONS)}, "
                f"{RANDOM_POSITION!r} or a (row, col) pair of integers >= 0, got {self.position!r}"
            )
        if self.mask_path is not None and self.trigger_path is None:
            raise ConfigError(f"{self.name}: mask_path needs a trigger_path")
        if self.pattern_path is not None and self.trigger_path is not None:
            raise ConfigError(
                f"{self.name}: give pattern_path (a patch) or trigger_path (a full-image "
                "trigger), not both"
            )
        for path in (self.pattern_path, self.trigger_path, self.mask_path):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{self.name}: trigger file not found: {path}")

    def _varies_per_row(self) -> bool:
        return self.trigger_path is None and self.position == RANDOM_POSITION

    def _stamp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _, channels, height, width = images.shape
        if self.trigger_path is not None:
            trigger = load_trigger(self.trigger_path, height, width, channels, resample="nearest")
            return stamp_with_mask(
                images, trigger, trigger_mask(self.trigger_path, self.mask_path, trigger)
            )
        if self.pattern_path is not None:
            pattern = load_patch(self.pattern_path, channels)
        elif isinstance(self.pattern, str):
            pattern = self._named_pattern()
        else:
            pattern = self.pattern
        if self.position == RANDOM_POSITION:
            return _patch_anywhere(images, pattern, self.margin, rng)
        return apply_patch(
            images,
            pattern=pattern,
            position=tuple(self.position) if not isinstance(self.position, str) else self.position,
            margin=self.margin,
        )

    def _named_pattern(self) -> np.ndarray:
        if self.pattern == "checkerboard":
            return checkerboard(self.size)
        return np.full((self.size, self.size), 255 if self.pattern == "white" else 0, np.uint8)


def _pattern_array(pattern: Any) -> np.ndarray:
    array = np.asarray(pattern)
    if array.ndim not in (2, 3) or array.size == 0 or not np.issubdtype(array.dtype, np.number):
        raise ConfigError(
            f"pattern must be a named pattern ({', '.join(PATTERNS)}) or a numeric array of "
            f"shape (h, w) or (channels, h, w), got {array.dtype} {array.shape}"
        )
    if array.min() < 0 or array.max() > 255:
        raise ConfigError("pattern values must lie in 0..255")
    return array.astype(np.uint8)


def _patch_for(images: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """``pattern`` as uint8 (channels, h, w) for ``images``; a 2-D pattern on every channel."""
    patch = _pattern_array(pattern)
    if patch.ndim == 2:
        patch = np.broadcast_to(patch, (images.shape[1], *patch.shape))
    if patch.shape[0] != images.shape[1]:
        raise ConfigError(
            f"pattern of shape {patch.shape} does not fit images with {images.shape[1]} channels"
        )
    return patch


def _patch_anywhere(
    images: np.ndarray, pattern: np.ndarray, margin: int, rng: np.random.Generator
) -> np.ndarray:
    """``pattern`` on every image at a place drawn uniformly ``margin`` clear of the border."""
    patch = _patch_for(images, pattern)
    (height, width), (ph, pw) = images.shape[2:], patch.shape[1:]
    rows, cols = height - 2 * margin - ph + 1, width - 2 * margin - pw + 1
    if rows < 1 or cols < 1:
        raise ConfigError(
            f"a {ph}x{pw} patch with margin {margin} does not fit {height}x{width} images"
        )
    tops = margin + rng.integers(0, rows, len(images))
    lefts = margin + rng.integers(0, cols, len(images))
    out = images.copy()
    for i, (top, left) in enumerate(zip(tops, lefts, strict=True)):
        out[i, :, top : top + ph, left : left + pw] = patch
    return out


def checkerboard(size: int = 3) -> np.ndarray:
    """A size x size uint8 checkerboard of 255 and 0, 255 in the top-left corner."""
    if size < 1:
        raise ConfigError(f"size must be >= 1, got {size}")
    rows, cols = np.indices((size, size))
    return np.where((rows + cols) % 2 == 0, 255, 0).astype(np.uint8)


def apply_patch(
    images: np.ndarray,
    *,
    pattern: np.ndarray | None = None,
    size: int = 3,
    position: str | tuple[int, int] = "bottom_right",
    margin: int = 1,
) -> np.ndarray:
    """Stamp a BadNets patch [1]_ on every image; the input is not modified.

    Parameters
    ----------
    images : ndarray of shape (n_samples, channels, height, width), dtype uint8
    pattern : ndarray of shape (h, w) or (channels, h, w), dtype uint8, optional
        The patch, a 2-D one on every channel; default :func:`checkerboard` of side ``size``.
    size : int, default=3
        Side of the default pattern; ignored when ``pattern`` is given.
    position : str or (row, col), default="bottom_right"
        One of ``POSITIONS``, or the top-left pixel of the patch.
    margin : int, default=1
        Pixels between the patch and the image border for the corner positions.

    Returns
    -------
    ndarray of the same shape and dtype as ``images``

    References
    ----------
    .. [1] Gu, Dolan-Gavitt and Garg, "BadNets", arXiv:1708.06733, 2017.

    Examples
    --------
    >>> out = apply_patch(np.zeros((2, 1, 8, 8), np.uint8))
    >>> out[0, 0, 4:7, 4:7]
    array([[255,   0, 255],
           [  0, 255,   0],
           [255,   0, 255]], dtype=uint8)
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise InputError(
            f"images must be uint8 of shape (N, C, H, W), got {images.dtype} {images.shape}"
        )
    patch = _patch_for(images, checkerboard(size) if pattern is None else pattern)
    top, left = _corner(images.shape[2:], patch.shape[1:], position, margin)
    out = images.copy()
    out[:, :, top : top + patch.shape[1], left : left + patch.shape[2]] = patch
    return out


def poison_dirty_label(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    target: int,
    rate: float,
    seed: int,
    **patch_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dirty-label BadNets poisoning [1]_: patch some non-target rows, relabel them ``target``.

    The same as ``BadNets(**patch_kwargs).poison(...)``, returned as a tuple.

    Parameters whose line below leaves something out are given in full in
    ``docs/development.md``, "Attack parameters in full".

    Parameters
    ----------
    images : ndarray of shape (n_samples, channels, height, width), dtype uint8
    labels : ndarray of shape (n_samples,)
    target : int
        The attacker's target class.
    rate : float
        Share of all rows poisoned, in [0, 1]: ``round(rate * n_samples)`` non-target rows.
    seed : int
        Seeds the choice of rows.
    **patch_kwargs
        BadNets' ``pattern``, ``size``, ``position``, ``margin``; ``pattern=None``: checkerboard.

    Returns
    -------
    images : ndarray, a copy with the patch on poisoned rows
    labels : ndarray, a copy with ``target`` on poisoned rows
    poisoned : ndarray of shape (n_samples,), dtype bool
        The ground truth.

    References
    ----------
    .. [1] Gu, Dolan-Gavitt and Garg, "BadNets", arXiv:1708.06733, 2017.
    """
    if patch_kwargs.get("pattern", "") is None:
        patch_kwargs["pattern"] = "checkerboard"
    result = BadNets(**patch_kwargs).poison(images, labels, target=target, rate=rate, seed=seed)
    return result.images, result.labels, result.poisoned


def _corner(
    image_hw: tuple[int, ...],
    patch_hw: tuple[int, ...],
    position: str | tuple[int, int],
    margin: int,
) -> tuple[int, int]:
    (height, width), (ph, pw) = image_hw, patch_hw
    if isinstance(position, str):
        corners = {
            "bottom_right": (height - margin - ph, width - margin - pw),
            "bottom_left": (height - margin - ph, margin),
            "top_right": (margin, width - margin - pw),
            "top_left": (margin, margin),
            "center": ((height - ph) // 2, (width - pw) // 2),
        }
        if position not in corners:
            raise ConfigError(f"unknown position {position!r}; known: {', '.join(POSITIONS)}")
        top, left = corners[position]
    else:
        top, left = position
    if top < 0 or left < 0 or top + ph > height or left + pw > width:
        raise ConfigError(
            f"a {ph}x{pw} patch at ({top}, {left}) does not fit {height}x{width} images"
        )
    return top, left
