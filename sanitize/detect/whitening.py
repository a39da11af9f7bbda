"""Each class whitened by the within-class covariance of the other classes.

A trigger is a direction along which its poisons differ from the rest of their class and
along which no other class varies. Scaled by the pooled within-class covariance of the
*other* classes (leave one class out), a direction every class varies along (pose, colour,
background) counts for little and the trigger's for much, however much of its class the
poison is: the covariance it is whitened by holds none of it. The class's own covariance,
which the SPECTRE paper's robust estimate is drawn from, is the poison's own once the
poison is most of the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TopDirection:
    """One class, whitened: ``white`` (its rows, centred and whitened), ``projection`` (the
    rows on the top right singular vector of ``white``, unit ``direction``) and
    ``top_ratio`` (squared ratio of the top two singular values; 1.0 with one)."""

    white: np.ndarray
    projection: np.ndarray
    direction: np.ndarray
    top_ratio: float

    def residual(self) -> np.ndarray:
        """The whitened rows with their component along ``direction`` removed."""
        return self.white - np.outer(self.projection, self.direction)


class LeaveOneClassOutWhitening:
    """Class means and the pooled within-class scatter of every class, so that each class
    can be whitened by the scatter of the others.

    The shrinkage is there so that the noise in the smallest eigenvalues of ``C`` cannot blow
    up the directions they belong to.

    Parameters
    ----------
    data : ndarray of shape (n_rows, n_dims)
        One row a sample (features, or block means of pixels), read as float64 a class at a time.
    labels : ndarray of shape (n_rows,)
        Class index of every row.
    n_classes : int
    shrinkage : float
        Weight ``s`` of the mean eigenvalue in the whitening ``(1 - s) * C + s * mean(eig) * I``.

    Memory: ``n_dims`` x ``n_dims`` float64 twice, and one class of ``data`` at a time.
    """

    def __init__(self, data: np.ndarray, labels: np.ndarray, n_classes: int, shrinkage: float):
        self.data = data
        self.labels = labels
        self.shrinkage = shrinkage
        self.means = np.zeros((n_classes, data.shape[1]))
        self.scatter = np.zeros((data.shape[1], data.shape[1]))
        for c in np.unique(labels):
            x = np.asarray(data[labels == c], dtype=np.float64)  # one read a class
            self.means[c] = x.mean(axis=0)
            x -= self.means[c]
            self.scatter += x.T @ x
        self.n = labels.size

    def centred(self, rows: np.ndarray, c: int) -> np.ndarray:
        """Rows ``rows`` of ``data`` (float64) less the mean of class ``c``."""
        return np.asarray(self.data[rows], dtype=np.float64) - self.means[c]

    def top_direction(self, idx: np.ndarray) -> TopDirection:
        """The rows ``idx`` (every row of one class), whitened by the other classes'
        covariance, and their top singular direction."""
        c = int(self.labels[idx[0]])
        centred = self.centred(idx, c)
        others = self.n - idx.size
        cov = (self.scatter - centred.T @ centred) / max(others - 1, 1)
        dims = cov.shape[0]
        cov = (1 - self.shrinkage) * cov + self.shrinkage * np.trace(cov) / dims * np.eye(dims)
        values, vectors = np.linalg.eigh(cov)
        white = centred @ (vectors / np.sqrt(np.maximum(values, 1e-12)))
        _, singular, vt = np.linalg.svd(white, full_matrices=False)
        ratio = float(singular[0] ** 2 / max(singular[1] ** 2, 1e-12)) if singular.size > 1 else 1.0
        return TopDirection(white, white @ vt[0], vt[0], ratio)
