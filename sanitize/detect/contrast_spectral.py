"""Spectral signatures against the other classes: whitened by how they vary, a trigger's
direction is the top one of its class even where the poison is most of the class."""

from __future__ import annotations

import dataclasses

import numpy as np

from sanitize.detect.base import DetectorContext, DetectorResult, register
from sanitize.detect.spectral import SpectralSignature
from sanitize.detect.whitening import LeaveOneClassOutWhitening
from sanitize.errors import ConfigError


@register
class ContrastSpectral(SpectralSignature):
    """Flag rows that form a separated group along their class's top feature direction,
    after whitening the class by the other classes' within-class covariance.

    The spectral signature (Tran et al. 2018) takes the top singular direction of a class's
    centred features; the direction the class varies most along is often a natural one
    (pose, background), and the trigger's is found only when its poison is a large enough
    share of the class. SPECTRE (Hayase et al. 2021; :class:`~sanitize.detect.spectre.Spectre`)
    whitens first, but only within the class's own top principal directions, and scores a
    norm (QUE) rather than a side. Here each class is whitened in the full feature space by
    the pooled within-class covariance of the *other* classes, shrunk toward its mean
    eigenvalue (``shrinkage``; :class:`~sanitize.detect.whitening.LeaveOneClassOutWhitening`):
    the ways every class varies count for little, a trigger's feature (which no other class
    carries) for much, at any share of its class and even where it is not among the
    class's own top directions (a 0.5% BadNets poison is 25 rows of a class of 525).
    Every row gets its projection on the top right singular
    vector of its whitened class, and the class goes through the group test of
    :class:`~sanitize.detect.spectral.SpectralSignature` (a two-component mixture on the
    projections, a group when the components are far apart and the separation singles
    the class out), the group on either side and at most half the class. Where the poison
    is most of its class the flagged side is the clean rest, which the decision's class-size
    rules turn over in a class inflated far beyond the others (MNIST Trojan at 12%: 0.385
    -> 1.000 TPR). In a set whose class sizes already spread over a factor 10 (GTSRB) such
    a class is no outlier and its clean rest stays flagged (BadNets at 15% on 5,000 GTSRB
    rows: 299 clean rows; ``benchmarks/RESULTS.md``, session 10). For that reason its
    candidate groups are not passed on: they would join the consensus and the size rules'
    splits on the clean side.

    Parameters
    ----------
    shrinkage : float, default=0.1
        Weight of the mean eigenvalue in the whitening covariance. Rule: as
        :class:`~sanitize.detect.pixel_spectral.PixelSpectral`; 256 bootstrap features from
        4,500 rows give a full-rank covariance whose smallest eigenvalues are noise.
    separation_threshold, z_threshold, min_group_size, min_class_size, max_fit_rows, \
class_z_threshold, class_mad_floor
        As :class:`~sanitize.detect.spectral.SpectralSignature`, whose values and rules are
        the defaults here.

    Notes
    -----
    ``info["per_class"]`` adds, per class, ``top_ratio``: the squared ratio of the top two
    singular values of the whitened class.

    References
    ----------
    .. [1] B. Tran, J. Li, A. Madry, "Spectral Signatures in Backdoor Attacks",
       NeurIPS 2018, arXiv:1811.00636.
    .. [2] J. Hayase, W. Kong, R. Somani, S. Oh, "SPECTRE: Defending Against Backdoor
       Attacks Using Robust Statistics", ICML 2021, arXiv:2104.11315.
    """

    name = "contrast_spectral"
    shares_class_stats = False

    def __init__(
        self,
        *,
        shrinkage: float = 0.1,
        separation_threshold: float = 4.0,
        z_threshold: float = 6.0,
        min_group_size: int = 10,
        min_class_size: int = 20,
        max_fit_rows: int = 20000,
        class_z_threshold: float = 3.0,
        class_mad_floor: float = 0.1,
    ) -> None:
        self.shrinkage = shrinkage
        super().__init__(
            separation_threshold=separation_threshold,
            z_threshold=z_threshold,
            min_group_size=min_group_size,
            min_class_size=min_class_size,
            max_fit_rows=max_fit_rows,
            class_z_threshold=class_z_threshold,
            class_mad_floor=class_mad_floor,
        )

    def _check_params(self) -> None:
        if not 0 < self.shrinkage <= 1:
            raise ConfigError(f"{self.name}.shrinkage must be in (0, 1], got {self.shrinkage}")
        super()._check_params()

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        whitening = LeaveOneClassOutWhitening(
            np.asarray(features), labels, context.n_classes, self.shrinkage
        )

        def projection(idx: np.ndarray) -> tuple[np.ndarray, dict]:
            top = whitening.top_direction(idx)
            return top.projection, {"top_ratio": top.top_ratio}

        result = self._group_result(labels, context, projection, "either")
        # Its flags vote; its candidate groups do not join the consensus or the size rules'
        # splits: in a class the poison is most of, the group is the clean rest.
        return dataclasses.replace(result, candidate=None)
