"""k-means through faiss against scikit-learn's, alone and inside activation clustering."""

from __future__ import annotations

import numpy as np
import pytest

from sanitize.detect import ActivationClustering, DetectorContext
from sanitize.detect import kmeans as kmeans_module
from sanitize.detect.kmeans import BACKEND_ENV, faiss_backend, kmeans
from sanitize.errors import ConfigError
from sanitize.pipeline.threads import pinned_threads

needs_faiss = pytest.mark.skipif(faiss_backend() is None, reason="faiss is not installed")


def blobs(seed: int = 0, n: int = 3000, dim: int = 10, share: float = 0.1) -> np.ndarray:
    """A wide Gaussian and a compact minority ``share`` of the rows, 6 sd away."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) * np.linspace(2.0, 0.5, dim)
    minority = rng.random(n) < share
    direction = rng.normal(size=dim)
    x[minority] = 12.0 * direction / np.linalg.norm(direction) + rng.normal(
        scale=0.5, size=(minority.sum(), dim)
    )
    return x


def same_partition(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows on which two 2-cluster labellings agree, up to swapping the labels."""
    agree = float(np.mean(a == b))
    return max(agree, 1.0 - agree)


@needs_faiss
@pytest.mark.parametrize("seed", [0, 1])
def test_faiss_matches_sklearn_on_planted_clusters(seed):
    x = blobs(seed)
    fast = kmeans(x, 2, seed=seed, backend="faiss")
    ref = kmeans(x, 2, seed=seed, backend="sklearn")
    assert fast.backend == ("faiss-gpu" if kmeans_module.faiss.get_num_gpus() > 0 else "faiss-cpu")
    assert ref.backend == "sklearn"
    assert same_partition(fast.labels, ref.labels) == 1.0
    order = [0, 1] if np.array_equal(fast.labels, ref.labels) else [1, 0]
    np.testing.assert_allclose(fast.centers, ref.centers[order], atol=1e-5)
    assert fast.inertia == pytest.approx(ref.inertia, rel=1e-6)
    # The labels are each row's nearest centre.
    d = ((x[:, None, :] - fast.centers[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(fast.labels, d.argmin(axis=1))


@needs_faiss
def test_faiss_is_seeded():
    x = blobs(3, share=0.4)
    a, b = (kmeans(x, 3, n_init=2, seed=7, backend="faiss") for _ in range(2))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centers, b.centers)


def planted_features(seed: int = 0, per_class: int = 400, dim: int = 48, n_plant: int = 40):
    """Ten anisotropic Gaussian classes; class 2 also holds a compact shifted cluster."""
    rng = np.random.default_rng(seed)
    sd = 2.0 * np.arange(1, dim + 1) ** -0.5
    xs, ys = [], []
    for c in range(10):
        rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        xs.append(
            rng.normal(scale=3.0, size=dim) + (rng.normal(size=(per_class, dim)) * sd) @ rotation.T
        )
        ys.append(np.full(per_class, c))
    u = rng.normal(size=dim)
    xs.append(
        xs[2].mean(axis=0)
        + 10.0 * u / np.linalg.norm(u)
        + rng.normal(scale=0.3, size=(n_plant, dim))
    )
    ys.append(np.full(n_plant, 2))
    poison = np.r_[np.zeros(10 * per_class, dtype=bool), np.ones(n_plant, dtype=bool)]
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys), poison


@needs_faiss
def test_activation_clustering_same_verdict_with_faiss_and_sklearn(monkeypatch):
    x, y, poison = planted_features()
    context = DetectorContext(n_classes=10, seed=0)
    results = {}
    # One thread, as a stage pins them: OpenMP threads on a busy machine wait for each other.
    with pinned_threads(1):
        for backend in ("faiss", "sklearn"):
            monkeypatch.setenv(BACKEND_ENV, backend)
            results[backend] = ActivationClustering().score(x, y, context)
    fast, ref = results["faiss"], results["sklearn"]
    np.testing.assert_array_equal(fast.flagged, ref.flagged)
    assert fast.flagged[poison].mean() >= 0.95 and fast.flagged[~poison].sum() == 0
    np.testing.assert_allclose(fast.score, ref.score, atol=1e-3)
    for c, figures in ref.info["per_class"].items():
        ours = fast.info["per_class"][c]
        assert ours["relative_size"] == pytest.approx(figures["relative_size"], abs=0.01)
        assert ours["silhouette"] == pytest.approx(figures["silhouette"], abs=0.01)


def test_without_faiss_sklearn_does_the_work(monkeypatch):
    monkeypatch.setattr(kmeans_module, "faiss", None)
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert faiss_backend() is None
    x = blobs(0)
    result = kmeans(x, 2, seed=0)
    assert result.backend == "sklearn"
    assert min(np.bincount(result.labels)) == pytest.approx(0.1 * len(x), rel=0.2)
    with pytest.raises(ConfigError, match="faiss is not installed"):
        kmeans(x, 2, backend="faiss")


def test_backend_from_environment_and_bad_names(monkeypatch):
    x = blobs(0, n=200)
    monkeypatch.setenv(BACKEND_ENV, "sklearn")
    assert kmeans(x, 2).backend == "sklearn"
    monkeypatch.setenv(BACKEND_ENV, "cuml")
    with pytest.raises(ConfigError, match="unknown k-means backend 'cuml'; known: auto, faiss"):
        kmeans(x, 2)
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans(x, 0, backend="sklearn")
