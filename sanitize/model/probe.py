"""Untargeted PGD on the bootstrap model: adversarial examples of a bounded sample of rows.

On a backdoored model, adversarial examples activate the same neurons as the triggered
samples (Mu, Niu et al., "Progressive Backdoor Erasing via connecting Backdoor and
Adversarial Attacks", CVPR 2023, arXiv:2202.06312, Sec. 3): the backdoor is a short path
to the target class, and a small L_inf perturbation finds it. The probe records the
penultimate features of each adversarial example and the class the model gives it; the
``adversarial_overlap`` detector reads them.

Cost: ``steps`` forward and backward passes plus one forward pass over at most
``n_probe`` rows, whatever the size of the dataset.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from sanitize.detect.base import AdversarialProbe
from sanitize.model.net import BootstrapNet
from sanitize.model.train import Normalizer


def probe_sample(n_rows: int, n_probe: int, seed: int) -> np.ndarray:
    """Sorted seeded sample of at most ``n_probe`` of ``range(n_rows)``."""
    if n_rows <= n_probe:
        return np.arange(n_rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, n_probe, replace=False)).astype(np.int64)


def adversarial_probe(
    model: BootstrapNet,
    normalizer: Normalizer,
    images: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    *,
    eps: float,
    steps: int,
    step_size: float,
    device: torch.device,
    batch_size: int = 256,
) -> AdversarialProbe:
    """PGD (L_inf ball of radius ``eps``, ``steps`` signed-gradient steps) on ``images[rows]``.

    Parameters
    ----------
    images : ndarray of shape (n, C, H, W), uint8
    labels : ndarray of shape (n,), int
        The labels whose cross-entropy the attack raises (untargeted).
    rows : ndarray of int
        Rows of ``images`` to perturb.
    eps, step_size : float
        In pixel units of [0, 1] (eps 6/255, step eps/5 in the paper's setting).

    Returns
    -------
    AdversarialProbe
        ``rows`` as given (a caller that scores a subset of the images maps them to
        positions among its scored rows), the adversarial examples' features and predicted
        classes.
    """
    start = time.perf_counter()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rows = np.asarray(rows, dtype=np.int64)
    feats_out = np.zeros((len(rows), model.feature_dim), dtype=np.float32)
    predicted = np.zeros(len(rows), dtype=np.int64)
    eps_u8, step_u8 = 255.0 * eps, 255.0 * step_size  # the normaliser takes 0..255 values
    try:
        for begin in range(0, len(rows), batch_size):
            idx = rows[begin : begin + batch_size]
            x0 = torch.from_numpy(np.ascontiguousarray(images[idx])).to(device).float()
            y = torch.from_numpy(np.asarray(labels[idx], dtype=np.int64)).to(device)
            x = x0.clone()
            for _ in range(steps):
                x.requires_grad_(True)
                loss = F.cross_entropy(model(normalizer.apply(x)), y)
                (grad,) = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    x = x + step_u8 * grad.sign()
                    x = torch.minimum(torch.maximum(x, x0 - eps_u8), x0 + eps_u8).clamp(0, 255)
            with torch.no_grad():
                logits, feats = model.forward_with_features(normalizer.apply(x))
            end = begin + len(idx)
            feats_out[begin:end] = feats.float().cpu().numpy()
            predicted[begin:end] = logits.argmax(dim=1).cpu().numpy()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    info = {
        "n_probe": int(len(rows)),
        "eps": float(eps),
        "steps": int(steps),
        "step_size": float(step_size),
        "seconds": time.perf_counter() - start,
    }
    return AdversarialProbe(rows, feats_out, predicted, info)
