"""BadNets: a small fixed patch stamped on some images, relabelled to a target class.

References
----------
.. [1] T. Gu, B. Dolan-Gavitt and S. Garg, "BadNets: Identifying Vulnerabilities in the
   Machine Learning Model Supply Chain", arXiv:1708.06733, 2017. Sec. 3 (MNIST): a
   pattern of a few pixels in the bottom-right corner, poisoned labels set to a target.
"""

from __future__ import annotations

from typing import Any

import numpy as np

POSITIONS = ("bottom_right", "bottom_left", "top_right", "top_left", "center")


def checkerboard(size: int = 3) -> np.ndarray:
    """A size x size uint8 checkerboard of 255 and 0, 255 in the top-left corner."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
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
        The patch; a 2-D pattern is used on every channel. Default: :func:`checkerboard`
        of side ``size``.
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
        raise ValueError(
            f"images must be uint8 of shape (N, C, H, W), got {images.dtype} {images.shape}"
        )
    patch = checkerboard(size) if pattern is None else np.asarray(pattern, dtype=np.uint8)
    if patch.ndim == 2:
        patch = np.broadcast_to(patch, (images.shape[1], *patch.shape))
    if patch.ndim != 3 or patch.shape[0] != images.shape[1]:
        raise ValueError(
            f"pattern of shape {patch.shape} does not fit images with {images.shape[1]} channels"
        )
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

    Parameters
    ----------
    images : ndarray of shape (n_samples, channels, height, width), dtype uint8
    labels : ndarray of shape (n_samples,)
    target : int
        The attacker's target class.
    rate : float
        Share of all rows poisoned, in [0, 1]: exactly ``round(rate * n_samples)`` rows,
        drawn without replacement among rows whose label is not ``target``.
    seed : int
        Seeds the choice of rows.
    **patch_kwargs
        Passed to :func:`apply_patch` (``pattern``, ``size``, ``position``, ``margin``).

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
    images = np.asarray(images)
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    candidates = np.flatnonzero(labels != target)
    count = round(rate * len(images))
    if count > len(candidates):
        raise ValueError(
            f"rate {rate} asks for {count} poisons but only {len(candidates)} rows "
            f"are outside target class {target}"
        )
    chosen = np.random.default_rng(seed).choice(candidates, size=count, replace=False)
    poisoned = np.zeros(len(images), dtype=bool)
    poisoned[chosen] = True
    out_images = images.copy()
    out_images[poisoned] = apply_patch(images[poisoned], **patch_kwargs)
    out_labels = labels.copy()
    out_labels[poisoned] = target
    return out_images, out_labels, poisoned


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
            raise ValueError(f"unknown position {position!r}; known: {', '.join(POSITIONS)}")
        top, left = corners[position]
    else:
        top, left = position
    if top < 0 or left < 0 or top + ph > height or left + pw > width:
        raise ValueError(
            f"a {ph}x{pw} patch at ({top}, {left}) does not fit {height}x{width} images"
        )
    return top, left
