"""k-means through faiss when it is installed (on a GPU when faiss sees one), else scikit-learn.

Not a detector: the clustering step that detectors share. :func:`kmeans` picks its backend
once a call:

- ``"faiss-gpu"`` when ``faiss`` imports and ``faiss.get_num_gpus() > 0`` (the ``gpu``
  extra on a CUDA machine);
- ``"faiss-cpu"`` when ``faiss`` imports without a GPU (the ``cpu`` extra);
- ``"sklearn"`` (``sklearn.cluster.KMeans``, Lloyd with k-means++ starts) when faiss is not
  importable, or when asked for with ``backend="sklearn"`` or ``$SANITIZE_KMEANS=sklearn``.

Every backend runs ``n_init`` seeded restarts and keeps the lowest inertia; the returned
centres are the means of the final assignment, so the backends agree to float32 rounding
wherever the clusters are well separated (``tests/test_kmeans.py`` checks it on planted data).
Why faiss: its Lloyd iterations are BLAS-blocked and multi-threaded in C++, without
scikit-learn's per-call validation and per-restart Python overhead, and the same call runs
on a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from sanitize.errors import ConfigError

try:  # imported at module load, before a stage pins its thread pools (threadpoolctl)
    import faiss
except ImportError:  # the cpu / gpu extra is not installed: scikit-learn does the work
    faiss = None

BACKEND_ENV = "SANITIZE_KMEANS"
BACKENDS = ("auto", "faiss", "sklearn")
# Lloyd iterations of a faiss restart (faiss runs them all; it has no tolerance test).
# Rule: faiss's own default; 2-means on ~10 PCA dimensions settles within 10-20.
FAISS_ITERATIONS = 25


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of :func:`kmeans`.

    Attributes
    ----------
    centers : ndarray of shape (n_clusters, n_features), float64
    labels : ndarray of shape (n_samples,), int64
        Index of each row's nearest centre.
    inertia : float
        Sum of squared distances of the rows to their centres.
    backend : str
        ``"faiss-gpu"``, ``"faiss-cpu"`` or ``"sklearn"``: what did the work.
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    backend: str


def faiss_backend() -> str | None:
    """``"faiss-gpu"`` / ``"faiss-cpu"`` for the installed faiss, None when it is missing."""
    if faiss is None:
        return None
    return "faiss-gpu" if faiss.get_num_gpus() > 0 else "faiss-cpu"


def kmeans(
    x: np.ndarray,
    n_clusters: int,
    *,
    n_init: int = 10,
    seed: int = 0,
    backend: str | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` into ``n_clusters`` groups; best of ``n_init`` restarts.

    ``backend="faiss"`` raises :class:`ConfigError` when faiss is not installed.

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
        Any float dtype; faiss works in float32, scikit-learn in float64.
    n_clusters : int
        At least 1 and at most ``n_samples``.
    n_init : int, default=10
        Seeded restarts; the one with the lowest inertia is kept.
    seed : int, default=0
    backend : {"auto", "faiss", "sklearn"} or None, default=None
        None reads ``$SANITIZE_KMEANS`` (default ``"auto"``: faiss when importable).

    Returns
    -------
    KMeansResult
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D, got shape {x.shape}")
    if not 1 <= n_clusters <= x.shape[0]:
        raise ValueError(f"n_clusters must be in [1, {x.shape[0]}], got {n_clusters}")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    choice = backend or os.environ.get(BACKEND_ENV) or "auto"
    if choice not in BACKENDS:
        raise ConfigError(f"unknown k-means backend {choice!r}; known: {', '.join(BACKENDS)}")
    if choice == "faiss" and faiss is None:
        raise ConfigError("k-means backend 'faiss' asked for, but faiss is not installed")
    if choice == "sklearn" or faiss is None:
        return _sklearn(x, n_clusters, n_init, seed)
    return _faiss(x, n_clusters, n_init, seed)


def _faiss(x: np.ndarray, k: int, n_init: int, seed: int) -> KMeansResult:
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    use_gpu = faiss.get_num_gpus() > 0
    km = faiss.Kmeans(
        x32.shape[1],
        k,
        niter=FAISS_ITERATIONS,
        nredo=n_init,
        seed=seed,
        gpu=1 if use_gpu else False,
        # faiss subsamples to 256 rows a centroid by default; cluster every row instead.
        max_points_per_centroid=x32.shape[0],
        min_points_per_centroid=1,
        verbose=False,
    )
    km.train(x32)
    _, labels = km.index.search(x32, 1)
    labels = labels[:, 0].astype(np.int64)
    # faiss's centroids come from the assignment before its last iteration's update;
    # recomputing them from the final assignment makes them the same object sklearn returns.
    centers = np.asarray(km.centroids, dtype=np.float64).copy()
    for c in range(k):
        members = labels == c
        if members.any():
            centers[c] = x[members].mean(axis=0, dtype=np.float64)
    inertia = float(((x - centers[labels]) ** 2).sum())
    return KMeansResult(centers, labels, inertia, "faiss-gpu" if use_gpu else "faiss-cpu")


def _sklearn(x: np.ndarray, k: int, n_init: int, seed: int) -> KMeansResult:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x.astype(np.float64))
    return KMeansResult(
        np.asarray(km.cluster_centers_, dtype=np.float64),
        km.labels_.astype(np.int64),
        float(km.inertia_),
        "sklearn",
    )
