"""Penultimate-layer features and per-sample loss of a trained network, batch by batch.

Memory stays bounded whatever the number of rows: images are read ``batch_size`` rows at a
time, and a read-only memory map has the pages read so far dropped from this process every
``release_every`` rows. With ``features_out`` the features are written to that ``.npy``
file batch by batch (never held whole in RAM) and returned as a read-only memory map of it.
With ``norms_out`` the per-channel l_1 / l_2 / l_inf norms of the last conv block's maps
(:func:`sanitize.model.net.channel_norms`) are written to that ``.npy`` file, shape
(n_rows, 3, feature_dim) float32, batch by batch from the same forward pass as the
features; rows not embedded are zero.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sanitize.data.npyfile import NpyWriter, release_pages
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
    norms_out: Path | None = None,
    keep_features: bool = True,
    on_batch: Callable[[int], None] | None = None,
    release_every: int = 16384,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Features and cross-entropy of ``images[rows]`` under ``model`` in eval mode.

    Parameters
    ----------
    images : ndarray of shape (n_rows, C, H, W), uint8
        All rows (a memory map is fine), read ``batch_size`` rows at a time.
    labels : ndarray of shape (n_rows,), int
        Class indices used for the loss.
    rows : ndarray of int
        Rows to embed; the other rows of the outputs are zero (features) and NaN (loss).
    features_out : Path, optional
        ``.npy`` file the features are written to, returned as a read-only memory map of it.
    norms_out : Path, optional
        ``.npy`` file for the last conv block's per-channel norms, (n_rows, 3, feature_dim).
    keep_features : bool, default=True
        False (without ``features_out``): compute the loss only and return None features.
    release_every : int, default=16384
        Rows read (>= 1) between drops of a memory map's pages from this process.

    Returns
    -------
    features : ndarray of shape (n_rows, feature_dim), float32, or None
    loss : ndarray of shape (n_rows,), float32
    """
    model.eval()
    fmt = memory_format(device)
    n_rows = images.shape[0]
    shape = (n_rows, model.feature_dim)
    writer = NpyWriter(features_out, shape, np.float32) if features_out is not None else None
    norms_writer = None
    if norms_out is not None:
        norms_writer = NpyWriter(norms_out, (n_rows, 3, model.feature_dim), np.float32)
    features = np.zeros(shape, dtype=np.float32) if keep_features and writer is None else None
    loss = np.full(n_rows, np.nan, dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    since_release = 0
    try:
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            x = torch.from_numpy(np.ascontiguousarray(images[idx])).to(device)
            x = normalizer.apply(x).contiguous(memory_format=fmt)
            y = torch.from_numpy(labels[idx].astype(np.int64)).to(device)
            logits, feats = _forward(model, x, idx, norms_writer, device)
            if writer is not None:
                writer.write_rows(idx, feats.float().cpu().numpy())
            elif features is not None:
                features[idx] = feats.float().cpu().numpy()
            loss[idx] = F.cross_entropy(logits.float(), y, reduction="none").cpu().numpy()
            since_release += len(idx)
            if since_release >= release_every:
                release_pages(images)
                since_release = 0
            if on_batch is not None:
                on_batch(len(idx))
    finally:
        if writer is not None:
            writer.close()
        if norms_writer is not None:
            norms_writer.close()
    release_pages(images)
    if writer is not None:
        features = np.load(features_out, mmap_mode="r")
    return features, loss


def _forward(
    model: BootstrapNet,
    x: torch.Tensor,
    idx: np.ndarray,
    norms_writer: NpyWriter | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and features of the batch ``x`` (rows ``idx``) under autocast; with
    ``norms_writer``, its channel norms from the same pass are written there."""
    with autocast(device):
        if norms_writer is not None:
            logits, feats, norms = model.forward_with_maps(x)
            norms_writer.write_rows(idx, norms.float().cpu().numpy())
        else:
            logits, feats = model.forward_with_features(x)
    return logits, feats
