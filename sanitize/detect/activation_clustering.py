"""Activation clustering: a poisoned class splits in two, and its split stands out."""

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
    robust_z,
)
from sanitize.detect.class_stats import ClassStatistics, class_statistics
from sanitize.detect.kmeans import kmeans
from sanitize.errors import ConfigError

_REDUCTIONS = ("pca", "ica")
# Each parameter's allowed values: (name, as the error states them, test).
_PARAM_CHECKS = (
    ("n_components", ">= 1", lambda v: v >= 1),
    ("reduction", "'pca' or 'ica'", lambda v: v in _REDUCTIONS),
    ("min_class_size", ">= 4", lambda v: v >= 4),
    ("min_cluster_size", ">= 1", lambda v: v >= 1),
    ("max_relative_size", "in (0, 0.5]", lambda v: 0 < v <= 0.5),
    ("silhouette_floor", "in (0, 1)", lambda v: 0 < v < 1),
    ("z_threshold", "> 0", lambda v: v > 0),
    ("mad_floor", "> 0", lambda v: v > 0),
    ("silhouette_rows", ">= 50", lambda v: v >= 50),
    ("min_classes", ">= 3", lambda v: v >= 3),
)


@register
class ActivationClustering(Detector):
    """Flag the smaller 2-means cluster of a class whose split is unlike the other classes'.

    Per class (Chen et al. 2018, Sec. 3): centre the features, reduce them to
    ``n_components`` dimensions, and split them with 2-means. The split is then judged with
    the paper's cluster tests (Sec. 3.2):

    - relative size: the smaller cluster must hold at most ``max_relative_size`` of the
      class, and at least ``min_cluster_size`` rows;
    - silhouette score: how well two clusters fit the class. Every class splits somehow,
      so the score is compared across classes: a class is a candidate only when its
      silhouette is a robust outlier (median / MAD z >= ``z_threshold``) and above
      ``silhouette_floor``;
    - exclusionary reclassification: the cluster is classified by a nearest-centroid model
      built without it (the centroids of every other class and of the rest of its own
      class, in the class's standardised feature space). The share predicted as its own
      label is recorded in ``info``; a low share is evidence of poison (a natural sub-mode
      of the class is still nearest to its class).

    Because the silhouette test is relative to the median class, at most a minority of
    classes can ever be flagged, and a clean dataset, whose classes split alike, flags
    none; the trap of flagging "the smaller cluster of every class" cannot happen.

    Parameters
    ----------
    standardize : bool, default=False
        Divide each feature by its (floored) standard deviation before the reduction.
    n_components : int, default=10
        Dimensions kept before clustering.
    reduction : {"pca", "ica"}, default="pca"
        PCA, or FastICA on the PCA output as the paper does (Sec. 3.1).
    min_class_size : int, default=20
        Classes with fewer rows are not clustered (score 0) and are listed in ``info``.
    min_cluster_size : int, default=10
        Fewest rows the smaller cluster must hold to be flagged.
    max_relative_size : float, default=0.5
        Largest share of the class the smaller cluster may hold.
    silhouette_floor : float, default=0.15
        Smallest silhouette that can mean a real split.
    z_threshold : float, default=3.0
        Robust z of a class's silhouette, against all scored classes, to be a candidate.
    mad_floor : float, default=0.02
        Floor on the MAD of the silhouettes across classes.
    silhouette_rows : int, default=2000
        Rows of a class (seeded subsample) the O(n^2) silhouette is computed on.
    min_classes : int, default=3
        Fewest scored classes to compare; with fewer, nothing is flagged and ``info`` says why.

    Notes
    -----
    Row score: with ``g`` the class strength ``min(z / z_threshold, silhouette /
    silhouette_floor, max_relative_size / relative_size, cluster_rows / min_cluster_size)``
    (>= 1 exactly when the class is flagged) and ``h = d_large / d_small`` the ratio of a
    row's distances to the two centroids (>= 1 exactly in the smaller cluster),
    ``score = s / (1 + s)`` with ``s = min(g, h)``: monotone in both, ``>= 0.5`` exactly
    where flagged.

    References
    ----------
    .. [1] B. Chen, W. Carvalho, N. Baracaldo, H. Ludwig, B. Edwards, T. Lee, I. Molloy,
       B. Srivastava, "Detecting Backdoor Attacks on Deep Neural Networks by Activation
       Clustering", AAAI SafeAI workshop 2019, arXiv:1811.03728.
    """

    name = "activation_clustering"
    shares_class_stats = True

    def __init__(
        self,
        *,
        standardize: bool = False,
        n_components: int = 10,
        reduction: str = "pca",
        min_class_size: int = 20,
        min_cluster_size: int = 10,
        max_relative_size: float = 0.5,
        silhouette_floor: float = 0.15,
        z_threshold: float = 3.0,
        mad_floor: float = 0.02,
        silhouette_rows: int = 2000,
        min_classes: int = 3,
    ) -> None:
        self.standardize = standardize
        self.n_components = n_components
        self.reduction = reduction
        self.min_class_size = min_class_size
        self.min_cluster_size = min_cluster_size
        self.max_relative_size = max_relative_size
        self.silhouette_floor = silhouette_floor
        self.z_threshold = z_threshold
        self.mad_floor = mad_floor
        self.silhouette_rows = silhouette_rows
        self.min_classes = min_classes

    def _check_params(self) -> None:
        for name, wanted, ok in _PARAM_CHECKS:
            value = getattr(self, name)
            if not ok(value):
                raise ConfigError(f"activation_clustering.{name} must be {wanted}, got {value!r}")

    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        n = features.shape[0]
        rng = np.random.default_rng(context.seed)
        stats = class_statistics(
            features, labels, context.n_classes, self.n_components, context.class_stats
        )
        present = np.flatnonzero(stats.count)
        members = [np.flatnonzero(labels == c) for c in present]
        means = stats.mean[present]

        splits: dict[int, _Split] = {}
        skipped: list[int] = []
        for c, idx in zip(present, members, strict=True):
            if idx.size < self.min_class_size:
                skipped.append(int(c))
                continue
            splits[int(c)] = self._split_class(
                np.asarray(features[idx]), idx, int(c), present, means, stats, rng, context.seed
            )

        score = np.zeros(n, dtype=np.float64)
        flagged = np.zeros(n, dtype=bool)
        candidate = np.zeros(n, dtype=bool)
        per_class: dict[str, dict] = {}
        note = None
        if len(splits) < self.min_classes:
            note = (
                f"{len(splits)} class(es) large enough to cluster, {self.min_classes} needed "
                "to compare splits across classes; nothing flagged"
            )
        else:
            sil = np.array([s.silhouette for s in splits.values()])
            z, _, _ = robust_z(sil, self.mad_floor)
            for zc, s in zip(z, splits.values(), strict=True):
                s.z = float(zc)
        for c, s in splits.items():
            g = 0.0
            cluster_rows = s.relative_size * s.idx.size
            if s.z is not None and s.relative_size > 0:
                g = min(
                    s.z / self.z_threshold,
                    s.silhouette / self.silhouette_floor,
                    self.max_relative_size / s.relative_size,
                    cluster_rows / self.min_cluster_size,
                )
            strength = np.minimum(g, s.membership)
            score[s.idx] = ratio_score(strength)
            flagged[s.idx] = strength >= 1.0
            if 0 < s.relative_size <= self.max_relative_size and (
                cluster_rows >= self.min_cluster_size
            ):
                candidate[s.idx] = s.membership >= 1.0
            per_class[str(c)] = {
                "n": int(s.idx.size),
                "relative_size": s.relative_size,
                "silhouette": s.silhouette,
                "robust_z": s.z,
                "reclassification_own_share": s.own_share,
                "flagged": bool(g >= 1.0),
                "n_flagged": int(flagged[s.idx].sum()),
                "evidence": s.silhouette,
            }
        info = {
            "params": self.get_params(),
            "n_flagged": int(flagged.sum()),
            "classes_flagged": [int(k) for k, v in per_class.items() if v["flagged"]],
            "classes_skipped": skipped,
            "silhouette_median": (
                float(np.median([s.silhouette for s in splits.values()])) if splits else None
            ),
            "note": note,
            "per_class": per_class,
        }
        return DetectorResult(
            score=contract_score(score, flagged), flagged=flagged, info=info, candidate=candidate
        )

    def _split_class(
        self,
        x: np.ndarray,
        idx: np.ndarray,
        c: int,
        present: np.ndarray,
        means: np.ndarray,
        stats: ClassStatistics,
        rng: np.random.Generator,
        seed: int,
    ) -> _Split:
        """Centre (and optionally scale), reduce and 2-means one class; measure the tests."""
        mu = stats.mean[c]
        k = int(min(self.n_components, x.shape[0] - 1, x.shape[1]))
        if self.standardize:
            # A unit that fires on a handful of rows (common with ReLU features) would
            # dominate after plain standardisation; scales are floored at 10% of the
            # median unit's.
            sd = x.std(axis=0, dtype=np.float64)
            med_sd = float(np.median(sd))
            scale = np.maximum(sd, 0.1 * med_sd if med_sd > 0 else 1.0)
            scale[scale == 0] = 1.0
            z = ((x - mu.astype(x.dtype)) / scale.astype(x.dtype)).astype(np.float32)
            one_class = np.zeros(z.shape[0], dtype=np.int64)
            reduced = ClassStatistics.compute(z, one_class, 1, n_components=k).projections
        else:
            scale = np.ones(x.shape[1])
            reduced = stats.coordinates(idx, k)
        if self.reduction == "ica":
            ica = FastICA(n_components=k, whiten="unit-variance", random_state=seed, max_iter=400)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                reduced = ica.fit_transform(reduced)
        reduced = reduced.astype(np.float64)

        centers = kmeans(reduced, 2, n_init=10, seed=seed).centers
        dist = np.linalg.norm(reduced[:, None, :] - centers[None, :, :], axis=2)
        assign = (dist[:, 1] < dist[:, 0]).astype(int)
        sizes = np.bincount(assign, minlength=2)
        small = int(np.argmin(sizes))
        in_small = assign == small
        n_small = int(sizes[small])
        split = _Split(idx=idx, relative_size=n_small / x.shape[0])
        if n_small == 0:
            split.membership = np.zeros(x.shape[0])
            return split
        d_small, d_large = dist[:, small], dist[:, 1 - small]
        with np.errstate(divide="ignore"):
            split.membership = np.where(d_small > 0, d_large / d_small, np.inf)

        rows = np.arange(x.shape[0])
        if rows.size > self.silhouette_rows:
            rows = np.sort(rng.choice(rows.size, self.silhouette_rows, replace=False))
        if np.unique(assign[rows]).size == 2:
            split.silhouette = silhouette_two_clusters(reduced[rows], assign[rows])
        split.own_share = _own_share(x[in_small], x[~in_small], c, present, means, mu, scale, rng)
        return split


def silhouette_two_clusters(x: np.ndarray, assign: np.ndarray) -> float:
    """Mean silhouette (Rousseeuw 1987) of a partition of ``x`` into clusters 0 and 1.

    Euclidean distances, a row alone in its cluster scores 0, as scikit-learn's
    ``silhouette_score``, whose result this equals; the full distance matrix in one BLAS
    product (callers pass a bounded subsample) instead of its chunked per-label reduction.
    """
    # float32 distances in place: the mean of 2,000 of them is exact to ~1e-6, at half the
    # memory traffic of float64.
    x = np.asarray(x, dtype=np.float32)
    sq = (x**2).sum(axis=1)
    dist = x @ x.T
    dist *= -2.0
    dist += sq[:, None]
    dist += sq[None, :]
    np.maximum(dist, 0.0, out=dist)
    np.sqrt(dist, out=dist)
    np.fill_diagonal(dist, 0.0)
    member = np.stack([assign == 0, assign == 1], axis=1).astype(np.float32)
    sums = (dist @ member).astype(np.float64)  # summed distance of each row to each cluster
    sizes = member.sum(axis=0)
    own = assign.astype(int)
    own_size = sizes[own]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = sums[np.arange(x.shape[0]), own] / (own_size - 1)
        b = sums[np.arange(x.shape[0]), 1 - own] / sizes[1 - own]
        s = (b - a) / np.maximum(a, b)
    s = np.where(own_size > 1, np.nan_to_num(s), 0.0)
    return float(s.mean())


class _Split:
    """Figures of one class's 2-means split (internal)."""

    def __init__(self, idx: np.ndarray, relative_size: float) -> None:
        self.idx = idx
        self.relative_size = float(relative_size)
        self.silhouette = 0.0
        self.membership = np.zeros(idx.size)
        self.own_share: float | None = None
        self.z: float | None = None


def _own_share(
    cluster: np.ndarray,
    rest: np.ndarray,
    c: int,
    present: np.ndarray,
    means: np.ndarray,
    mu: np.ndarray,
    scale: np.ndarray,
    rng: np.random.Generator,
    max_rows: int = 2000,
) -> float | None:
    """Share of ``cluster`` a nearest-centroid model without it assigns to class ``c``.

    Exclusionary reclassification (Chen et al. 2018, Sec. 3.2) on the cheap: the model is
    the centroids of every other class and of the rest of class ``c``, in class ``c``'s
    standardised feature space; at most ``max_rows`` cluster rows (seeded) are classified.
    """
    if rest.shape[0] == 0:
        return None
    if cluster.shape[0] > max_rows:
        cluster = cluster[rng.choice(cluster.shape[0], max_rows, replace=False)]
    centroids = means.copy()
    own = int(np.flatnonzero(present == c)[0])
    centroids[own] = rest.mean(axis=0, dtype=np.float64)
    centroids = (centroids - mu) / scale
    pts = (cluster.astype(np.float64) - mu) / scale
    # ||p - m||^2 up to the per-row constant ||p||^2.
    d2 = (centroids**2).sum(axis=1)[None, :] - 2.0 * pts @ centroids.T
    return float(np.mean(np.argmin(d2, axis=1) == own))
