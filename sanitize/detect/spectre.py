"""Robust spectral signatures (SPECTRE): robust whitening, then QUantum Entropy scores."""

from __future__ import annotations

import numpy as np
import scipy.linalg

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
class Spectre(Detector):
    """Flag rows that stand out in a class's robustly whitened features (QUE scores).

    SPECTRE (Hayase et al. 2021, Sec. 4) improves on plain spectral signatures in three
    steps, per class: (1) reduce the centred features to their top ``n_components``
    principal directions; (2) whiten them with a robust estimate of the *clean* covariance,
    so that clean rows become isotropic and the poison's extra variance is all that
    remains; (3) score each whitened row ``y_i`` by its QUantum Entropy (QUE) score
    ``tau_i = y_i' Q y_i / tr(Q)`` with ``Q = exp(alpha (S - I) / (||S||_2 - 1))`` and
    ``S`` the covariance of the whitened rows: ``alpha = 0`` is the Mahalanobis norm, large
    ``alpha`` the projection on the top direction, and in between the score uses every
    direction in which the class has more variance than clean data.

    The clean covariance here is the pooled within-class covariance of the *other*
    classes, in the class's own principal directions. The paper's robust estimator
    (filtering, or a Minimum Covariance Determinant) assumes the poison is a minority of
    its class and is drawn to a tight poison cluster (on planted data MCD took the poison
    into its core and scored it lowest); a dirty-label attack fills one target class, so
    the other classes are a reference the poison cannot reach, whatever its share of the
    target class. Rows are scored from the class's coordinate-wise median, which stays in
    the clean part while the poison is a minority.

    The paper removes ``1.5 * eps * n`` rows, which needs the poison rate. Here ``log tau``
    is tested for a separated high group with
    :func:`sanitize.detect.mixture.separated_group`, as the other detectors are.

    Parameters
    ----------
    n_components : int, default=16
        Principal directions kept per class (at most a quarter of the class's rows).
    alpha : float, default=4.0
        QUE exponent.
    separation_threshold : float, default=4.0
        Mixture separation of ``log tau`` a class needs to have a group.
    z_threshold : float, default=6.0
        Robust z at which a single row is flagged without a group.
    min_group_size : int, default=10
    max_group_weight : float, default=0.5
        Largest share of its class a group may hold.
    min_class_size : int, default=50
        Smaller classes are not tested (score 0).
    max_fit_rows : int, default=20000
        Rows of a class (seeded subsample) the mixture test is fitted on.

    References
    ----------
    .. [1] J. Hayase, W. Kong, R. Somani, S. Oh, "SPECTRE: Defending Against Backdoor
       Attacks Using Robust Statistics", ICML 2021, arXiv:2104.11315.
    """

    name = "spectre"
    shares_class_stats = True

    def __init__(
        self,
        *,
        n_components: int = 16,
        alpha: float = 4.0,
        separation_threshold: float = 4.0,
        z_threshold: float = 6.0,
        min_group_size: int = 10,
        max_group_weight: float = 0.5,
        min_class_size: int = 50,
        max_fit_rows: int = 20000,
    ) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.separation_threshold = separation_threshold
        self.z_threshold = z_threshold
        self.min_group_size = min_group_size
        self.max_group_weight = max_group_weight
        self.min_class_size = min_class_size
        self.max_fit_rows = max_fit_rows

    def _check_params(self) -> None:
        pre = "spectre."
        if self.n_components < 1:
            raise ConfigError(f"{pre}n_components must be >= 1, got {self.n_components}")
        if not self.alpha >= 0:
            raise ConfigError(f"{pre}alpha must be >= 0, got {self.alpha}")
        if not self.separation_threshold > 0 or not self.z_threshold > 0:
            raise ConfigError(f"{pre}separation_threshold and z_threshold must be > 0")
        if not 0 < self.max_group_weight < 1:
            raise ConfigError(f"{pre}max_group_weight must be in (0, 1)")
        if self.min_class_size < 10 or self.min_group_size < 1:
            raise ConfigError(f"{pre}min_class_size must be >= 10 and min_group_size >= 1")
        if self.max_fit_rows < 100:
            raise ConfigError(f"{pre}max_fit_rows must be >= 100, got {self.max_fit_rows}")

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        stats = class_statistics(
            features, labels, context.n_classes, self.n_components, context.class_stats
        )

        def log_que(idx: np.ndarray) -> tuple[np.ndarray, dict]:
            c = int(labels[idx[0]])
            log_tau, top = self._log_que(idx, stats, c, features.shape[1])
            return log_tau, {"top_excess_variance": top}

        groups = group_test_by_class(
            labels,
            context.n_classes,
            log_que,
            min_class_size=self.min_class_size,
            side="high",
            separation_threshold=self.separation_threshold,
            z_threshold=self.z_threshold,
            min_group_size=self.min_group_size,
            max_group_weight=self.max_group_weight,
            max_fit_rows=self.max_fit_rows,
            seed=context.seed,
        )
        return groups.result(self.get_params())

    def _log_que(
        self, idx: np.ndarray, stats: ClassStatistics, c: int, d: int
    ) -> tuple[np.ndarray, float]:
        """``log tau`` of rows ``idx`` (all of class ``c``), and the top eigenvalue of ``S``."""
        k = int(min(self.n_components, d, idx.size // 4))
        z = stats.coordinates(idx, k).astype(np.float64)
        reference = stats.pooled_without(c, k)
        reference += 1e-6 * np.trace(reference) / k * np.eye(k)
        chol = scipy.linalg.cholesky(reference, lower=True)
        y = scipy.linalg.solve_triangular(chol, z.T, lower=True).T
        s = np.cov(y, rowvar=False).reshape(k, k)
        # Scored from the coordinate-wise median, not the mean: a group of 30-45% of the
        # class pulls the mean toward itself, and squared distances from there would make
        # the clean rows as far out as the group.
        y = y - np.median(y, axis=0)
        top = float(scipy.linalg.eigvalsh(s)[-1])
        if top > 1.0 + 1e-9:
            q = scipy.linalg.expm(self.alpha * (s - np.eye(k)) / (top - 1.0))
        else:  # no direction has more variance than the reference: QUE is the Mahalanobis norm
            q = np.eye(k)
        tau = np.einsum("ij,jk,ik->i", y, q, y) / np.trace(q)
        return np.log(tau + 1e-12), top
