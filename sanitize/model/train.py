"""Training loop of the bootstrap model f_B and the deconfounded model f_C.

Sections follow airbench's reading order: data on the device, network, training. The
training images sit on the device as uint8 once and are normalised batch by batch;
shuffling is a seeded ``torch.randperm``; there is no per-sample Python in the loop.

With ``reference_loss``, :func:`train_model` trains the deconfounded model f_C of CBD
(Zhang et al., CVPR 2023, Eq. 6): each sample's cross-entropy is weighted by
w = l_B / (l_B + l_C), with l_B the frozen bootstrap loss from ``reference_loss`` and l_C
the current loss of the model being trained, so samples that f_B fits far better than f_C
(the backdoor's shortcut) barely move f_C. With ``stop_below``, training stops after the
first epoch whose mean training loss is below it, and the returned ``loss_history`` then has
as many columns as epochs run.

No augmentation on purpose: the bootstrap model must learn the backdoor shortcut fast,
and random flips or crops move a corner trigger (a probe: a 4-block CNN learned a 3x3
patch within one epoch with Adam and no flips, and nothing in 8 epochs with SGD and flips).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sanitize.data.npyfile import release_pages
from sanitize.model.device import autocast, memory_format
from sanitize.model.net import BootstrapNet, NetSpec


@dataclass(frozen=True)
class Normalizer:
    """Per-channel mean and std of the training images, in uint8 units (0..255)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, batch_u8: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=batch_u8.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=batch_u8.device).view(1, -1, 1, 1)
        return (batch_u8.float() - mean) / std

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, raw: dict) -> Normalizer:
        return cls(mean=tuple(raw["mean"]), std=tuple(raw["std"]))

    @classmethod
    def fit(cls, images: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> Normalizer:
        """Streaming per-channel moments over ``images[rows]`` (uint8, (n, C, H, W))."""
        channels = images.shape[1]
        total = np.zeros(channels)
        total_sq = np.zeros(channels)
        count = 0
        for start in range(0, len(rows), chunk):
            block = images[rows[start : start + chunk]].astype(np.float64)
            total += block.sum(axis=(0, 2, 3))
            total_sq += (block**2).sum(axis=(0, 2, 3))
            count += block.shape[0] * block.shape[2] * block.shape[3]
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 1.0))
        return cls(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


@dataclass
class TrainResult:
    """A trained network and what was recorded while training it.

    loss_history : ndarray of shape (n_rows, epochs)
        Cross-entropy of every trained row at each epoch, measured in the training forward
        pass (before that batch's update); NaN for rows that were not trained on.
    """

    model: BootstrapNet
    normalizer: Normalizer
    loss_history: np.ndarray
    epoch_seconds: list[float]


MIN_AUTO_EPOCHS = 2
MAX_AUTO_EPOCHS = 60
WARMUP_STEPS = 50


def epochs_for(n_rows: int, batch_size: int, steps: int) -> int:
    """Most epochs that fit in about ``steps`` optimizer steps on ``n_rows`` rows, in [2, 60].

    Small sets get more passes (the shortcut needs updates, not passes); very large sets
    still see every training row at least twice.
    """
    steps_per_epoch = max(1, -(-n_rows // batch_size))
    return int(min(MAX_AUTO_EPOCHS, max(MIN_AUTO_EPOCHS, round(steps / steps_per_epoch))))


def stratified_sample(labels: np.ndarray, rows: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """At most ``cap`` of ``rows``, each class keeping its share; sorted, seeded.

    Keeping class shares means a target class that holds the poisons keeps them in the same
    proportion, so the bootstrap model still learns the shortcut from the sample.
    """
    if len(rows) <= cap:
        return np.sort(rows)
    rng = np.random.default_rng(seed)
    keep = []
    row_labels = labels[rows]
    for cls in np.unique(row_labels):
        members = rows[row_labels == cls]
        take = max(1, int(round(cap * len(members) / len(rows))))
        keep.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(keep))


def train_model(
    images: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    spec: NetSpec,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    reference_loss: np.ndarray | None = None,
    normalizer: Normalizer | None = None,
    stop_below: float | None = None,
    precise_bn: bool = False,
    on_epoch: Callable[[int, float, float], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train a fresh :class:`BootstrapNet` on ``images[rows]`` with Adam.

    Parameters
    ----------
    images : ndarray of shape (n_rows, C, H, W), uint8
        All rows (memory-mapped is fine); only ``rows`` are read.
    labels : ndarray of shape (n_rows,), int
        Class indices; only ``labels[rows]`` are used.
    rows : ndarray of int
        Rows to train on.
    reference_loss : ndarray of shape (n_rows,), optional
        Frozen bootstrap loss l_B (nats) of every row: train CBD's f_C (module docstring).
    precise_bn : bool, default=False
        Recompute the BatchNorm statistics for the final weights (:func:`precise_batch_norm`).
    stop_below : float, optional
        Mean training loss (nats) of an epoch below which training stops after that epoch.
    on_epoch : callable(epoch, seconds, mean_loss), optional
        Called after each epoch (progress display).
    on_step : callable(rows), optional
        Called after each optimizer step with the rows of its batch (progress display).
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rows = np.asarray(rows, dtype=np.int64)
    normalizer = normalizer or Normalizer.fit(images, rows)
    fmt = memory_format(device)
    data = _TrainingData.on_device(images, labels, rows, reference_loss, device, normalizer, fmt)

    model = BootstrapNet(spec).to(device=device, memory_format=fmt)
    optimizer, scheduler = _optimizer(model, lr)

    history = np.full((images.shape[0], epochs), np.nan, dtype=np.float32)
    epoch_seconds: list[float] = []
    model.train()
    for epoch in range(epochs):
        timer = _Timer(device)
        order = torch.randperm(len(rows), generator=generator).to(device)
        losses = _train_epoch(model, optimizer, scheduler, data, order, batch_size, on_step)
        history[rows, epoch] = losses
        seconds = timer.stop()
        epoch_seconds.append(seconds)
        mean_loss = float(np.nanmean(losses))
        if on_epoch is not None:
            on_epoch(epoch, seconds, mean_loss)
        if stop_below is not None and mean_loss < stop_below:
            history = history[:, : epoch + 1]  # as many columns as epochs run
            break
    if precise_bn:
        precise_batch_norm(model, data.x, normalizer, batch_size, generator, fmt)
    model.eval()
    return TrainResult(model, normalizer, history, epoch_seconds)


@dataclass(frozen=True)
class _TrainingData:
    """The training rows on the device, and how a batch of them is made ready."""

    x: torch.Tensor
    y: torch.Tensor
    ref: torch.Tensor | None
    device: torch.device
    normalizer: Normalizer
    fmt: torch.memory_format

    @classmethod
    def on_device(
        cls,
        images: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        reference_loss: np.ndarray | None,
        device: torch.device,
        normalizer: Normalizer,
        fmt: torch.memory_format,
    ) -> _TrainingData:
        """Images as uint8 on the device once (normalised per batch), labels, and the
        reference losses when given, of ``rows``."""
        # ``rows`` is the training sample (at most bootstrap.max_train_rows), so this copy is
        # bounded whatever the set's size; the pages of a memory-mapped ``images`` read for
        # it are dropped from RSS.
        x_all = torch.from_numpy(np.ascontiguousarray(images[rows])).to(device)
        release_pages(images)
        y_all = torch.from_numpy(labels[rows].astype(np.int64)).to(device)
        ref_all = None
        if reference_loss is not None:
            ref_all = torch.from_numpy(reference_loss[rows].astype(np.float32)).to(device)
        return cls(x_all, y_all, ref_all, device, normalizer, fmt)


def _optimizer(
    model: BootstrapNet, lr: float
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam at ``lr`` after a linear warm-up of :data:`WARMUP_STEPS` steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Constant rate after a short warm-up: training may stop at any epoch, and the model
    # it stops with should not depend on where a decaying schedule happened to be.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS)
    )
    return optimizer, scheduler


def _train_epoch(
    model: BootstrapNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    data: _TrainingData,
    order: torch.Tensor,
    batch_size: int,
    on_step: Callable[[int], None] | None,
) -> np.ndarray:
    """One pass over ``data`` in ``order``: every row's loss in its training forward pass
    (before that batch's update), NaN where it was not trained on this epoch."""
    fmt = data.fmt
    epoch_loss = torch.full((len(order),), float("nan"), device=data.device)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2:  # BatchNorm needs two samples; that row's loss stays NaN this epoch
            continue
        x = data.normalizer.apply(data.x[idx]).contiguous(memory_format=fmt)
        with autocast(data.device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), data.y[idx], reduction="none")
        if data.ref is not None:
            ref = data.ref[idx]
            weight = ref / (ref + loss.detach() + 1e-12)
            objective = (weight * loss).sum() / weight.sum().clamp_min(1e-12)
        else:
            objective = loss.mean()
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        scheduler.step()
        epoch_loss[idx] = loss.detach()
        if on_step is not None:
            on_step(len(idx))
    return epoch_loss.cpu().numpy()


# Rule: Wu and Johnson find precise statistics settled from about 10^4 samples (Sec. 3.1);
# the bootstrap sample is often smaller, and then all of it is used.
PRECISE_BN_ROWS = 10_000


@torch.no_grad()
def precise_batch_norm(
    model: torch.nn.Module,
    x_all: torch.Tensor,
    normalizer: Normalizer,
    batch_size: int,
    generator: torch.Generator,
    fmt: torch.memory_format,
) -> None:
    """Recompute every BatchNorm layer's running statistics for the final weights.

    The running statistics are exponential averages over the last few dozen batches,
    taken while the weights still moved under a constant learning rate, so in eval mode
    they lag the weights the model ends with; on 5,000 CIFAR-10 rows the eval-mode loss
    of a bootstrap model ranged from 0.04 to 2.46 by class when its training loss was
    0.2-0.3 in every class, which distorts the final losses and the features the detectors
    read. Here they are the plain averages, in train mode without updates, over up to
    :data:`PRECISE_BN_ROWS` training rows in shuffled batches ("precise BN", Y. Wu and
    J. Johnson, "Rethinking 'Batch' in BatchNorm", 2021, arXiv:2105.07576, Sec. 3.1).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    n = x_all.shape[0]
    order = torch.randperm(n, generator=generator)[:PRECISE_BN_ROWS].to(x_all.device)
    for start in range(0, order.numel(), batch_size):
        idx = order[start : start + batch_size]
        if idx.numel() < 2:
            continue
        x = normalizer.apply(x_all[idx]).contiguous(memory_format=fmt)
        with autocast(x_all.device):
            model(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


class _Timer:
    """Wall time of a block; synchronises CUDA so queued kernels are counted."""

    def __init__(self, device: torch.device):
        self._device = device
        self._start = time.perf_counter()

    def stop(self) -> float:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        return time.perf_counter() - self._start
