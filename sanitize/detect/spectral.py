"""Spectral signatures: poisons stand out along the top singular direction of their class."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sanitize.detect.base import (
    Detector,
    DetectorContext,
    DetectorResult,
    register,
)
from sanitize.detect.class_stats import ClassStatistics, class_statistics
from sanitize.detect.mixture import group_test_by_class
from sanitize.errors import ConfigError


@register
class SpectralSignature(Detector):
    """Flag rows that form a separated group along the top singular vector of their class.

    For each class, the features are centred by the class mean, the top right singular
    vector ``v`` of the centred matrix is found (eigenvector of the d x d covariance), and
    every row gets its projection ``p_i = <x_i - mu, v>``; the paper's outlier score is
    ``tau_i = p_i ** 2`` (Tran et al. 2018, Sec. 4, Algorithm 1).

    The paper removes the ``1.5 * eps * n`` rows of largest ``tau``, which needs the poison
    rate ``eps``. Here the rate is not known, so each class is tested for a separated group
    instead: a two-component Gaussian mixture is fitted to the projections. When the minor
    component is far from the major one (separation above ``separation_threshold``) and
    holds at least ``min_group_size`` rows, the rows past the point where the minor
    component becomes the more likely one (or past ``z_threshold`` robust deviations toward
    it) are flagged; this handles classes that are 30-50% poisoned, where the median and
    MAD of ``p`` already sit inside the poison. In a class without such a group only
    extreme robust outliers (``|z| >= z_threshold``) are flagged, so a clean class loses
    next to nothing.

    Parameters
    ----------
    separation_threshold : float, default=4.0
        Minimum ``|m1 - m2| / sqrt((s1**2 + s2**2) / 2)`` of the fitted mixture for a class split.
    z_threshold : float, default=6.0
        Robust z (median / MAD of ``p`` within the class) at which a single row is flagged.
    min_group_size : int, default=10
        Fewest rows the minor component must hold to count as a group.
    min_class_size : int, default=20
        Classes with fewer rows are not scored (score 0) and are listed in ``info``.
    max_fit_rows : int, default=20000
        Rows of a class (seeded subsample) the mixture is fitted on; every row is scored.
    class_z_threshold : float, default=3.0
        Robust z of a class's separation among the classes (three at least) to flag its group.
    class_mad_floor : float, default=0.1
        Floor on the MAD of the separations over classes, as a share of their median.

    Notes
    -----
    Within a class with a group, the score is monotone in the projection oriented toward
    the minor component (so in ``tau`` among the rows on that side of the class mean; rows
    on the other side score below 0.5). Without a group it is monotone in the robust
    ``|z|`` of ``p``, i.e. in ``tau`` measured from the median. ``score >= 0.5`` exactly
    where flagged. ``info["per_class"]`` gives, per class: ``top_singular_value``,
    ``separation``, ``minor_weight``, ``group``, the ``rule`` applied, the cut as
    ``cut`` (units of ``p``) and ``n_flagged``.

    References
    ----------
    .. [1] B. Tran, J. Li, A. Madry, "Spectral Signatures in Backdoor Attacks",
       NeurIPS 2018, arXiv:1811.00636.
    """

    name = "spectral"
    shares_class_stats = True

    def __init__(
        self,
        *,
        separation_threshold: float = 4.0,
        z_threshold: float = 6.0,
        min_group_size: int = 10,
        min_class_size: int = 20,
        max_fit_rows: int = 20000,
        class_z_threshold: float = 3.0,
        class_mad_floor: float = 0.1,
    ) -> None:
        self.class_z_threshold = class_z_threshold
        self.class_mad_floor = class_mad_floor
        self.separation_threshold = separation_threshold
        self.z_threshold = z_threshold
        self.min_group_size = min_group_size
        self.min_class_size = min_class_size
        self.max_fit_rows = max_fit_rows

    def _check_params(self) -> None:
        who = self.name
        if not self.separation_threshold > 0:
            raise ConfigError(
                f"{who}.separation_threshold must be > 0, got {self.separation_threshold}"
            )
        if not self.z_threshold > 0:
            raise ConfigError(f"{who}.z_threshold must be > 0, got {self.z_threshold}")
        if self.min_group_size < 2:
            raise ConfigError(f"{who}.min_group_size must be >= 2, got {self.min_group_size}")
        if self.min_class_size < 3:
            raise ConfigError(f"{who}.min_class_size must be >= 3, got {self.min_class_size}")
        if self.max_fit_rows < 100:
            raise ConfigError(f"{who}.max_fit_rows must be >= 100, got {self.max_fit_rows}")

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        stats = class_statistics(features, labels, context.n_classes, 1, context.class_stats)
        return self._group_result(
            labels, context, lambda idx: _projection(idx, stats, int(labels[idx[0]])), "either"
        )

    def _group_result(
        self,
        labels: np.ndarray,
        context: DetectorContext,
        statistic: Callable[[np.ndarray], tuple[np.ndarray, dict]],
        side: str,
    ) -> DetectorResult:
        """The group test on one projection a row, with this detector's thresholds."""
        # A group must also single its class out: classes of near-duplicate images (GTSRB's
        # sign tracks) split along their top direction as clearly as a poisoned class.
        groups = group_test_by_class(
            labels,
            context.n_classes,
            statistic,
            min_class_size=self.min_class_size,
            side=side,
            separation_threshold=self.separation_threshold,
            z_threshold=self.z_threshold,
            min_group_size=self.min_group_size,
            max_group_weight=0.5,
            max_fit_rows=self.max_fit_rows,
            seed=context.seed,
            singling_out_z=lambda test: self.class_z_threshold if test.group else None,
            class_mad_floor=self.class_mad_floor,
        )
        return groups.result(self.get_params())


def _projection(idx: np.ndarray, stats: ClassStatistics, c: int) -> tuple[np.ndarray, dict]:
    """Projections of class ``c``'s centred rows ``idx`` on their top singular vector."""
    p = stats.coordinates(idx, 1)[:, 0].astype(np.float64)
    return p, {"top_singular_value": float(stats.top(c, 1)[0][0])}
