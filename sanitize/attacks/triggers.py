"""Trigger images and masks: loading, resizing and stamping them into images."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from sanitize.errors import ConfigError

_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR}


def mask_path_for(trigger_path: str | Path) -> Path:
    """Where a trigger's mask lives by convention: ``mask_<name>`` next to it."""
    path = Path(trigger_path)
    return path.with_name(f"mask_{path.name}")


def load_trigger(
    path: str | Path, height: int, width: int, channels: int, *, resample: str = "bilinear"
) -> np.ndarray:
    """A trigger image file as uint8 (channels, height, width), resized to the images.

    Colour triggers on grey images are converted the way Pillow converts to mode "L"
    (ITU-R 601 luma), as :func:`sanitize.data.decode_image` does for the images.
    ``resample`` is "bilinear" for pictures, "nearest" for crisp patterns.
    """
    mode = "L" if channels == 1 else "RGB"
    array = _load_image(str(path), mode, height, width, resample)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def load_patch(path: str | Path, channels: int) -> np.ndarray:
    """A patch image file as uint8 (channels, h, w) at its own size (grey: ITU-R 601 luma)."""
    array = _load_image(str(path), "L" if channels == 1 else "RGB", None, None, "nearest")
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def load_mask(path: str | Path, height: int, width: int) -> np.ndarray:
    """A mask image file as float32 (height, width) opacity in [0, 1] (white = trigger).

    Resized with nearest-neighbour sampling so a binary mask stays binary.
    """
    return _load_image(str(path), "L", height, width, "nearest").astype(np.float32) / 255.0


def trigger_mask(
    trigger_path: str | Path, mask_path: str | Path | None, pixels: np.ndarray
) -> np.ndarray:
    """The float32 (height, width) mask of trigger ``pixels`` (channels, height, width)
    loaded from ``trigger_path``: ``mask_path``, else ``mask_<name>`` next to the trigger
    when it exists, else the trigger's non-black pixels (a trigger drawn on black, as
    BackdoorBench's BadNets grid and the TrojanNN patterns are)."""
    mask_file = Path(mask_path) if mask_path else mask_path_for(trigger_path)
    if mask_path or mask_file.is_file():
        return load_mask(mask_file, pixels.shape[1], pixels.shape[2])
    return pixels.any(axis=0).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _load_image(
    path: str, mode: str, height: int | None, width: int | None, resample: str
) -> np.ndarray:
    # Cached: a streamed set asks for the same trigger once per batch. A size of None keeps
    # the file's own.
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if height is not None and width is not None and image.size != (width, height):
                image = image.resize((width, height), _RESAMPLE[resample])
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise ConfigError(f"trigger file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ...
        raise ConfigError(f"cannot read trigger image {path}: {exc}") from None
    array.setflags(write=False)
    return array


def stamp_with_mask(images: np.ndarray, trigger: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """``x' = (1 - m) x + m t`` per pixel, rounded to uint8.

    Parameters
    ----------
    images : ndarray of shape (n_samples, channels, height, width), dtype uint8
    trigger : ndarray of shape (channels, height, width), dtype uint8
    opacity : ndarray of shape (height, width), float in [0, 1]
        Where the mask is 0 or 1 the pixel is exactly the image's or the trigger's.
    """
    m = opacity.astype(np.float32)[None, None]
    mixed = images.astype(np.float32) * (1.0 - m) + trigger.astype(np.float32)[None] * m
    return to_uint8(mixed)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float pixel values in 0..255 rounded to the nearest integer and clipped to uint8."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """Float (..., 3, H, W) colour to (..., 1, H, W) grey with ITU-R 601 luma weights,
    the ones Pillow uses for mode "L"."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(3, 1, 1)
    return (rgb * weights).sum(axis=-3, keepdims=True)
