"""Argument checks shared by the attacks: images, labels, target, rate, numbers, choices."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from sanitize.errors import ConfigError, InputError

MIN_SIDE = 8  # pixels; smaller images leave no room for a patch and its margin


def check_images(images: np.ndarray) -> np.ndarray:
    """``images`` as a uint8 (N, C, H, W) array with C in {1, 3} and H, W >= 8."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise InputError(
            f"images must be uint8 of shape (N, C, H, W), got {images.dtype} {images.shape}"
        )
    if images.shape[1] not in (1, 3):
        raise InputError(f"images must have 1 or 3 channels, got shape {images.shape}")
    if min(images.shape[2:]) < MIN_SIDE:
        raise InputError(
            f"images must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got shape {images.shape}"
        )
    return images


def check_labels(labels: np.ndarray, n: int | None = None) -> np.ndarray:
    """``labels`` as a 1-D integer array (of length ``n`` when given)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (n is not None and len(labels) != n):
        expected = f"({n},)" if n is not None else "(n_samples,)"
        raise InputError(f"labels must have shape {expected}, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integer class indices, got {labels.dtype}")
    return labels


def check_poison_args(target: Any, rate: Any, seed: Any) -> tuple[int, float, int]:
    """``target``, ``rate`` and ``seed`` as int, float, int; ConfigError when out of range."""
    if not _is_int(target):
        raise ConfigError(f"target must be an integer class, got {target!r}")
    if not _is_real(rate) or not 0 <= rate <= 1:
        raise ConfigError(f"rate must be a number in [0, 1], got {rate!r}")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    return int(target), float(rate), int(seed)


def check_number(
    attack: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
) -> None:
    """Raise ConfigError unless ``value`` is a number (an integer when asked) in range.

    The range is ``[low, high]``, or ``(low, high]`` with ``low_open``; a bound of None is
    no bound.
    """
    ok = _is_int(value) if integer else _is_real(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        kind = "an integer" if integer else "a number"
        bounds = ""
        if low is not None and high is not None:
            bounds = f" in {'(' if low_open else '['}{low:g}, {high:g}]"
        elif low is not None:
            bounds = f" {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            bounds = f" <= {high:g}"
        raise ConfigError(f"{attack}: {name} must be {kind}{bounds}, got {value!r}")


def check_choice(attack: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{attack}: unknown {name} {value!r}; known: {', '.join(choices)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and bool(np.isfinite(float(value)))
    )
