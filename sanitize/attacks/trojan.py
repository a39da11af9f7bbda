"""Trojan-style trigger: a textured square or a watermark pasted through a mask.

The paper optimises the trigger's pixels to excite chosen neurons of a trained model;
without that model, the trigger here is a fixed image (the published backdoor-toolbox
``trojan_square_32.png`` / ``trojan_watermark_32.png``, or a built-in textured square of
the same size and place), which is how benchmarks replay the attack on new data.

References
----------
.. [1] Y. Liu, S. Ma, Y. Aafer, W.-C. Lee, J. Zhai, W. Wang and X. Zhang, "Trojaning
   Attack on Neural Networks", NDSS 2018: triggers are a square or a watermark mask
   whose pixels the attacker chooses; the evaluation varies their size and transparency.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sanitize.attacks.base import Attack, register
from sanitize.attacks.checks import check_number
from sanitize.attacks.triggers import (
    load_trigger,
    rgb_to_grey,
    stamp_with_mask,
    to_uint8,
    trigger_mask,
)
from sanitize.errors import ConfigError


@register
class Trojan(Attack):
    """Trojan trigger [1]_ pasted through a mask, poisoned rows relabelled to the target.

    Parameters whose line below leaves something out are given in full in
    ``docs/development.md``, "Attack parameters in full".

    Parameters
    ----------
    trigger_path : str or None, default=None
        Trigger image file, resized (nearest) to the images; None: a built-in seeded square.
    mask_path : str or None, default=None
        Mask file (white = trigger, grey = partly); default ``mask_<name>``, else non-black.
    alpha : float, default=1.0
        Opacity of the trigger, in (0, 1]: 1 - the paper's transparency.
    pattern_seed : int, default=0
        Seeds the texture of the built-in square.

    References
    ----------
    .. [1] Liu et al., "Trojaning Attack on Neural Networks", NDSS 2018.

    Examples
    --------
    >>> out = Trojan().apply(np.zeros((1, 3, 32, 32), np.uint8))
    >>> changed = np.argwhere(out[0].any(axis=0))
    >>> changed.min(axis=0).tolist(), changed.max(axis=0).tolist()
    ([21, 21], [28, 28])
    """

    name = "trojan"

    def __init__(
        self,
        *,
        trigger_path: str | None = None,
        mask_path: str | None = None,
        alpha: float = 1.0,
        pattern_seed: int = 0,
    ) -> None:
        self.trigger_path = trigger_path
        self.mask_path = mask_path
        self.alpha = alpha
        self.pattern_seed = pattern_seed

    def _check_params(self) -> None:
        check_number(self.name, "alpha", self.alpha, low=0, high=1, low_open=True)
        check_number(self.name, "pattern_seed", self.pattern_seed, low=0, integer=True)
        if self.mask_path is not None and self.trigger_path is None:
            raise ConfigError(f"{self.name}: mask_path needs a trigger_path")
        for path in (self.trigger_path, self.mask_path):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{self.name}: trigger file not found: {path}")

    def trigger(self, channels: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The trigger for images of this shape: uint8 (channels, h, w) pixels and float32
        (h, w) opacity in [0, 1] (the mask times ``alpha``)."""
        self._check_params()
        if self.trigger_path is None:
            pixels, mask = self._builtin_square(channels, height, width)
        else:
            pixels = load_trigger(self.trigger_path, height, width, channels, resample="nearest")
            mask = trigger_mask(self.trigger_path, self.mask_path, pixels)
        return pixels, mask * np.float32(self.alpha)

    def _builtin_square(
        self, channels: int, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        short = min(height, width)
        side, margin = max(3, round(short / 4)), round(short * 3 / 32)
        rng = np.random.default_rng(self.pattern_seed)
        texture = rng.integers(0, 256, size=(3, side, side)).astype(np.float32)
        if channels == 1:
            texture = rgb_to_grey(texture)
        pixels = np.zeros((channels, height, width), np.uint8)
        mask = np.zeros((height, width), np.float32)
        top, left = height - margin - side, width - margin - side
        pixels[:, top : top + side, left : left + side] = to_uint8(texture)
        mask[top : top + side, left : left + side] = 1.0
        return pixels, mask

    def _stamp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pixels, opacity = self.trigger(*images.shape[1:])
        return stamp_with_mask(images, pixels, opacity)
