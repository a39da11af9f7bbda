"""Spectral signatures in input space: a blended trigger is a direction of its class's pixels.

A blended trigger (Chen et al. 2017) makes every poison ``(1 - alpha) * x + alpha * t``: the
poisons of the target class share a component ``alpha * (t - x)`` that the class's clean
images do not have. Where the bootstrap model learns such a trigger slowly (a faint blend,
a natural picture as the trigger), its features hold little of it, but the pixels hold all
of it. Whitened by how images of the *other* classes vary within their own class, the
trigger's direction is one the class's natural variation does not explain, and it becomes
the class's top singular direction (the spectral signature of Tran et al. 2018, taken on
the input instead of a learned representation).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sanitize.detect.base import DetectorContext, DetectorResult, register
from sanitize.detect.contrast_spectral import ContrastSpectral
from sanitize.detect.mixture import two_means_1d
from sanitize.detect.whitening import LeaveOneClassOutWhitening

# Images a batch when block means are computed (uint8 in, float32 out).
_BLOCK_BATCH = 4096


def block_means(images: np.ndarray, rows: np.ndarray | None = None, grid: int = 16) -> np.ndarray:
    """Each image as the mean of each channel over a ``grid`` x ``grid`` set of blocks.

    Blocks come from adaptive average pooling: they differ by at most one pixel where the side
    is not a multiple of ``grid``.

    Parameters
    ----------
    images : ndarray of shape (n_images, channels, height, width)
        uint8 (a memory-mapped ``images.npy`` is read a batch at a time).
    rows : ndarray of int or None, default=None
        Rows of ``images`` to take, in this order; None takes every row.
    grid : int, default=16
        Blocks a side (adaptive average pooling); at most the image side.

    Returns
    -------
    ndarray of shape (n_rows, channels * grid * grid)
        float32 in [0, 1].
    """
    rows = np.arange(images.shape[0]) if rows is None else np.asarray(rows)
    side = min(grid, images.shape[2], images.shape[3])
    out = np.empty((rows.size, images.shape[1] * side * side), dtype=np.float32)
    for start in range(0, rows.size, _BLOCK_BATCH):
        batch = np.asarray(images[np.sort(rows[start : start + _BLOCK_BATCH])])
        order = np.argsort(np.argsort(rows[start : start + _BLOCK_BATCH]))
        x = torch.from_numpy(batch[order]).to(torch.float32) / 255.0
        out[start : start + len(batch)] = F.adaptive_avg_pool2d(x, side).flatten(1).numpy()
    return out


@register
class PixelSpectral(ContrastSpectral):
    """Flag rows that form a separated group along the top whitened pixel direction of
    their class.

    For each class ``c``, the rows' block means (``context.pixels``) are centred by the
    class mean and whitened by the pooled within-class covariance of the *other* classes,
    shrunk toward its mean eigenvalue (``shrinkage``), so that a direction the class's
    natural variation shares with the others' counts for little and one no other class
    varies along (a trigger) for much. Every row gets its projection on the top right
    singular vector of the whitened class, oriented so that the side of the class's 2-means
    split that varies less off that direction is the high side: a blend scales its rows'
    own variation by ``1 - alpha`` and a stamp fixes the pixels it covers, so poisons are
    the tighter side. The class then goes through the same group test as
    :class:`~sanitize.detect.spectral.SpectralSignature` (a two-component mixture on the
    projections, a group when the components are far apart, and only in a class the
    separations single out among the classes), with the group on the high side and smaller
    than half the class. A natural mode looser than the rest of its class, or a poison
    that is most of its class, is left to the other detectors and the class-size rules.

    Parameters
    ----------
    shrinkage : float, default=0.1
        Weight ``s`` of the mean eigenvalue in the whitening ``(1 - s) * C + s * mean(eig) * I``.
    z_threshold : float, default=1e6
        Robust z at which a single row is flagged on its own; the default flags none.
    separation_threshold, min_group_size, min_class_size, max_fit_rows, \
class_z_threshold, class_mad_floor
        As :class:`~sanitize.detect.spectral.SpectralSignature`, whose defaults and rules apply.

    Notes
    -----
    ``info["per_class"]`` adds, per class, ``top_ratio``: the squared ratio of the top two
    singular values of the whitened class (1.0-1.74 in clean CIFAR-10 and MNIST classes of
    5,000-row sets, up to 3.8 in GTSRB's near-duplicate sign tracks; 2.1-12 in CIFAR-10
    classes with a blended, Trojan or SIG trigger and up to 33 in MNIST's;
    ``benchmarks/RESULTS.md``, session 9), and
    ``spread_ratio``: the high side's spread off the top direction over the low side's.

    References
    ----------
    .. [1] B. Tran, J. Li, A. Madry, "Spectral Signatures in Backdoor Attacks",
       NeurIPS 2018, arXiv:1811.00636.
    .. [2] X. Chen, C. Liu, B. Li, K. Lu, D. Song, "Targeted Backdoor Attacks on Deep
       Learning Systems Using Data Poisoning", arXiv:1712.05526, 2017 (blended triggers).
    """

    name = "pixel_spectral"
    requires = ("pixels",)
    shares_class_stats = False
    feature_space = False

    def __init__(
        self,
        *,
        shrinkage: float = 0.1,
        separation_threshold: float = 4.0,
        z_threshold: float = 1e6,
        min_group_size: int = 10,
        min_class_size: int = 20,
        max_fit_rows: int = 20000,
        class_z_threshold: float = 3.0,
        class_mad_floor: float = 0.1,
    ) -> None:
        super().__init__(
            shrinkage=shrinkage,
            separation_threshold=separation_threshold,
            z_threshold=z_threshold,
            min_group_size=min_group_size,
            min_class_size=min_class_size,
            max_fit_rows=max_fit_rows,
            class_z_threshold=class_z_threshold,
            class_mad_floor=class_mad_floor,
        )

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        pixels = np.asarray(context.pixels, dtype=np.float32)
        whitening = LeaveOneClassOutWhitening(pixels, labels, context.n_classes, self.shrinkage)
        return self._group_result(
            labels, context, lambda idx: _tighter_side_projection(whitening, idx), "high"
        )


def _tighter_side_projection(
    whitening: LeaveOneClassOutWhitening, idx: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Projections of the rows ``idx`` (every row of one class) on the class's top
    whitened direction, the tighter side high, and the figures for ``info``."""
    top = whitening.top_direction(idx)
    sign, spread = _tighter_side(top.projection, top.residual())
    return sign * top.projection, {"top_ratio": top.top_ratio, "spread_ratio": spread}


def _tighter_side(projection: np.ndarray, residual: np.ndarray) -> tuple[float, float]:
    """The sign that puts the tighter side of the class's 2-means split along
    ``projection`` on the high side, and that side's spread over the other's.

    A trigger pasted or blended into its rows pulls them toward the trigger: a blend
    scales their own variation by ``1 - alpha``, a stamp replaces the pixels it covers.
    Off the trigger's direction, the poisoned side varies less than the clean side.
    """
    _, means, _ = two_means_1d(projection)
    high = projection >= means.mean()
    if high.all() or not high.any():
        return 1.0, 1.0
    spread_high = float((residual[high] ** 2).sum(axis=1).mean())
    spread_low = float((residual[~high] ** 2).sum(axis=1).mean())
    if spread_high <= spread_low:
        return 1.0, spread_high / spread_low
    return -1.0, spread_low / spread_high
