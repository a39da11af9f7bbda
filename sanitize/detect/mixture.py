"""Is there a separated group in one class's 1-D scores? A two-component mixture test.

Detectors that reduce a class to one number a row (a projection, a log-loss) share this
test instead of a rate-based cut: the poison rate is unknown, and when a class is 30-50%
poisoned the median and MAD already sit inside the poison, so robust z alone fails.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from sanitize.detect.base import DetectorResult, contract_score, ratio_score, robust_z
from sanitize.errors import ConfigError


@dataclass
class GroupTest:
    """Outcome of :func:`separated_group` for one class.

    strength : ndarray of shape (n,)
        Per-row evidence, >= 1 exactly where the row is flagged.
    candidate : ndarray of shape (n,), bool
        Rows past the point where the candidate component becomes the more likely one,
        whether or not the class passed the separation test: the group the class would
        lose if other evidence says it is poisoned (see
        :func:`sanitize.decision.decide.decide`). All False when the candidate is too
        large or too small to be a group.
    """

    strength: np.ndarray
    separation: float
    minor_weight: float
    group: bool
    rule: str
    details: dict = field(default_factory=dict)
    candidate: np.ndarray | None = None

    def figures(self, scale: float = 1.0) -> dict:
        """JSON-able figures for a detector's ``info``; cuts in units of ``values * scale``."""
        out = {
            "separation": self.separation,
            "minor_weight": self.minor_weight,
            "group": self.group,
            "rule": self.rule,
        }
        for key, value in self.details.items():
            if key.startswith("cut") and value is not None:
                value = np.asarray(value, dtype=float) * scale
                value = value.tolist() if value.ndim else float(value)
            out[key] = value
        return out


def separated_group(
    values: np.ndarray,
    *,
    separation_threshold: float,
    z_threshold: float,
    min_group_size: int,
    max_fit_rows: int,
    rng: np.random.Generator,
    seed: int,
    side: str = "either",
    max_group_weight: float = 0.5,
) -> GroupTest:
    """Test 1-D ``values`` (unit variance) for a group separated from the rest.

    A two-component Gaussian mixture is fitted, started from the exact 1-D 2-means split
    (deterministic, no restarts). The candidate group is the minor component when ``side``
    is "either", else the component on ``side`` ("low" or "high"), whatever its weight.
    The class has a group when the separation ``|m1 - m2| / sqrt((s1**2 + s2**2) / 2)``
    reaches its bar, the larger of ``separation_threshold`` and
    :func:`small_sample_separation` of the rows fitted, and the candidate holds less than
    ``max_group_weight`` of the rows (and at least ``min_group_size``). Then the rows past
    the point where the candidate becomes the more likely component (or past
    ``z_threshold`` robust deviations toward it) are flagged. Without a group only rows
    beyond ``z_threshold`` robust deviations (on ``side``) are flagged.

    A side-specific test with ``max_group_weight`` above 0.5 can flag a group that is most
    of its class: at a 10% rate in a 10-class set the target class is half poison.
    """
    fit_rows = values
    if values.size > max_fit_rows:
        fit_rows = values[rng.choice(values.size, max_fit_rows, replace=False)]
    means, var, weights = fit_two_components(fit_rows, seed)
    minor_weight = float(weights.min())
    if side == "either":
        minor = int(np.argmin(weights))
    else:
        minor = int(np.argmin(means)) if side == "low" else int(np.argmax(means))
    major = 1 - minor
    separation = float(abs(means[minor] - means[major]) / np.sqrt((var[0] + var[1]) / 2))
    group_weight = float(weights[minor])
    minor_side = "high" if means[minor] > means[major] else "low"
    plausible = group_weight < max_group_weight and group_weight * values.size >= min_group_size
    bar = max(separation_threshold, small_sample_separation(fit_rows.size))
    group = separation >= bar and plausible
    # Orient q so that the candidate component lies on the positive side.
    sign = 1.0 if minor_side == "high" else -1.0
    q = sign * values
    m_major, m_minor = sign * means[major], sign * means[minor]
    boundary = component_crossing(
        m_major, var[major], weights[major], m_minor, var[minor], weights[minor]
    )
    candidate = (q >= boundary) if plausible else np.zeros(values.size, dtype=bool)

    if not group:
        strength, cut = _robust_outliers(values, z_threshold, side)
        details = {
            "cut": cut,
            "cut_candidate": boundary * sign if plausible else None,
            "separation_bar": bar,
        }
        return GroupTest(
            strength, separation, minor_weight, False, "robust_outlier", details, candidate
        )

    _, med, scale = robust_z(q, mad_floor=1e-3)
    z_cut = med + z_threshold * scale
    cut = min(boundary, z_cut) if z_cut > m_major else boundary
    details = {
        "group_weight": group_weight,
        "cut": cut * sign,
        "cut_posterior": boundary * sign,
        "cut_robust_z": z_cut * sign,
        "minor_side": minor_side,
        "separation_bar": bar,
    }
    strength = (q - m_major) / (cut - m_major)
    return GroupTest(
        strength, separation, minor_weight, True, "separated_group", details, candidate
    )


def _robust_outliers(
    values: np.ndarray, z_threshold: float, side: str
) -> tuple[np.ndarray, float | list[float]]:
    """Per-row strength of the robust-z test on ``side`` (>= 1 beyond ``z_threshold`` robust
    deviations) and its cut, in units of ``values`` ([low, high] when ``side`` is "either")."""
    z, med, scale = robust_z(values, mad_floor=1e-3)
    lo, hi = med - z_threshold * scale, med + z_threshold * scale
    if side == "low":
        return -z / z_threshold, lo
    if side == "high":
        return z / z_threshold, hi
    return np.abs(z) / z_threshold, [lo, hi]


def fit_two_components(values: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means, variances and weights of a two-component Gaussian mixture fitted to 1-D
    ``values``, started from their exact 2-means split (deterministic, no restarts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # reg_covar (in units of the values' own spread) keeps a component from collapsing
        # onto a few tied values.
        w0, m0, v0 = two_means_1d(values)
        gmm = GaussianMixture(
            2,
            reg_covar=1e-3,
            weights_init=w0,
            means_init=m0[:, None],
            precisions_init=(1.0 / (v0 + 1e-3))[:, None, None],
            random_state=seed,
        )
        gmm.fit(values[:, None])
    return gmm.means_.ravel(), gmm.covariances_.ravel(), gmm.weights_


# The separation of a two-component fit to n draws of one Gaussian exceeds about
# NULL_SEPARATION_FLOOR + NULL_SEPARATION_PER_ROW / n once in a thousand fits: simulated
# with this module's own fit, 4,000 draws a size, 99.9th percentiles 7.17 (25 rows), 4.37
# (50), 3.46 (75), 3.15 (100), 2.73 (150), and 1.86 at 1,000 rows.
NULL_SEPARATION_FLOOR = 1.8
NULL_SEPARATION_PER_ROW = 130.0


def small_sample_separation(n_rows: int) -> float:
    """The separation one Gaussian class of ``n_rows`` rows reaches by chance about once in
    a thousand fits, the least bar :func:`separated_group` holds a class of that size to.

    A two-component fit to few rows finds two modes in one: its component variances are
    estimated from a handful of rows each and come out small. A fixed bar calibrated on
    classes of hundreds of rows passes 10-50% of unimodal samples of 20-50 rows, and on
    5,000 GTSRB rows the early loss found low "groups" (separations 3.1-3.4) in eight clean
    classes of 33-59 rows across the benchmark cases and in none of more than 60 rows. The
    bar exceeds a detector's usual 3-4 below about 100 rows, and is about 7 at 25 rows.
    """
    return NULL_SEPARATION_FLOOR + NULL_SEPARATION_PER_ROW / max(int(n_rows), 1)


def component_crossing(m0: float, v0: float, w0: float, m1: float, v1: float, w1: float) -> float:
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


def two_means_1d(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def class_evidence_z(per_class: dict[str, dict], relative_mad_floor: float) -> dict[int, float]:
    """Robust z of each class's ``evidence`` among the classes that report one.

    ``per_class`` maps a class index (as a string) to a detector's figures; classes
    without an ``evidence`` value take no part. The MAD is floored at
    ``relative_mad_floor`` times the median evidence. Empty with fewer than three classes,
    where a spread across classes means nothing.
    """
    classes = [
        int(c)
        for c, v in per_class.items()
        if isinstance(v, dict) and v.get("evidence") is not None
    ]
    if len(classes) < 3:
        return {}
    values = np.array([float(per_class[str(c)]["evidence"]) for c in classes])
    floor = relative_mad_floor * max(abs(float(np.median(values))), 1e-12)
    z, _, _ = robust_z(values, mad_floor=floor)
    return {c: float(zc) for c, zc in zip(classes, z, strict=True)}


@dataclass
class ClassGroups:
    """Per-row outcome of :func:`group_test_by_class`, ready for a ``DetectorResult``.

    raw : ndarray of shape (n_rows,)
        Score before :func:`~sanitize.detect.base.contract_score`; >= 0.5 where flagged.
    flagged, candidate : ndarray of shape (n_rows,), bool
    per_class : dict
        Figures by class index (as a string), ``evidence`` = the mixture separation.
    skipped : list of int
        Classes too small to test.
    """

    raw: np.ndarray
    flagged: np.ndarray
    candidate: np.ndarray
    per_class: dict[str, dict]
    skipped: list[int]

    def result(self, params: dict, **extra: object) -> DetectorResult:
        """The detector's result: contract scores, flags, candidates, ``info``."""
        return DetectorResult(
            score=contract_score(self.raw, self.flagged),
            flagged=self.flagged,
            info=self.info(params, **extra),
            candidate=self.candidate,
        )

    def info(self, params: dict, **extra: object) -> dict:
        return {
            "params": params,
            **extra,
            "n_flagged": int(self.flagged.sum()),
            "classes_flagged": [int(k) for k, v in self.per_class.items() if v["n_flagged"] > 0],
            "classes_skipped": self.skipped,
            "per_class": self.per_class,
        }


def check_group_test_params(detector) -> None:
    """ConfigError unless a detector's :func:`group_test_by_class` settings are in range."""
    pre = f"{detector.name}."
    if not (detector.separation_threshold > 0 and detector.z_threshold > 0):
        raise ConfigError(f"{pre}separation_threshold and z_threshold must be > 0")
    if detector.min_group_size < 2 or detector.min_class_size < 4:
        raise ConfigError(f"{pre}min_group_size must be >= 2 and min_class_size >= 4")
    if not 0 < detector.max_group_weight < 1:
        raise ConfigError(f"{pre}max_group_weight must be in (0, 1)")
    if detector.max_fit_rows < 100:
        raise ConfigError(f"{pre}max_fit_rows must be >= 100, got {detector.max_fit_rows}")


def group_test_by_class(
    labels: np.ndarray,
    n_classes: int,
    statistic: Callable[[np.ndarray], tuple[np.ndarray, dict]],
    *,
    eligible: np.ndarray | None = None,
    min_class_size: int,
    side: str,
    separation_threshold: float,
    z_threshold: float,
    min_group_size: int,
    max_group_weight: float,
    max_fit_rows: int,
    seed: int,
    singling_out_z: Callable[[GroupTest], float | None] | None = None,
    class_mad_floor: float = 0.1,
) -> ClassGroups:
    """Run :func:`separated_group` on one 1-D statistic a row, class by class.

    ``statistic(idx)`` returns the values of rows ``idx`` (one class) and extra figures for
    ``info``; the values are standardised before the test. A class for whose test
    ``singling_out_z`` returns a bar keeps its flags only when its separation is also that
    many robust deviations above the other classes' (:func:`class_evidence_z`); otherwise
    its rows stay just under the flag line (their order, and the candidate group, are
    kept). Rows outside ``eligible`` are not scored.
    """
    n = labels.shape[0]
    eligible = np.ones(n, dtype=bool) if eligible is None else eligible
    raw = np.zeros(n)
    flagged = np.zeros(n, dtype=bool)
    candidate = np.zeros(n, dtype=bool)
    per_class: dict[str, dict] = {}
    tests: dict[int, tuple[np.ndarray, GroupTest]] = {}
    skipped: list[int] = []
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        idx = np.flatnonzero((labels == c) & eligible)
        if idx.size == 0:
            continue
        if idx.size < min_class_size:
            skipped.append(c)
            continue
        values, extra = statistic(idx)
        sd = float(values.std())
        if sd == 0.0:
            per_class[str(c)] = {"n": int(idx.size), **extra, "rule": "constant", "n_flagged": 0}
            continue
        test = separated_group(
            (values - float(values.mean())) / sd,
            separation_threshold=separation_threshold,
            z_threshold=z_threshold,
            min_group_size=min_group_size,
            max_fit_rows=max_fit_rows,
            rng=rng,
            seed=seed,
            side=side,
            max_group_weight=max_group_weight,
        )
        tests[c] = (idx, test)
        candidate[idx] = test.candidate
        per_class[str(c)] = {"n": int(idx.size), **extra, **test.figures(scale=sd)}
        per_class[str(c)]["evidence"] = test.separation

    class_z = class_evidence_z(per_class, class_mad_floor)
    for c, (idx, test) in tests.items():
        strength = test.strength
        figures = per_class[str(c)]
        figures["class_z"] = class_z.get(c)
        bar = singling_out_z(test) if singling_out_z is not None else None
        if bar is not None and (class_z.get(c) or 0.0) < bar:
            strength = np.minimum(strength, 0.99)
            figures["rule"] = "not_singled_out"
        raw[idx] = ratio_score(strength)
        flagged[idx] = strength >= 1.0
        figures["n_flagged"] = int(flagged[idx].sum())
    return ClassGroups(raw, flagged, candidate, per_class, skipped)
