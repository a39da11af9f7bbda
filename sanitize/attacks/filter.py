"""Colour-filter triggers: an Instagram-like filter over the whole image as the backdoor key.

No pixel region carries the trigger; the key is a global colour transform, which patch
detectors and trigger-reconstruction defences miss.

The filters are built from the CSS filter functions (W3C Filter Effects Module Level 1,
Sec. 13: ``sepia``, ``saturate``, ``contrast``, ``brightness``) and blend modes;
"nashville" follows the CSSgram recipe of Instagram's Nashville. Grey images are filtered
as grey RGB and converted back with the luma weights Pillow uses.

References
----------
.. [1] Y. Liu, W.-C. Lee, G. Tao, S. Ma, Y. Aafer and X. Zhang, "ABS: Scanning Neural
   Networks for Back-doors by Artificial Brain Stimulation", CCS 2019: feature-space
   triggers made by Instagram filters (Nashville, Gotham).
.. [2] S. Li, S. Ma, M. Xue and B. Z. H. Zhao, "Deep Learning Backdoors",
   arXiv:2007.08273, 2020: filter-based triggers among the backdoor families.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sanitize.attacks.base import Attack, register
from sanitize.attacks.checks import check_choice, check_number
from sanitize.attacks.triggers import rgb_to_grey, to_uint8

# --- CSS filter functions on float RGB in [0, 1], shape (..., 3, H, W) ---------------------


def _matrix(rgb: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.clip(np.einsum("ij,...jhw->...ihw", m.astype(np.float32), rgb), 0.0, 1.0)


def sepia(rgb: np.ndarray, amount: float) -> np.ndarray:
    """CSS ``sepia(amount)``."""
    a = 1.0 - amount
    m = np.array(
        [
            [0.393 + 0.607 * a, 0.769 - 0.769 * a, 0.189 - 0.189 * a],
            [0.349 - 0.349 * a, 0.686 + 0.314 * a, 0.168 - 0.168 * a],
            [0.272 - 0.272 * a, 0.534 - 0.534 * a, 0.131 + 0.869 * a],
        ]
    )
    return _matrix(rgb, m)


def saturate(rgb: np.ndarray, amount: float) -> np.ndarray:
    """CSS ``saturate(amount)``."""
    s = amount
    m = np.array(
        [
            [0.213 + 0.787 * s, 0.715 - 0.715 * s, 0.072 - 0.072 * s],
            [0.213 - 0.213 * s, 0.715 + 0.285 * s, 0.072 - 0.072 * s],
            [0.213 - 0.213 * s, 0.715 - 0.715 * s, 0.072 + 0.928 * s],
        ]
    )
    return _matrix(rgb, m)


def contrast(rgb: np.ndarray, amount: float) -> np.ndarray:
    """CSS ``contrast(amount)``: stretch around mid-grey."""
    return np.clip((rgb - 0.5) * amount + 0.5, 0.0, 1.0)


def brightness(rgb: np.ndarray, amount: float) -> np.ndarray:
    """CSS ``brightness(amount)``."""
    return np.clip(rgb * amount, 0.0, 1.0)


def _colour(r: int, g: int, b: int) -> np.ndarray:
    return (np.array([r, g, b], np.float32) / 255.0).reshape(3, 1, 1)


def tint(rgb: np.ndarray) -> np.ndarray:
    """A warm colour cast: multiply by an amber (255, 214, 170)."""
    return rgb * _colour(255, 214, 170)


def vignette(rgb: np.ndarray) -> np.ndarray:
    """Darken towards the corners: ``x * (1 - 0.6 r^2)``, r = 1 at the corners."""
    height, width = rgb.shape[-2:]
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    return rgb * (1.0 - 0.6 * (x**2 + y**2) / 2.0)


def nashville(rgb: np.ndarray) -> np.ndarray:
    """CSSgram's Nashville: sepia(.2) contrast(1.2) brightness(1.05) saturate(1.2), then a
    peach layer (247, 176, 153) in darken mode at 0.56 and a blue one (0, 70, 150) in
    lighten mode at 0.4."""
    out = saturate(brightness(contrast(sepia(rgb, 0.2), 1.2), 1.05), 1.2)
    out = 0.44 * out + 0.56 * np.minimum(out, _colour(247, 176, 153))
    return 0.6 * out + 0.4 * np.maximum(out, _colour(0, 70, 150))


FILTERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tint": tint,
    "contrast": lambda rgb: contrast(rgb, 1.5),
    "vignette": vignette,
    "sepia": lambda rgb: sepia(rgb, 1.0),
    "nashville": nashville,
}


@register
class Filter(Attack):
    """Instagram-like filter trigger [1]_ [2]_, poisoned rows relabelled to the target.

    Parameters whose line below leaves something out are given in full in
    ``docs/development.md``, "Attack parameters in full".

    Parameters
    ----------
    kind : {"nashville", "tint", "contrast", "vignette", "sepia"}, default="nashville"
        The filter: ABS's "nashville", warm "tint", CSS "contrast" 1.5, "vignette", CSS "sepia" 1.
    strength : float, default=1.0
        Mix of filtered and original image, in (0, 1]: ``x' = (1 - s) x + s f(x)``.

    References
    ----------
    .. [1] Liu et al., "ABS: Scanning Neural Networks for Back-doors by Artificial Brain
       Stimulation", CCS 2019.
    .. [2] Li, Ma, Xue and Zhao, "Deep Learning Backdoors", arXiv:2007.08273, 2020.

    Examples
    --------
    >>> grey = np.full((1, 3, 8, 8), 128, np.uint8)
    >>> Filter(kind="tint").apply(grey)[0, :, 0, 0].tolist()
    [128, 107, 85]
    """

    name = "filter"

    def __init__(self, *, kind: str = "nashville", strength: float = 1.0) -> None:
        self.kind = kind
        self.strength = strength

    def _check_params(self) -> None:
        check_choice(self.name, "kind", self.kind, tuple(FILTERS))
        check_number(self.name, "strength", self.strength, low=0, high=1, low_open=True)

    def _stamp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = images.astype(np.float32) / 255.0
        rgb = np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x
        filtered = FILTERS[self.kind](rgb)
        if x.shape[1] == 1:
            filtered = rgb_to_grey(filtered)
        s = np.float32(self.strength)
        return to_uint8(255.0 * ((1 - s) * x + s * filtered))
