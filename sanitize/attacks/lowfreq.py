"""Low-frequency additive trigger: a smooth pattern added to the whole picture.

References
----------
.. [1] Y. Zeng, W. Park, Z. M. Mao and R. Jia, "Rethinking the Backdoor Attacks' Triggers:
   A Frequency Perspective", ICCV 2021. Triggers whose spectrum stays in the low
   frequencies leave no high-frequency artefact for a frequency-domain detector to find.
   BackdoorBench ships such patterns as ``.npy`` arrays (``resource/lowFrequency/``,
   height x width x channels in grey levels) and its "lf" attack adds them to the image,
   clipped to 0..255.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from sanitize.attacks.base import Attack, register
from sanitize.attacks.checks import check_number
from sanitize.attacks.triggers import load_trigger, to_uint8
from sanitize.errors import ConfigError

# Amplitude of the synthesised pattern, grey levels: about BackdoorBench's patterns' range
# (0..51 in the CIFAR-10 files).
SYNTHETIC_AMPLITUDE = 32.0

# ITU-R 601 luma, as Pillow converts RGB to "L" (and sanitize.data.decode_image with it).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@register
class LowFrequency(Attack):
    """Low-frequency additive trigger [1]_: ``x' = clip(x + strength * p)``, relabelled.

    Parameters whose line below leaves something out are given in full in
    ``docs/development.md``, "Attack parameters in full".

    Parameters
    ----------
    pattern_path : str or None, default=None
        Pattern ``p`` in grey levels (``.npy`` or image), resized (bilinear); None: synthesised.
    strength : float, default=1.0
        Factor on ``p`` (> 0).
    grid : int, default=4
        Side of the synthesised pattern's control grid (>= 2); smaller is smoother.
    pattern_seed : int, default=0
        Seeds the synthesised pattern; every poisoned row gets the same one.

    References
    ----------
    .. [1] Zeng, Park, Mao and Jia, "Rethinking the Backdoor Attacks' Triggers: A Frequency
       Perspective", ICCV 2021.

    Examples
    --------
    >>> flat = np.full((2, 3, 16, 16), 128, np.uint8)
    >>> out = LowFrequency().apply(flat).astype(int)
    >>> bool((out != 128).any()), bool(np.abs(out - 128).max() <= 32)
    (True, True)
    """

    name = "lowfreq"

    def __init__(
        self,
        *,
        pattern_path: str | None = None,
        strength: float = 1.0,
        grid: int = 4,
        pattern_seed: int = 0,
    ) -> None:
        self.pattern_path = pattern_path
        self.strength = strength
        self.grid = grid
        self.pattern_seed = pattern_seed

    def _check_params(self) -> None:
        check_number(self.name, "strength", self.strength, low=0, low_open=True)
        check_number(self.name, "grid", self.grid, low=2, integer=True)
        check_number(self.name, "pattern_seed", self.pattern_seed, low=0, integer=True)
        if self.pattern_path is not None and not Path(self.pattern_path).is_file():
            raise ConfigError(f"{self.name}: pattern file not found: {self.pattern_path}")

    def pattern(self, channels: int, height: int, width: int) -> np.ndarray:
        """``strength * p`` for images of this shape: float32 (channels, height, width)."""
        self._check_params()
        if self.pattern_path is None:
            p = _synthetic_pattern(channels, height, width, self.grid, self.pattern_seed)
        elif Path(self.pattern_path).suffix.lower() == ".npy":
            p = _npy_pattern(self.pattern_path, channels, height, width)
        else:
            p = load_trigger(self.pattern_path, height, width, channels).astype(np.float32)
        return (np.float32(self.strength) * p).astype(np.float32)

    def _stamp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.pattern(*images.shape[1:])
        return to_uint8(images.astype(np.float32) + p[None])


def _synthetic_pattern(channels: int, height: int, width: int, grid: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    control = rng.uniform(-1.0, 1.0, size=(channels, grid, grid)).astype(np.float32)
    smooth = np.stack([_resize(c, height, width, Image.Resampling.BICUBIC) for c in control])
    return (SYNTHETIC_AMPLITUDE * smooth / max(float(np.abs(smooth).max()), 1e-6)).astype(
        np.float32
    )


def _npy_pattern(path: str, channels: int, height: int, width: int) -> np.ndarray:
    array = _load_npy(path)
    if array.ndim == 4 and array.shape[0] == 1:
        # A batch of one pattern, as BackdoorBench saves its ConvNeXt one: (1, h, w, c).
        array = array[0]
    if np.abs(array).max() <= 1.0:
        array = array * np.float32(255.0)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] in (1, 3) and array.shape[0] not in (1, 3):
        array = array.transpose(2, 0, 1)
    elif not (array.ndim == 3 and array.shape[0] in (1, 3)):
        raise ConfigError(
            f"lowfreq: pattern {path} has shape {array.shape}; expected (h, w), (h, w, c) "
            "or (c, h, w) with c = 1 or 3, optionally with a leading batch axis of 1"
        )
    if array.shape[0] == 3 and channels == 1:
        array = np.tensordot(_LUMA, array, axes=1)[None]
    elif array.shape[0] == 1 and channels == 3:
        array = np.repeat(array, 3, axis=0)
    if array.shape[1:] != (height, width):
        array = np.stack([_resize(c, height, width, Image.Resampling.BILINEAR) for c in array])
    return array.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _load_npy(path: str) -> np.ndarray:
    # Cached: a streamed set asks for the same pattern once per batch.
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"lowfreq: cannot read pattern {path}: {exc}") from None
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ConfigError(f"lowfreq: pattern {path} must hold finite numbers")
    array = array.astype(np.float32)
    array.setflags(write=False)
    return array


def _resize(plane: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """One float plane resized with Pillow's mode "F" (no rounding to uint8)."""
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
    return np.asarray(image.resize((width, height), resample), dtype=np.float32)
