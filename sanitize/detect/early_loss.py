"""Early-training loss (ABL): poisons are learned first, so their loss is low early on."""

from __future__ import annotations

import numpy as np

from sanitize.detect.base import (
    Detector,
    DetectorContext,
    DetectorResult,
    register,
)
from sanitize.detect.mixture import GroupTest, group_test_by_class
from sanitize.errors import ConfigError


@register
class EarlyLoss(Detector):
    """Flag rows of a class that the bootstrap model learned far faster than the rest.

    Anti-Backdoor Learning (Li et al. 2021, Sec. 3) observes that a backdoor is a shortcut:
    poisoned samples reach a low loss within the first epochs, long before clean samples
    of their (target) class. ABL isolates the lowest-loss share at a fixed rate; the rate
    is unknown here, so each class is summarised per row by the mean over the recorded
    epochs of ``log(loss + loss_eps)`` (the area under the row's log-loss curve, lower =
    learned earlier) and tested for a separated low group with the two-component mixture
    test of :func:`sanitize.detect.mixture.separated_group`.

    Parameters
    ----------
    separation_threshold : float, default=3.0
        Mixture separation a class needs to have a group.
    z_threshold : float, default=6.0
        Robust z toward low loss at which a single row is flagged (also the far edge of a group).
    min_group_size : int, default=10
        Fewest rows a low group must hold.
    max_group_weight : float, default=0.75
        Largest share of its class a low group may hold.
    min_class_size : int, default=20
        Smaller classes are not tested (score 0) and listed in ``info``.
    loss_eps : float, default=1e-4
        Added before the log, nats.
    max_fit_rows : int, default=20000
        Rows of a class (seeded subsample) the mixture is fitted on.
    majority_z : float, default=4.0
        Robust z of its class's separation to flag a low group holding over half its class.
    minority_z : float, default=3.0
        The same bar for a low group of at most half its class.
    majority_mad_floor : float, default=0.1
        Floor on the MAD of the separations over classes, as a share of their median (both bars).

    References
    ----------
    .. [1] Y. Li, X. Lyu, N. Koren, L. Lyu, B. Li, X. Ma, "Anti-Backdoor Learning:
       Training Clean Models on Poisoned Data", NeurIPS 2021, arXiv:2110.11571.
    """

    name = "early_loss"
    oriented = True
    requires = ("loss_history",)

    def __init__(
        self,
        *,
        separation_threshold: float = 3.0,
        z_threshold: float = 6.0,
        min_group_size: int = 10,
        max_group_weight: float = 0.75,
        min_class_size: int = 20,
        loss_eps: float = 1e-4,
        max_fit_rows: int = 20000,
        majority_z: float = 4.0,
        minority_z: float = 3.0,
        majority_mad_floor: float = 0.1,
    ) -> None:
        self.separation_threshold = separation_threshold
        self.z_threshold = z_threshold
        self.min_group_size = min_group_size
        self.max_group_weight = max_group_weight
        self.min_class_size = min_class_size
        self.loss_eps = loss_eps
        self.max_fit_rows = max_fit_rows
        self.majority_z = majority_z
        self.minority_z = minority_z
        self.majority_mad_floor = majority_mad_floor

    def _check_params(self) -> None:
        pre = "early_loss."
        if not self.separation_threshold > 0:
            raise ConfigError(f"{pre}separation_threshold must be > 0")
        if not self.z_threshold > 0:
            raise ConfigError(f"{pre}z_threshold must be > 0")
        if self.min_group_size < 1 or self.min_class_size < 4:
            raise ConfigError(f"{pre}min_group_size must be >= 1 and min_class_size >= 4")
        if not 0 < self.max_group_weight < 1:
            raise ConfigError(f"{pre}max_group_weight must be in (0, 1)")
        if not self.loss_eps > 0:
            raise ConfigError(f"{pre}loss_eps must be > 0")

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        history = np.asarray(context.loss_history, dtype=np.float64)
        # Rows left out of training (a stratified sample) have NaN history: not scored.
        trained = np.isfinite(history).any(axis=1)
        area = np.full(labels.size, np.nan)
        area[trained] = np.nanmean(np.log(history[trained] + self.loss_eps), axis=1)
        # A low group needs its class singled out among the classes as well: classes of
        # near-duplicate images (GTSRB's sign tracks) fit many of their rows early.
        groups = group_test_by_class(
            labels,
            context.n_classes,
            lambda idx: (area[idx], {"mean_log_loss": float(area[idx].mean())}),
            eligible=trained,
            min_class_size=self.min_class_size,
            side="low",
            separation_threshold=self.separation_threshold,
            z_threshold=self.z_threshold,
            min_group_size=self.min_group_size,
            max_group_weight=self.max_group_weight,
            max_fit_rows=self.max_fit_rows,
            seed=context.seed,
            singling_out_z=self._singling_out_z,
            class_mad_floor=self.majority_mad_floor,
        )
        return groups.result(self.get_params(), epochs=int(history.shape[1]))

    def _singling_out_z(self, test: GroupTest) -> float | None:
        """The class evidence z a low group needs: ``majority_z`` for one that holds more
        than half its class, ``minority_z`` for a smaller one; None without a group."""
        if not test.group:
            return None
        return self.majority_z if test.details["group_weight"] > 0.5 else self.minority_z
