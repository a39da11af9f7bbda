"""Per-class feature statistics, computed once and shared by the detectors.

Activation clustering, spectral signatures and SPECTRE all start from the same per-class
quantities: the class mean, the top principal directions of the centred class, and (for
SPECTRE) the pooled within-class covariance of the other classes. Each d x d scatter
matrix costs ``n_c * d**2`` multiply-adds, which dominates the detectors' time on wide
features; :class:`ClassStatistics` computes them in one streaming pass and keeps only what
the detectors read, so that apart from K coordinates a row its size does not grow with
the rows:

- ``count`` (C,), ``mean`` (C, d): per-class row counts and means;
- ``eigval`` (C, K), ``directions`` (C, d, K): the top ``K`` eigenpairs of each class's
  centred scatter matrix ``S_c = sum_i (x_i - mu_c)(x_i - mu_c)'``, largest first;
- ``projections`` (n, K): every row's centred coordinates on its class's top directions,
  ``(x_i - mu_c) V_c``, float32 (all the detectors read of a row but its features);
- ``total_scatter`` (d, d): ``sum_c S_c``, from which the pooled covariance of every class
  but ``c`` follows, and whose restriction to class ``c``'s top directions needs no other
  matrix (``V_c' S_c V_c = diag(eigval_c)``).

The pipeline computes it in its own ``class_stats`` stage and hands it to every detector
through :class:`~sanitize.detect.base.DetectorContext`; a detector called on its own
computes it itself (:func:`class_statistics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg

# Rule: the widest reduction a default detector asks for is SPECTRE's 16 directions; 32
# leaves room to raise it (the paper's 32) without recomputing, at 32 x d floats a class.
DEFAULT_COMPONENTS = 32

# Rule: 65,536 rows of 512 float32 features are 128 MiB, a bounded slice of any class.
CHUNK_ROWS = 65_536


@dataclass
class ClassStatistics:
    """Per-class counts, means, top scatter eigenpairs and the summed within-class scatter.

    Classes with no rows have count 0, a zero mean and zero eigenpairs. ``eigval`` holds
    eigenvalues of the scatter (not the covariance): the singular values of the centred
    class matrix are their square roots.
    """

    count: np.ndarray
    mean: np.ndarray
    eigval: np.ndarray
    directions: np.ndarray
    total_scatter: np.ndarray
    projections: np.ndarray

    @property
    def n_components(self) -> int:
        return int(self.eigval.shape[1])

    @classmethod
    def compute(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        *,
        n_components: int = DEFAULT_COMPONENTS,
        chunk_rows: int = CHUNK_ROWS,
        rows: np.ndarray | None = None,
    ) -> ClassStatistics:
        """Statistics of ``features`` (any array or memory map) grouped by ``labels``.

        Row ``i`` of the statistics is ``features[rows[i]]`` (``features[i]`` when ``rows``
        is None), with class ``labels[i]``: a memory map of every row can be passed with
        the usable ones in ``rows``, without copying them out first.

        Each class is read in slices of ``chunk_rows`` rows: the mean, then the centred
        scatter (float32 products accumulated in float64), then the projections; a class
        that fits in one slice is read once. Memory is one slice, a d x d matrix and the
        n x K projections, whatever the class size.
        """
        labels = np.asarray(labels)
        n, d = labels.shape[0], int(features.shape[1])
        rows = np.arange(n) if rows is None else np.asarray(rows)
        k = int(min(n_components, d))
        count = np.bincount(labels, minlength=n_classes)[:n_classes]
        mean = np.zeros((n_classes, d))
        eigval = np.zeros((n_classes, k))
        directions = np.zeros((n_classes, d, k))
        projections = np.zeros((n, k), dtype=np.float32)
        total = np.zeros((d, d))
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(count)])
        for c in np.flatnonzero(count):
            idx = order[starts[c] : starts[c + 1]]
            chunks = [idx[i : i + chunk_rows] for i in range(0, idx.size, chunk_rows)]
            kept = np.asarray(features[rows[idx]], np.float32) if len(chunks) == 1 else None

            def read(part: np.ndarray, kept: np.ndarray | None = kept) -> np.ndarray:
                return kept if kept is not None else np.asarray(features[rows[part]], np.float32)

            mean[c] = sum(read(p).sum(axis=0, dtype=np.float64) for p in chunks) / idx.size
            mu = mean[c].astype(np.float32)
            scatter = np.zeros((d, d))
            for part in chunks:
                xc = read(part) - mu
                scatter += xc.T @ xc  # numpy runs X'X as one symmetric rank-k update
            total += scatter
            # float32 halves the eigensolver's time; the top directions come out
            # orthonormal to ~1e-7, far inside what the detectors resolve.
            values, vectors = scipy.linalg.eigh(
                scatter.astype(np.float32), subset_by_index=[d - k, d - 1]
            )
            rank = np.argsort(values)[::-1]
            eigval[c] = np.clip(values[rank], 0.0, None)
            directions[c] = vectors[:, rank]
            v = directions[c].astype(np.float32)
            for part in chunks:
                projections[part] = (read(part) - mu) @ v
        return cls(count, mean, eigval, directions, total, projections)

    def covers(self, labels: np.ndarray, n_features: int, k: int) -> bool:
        """Whether these statistics describe rows with ``labels`` and ``k`` directions."""
        count = np.bincount(labels, minlength=self.count.size)
        return (
            self.projections.shape[0] == labels.shape[0]
            and count.size == self.count.size
            and bool(np.array_equal(count, self.count))
            and self.mean.shape[1] == n_features
            and k <= self.n_components
        )

    def coordinates(self, idx: np.ndarray, k: int) -> np.ndarray:
        """Rows ``idx`` (one class) on their class's top ``k`` directions, float32 (m, k)."""
        return np.asarray(self.projections[idx, :k])

    def top(self, c: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Class ``c``'s top ``k`` singular values (of the centred rows) and directions (d, k)."""
        return np.sqrt(self.eigval[c, :k]), self.directions[c, :, :k]

    def pooled_without(self, c: int, k: int) -> np.ndarray:
        """Pooled within-class covariance of every class but ``c``, in ``c``'s top ``k``.

        ``V' (T - S_c) V / dof`` with ``V`` class ``c``'s top directions, ``T`` the total
        scatter and ``dof = sum over other classes of (n - 1)``. With no other class the
        class's own covariance is the only reference there is.
        """
        eig = self.eigval[c, :k]
        v = self.directions[c, :, :k]
        others = np.flatnonzero(self.count)
        others = others[others != c]
        dof = int(self.count[others].sum()) - len(others)
        if dof < 2:
            return np.diag(eig) / max(1, int(self.count[c]) - 1)
        return (v.T @ self.total_scatter @ v - np.diag(eig)) / dof

    def save(self, path: Path, projections_path: Path) -> None:
        """The per-class arrays to ``path`` (.npz), the projections to ``projections_path``."""
        np.save(projections_path, self.projections)
        np.savez(
            path,
            count=self.count,
            mean=self.mean,
            eigval=self.eigval,
            directions=self.directions,
            total_scatter=self.total_scatter,
        )

    @classmethod
    def load(cls, path: Path, projections_path: Path) -> ClassStatistics:
        """What :meth:`save` wrote; the projections memory-mapped."""
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
        return cls(**arrays, projections=np.load(projections_path, mmap_mode="r"))


def class_statistics(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    k: int,
    shared: ClassStatistics | None,
) -> ClassStatistics:
    """``shared`` when it describes these rows with at least ``k`` directions, else fresh."""
    if shared is not None and shared.covers(labels, features.shape[1], k):
        return shared
    return ClassStatistics.compute(
        features, labels, n_classes, n_components=max(k, DEFAULT_COMPONENTS)
    )
