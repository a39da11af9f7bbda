"""Shared direction: a trigger is one feature direction in every class it was put in."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import FastICA
from sklearn.exceptions import ConvergenceWarning

from sanitize.detect.base import (
    Detector,
    DetectorContext,
    DetectorResult,
    contract_score,
    ratio_score,
    register,
)
from sanitize.detect.mixture import component_crossing, fit_two_components
from sanitize.errors import ConfigError


@register
class SharedDirection(Detector):
    """Flag rows that form a separated group along an independent component of the features
    with each class's centre removed.

    A trigger adds the same feature to every image it is stamped on, whatever the image's
    class; with each class's median removed, what the classes have in common is left: the
    natural variation of images (pose, brightness) and the trigger. Natural variation is
    spread over many directions and is close to Gaussian along each; a trigger carried by a
    minority of the rows is one direction along which those rows form a second mode. The
    within-class residuals are whitened on their top principal directions and rotated to
    independent components (FastICA, which seeks the least Gaussian directions: Hyvarinen &
    Oja 2000); on each component's heavy side a two-component mixture is fitted, and where
    the smaller component lies far from the bulk (in the bulk's standard deviations) its
    rows, those past the point where it becomes the more likely component, are flagged.

    Unlike the per-class detectors, this test needs no class to stand out among the
    classes: a trigger put into every class (all-to-all labels) or into several is found
    as a trigger put into one.

    Parameters
    ----------
    n_components : int, default=32
        Principal directions of the within-class residuals kept and rotated, in [2, 256].
    separation_threshold : float, default=4.0
        Least distance of a group's mean from the bulk's, in the bulk's SDs (heavy-side mixture).
    min_group_size : int, default=10
        Fewest rows a group must hold.
    max_group_weight : float, default=0.25
        Largest share of all rows a group may hold, in (0, 0.5].
    max_fit_rows : int, default=20000
        Rows (seeded subsample) the principal directions and components are fitted on; all scored.

    Notes
    -----
    Its flags vote only in the classes where it flags a group (``votes = "groups"``,
    ``decision.min_class_rows``): a trigger's rows are a group in every class they
    are in, and a stray row of a natural component is not. ``score`` is ``s / (1 + s)``
    of a row's largest group strength (1 at the cut) over the components with a group, 0
    where no component has one. ``info["components"]`` lists each component's
    separation, group weight and rows flagged.
    """

    name = "shared_direction"
    votes = "groups"

    def __init__(
        self,
        *,
        n_components: int = 32,
        separation_threshold: float = 4.0,
        min_group_size: int = 10,
        max_group_weight: float = 0.25,
        max_fit_rows: int = 20000,
    ) -> None:
        self.n_components = n_components
        self.separation_threshold = separation_threshold
        self.min_group_size = min_group_size
        self.max_group_weight = max_group_weight
        self.max_fit_rows = max_fit_rows

    def _check_params(self) -> None:
        who = self.name
        if not 2 <= self.n_components <= 256:
            raise ConfigError(f"{who}.n_components must be in [2, 256], got {self.n_components}")
        if not self.separation_threshold > 0:
            raise ConfigError(
                f"{who}.separation_threshold must be > 0, got {self.separation_threshold}"
            )
        if self.min_group_size < 2:
            raise ConfigError(f"{who}.min_group_size must be >= 2, got {self.min_group_size}")
        if not 0 < self.max_group_weight <= 0.5:
            raise ConfigError(
                f"{who}.max_group_weight must be in (0, 0.5], got {self.max_group_weight}"
            )
        if self.max_fit_rows < 100:
            raise ConfigError(f"{who}.max_fit_rows must be >= 100, got {self.max_fit_rows}")

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        n_rows = labels.shape[0]
        components = independent_components(
            within_class_residuals(features, labels),
            self.n_components,
            self.max_fit_rows,
            context.seed,
        )
        strength = np.zeros(n_rows)
        figures = []
        for j in range(components.shape[1]):
            group = self._tail_group(components[:, j], context.seed)
            if group is None:
                continue
            component_strength, separation, weight = group
            flagged_here = component_strength >= 1.0
            strength = np.maximum(strength, component_strength)
            figures.append(
                {
                    "component": j,
                    "separation": separation,
                    "group_weight": weight,
                    "n_flagged": int(flagged_here.sum()),
                    "classes": int(np.unique(labels[flagged_here]).size),
                }
            )
        flagged = strength >= 1.0
        info = {
            "params": self.get_params(),
            "n_components": int(components.shape[1]),
            "components": figures,
            "n_flagged": int(flagged.sum()),
        }
        return DetectorResult(contract_score(ratio_score(strength), flagged), flagged, info)

    def _tail_group(self, values: np.ndarray, seed: int) -> tuple[np.ndarray, float, float] | None:
        """A group on the heavy side of one component: each row's strength (1 at the cut),
        the group's separation from the bulk and its weight; None without such a group."""
        values = values * (1.0 if np.mean(values**3) >= 0 else -1.0)
        fit = values
        if fit.size > self.max_fit_rows:
            fit = np.random.default_rng(seed).choice(values, self.max_fit_rows, replace=False)
        means, var, weights = fit_two_components(fit, seed)
        hi, lo = int(np.argmax(means)), int(np.argmin(means))
        separation = float((means[hi] - means[lo]) / np.sqrt(var[lo]))
        weight = float(weights[hi])
        cut = component_crossing(means[lo], var[lo], weights[lo], means[hi], var[hi], weights[hi])
        n_group = int(np.sum(values >= cut))
        if (
            separation < self.separation_threshold
            or weight > self.max_group_weight
            or n_group < self.min_group_size
            or not cut > means[lo]
        ):
            return None
        return (values - means[lo]) / (cut - means[lo]), separation, weight


def within_class_residuals(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every row minus its class's per-feature median (float64)."""
    residuals = np.asarray(features, dtype=np.float64).copy()
    for c in np.unique(labels):
        rows = labels == c
        residuals[rows] -= np.median(residuals[rows], axis=0)
    return residuals


def independent_components(
    residuals: np.ndarray, n_components: int, max_fit_rows: int, seed: int
) -> np.ndarray:
    """Every row's coordinates on the independent components of the residuals' top
    principal directions, each standardised; shape (n_rows, k), k <= ``n_components``."""
    rng = np.random.default_rng(seed)
    fit = np.arange(residuals.shape[0])
    if fit.size > max_fit_rows:
        fit = np.sort(rng.choice(fit.size, max_fit_rows, replace=False))
    mean = residuals[fit].mean(axis=0)
    _, singular, vt = np.linalg.svd(residuals[fit] - mean, full_matrices=False)
    k = int(min(n_components, np.sum(singular > singular[0] * 1e-6)))
    if k == 0 or singular[0] == 0:  # every residual the same: nothing to rotate
        return np.zeros((residuals.shape[0], 0))
    scale = singular[:k] / np.sqrt(fit.size)
    whitened = (residuals - mean) @ vt[:k].T / scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ica = FastICA(whiten=False, random_state=seed, max_iter=400)
        ica.fit(whitened[fit])
    sources = ica.transform(whitened)
    sources -= sources[fit].mean(axis=0)
    return sources / np.maximum(sources[fit].std(axis=0), 1e-12)
