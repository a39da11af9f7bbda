"""Penultimate-layer features and per-sample loss of a trained network, batch by batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sanitize.model.device import autocast, memory_format
from sanitize.model.net import BootstrapNet
from sanitize.model.train import Normalizer


@torch.no_grad()
def embed_rows(
    model: BootstrapNet,
    normalizer: Normalizer,
    images: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    *,
    device: torch.device,
    batch_size: int = 512,
    features_out: Path | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and cross-entropy of ``images[rows]`` under ``model`` in eval mode.

    Parameters
    ----------
    images : ndarray of shape (n_rows, C, H, W), uint8
        Read in batches of ``batch_size`` rows (a memory map stays on disk).
    labels : ndarray of shape (n_rows,), int
        Class indices used for the loss.
    rows : ndarray of int
        Rows to embed; the other rows of the outputs are zero (features) and NaN (loss).
    features_out : Path, optional
        When given, features are written to this ``.npy`` memory map instead of RAM.

    Returns
    -------
    features : ndarray of shape (n_rows, feature_dim), float32
    loss : ndarray of shape (n_rows,), float32
    """
    model.eval()
    fmt = memory_format(device)
    n_rows = images.shape[0]
    if features_out is not None:
        features = np.lib.format.open_memmap(
            features_out, mode="w+", dtype=np.float32, shape=(n_rows, model.feature_dim)
        )
    else:
        features = np.zeros((n_rows, model.feature_dim), dtype=np.float32)
    loss = np.full(n_rows, np.nan, dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        x = torch.from_numpy(np.ascontiguousarray(images[idx])).to(device)
        x = normalizer.apply(x).contiguous(memory_format=fmt)
        y = torch.from_numpy(labels[idx].astype(np.int64)).to(device)
        with autocast(device):
            logits, feats = model.forward_with_features(x)
        features[idx] = feats.float().cpu().numpy()
        loss[idx] = F.cross_entropy(logits.float(), y, reduction="none").cpu().numpy()
        if on_batch is not None:
            on_batch(len(idx))
    if isinstance(features, np.memmap):
        features.flush()
    return features, loss
