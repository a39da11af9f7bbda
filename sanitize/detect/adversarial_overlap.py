"""Adversarial-neuron overlap: PGD examples of a backdoored model drive the backdoor's neurons."""

from __future__ import annotations

import numpy as np

from sanitize.detect.base import MAD_TO_SD, Detector, DetectorContext, DetectorResult, register
from sanitize.detect.linf_activation import groups_only
from sanitize.detect.mixture import check_group_test_params, group_test_by_class
from sanitize.errors import ConfigError


@register
class AdversarialOverlap(Detector):
    """Flag rows of a class that drive the neurons adversarial examples use to reach it.

    Mu, Niu et al. (Progressive Backdoor Erasing, CVPR 2023, arXiv:2202.06312, Sec. 3)
    observe that on a backdoored model untargeted adversarial examples activate the same
    neurons as triggered samples, and land in the target class far more often than
    chance. The pipeline runs untargeted PGD (L_inf, ``eps`` = 6/255, step ``eps / 5``,
    ``steps`` steps) on a seeded sample of at most ``n_probe`` rows
    (:func:`sanitize.model.probe.adversarial_probe`); this detector then, class by class:

    1. takes the adversarial examples that left another class for class ``t`` (or all
       examples that changed class, when fewer than ``min_landings`` reached ``t``) and
       the mean shift they made in each penultimate neuron, ``u_k = mean(f_adv,k - f_k) /
       s_k`` (``s_k`` the neuron's robust spread over all rows);
    2. keeps the ``n_neurons`` neurons of largest positive shift, the neurons the
       adversarial examples own;
    3. scores each row of ``t`` by its activation of those neurons, ``sum_k u_k z_ik /
       sum_k u_k`` with ``z`` the row's z within ``t``, and tests the class for a
       separated high group (:func:`sanitize.detect.mixture.separated_group`), flagged
       only when the class's separation also stands ``class_z_threshold`` robust
       deviations above the other classes'; never a lone outlier
       (:func:`sanitize.detect.linf_activation.groups_only`).

    PBE's other score, the agreement of the model with a briefly adversarially fine-tuned
    copy, needs a second pass over every row and is not computed.

    The probe's cost is ``steps`` forward and backward passes and one forward pass over its
    ``n_probe`` rows.

    Parameters
    ----------
    n_probe : int, default=1000
        Most rows the PGD probe perturbs (a seeded uniform sample).
    eps : float, default=6/255
        L_inf radius of the perturbation, in pixel units of [0, 1].
    steps : int, default=5
        PGD steps, each of ``eps / 5``.
    n_neurons : int, default=16
        Neurons of largest adversarial shift a class keeps.
    min_landings : int, default=10
        Fewest adversarial examples reaching a class for it to use its own shift.
    separation_threshold : float, default=4.0
        Mixture separation a class needs to have a group (as ``spectral``).
    z_threshold : float, default=6.0
        High-side robust z past which a group's rows are flagged (its far edge); never a lone row.
    min_group_size : int, default=10
        Fewest rows a group must hold.
    max_group_weight : float, default=0.75
        Largest share of its class a high group may hold.
    min_class_size : int, default=20
        Smaller classes are not tested (score 0) and listed in ``info``.
    max_fit_rows : int, default=20000
        Rows of a class (seeded subsample) the mixture is fitted on.
    class_z_threshold : float, default=3.0
        Robust z of a class's separation among the classes its group needs to be flagged.
    class_mad_floor : float, default=0.1
        Floor on the MAD of the separations over classes, as a share of their median.

    References
    ----------
    .. [1] R. Mu, W. Niu, et al., "Progressive Backdoor Erasing via connecting Backdoor and
       Adversarial Attacks", CVPR 2023, arXiv:2202.06312.
    """

    name = "adversarial_overlap"
    requires = ("adversarial_probe",)

    def __init__(
        self,
        *,
        n_probe: int = 1000,
        eps: float = 6 / 255,
        steps: int = 5,
        n_neurons: int = 16,
        min_landings: int = 10,
        separation_threshold: float = 4.0,
        z_threshold: float = 6.0,
        min_group_size: int = 10,
        max_group_weight: float = 0.75,
        min_class_size: int = 20,
        max_fit_rows: int = 20000,
        class_z_threshold: float = 3.0,
        class_mad_floor: float = 0.1,
    ) -> None:
        self.n_probe = n_probe
        self.eps = eps
        self.steps = steps
        self.n_neurons = n_neurons
        self.min_landings = min_landings
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
        if self.n_probe < 10:
            raise ConfigError(f"{pre}n_probe must be >= 10, got {self.n_probe}")
        if not 0 < self.eps <= 1:
            raise ConfigError(f"{pre}eps must be in (0, 1], got {self.eps}")
        if self.steps < 1:
            raise ConfigError(f"{pre}steps must be >= 1, got {self.steps}")
        if self.n_neurons < 1 or self.min_landings < 1:
            raise ConfigError(f"{pre}n_neurons and min_landings must be >= 1")
        check_group_test_params(self)

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        probe = context.adversarial_probe
        rows = np.asarray(probe.rows, dtype=np.int64)
        clean = np.asarray(features[rows], dtype=np.float64)
        spread = _robust_spread(clean)  # the sample's rows: bounded whatever the rows
        shift = (np.asarray(probe.features, dtype=np.float64) - clean) / spread
        predicted = np.asarray(probe.predicted, dtype=np.int64)
        moved = predicted != labels[rows]
        landings = np.bincount(predicted[moved], minlength=context.n_classes)
        overall = shift[moved].mean(axis=0) if moved.any() else np.zeros(features.shape[1])

        def statistic(idx: np.ndarray) -> tuple[np.ndarray, dict]:
            c = int(labels[idx[0]])
            reached = moved & (predicted == c)
            own = int(reached.sum()) >= self.min_landings
            u = shift[reached].mean(axis=0) if own else overall
            neurons = np.argsort(-u)[: self.n_neurons]
            neurons = neurons[u[neurons] > 0]
            figures = {"landings": int(landings[c]), "own_shift": own}
            if neurons.size == 0:
                return np.zeros(idx.size), {**figures, "neurons": []}
            x = np.asarray(features[idx][:, neurons], dtype=np.float64)
            # Mean and SD, not median and MAD: a neuron silent on most of the class has
            # MAD 0, and the group test standardises the weighted sum again anyway.
            z = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), spread[neurons])
            w = u[neurons]
            return z @ w / w.sum(), {**figures, "neurons": [int(k) for k in neurons]}

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
        return groups_only(groups, labels).result(
            self.get_params(),
            probe={**probe.info, "n_moved": int(moved.sum())},
            landings=[int(v) for v in landings],
        )


def _robust_spread(features: np.ndarray) -> np.ndarray:
    """Per-neuron 1.4826 * MAD over the rows, floored at 1e-3 of the largest and at 1e-6."""
    med = np.median(features, axis=0)
    spread = MAD_TO_SD * np.median(np.abs(features - med), axis=0)
    floor = max(1e-3 * float(spread.max(initial=0.0)), 1e-6)
    return np.maximum(spread, floor)
