"""Per-class statistics shared by the detectors: equal to the direct computation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from sanitize.detect import ActivationClustering, DetectorContext, SpectralSignature, Spectre
from sanitize.detect.activation_clustering import silhouette_two_clusters
from sanitize.detect.class_stats import ClassStatistics, class_statistics
from tests.test_detectors import N_CLASSES, make_features


@pytest.fixture(scope="module")
def data():
    x, y, _ = make_features(0, per_class=200, dim=24, n_plant=30)
    y = y.copy()
    y[y == 7] = 8  # class 7 empty: its statistics stay zero
    return x, y


def _direct(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu = x.astype(np.float64).mean(axis=0)
    xc = x.astype(np.float64) - mu
    scatter = xc.T @ xc
    values, vectors = np.linalg.eigh(scatter)
    return mu, scatter, values[::-1], vectors[:, ::-1]


def test_statistics_equal_the_direct_computation(data):
    x, y = data
    stats = ClassStatistics.compute(x, y, N_CLASSES, n_components=5)
    assert stats.n_components == 5 and stats.count.tolist() == np.bincount(y, minlength=10).tolist()
    total = np.zeros((x.shape[1],) * 2)
    for c in range(N_CLASSES):
        rows = np.flatnonzero(y == c)
        if rows.size == 0:
            assert not stats.mean[c].any() and not stats.eigval[c].any()
            continue
        mu, scatter, values, vectors = _direct(x[rows])
        total += scatter
        np.testing.assert_allclose(stats.mean[c], mu, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(stats.eigval[c], values[:5], rtol=1e-4)
        # Directions up to sign; projections are the centred rows on them.
        signs = np.sign(np.sum(stats.directions[c] * vectors[:, :5], axis=0))
        np.testing.assert_allclose(stats.directions[c] * signs, vectors[:, :5], atol=1e-3)
        expected = (x[rows] - mu) @ stats.directions[c]
        np.testing.assert_allclose(stats.coordinates(rows, 5), expected, rtol=1e-4, atol=1e-3)
        singular, _ = stats.top(c, 2)
        np.testing.assert_allclose(singular, np.sqrt(values[:2]), rtol=1e-4)
    # float32 products: exact to ~1e-6 of the largest entry.
    np.testing.assert_allclose(stats.total_scatter, total, atol=1e-5 * np.abs(total).max())


def test_pooled_covariance_of_the_other_classes(data):
    x, y = data
    stats = ClassStatistics.compute(x, y, N_CLASSES, n_components=4)
    others = np.flatnonzero(y != 3)
    pooled = sum(_direct(x[others[y[others] == c]])[1] for c in np.unique(y[others]))
    dof = others.size - np.unique(y[others]).size
    v = stats.directions[3]
    np.testing.assert_allclose(stats.pooled_without(3, 4), v.T @ pooled @ v / dof, rtol=1e-4)


def test_streamed_in_slices_and_through_a_row_map_is_the_same(data, tmp_path):
    x, y = data
    whole = ClassStatistics.compute(x, y, N_CLASSES, n_components=6)
    sliced = ClassStatistics.compute(x, y, N_CLASSES, n_components=6, chunk_rows=37)
    # Statistics of the odd rows, read from a memory map of all of them.
    np.save(tmp_path / "f.npy", x)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    odd = np.arange(1, len(y), 2)
    through = ClassStatistics.compute(mapped, y[odd], N_CLASSES, n_components=6, rows=odd)
    direct = ClassStatistics.compute(x[odd], y[odd], N_CLASSES, n_components=6)
    for a, b in ((whole, sliced), (direct, through)):
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(a.eigval, b.eigval, rtol=1e-4)
        np.testing.assert_allclose(np.abs(a.projections), np.abs(b.projections), atol=1e-3)


def test_save_load_round_trip_and_reuse(data, tmp_path):
    x, y = data
    stats = ClassStatistics.compute(x, y, N_CLASSES)
    stats.save(tmp_path / "s.npz", tmp_path / "p.npy")
    back = ClassStatistics.load(tmp_path / "s.npz", tmp_path / "p.npy")
    for field in dataclasses.fields(ClassStatistics):
        assert np.array_equal(getattr(back, field.name), getattr(stats, field.name))
    assert class_statistics(x, y, N_CLASSES, 16, back) is back
    # Other rows, or more directions than it holds: computed afresh.
    assert class_statistics(x[1:], y[1:], N_CLASSES, 16, back) is not back
    assert class_statistics(x, y, N_CLASSES, back.n_components + 1, back) is not back


@pytest.mark.parametrize("detector", [ActivationClustering, SpectralSignature, Spectre])
def test_detectors_give_the_same_result_with_shared_statistics(detector):
    x, y, _ = make_features(0)
    alone = detector().score(x, y, DetectorContext(n_classes=N_CLASSES, seed=0))
    stats = ClassStatistics.compute(x, y, N_CLASSES)
    shared = detector().score(x, y, DetectorContext(n_classes=N_CLASSES, seed=0, class_stats=stats))
    assert np.array_equal(alone.flagged, shared.flagged)
    np.testing.assert_allclose(alone.score, shared.score, atol=1e-6)


@pytest.mark.parametrize("n", [4, 60, 700])
def test_two_cluster_silhouette_equals_scikit_learn(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 10))
    x[: n // 3] += 1.5
    assign = (rng.random(n) < 0.35).astype(int)
    assign[:2] = [0, 1]
    assert silhouette_two_clusters(x, assign) == pytest.approx(silhouette_score(x, assign), 1e-5)
    assign[:] = 0
    assign[0] = 1  # a singleton cluster scores 0, as in scikit-learn
    assert silhouette_two_clusters(x, assign) == pytest.approx(silhouette_score(x, assign), 1e-5)
