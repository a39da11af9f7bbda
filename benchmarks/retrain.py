"""The retraining check: train a fresh model on a (sanitized) set, measure accuracy and ASR.

A defence is worth what a model trained on its output is worth: clean accuracy on the
test split (the cost of removed clean rows) and attack success rate on triggered test
rows (the backdoor that survived). :func:`retrain_and_score` trains a fresh
:class:`~sanitize.model.BootstrapNet` with the recipe of a *final* model, not the
bootstrap's: light augmentation (random crop with 4 px zero padding) and Adam with a
one-cycle (triangular) learning rate. There is no horizontal flip on purpose: a flip
moves a corner trigger to the other corner, which would teach the model a weaker backdoor
and understate the ASR the attacker gets against an ordinary recipe.

Rows are drawn with :class:`torch.utils.data.WeightedRandomSampler` over ``train_weights``
(the ``sample_weight`` column of ``clean.parquet``, mean 1; uniform when None), with
replacement, as many draws an epoch as rows with a positive weight. Every arm of a
comparison (no defence, true clean rows, sanitized) goes through the same sampler, so the
only difference between them is the data and its weights. A row of weight 0 is never drawn.

:func:`read_image_parquet` and :func:`load_clean_parquet` decode an HF-layout Parquet file
(such as ``clean.parquet``) into the uint8 arrays this module takes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from sanitize.data.schema import SAMPLE_WEIGHT
from sanitize.errors import InputError
from sanitize.model.device import autocast, memory_format, resolve_device
from sanitize.model.net import BootstrapNet, NetSpec
from sanitize.model.train import Normalizer
from sanitize.torch_data import ImageParquetDataset, weighted_sampler


@dataclass(frozen=True)
class RetrainRecipe:
    """Hyperparameters of the retraining check, in one place.

    batch_size : int, default=128
        Rows an optimizer step.
    lr : float, default=2e-3
        Peak learning rate of Adam's one-cycle schedule (:func:`one_cycle`).
    weight_decay : float, default=5e-4
        L2 penalty of Adam (coupled, as ``torch.optim.Adam`` applies it).
    pct_start : float, default=0.25
        Share of the steps spent warming up to ``lr``.
    pad : int, default=4
        Pixels of zero padding before the random crop back to the image size.
    width : int, default=32
        First-block channels of the :class:`~sanitize.model.BootstrapNet` (32-64-128-256).
    eval_batch_size : int, default=512
    """

    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    pct_start: float = 0.25
    pad: int = 4
    width: int = 32
    eval_batch_size: int = 512


DEFAULT_RECIPE = RetrainRecipe()


def retrain_and_score(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    train_weights: np.ndarray | None,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    triggered_images: np.ndarray,
    triggered_labels: np.ndarray,
    *,
    n_classes: int,
    channels: int,
    epochs: int,
    seed: int,
    device: str | torch.device = "cpu",
    recipe: RetrainRecipe = DEFAULT_RECIPE,
) -> dict:
    """Train a fresh network on a training set; clean accuracy and attack success rate.

    Parameters
    ----------
    train_images : ndarray of shape (n_train, channels, H, W), uint8
    train_labels : ndarray of shape (n_train,), int
        Class indices in ``[0, n_classes)``.
    train_weights : ndarray of shape (n_train,) or None
        Sampling weights (>= 0, any scale; ``sample_weight`` of ``clean.parquet``). Rows of
        weight 0 are never drawn; None draws uniformly.
    test_images : ndarray of shape (n_test, channels, H, W), uint8
        The clean test split.
    test_labels : ndarray of shape (n_test,), int
    triggered_images : ndarray of shape (n_triggered, channels, H, W), uint8
        Non-target test rows carrying the trigger
        (:meth:`sanitize.attacks.Attack.triggered_test_set`); may be empty.
    triggered_labels : ndarray of shape (n_triggered,), int
        The target class on every row.
    n_classes : int
    channels : int
        1 or 3; must match the images.
    epochs : int
        Passes over the training set (>= 1); an epoch draws as many rows as have a
        positive weight.
    seed : int
        Seeds the initialisation, the sampler and the crops.
    device : str or torch.device, default="cpu"
        As :func:`sanitize.model.resolve_device` takes it ("auto", "cpu", "cuda", ...).
    recipe : RetrainRecipe, default=DEFAULT_RECIPE

    Returns
    -------
    dict
        ``clean_accuracy`` (float in [0, 1]), ``attack_success_rate`` (share of
        ``triggered_labels`` predicted, float in [0, 1]; NaN when there are no triggered
        rows), ``epochs``, ``seconds`` (training and evaluation wall time), ``train_rows``
        (rows with a positive weight).

    Raises
    ------
    InputError
        Arrays of mismatched shapes or types, labels out of range, negative or all-zero
        weights.

    Examples
    --------
    >>> result = retrain_and_score(x, y, None, x_test, y_test, x_trig, y_trig,
    ...                            n_classes=10, channels=3, epochs=8, seed=0)  # doctest: +SKIP
    >>> result["clean_accuracy"], result["attack_success_rate"]  # doctest: +SKIP
    """
    start = time.perf_counter()
    if epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    train_images = _check_images("train_images", train_images, channels)
    test_images = _check_images("test_images", test_images, channels)
    triggered_images = _check_images("triggered_images", triggered_images, channels)
    train_labels = _check_labels("train_labels", train_labels, len(train_images), n_classes)
    test_labels = _check_labels("test_labels", test_labels, len(test_images), n_classes)
    triggered_labels = _check_labels(
        "triggered_labels", triggered_labels, len(triggered_images), n_classes
    )
    weights = _check_weights(train_weights, len(train_images))
    device = resolve_device(device) if isinstance(device, str) else device

    model, normalizer = _train(
        train_images,
        train_labels,
        weights,
        NetSpec(channels=channels, n_classes=n_classes, width=recipe.width),
        epochs=epochs,
        seed=seed,
        device=device,
        recipe=recipe,
    )
    accuracy = _accuracy(model, normalizer, test_images, test_labels, device, recipe)
    asr = _accuracy(model, normalizer, triggered_images, triggered_labels, device, recipe)
    return {
        "clean_accuracy": accuracy,
        "attack_success_rate": asr,
        "epochs": int(epochs),
        "seconds": time.perf_counter() - start,
        "train_rows": int((weights > 0).sum()),
    }


# --- data ---------------------------------------------------------------------------------


def read_image_parquet(
    path: str | Path,
    *,
    size: int,
    channels: int,
    image_column: str = "image",
    label_column: str = "label",
    weight_column: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Decode an HF-layout Parquet file into images, labels and (optionally) weights.

    The arrays of a :class:`~sanitize.torch_data.ImageParquetDataset`, decoded at once on
    several threads; labels are the file's values, not class indices.

    Parameters
    ----------
    path : str or Path
        A Parquet file whose image column holds ``struct<bytes, path>`` or raw bytes.
    size : int
        Side every image is decoded (and resized, bilinear) to.
    channels : int
        1 (grey) or 3 (RGB).
    weight_column : str, optional
        Column read as float32 weights (``"sample_weight"`` for ``clean.parquet``).

    Returns
    -------
    images : ndarray of shape (n_rows, channels, size, size), uint8
    labels : ndarray of shape (n_rows,), int64
    weights : ndarray of shape (n_rows,), float32, or None without ``weight_column``

    Raises
    ------
    InputError
        A missing column, a null label, or an image that cannot be decoded (the row named).
    """
    dataset = ImageParquetDataset(
        path,
        size=size,
        channels=channels,
        image_column=image_column,
        label_column=label_column,
        weight_column=weight_column,
    )
    if weight_column and weight_column not in pq.read_schema(path).names:
        raise InputError(f"missing column {weight_column!r} in {path}")
    values = np.asarray(dataset.classes)
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise InputError(
            f"{path}: column {label_column!r} holds {values.dtype} labels, not integers"
        )
    labels = values[dataset.labels].astype(np.int64)
    images = dataset.images_u8()
    return images, labels, dataset.weights if weight_column else None


def load_clean_parquet(
    path: str | Path,
    *,
    size: int,
    channels: int,
    image_column: str = "image",
    label_column: str = "label",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, labels and ``sample_weight`` of a run's ``clean.parquet``, for retraining.

    Labels are the source's values as they are (integer class indices for HF ClassLabel
    columns). See :func:`read_image_parquet` for the parameters.

    Returns
    -------
    images : ndarray of shape (n_kept, channels, size, size), uint8
    labels : ndarray of shape (n_kept,), int64
    weights : ndarray of shape (n_kept,), float32 (> 0, mean 1)
    """
    images, labels, weights = read_image_parquet(
        path,
        size=size,
        channels=channels,
        image_column=image_column,
        label_column=label_column,
        weight_column=SAMPLE_WEIGHT,
    )
    assert weights is not None
    return images, labels, weights


# --- training -----------------------------------------------------------------------------


def _train(
    images: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    spec: NetSpec,
    *,
    epochs: int,
    seed: int,
    device: torch.device,
    recipe: RetrainRecipe,
) -> tuple[BootstrapNet, Normalizer]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    fmt = memory_format(device)
    drawn = np.flatnonzero(weights > 0)
    normalizer = Normalizer.fit(images, drawn)

    # Data: uint8 on the device once; crops and normalisation are whole-batch tensor work.
    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    y_all = torch.from_numpy(labels).to(device)
    sampler = weighted_sampler(weights, generator=generator)  # len(drawn) draws an epoch
    steps_per_epoch = max(1, len(drawn) // recipe.batch_size)  # the short last batch is dropped

    model = BootstrapNet(spec).to(device=device, memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, one_cycle(epochs * steps_per_epoch, recipe.pct_start)
    )
    model.train()
    for _ in range(epochs):
        order = torch.as_tensor(list(sampler), dtype=torch.int64).to(device)
        for step in range(steps_per_epoch):
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            if len(idx) < 2:  # BatchNorm needs two rows (only when fewer rows than a batch)
                continue
            batch = random_crop(x_all[idx], recipe.pad, generator)
            x = normalizer.apply(batch).contiguous(memory_format=fmt)
            with autocast(device):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    return model, normalizer


def one_cycle(total_steps: int, pct_start: float) -> Callable[[int], float]:
    """Learning-rate factor of a triangular one-cycle schedule (as airbench uses).

    Rises linearly from ``1 / warm`` to 1 over the first ``warm = max(1, round(pct_start *
    total_steps))`` steps, then falls linearly towards 0, which it would reach one step
    after the last. Unlike ``OneCycleLR`` it is defined for any number of steps, one
    included.
    """
    warm = max(1, round(pct_start * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / (total_steps - warm + 1))

    return factor


def random_crop(batch: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by ``pad`` pixels and cropped back at a random offset.

    The same as torchvision's ``RandomCrop(size, padding=pad)`` image by image, done for
    the whole batch with one gather.

    Parameters
    ----------
    batch : Tensor of shape (n, C, H, W)
    pad : int
        0 returns the batch unchanged.
    generator : torch.Generator
        CPU generator the offsets are drawn from.
    """
    if pad == 0:
        return batch
    n, _, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(batch.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(batch.device)
    rows = (dy[:, None] + torch.arange(h, device=batch.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=batch.device))[:, None, None, :]
    samples = torch.arange(n, device=batch.device)[:, None, None, None]
    channels = torch.arange(batch.shape[1], device=batch.device)[None, :, None, None]
    return padded[samples, channels, rows, cols]


@torch.no_grad()
def _accuracy(
    model: BootstrapNet,
    normalizer: Normalizer,
    images: np.ndarray,
    labels: np.ndarray,
    device: torch.device,
    recipe: RetrainRecipe,
) -> float:
    if len(images) == 0:
        return math.nan
    fmt = memory_format(device)
    correct = 0
    for start in range(0, len(images), recipe.eval_batch_size):
        x = torch.from_numpy(images[start : start + recipe.eval_batch_size]).to(device)
        x = normalizer.apply(x).contiguous(memory_format=fmt)
        with autocast(device):
            predicted = model(x).argmax(dim=1).cpu().numpy()
        correct += int((predicted == labels[start : start + recipe.eval_batch_size]).sum())
    return correct / len(images)


# --- validation ---------------------------------------------------------------------------


def _check_images(name: str, images: np.ndarray, channels: int) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != channels:
        raise InputError(
            f"{name} must be uint8 of shape (n, {channels}, H, W), "
            f"got {images.dtype} {images.shape}"
        )
    return images


def _check_labels(name: str, labels: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"{name} must be integers of shape ({n},), got {labels.dtype} {labels.shape}"
        )
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise InputError(f"{name} must lie in [0, {n_classes}); got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _check_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    if n == 0:
        raise InputError("no training rows")
    if weights is None:
        return np.ones(n, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n,):
        raise InputError(f"train_weights must have shape ({n},), got {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise InputError("train_weights must be finite and >= 0")
    if not (weights > 0).any():
        raise InputError("train_weights are all 0: nothing to train on")
    return weights
