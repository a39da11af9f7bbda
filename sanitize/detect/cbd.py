"""CBD-style confounder weights: poisons are fit far better by f_B than by f_C."""

from __future__ import annotations

import numpy as np

from sanitize.detect.base import (
    Detector,
    DetectorContext,
    DetectorResult,
    contract_score,
    register,
    robust_z,
)
from sanitize.errors import ConfigError


@register
class CBD(Detector):
    """Flag rows that an early-stopped bootstrap model fits far better than the deconfounded one.

    CBD (Zhang et al. 2023, Sec. 3.3) trains a bootstrap model f_B for a few epochs, which
    captures the backdoor (the confounder) before the clean task, and a clean model f_C
    with per-sample weights ``w = l_B / (l_B + l_C)`` (``l`` = cross-entropy): a poison is
    fit almost perfectly by f_B and badly by f_C, so ``w -> 0``, while a clean row that
    both fit alike sits near 0.5. ``l_B`` here is :func:`confounder_loss`, the loss of the
    early-stopped f_B read off the bootstrap run's per-epoch losses. With the log-ratio
    ``r = log((l_C + eps) / (l_B + eps))`` (so that ``w = 1 / (1 + exp(r))``), this
    detector flags rows whose ``r`` exceeds their class's reference ``r`` (a low quantile)
    by a robust outlier margin (over all rows) and whose ``w`` is below an absolute
    ceiling. The training weight it returns is ``w`` divided by its class's reference
    ``w``, at most 1: a row weighs less only where f_C fits it worse than the clean bulk
    of its class, relative to f_B, so the weights do not move mass between classes (a
    class f_B learns fast as a whole is an easy class, not a backdoor). The decision
    clips the weights and normalises them over the kept rows (``decision.weight_clip``).

    Its flags vote in the decision only in classes where it flags a group
    (``votes = "groups"``, ``decision.min_class_rows``): over 19 kept benchmark cases
    its flags beyond the other detectors' were 40 poisons, 39 of them one group (MNIST,
    BadNets 1%), and 22 clean rows scattered over classes, 1 to 5 a class
    (``benchmarks/RESULTS.md``, session 6).

    Parameters
    ----------
    z_threshold : float, default=3.5
        Robust z (median / MAD, all rows) of ``r`` less its class's reference ``r`` to flag a row.
    class_quantile : float, default=0.25
        Quantile of a class's ``r`` taken as its reference (``1 - class_quantile`` of its ``w``).
    weight_ceiling : float, default=0.2
        Largest ``w`` a flagged row may have.
    mad_floor : float, default=0.1
        Floor on the MAD of ``r`` (natural-log units).
    loss_eps : float, default=1e-3
        Added to both losses, nats.

    Notes
    -----
    With ``m`` the smaller of the two margins (excess ``r`` over its cut, ``r`` over the
    ceiling's cut; both in ``info``), the score is ``1 / (1 + exp(-m))``: ``>= 0.5``
    exactly where flagged.

    References
    ----------
    .. [1] Z. Zhang, Q. Liu, Z. Wang, Z. Lu, Q. Hu, "Backdoor Defense via Deconfounded
       Representation Learning", CVPR 2023, arXiv:2303.06818.
    """

    name = "cbd"
    requires = ("loss_bootstrap", "loss_clean")
    votes = "groups"

    def __init__(
        self,
        *,
        z_threshold: float = 3.5,
        weight_ceiling: float = 0.2,
        class_quantile: float = 0.25,
        mad_floor: float = 0.1,
        loss_eps: float = 1e-3,
    ) -> None:
        self.z_threshold = z_threshold
        self.weight_ceiling = weight_ceiling
        self.class_quantile = class_quantile
        self.mad_floor = mad_floor
        self.loss_eps = loss_eps

    def _check_params(self) -> None:
        if not self.z_threshold > 0:
            raise ConfigError(f"cbd.z_threshold must be > 0, got {self.z_threshold}")
        if not 0 < self.weight_ceiling < 0.5:
            raise ConfigError(f"cbd.weight_ceiling must be in (0, 0.5), got {self.weight_ceiling}")
        if not 0 < self.class_quantile < 1:
            raise ConfigError(f"cbd.class_quantile must be in (0, 1), got {self.class_quantile}")
        if not self.mad_floor > 0:
            raise ConfigError(f"cbd.mad_floor must be > 0, got {self.mad_floor}")
        if not self.loss_eps > 0:
            raise ConfigError(f"cbd.loss_eps must be > 0, got {self.loss_eps}")

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        l_b = confounder_loss(context.loss_history, context.loss_bootstrap) + self.loss_eps
        l_c = np.asarray(context.loss_clean, dtype=np.float64) + self.loss_eps
        r = np.log(l_c) - np.log(l_b)
        weight = l_b / (l_b + l_c)
        # A class f_B learns fast as a whole (an easy class, not a backdoor) has a high r
        # on every row; poisons stand out from their own class, so r is read from the
        # class's reference.
        centre = _class_quantiles(r, labels, context.n_classes, self.class_quantile)
        excess = r - centre[labels]
        _, med, scale = robust_z(excess, self.mad_floor)
        cut_z = med + self.z_threshold * scale
        cut_w = float(np.log((1.0 - self.weight_ceiling) / self.weight_ceiling))
        margin = np.minimum(excess - cut_z, r - cut_w)
        flagged = margin >= 0
        score = 0.5 * (1.0 + np.tanh(0.5 * margin))  # logistic, overflow-free
        # The training weight: w relative to its class's reference w, at most 1. Raw w
        # would also move weight between classes (the easy class above would hardly be
        # drawn).
        reference_weight = 1.0 / (1.0 + np.exp(centre))  # w at the class's reference r
        relative = weight / reference_weight[labels]
        info = {
            "params": self.get_params(),
            "reference": _reference_name(context.loss_history),
            "median_weight": float(np.median(weight)),
            "class_reference_log_ratio": {str(c): float(v) for c, v in enumerate(centre)},
            "median_excess_log_ratio": med,
            "log_ratio_scale": scale,
            "threshold_excess_log_ratio": float(cut_z),
            "threshold_log_ratio": cut_w,
            "threshold_weight": self.weight_ceiling,
            "n_flagged": int(flagged.sum()),
            "per_class": _per_class(labels, flagged, weight, context.n_classes),
        }
        return DetectorResult(
            score=contract_score(score, flagged),
            flagged=flagged,
            info=info,
            weight=np.minimum(relative, 1.0).astype(np.float32),
        )


def confounder_loss(
    loss_history: np.ndarray | None, loss_bootstrap: np.ndarray, *, floor: float = 1e-4
) -> np.ndarray:
    """Per-row loss ``l_B`` of CBD's early-stopped bootstrap model f_B.

    CBD stops f_B after a few epochs (5 of 100 in the authors' code), when it has learned
    the backdoor, a shortcut, but not yet the clean task: a poison's loss is then orders
    of magnitude below a clean row's. The bootstrap model here trains to a fit instead
    (its features serve the other detectors), so its final losses are small for every row
    and the ratio to f_C's loss carries noise rather than the confounder; f_C trained
    against them fits some classes and not others (per-class losses 0.02-12 on 5,000
    CIFAR-10 rows). The early-stopped loss is read off the run's per-epoch training losses
    instead: the geometric mean over the recorded epochs, ``exp(mean_e log(loss_e +
    floor))``, the area under the row's log-loss curve that early-loss detection tests
    too (Li et al. 2021). It weighs every stopping point of f_B alike, so no stopping
    epoch has to be chosen: a row learned in the first epochs stays orders of magnitude
    below one learned at the end. Measured on 5,000 CIFAR-10 rows with 5% poison (BadNets,
    blend, SIG, filter): AUROC of ``r`` 0.955-0.998, against 0.12-0.87 from the final loss.

    Rows without a recorded epoch (not in the training sample, or a bootstrap model loaded
    from a checkpoint) take their final loss ``loss_bootstrap``.

    Parameters
    ----------
    loss_history : ndarray of shape (n_rows, n_epochs) or None
        f_B's training loss of every row in every epoch, NaN where not recorded.
    loss_bootstrap : ndarray of shape (n_rows,)
        f_B's final (eval-mode) loss of every row.
    floor : float, default=1e-4
        Added before the log, nats: losses below it are all "fit".
    """
    final = np.asarray(loss_bootstrap, dtype=np.float64)
    if loss_history is None or np.asarray(loss_history).shape[1] == 0:
        return final.copy()
    log_loss = np.log(np.asarray(loss_history, dtype=np.float64) + floor)
    recorded = np.isfinite(log_loss).any(axis=1)
    out = final.copy()
    out[recorded] = np.exp(np.nanmean(log_loss[recorded], axis=1)) - floor
    return np.maximum(out, 0.0)


def _class_quantiles(
    values: np.ndarray, labels: np.ndarray, n_classes: int, q: float
) -> np.ndarray:
    """The ``q``-quantile of ``values`` over each class's rows (0 for a class without rows)."""
    out = np.zeros(n_classes)
    for c in np.unique(labels):
        out[c] = np.quantile(values[labels == c], q)
    return out


def _reference_name(loss_history: np.ndarray | None) -> str:
    if loss_history is None or np.asarray(loss_history).shape[1] == 0:
        return "final bootstrap loss"
    return f"geometric mean of the bootstrap loss over {np.asarray(loss_history).shape[1]} epochs"


def _per_class(
    labels: np.ndarray, flagged: np.ndarray, weight: np.ndarray, n_classes: int
) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for c in range(n_classes):
        mask = labels == c
        if mask.any():
            out[str(c)] = {
                "n": int(mask.sum()),
                "n_flagged": int(flagged[mask].sum()),
                "median_weight": float(np.median(weight[mask])),
            }
    return out
