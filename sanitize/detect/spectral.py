"""Spectral signatures: poisons stand out along the top singular direction of their class."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from sanitize.detect.base import (
    Detector,
    DetectorContext,
    DetectorResult,
    contract_score,
    ratio_score,
    register,
    robust_z,
    top_directions,
)
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
        Minimum ``|m1 - m2| / sqrt((s1**2 + s2**2) / 2)`` of the fitted mixture to call the
        class split. Rule: an EM fit of two components to one Gaussian, or to a skewed
        unimodal shape (gamma, log-normal, rectified), gives 1.2-2.1 (measured, 300 to
        20,000 rows), and the k-means halves of a Gaussian 2.65; two equal-variance
        components are bimodal only beyond 2. At 4 they overlap by a Bayes error of
        Phi(-2) = 2.3%.
    z_threshold : float, default=6.0
        Robust z (median / MAD of ``p`` within the class) at which a single row is flagged
        as an outlier. Rule: a Gaussian exceeds 6 robust standard deviations with
        probability 2e-9, so in clean data only rows of a genuinely heavy tail pass.
    min_group_size : int, default=10
        Fewest rows the minor component must hold to count as a group. Rule: an EM
        component collapsing onto a handful of tail rows is not a group; such rows are
        still caught by ``z_threshold`` when extreme.
    min_class_size : int, default=20
        Classes with fewer rows are not scored (score 0) and are listed in ``info``.
    max_fit_rows : int, default=20000
        Rows of a class (seeded subsample) the mixture is fitted on; every row is scored.
        Rule: a 1-D, 5-parameter fit is settled long before 20,000 rows.

    Notes
    -----
    Within a class with a group, the score is monotone in the projection oriented toward
    the minor component (so in ``tau`` among the rows on that side of the class mean; rows
    on the other side score below 0.5). Without a group it is monotone in the robust
    ``|z|`` of ``p``, i.e. in ``tau`` measured from the median. ``score >= 0.5`` exactly
    where flagged. ``info["per_class"]`` gives, per class: ``top_singular_value``,
    ``separation``, ``minor_weight``, ``group``, the ``rule`` applied, the cut as
    ``threshold_projection`` (units of ``p``) and ``n_flagged``.

    References
    ----------
    .. [1] B. Tran, J. Li, A. Madry, "Spectral Signatures in Backdoor Attacks",
       NeurIPS 2018, arXiv:1811.00636.
    """

    name = "spectral"

    def __init__(
        self,
        *,
        separation_threshold: float = 4.0,
        z_threshold: float = 6.0,
        min_group_size: int = 10,
        min_class_size: int = 20,
        max_fit_rows: int = 20000,
    ) -> None:
        self.separation_threshold = separation_threshold
        self.z_threshold = z_threshold
        self.min_group_size = min_group_size
        self.min_class_size = min_class_size
        self.max_fit_rows = max_fit_rows

    def _check_params(self) -> None:
        if not self.separation_threshold > 0:
            raise ConfigError(
                f"spectral.separation_threshold must be > 0, got {self.separation_threshold}"
            )
        if not self.z_threshold > 0:
            raise ConfigError(f"spectral.z_threshold must be > 0, got {self.z_threshold}")
        if self.min_group_size < 2:
            raise ConfigError(f"spectral.min_group_size must be >= 2, got {self.min_group_size}")
        if self.min_class_size < 3:
            raise ConfigError(f"spectral.min_class_size must be >= 3, got {self.min_class_size}")
        if self.max_fit_rows < 100:
            raise ConfigError(f"spectral.max_fit_rows must be >= 100, got {self.max_fit_rows}")

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        n = features.shape[0]
        raw = np.zeros(n, dtype=np.float64)
        flagged = np.zeros(n, dtype=bool)
        per_class: dict[str, dict] = {}
        skipped: list[int] = []
        rng = np.random.default_rng(context.seed)
        for c in range(context.n_classes):
            idx = np.flatnonzero(labels == c)
            if idx.size == 0:
                continue
            if idx.size < self.min_class_size:
                skipped.append(c)
                continue
            strength, figures = self._score_class(features[idx], rng, context.seed)
            raw[idx] = ratio_score(strength)
            flagged[idx] = strength >= 1.0
            figures["n_flagged"] = int(flagged[idx].sum())
            per_class[str(c)] = figures
        info = {
            "params": self.get_params(),
            "n_flagged": int(flagged.sum()),
            "classes_flagged": [int(k) for k, v in per_class.items() if v["n_flagged"] > 0],
            "classes_skipped": skipped,
            "per_class": per_class,
        }
        return DetectorResult(score=contract_score(raw, flagged), flagged=flagged, info=info)

    def _score_class(
        self, x: np.ndarray, rng: np.random.Generator, seed: int
    ) -> tuple[np.ndarray, dict]:
        """Per-row strength (>= 1 where flagged) and the class figures for ``info``."""
        xc = x - x.mean(axis=0, dtype=np.float64).astype(x.dtype)
        sing, v = top_directions(xc, 1)
        p = (xc @ v[:, 0].astype(xc.dtype)).astype(np.float64)
        sd = float(p.std())
        figures: dict = {
            "n": int(x.shape[0]),
            "top_singular_value": float(sing[0]),
        }
        if sd == 0.0:
            figures.update(separation=0.0, minor_weight=0.0, group=False, rule="constant")
            return np.zeros(x.shape[0]), figures
        ps = p / sd

        fit_rows = ps
        if ps.size > self.max_fit_rows:
            fit_rows = ps[rng.choice(ps.size, self.max_fit_rows, replace=False)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            # Started from the exact 1-D 2-means split, so the fit is deterministic and
            # needs no random restarts; reg_covar (in units of the class's own spread)
            # keeps a component from collapsing onto a few tied values.
            w0, m0, v0 = _two_means_1d(fit_rows)
            gmm = GaussianMixture(
                2,
                reg_covar=1e-3,
                weights_init=w0,
                means_init=m0[:, None],
                precisions_init=(1.0 / (v0 + 1e-3))[:, None, None],
                random_state=seed,
            )
            gmm.fit(fit_rows[:, None])
        means = gmm.means_.ravel()
        var = gmm.covariances_.ravel()
        weights = gmm.weights_
        minor = int(np.argmin(weights))
        major = 1 - minor
        separation = float(abs(means[minor] - means[major]) / np.sqrt((var[0] + var[1]) / 2))
        minor_weight = float(weights[minor])
        group = (
            separation >= self.separation_threshold
            and minor_weight < 0.5
            and minor_weight * ps.size >= self.min_group_size
        )
        figures.update(separation=separation, minor_weight=minor_weight, group=bool(group))

        if not group:
            z, med, scale = robust_z(ps, mad_floor=1e-3)
            # Thresholds in the units of the projection p (not of p / sd).
            figures.update(
                rule="robust_outlier",
                threshold_z=float(self.z_threshold),
                threshold_projection=[
                    (med - self.z_threshold * scale) * sd,
                    (med + self.z_threshold * scale) * sd,
                ],
            )
            return np.abs(z) / self.z_threshold, figures

        # Orient q so that the minor component lies on the positive side.
        sign = 1.0 if means[minor] > means[major] else -1.0
        q = sign * ps
        m_major, m_minor = sign * means[major], sign * means[minor]
        boundary = _crossing(
            m_major, var[major], weights[major], m_minor, var[minor], weights[minor]
        )
        _, med, scale = robust_z(q, mad_floor=1e-3)
        z_cut = med + self.z_threshold * scale
        cut = min(boundary, z_cut) if z_cut > m_major else boundary
        figures.update(
            rule="separated_group",
            threshold_z=float(self.z_threshold),
            threshold_projection=float(cut * sign * sd),
            boundary_posterior=float(boundary * sign * sd),
            boundary_robust_z=float(z_cut * sign * sd),
            minor_side="positive" if sign > 0 else "negative",
        )
        return (q - m_major) / (cut - m_major), figures


def _crossing(m0: float, v0: float, w0: float, m1: float, v1: float, w1: float) -> float:
    """First point above ``m0`` (toward ``m1 > m0``) where component 1 becomes more likely.

    Solves ``w0 N(q; m0, v0) = w1 N(q; m1, v1)``, a quadratic in ``q``, and returns its
    smallest root above ``m0``; falls back to the midpoint of the means when there is none.
    """
    a = 0.5 / v0 - 0.5 / v1
    b = m1 / v1 - m0 / v0
    c = 0.5 * m0**2 / v0 - 0.5 * m1**2 / v1 + np.log(w1 / w0) - 0.5 * np.log(v1 / v0)
    # a q^2 + b q + c = log(w1 N1) - log(w0 N0)
    if abs(a) < 1e-12:
        roots = [-c / b] if b != 0 else []
    else:
        disc = b * b - 4 * a * c
        roots = []
        if disc >= 0:
            roots = [(-b - np.sqrt(disc)) / (2 * a), (-b + np.sqrt(disc)) / (2 * a)]
    above = sorted(r for r in roots if r > m0)
    return float(above[0]) if above else 0.5 * (m0 + m1)


def _two_means_1d(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means and variances of the optimal 2-means split of 1-D values.

    In one dimension the optimal split is a threshold; scanning the sorted values with
    prefix sums finds it exactly in O(n log n).
    """
    x = np.sort(values)
    n = x.size
    c1 = np.cumsum(x)
    c2 = np.cumsum(x * x)
    k = np.arange(1, n)  # left part holds x[:k]
    left_sse = c2[k - 1] - c1[k - 1] ** 2 / k
    right_sse = (c2[-1] - c2[k - 1]) - (c1[-1] - c1[k - 1]) ** 2 / (n - k)
    cut = int(k[np.argmin(left_sse + right_sse)])
    parts = (x[:cut], x[cut:])
    weights = np.array([p.size / n for p in parts])
    means = np.array([p.mean() for p in parts])
    var = np.array([p.var() for p in parts])
    return weights, means, var
