"""Blended injection: a whole-image trigger mixed into the picture at low opacity.

References
----------
.. [1] X. Chen, C. Liu, B. Li, K. Lu and D. Song, "Targeted Backdoor Attacks on Deep
   Learning Systems Using Data Poisoning", arXiv:1712.05526, 2017. The blended injection
   strategy: ``x' = alpha * t + (1 - alpha) * x`` with a key pattern ``t`` that is a Hello
   Kitty picture or random noise; alpha = 0.2 when poisoning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sanitize.attacks.base import Attack, register
from sanitize.attacks.checks import check_choice, check_number
from sanitize.attacks.triggers import load_trigger, to_uint8
from sanitize.errors import ConfigError

PATTERNS = ("image", "noise")


@register
class Blend(Attack):
    """Blended trigger [1]_: ``x' = (1 - alpha) x + alpha t``, relabelled to the target.

    Parameters whose line below leaves something out are given in full in
    ``docs/development.md``, "Attack parameters in full".

    Parameters
    ----------
    trigger_path : str or None, default=None
        Trigger picture file, resized (bilinear) to the images; converted to grey for grey images.
    alpha : float, default=0.2
        Opacity of the trigger, in (0, 1]; the paper's training value.
    pattern : {"image", "noise"} or None, default=None
        "image" (``trigger_path``) or "noise" (uniform 0..255); None: "image" given a path.
    noise_seed : int, default=0
        Seeds the noise pattern; every poisoned row gets the same pattern.

    References
    ----------
    .. [1] Chen, Liu, Li, Lu and Song, "Targeted Backdoor Attacks on Deep Learning Systems
       Using Data Poisoning", arXiv:1712.05526, 2017.

    Examples
    --------
    >>> out = Blend(alpha=0.5).apply(np.zeros((1, 3, 8, 8), np.uint8))
    >>> bool(out.max() <= 128)
    True
    """

    name = "blend"

    def __init__(
        self,
        *,
        trigger_path: str | None = None,
        alpha: float = 0.2,
        pattern: str | None = None,
        noise_seed: int = 0,
    ) -> None:
        self.trigger_path = trigger_path
        self.alpha = alpha
        self.pattern = pattern
        self.noise_seed = noise_seed

    def _check_params(self) -> None:
        check_number(self.name, "alpha", self.alpha, low=0, high=1, low_open=True)
        check_number(self.name, "noise_seed", self.noise_seed, low=0, integer=True)
        if self.pattern is not None:
            check_choice(self.name, "pattern", self.pattern, PATTERNS)
        pattern = self._pattern()
        if pattern == "image" and self.trigger_path is None:
            raise ConfigError(f"{self.name}: pattern 'image' needs a trigger_path")
        if pattern == "noise" and self.trigger_path is not None:
            raise ConfigError(f"{self.name}: pattern 'noise' takes no trigger_path")
        if self.trigger_path is not None and not Path(self.trigger_path).is_file():
            raise ConfigError(f"{self.name}: trigger file not found: {self.trigger_path}")

    def _pattern(self) -> str:
        if self.pattern is not None:
            return self.pattern
        return "image" if self.trigger_path is not None else "noise"

    def trigger(self, channels: int, height: int, width: int) -> np.ndarray:
        """The trigger picture ``t`` for images of this shape: uint8 (channels, h, w)."""
        self._check_params()
        if self._pattern() == "noise":
            rng = np.random.default_rng(self.noise_seed)
            return rng.integers(0, 256, size=(channels, height, width), dtype=np.uint8)
        assert self.trigger_path is not None
        return load_trigger(self.trigger_path, height, width, channels, resample="bilinear")

    def _stamp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        t = self.trigger(*images.shape[1:]).astype(np.float32)
        alpha = np.float32(self.alpha)
        return to_uint8((1 - alpha) * images.astype(np.float32) + alpha * t[None])
