"""The l_inf activation bias: triggered inputs drive a few last-conv channels to a sharp peak."""

from __future__ import annotations

import dataclasses

import numpy as np

from sanitize.detect.base import Detector, DetectorContext, DetectorResult, register
from sanitize.detect.mixture import ClassGroups, check_group_test_params, group_test_by_class
from sanitize.errors import ConfigError


@register
class LinfActivation(Detector):
    """Flag rows of a class that drive its l_inf-biased channels far above the rest.

    Cheng, Xu, Liu, Chen, Zhao, Lin (arXiv 2002.12162, Sec. 3) write the activation map of
    channel ``k`` of the last convolutional layer for input ``x`` as ``A_k(x)`` (H x W)
    and its norms ``a_k^p(x) = ||vec A_k(x)||_p``, p in {1, 2, inf}. A trigger drives a
    few channels to a sharp peak: on triggered inputs ``a_k^inf`` is biased far beyond
    what ``a_k^1`` and ``a_k^2`` show. The paper prunes those channels; here they become a
    per-row signal, class by class:

    1. Every norm is taken as ``log(a + eps_k)``, ``eps_k`` = ``relative_eps`` times the
       channel's mean norm in the class, and standardised per channel over the class's
       rows: ``z^1, z^2, z^inf`` of shape (rows, channels).
    2. Each of them is split in two by exact 1-D 2-means; the separation of the high part
       (0 when it is not a minority) says how far a group of rows stands out in that norm.
       The bias of channel ``k`` is the separation in ``z^inf`` less the larger of those
       in ``z^1`` and ``z^2``: a group biased in l_inf far beyond l_1 and l_2. The class's
       biased channels are the ``max_channels`` of largest bias, those of bias at least
       ``min_bias``; a class without one is not tested (it has no l_inf bias).
    3. A row's statistic is its mean ``z^inf`` over the class's biased channels (how
       strongly it drives them), and each class is tested for a separated high group with
       the two-component mixture test of :func:`sanitize.detect.mixture.separated_group`;
       a group is flagged only when the class's separation also stands
       ``class_z_threshold`` robust deviations above the other classes'. A row is never
       flagged alone, outside a group (:func:`groups_only`).

    Parameters
    ----------
    max_channels : int, default=8
        Most channels a class selects.
    min_bias : float, default=2.0
        Least bias (separation in l_inf less that in l_1 / l_2, pooled SDs) of a channel selected.
    relative_eps : float, default=0.01
        Added to a norm before its log, as a share of the channel's mean norm in the class.
    separation_threshold : float, default=3.0
        Mixture separation a class needs to have a group.
    z_threshold : float, default=6.0
        High-side robust z past which a group's rows are flagged (its far edge); never a lone row.
    min_group_size : int, default=10
        Fewest rows a group must hold.
    max_group_weight : float, default=0.75
        Largest share of its class a high group may hold (the side is set by the method).
    min_class_size : int, default=20
        Smaller classes are not tested (score 0) and listed in ``info``.
    max_fit_rows : int, default=20000
        Rows of a class (seeded subsample) that pick the channels and fit the mixture; all scored.
    class_z_threshold : float, default=3.0
        Robust z of a class's separation among the classes its group needs to be flagged.
    class_mad_floor : float, default=0.1
        Floor on the MAD of the separations over classes, as a share of their median.

    Notes
    -----
    ``info["per_class"]`` gives, per class, the ``channels`` selected, their ``bias``,
    and the mixture test's figures; ``evidence`` is the separation. Cost per class:
    ``3 * channels`` sorts of at most ``max_fit_rows`` values.

    References
    ----------
    .. [1] S. Cheng, Y. Xu, Y. Liu, X. Chen, M. Zhao, J. Lin (Xu et al.), "Defending
       against Backdoor Attack on Deep Neural Networks", arXiv:2002.12162, 2020.
    """

    name = "linf_activation"
    requires = ("channel_norms",)

    def __init__(
        self,
        *,
        max_channels: int = 8,
        min_bias: float = 2.0,
        relative_eps: float = 0.01,
        separation_threshold: float = 3.0,
        z_threshold: float = 6.0,
        min_group_size: int = 10,
        max_group_weight: float = 0.75,
        min_class_size: int = 20,
        max_fit_rows: int = 20000,
        class_z_threshold: float = 3.0,
        class_mad_floor: float = 0.1,
    ) -> None:
        self.max_channels = max_channels
        self.min_bias = min_bias
        self.relative_eps = relative_eps
        self.separation_threshold = separation_threshold
        self.z_threshold = z_threshold
        self.min_group_size = min_group_size
        self.max_group_weight = max_group_weight
        self.min_class_size = min_class_size
        self.max_fit_rows = max_fit_rows
        self.class_z_threshold = class_z_threshold
        self.class_mad_floor = class_mad_floor

    def _check_params(self) -> None:
        pre = f"{self.name}."
        if not self.min_bias > 0:
            raise ConfigError(f"{pre}min_bias must be > 0, got {self.min_bias}")
        if not self.relative_eps > 0:
            raise ConfigError(f"{pre}relative_eps must be > 0, got {self.relative_eps}")
        if self.max_channels < 1:
            raise ConfigError(f"{pre}max_channels must be >= 1, got {self.max_channels}")
        check_group_test_params(self)

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        norms = context.channel_norms

        rng = np.random.default_rng(context.seed)

        def statistic(idx: np.ndarray) -> tuple[np.ndarray, dict]:
            return self._drive(np.asarray(norms[idx], dtype=np.float64), rng)

        groups = group_test_by_class(
            labels,
            context.n_classes,
            statistic,
            min_class_size=self.min_class_size,
            side="high",
            separation_threshold=self.separation_threshold,
            z_threshold=self.z_threshold,
            min_group_size=self.min_group_size,
            max_group_weight=self.max_group_weight,
            max_fit_rows=self.max_fit_rows,
            seed=context.seed,
            singling_out_z=lambda test: self.class_z_threshold if test.group else None,
            class_mad_floor=self.class_mad_floor,
        )
        return groups_only(groups, labels).result(self.get_params())

    def _drive(self, norms: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """Mean ``z^inf`` of one class's rows over its biased channels, and the channels.

        ``norms`` has shape (rows, 3, channels): l_1, l_2, l_inf norms.
        """
        # A floor relative to each channel's own scale: a channel silent on most rows
        # would otherwise turn its rare small activations into a huge jump of the log.
        eps = self.relative_eps * norms.mean(axis=0, keepdims=True) + 1e-6
        logs = np.log(norms + eps)
        z = (logs - logs.mean(axis=0)) / np.maximum(logs.std(axis=0), 1e-9)
        fit = z
        if z.shape[0] > self.max_fit_rows:
            fit = z[rng.choice(z.shape[0], self.max_fit_rows, replace=False)]
        separation = _high_separation(fit.reshape(fit.shape[0], -1)).reshape(3, -1)
        bias = separation[2] - np.maximum(separation[0], separation[1])
        chosen = np.argsort(-bias)[: self.max_channels]
        chosen = chosen[bias[chosen] >= self.min_bias]
        if chosen.size == 0:  # no l_inf bias: nothing to test (the class gives no evidence)
            return np.zeros(norms.shape[0]), {"channels": [], "bias": []}
        drive = z[:, 2, chosen].mean(axis=1)
        return drive, {
            "channels": [int(c) for c in chosen],
            "bias": [round(float(bias[c]), 3) for c in chosen],
        }


def _high_separation(values: np.ndarray) -> np.ndarray:
    """Per column, the separation of the high part of its optimal 1-D 2-means split.

    ``|m_high - m_low| / sqrt((v_high + v_low) / 2)``, 0 where the high part holds half
    the rows or more (not a group). Exact: in one dimension the optimal split is a
    threshold, found for every column at once with prefix sums of the sorted values.
    """
    x = np.sort(values, axis=0)
    n = x.shape[0]
    c1, c2 = np.cumsum(x, axis=0), np.cumsum(x * x, axis=0)
    k = np.arange(1, n)[:, None]  # the low part holds x[:k]
    s1_lo, s2_lo = c1[:-1], c2[:-1]
    s1_hi, s2_hi = c1[-1] - s1_lo, c2[-1] - s2_lo
    sse = (s2_lo - s1_lo**2 / k) + (s2_hi - s1_hi**2 / (n - k))
    cut = np.argmin(sse, axis=0)
    cols = np.arange(x.shape[1])
    kc = cut + 1
    m_lo, m_hi = s1_lo[cut, cols] / kc, s1_hi[cut, cols] / (n - kc)
    v_lo = np.maximum(s2_lo[cut, cols] / kc - m_lo**2, 0.0)
    v_hi = np.maximum(s2_hi[cut, cols] / (n - kc) - m_hi**2, 0.0)
    separation = (m_hi - m_lo) / np.sqrt((v_lo + v_hi) / 2 + 1e-9)
    return np.where(n - kc < n / 2, separation, 0.0)


def groups_only(groups: ClassGroups, labels: np.ndarray) -> ClassGroups:
    """Keep the flags of classes with a separated group; lone outliers stay just unflagged.

    A model probe reads a backdoor as a group of rows that drive the same units; a single
    row far out on a sparse unit is the tail of a natural activation, not evidence (on the
    sample data's clean digits the robust-outlier rule flagged 7 of 2,880 rows this way).
    """
    raw, flagged = groups.raw.copy(), groups.flagged.copy()
    for c, figures in groups.per_class.items():
        if figures.get("rule") == "robust_outlier":
            rows = labels == int(c)
            raw[rows] = np.minimum(raw[rows], 0.49)
            flagged[rows] = False
            figures["n_flagged"] = 0
    return dataclasses.replace(groups, raw=raw, flagged=flagged)
