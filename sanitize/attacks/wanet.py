"""WaNet: a small, smooth, fixed warp of the whole image as the trigger.

References
----------
.. [1] T. A. Nguyen and A. T. Tran, "WaNet - Imperceptible Warping-based Backdoor
   Attack", ICLR 2021. The warping field: random values in [-1, 1] on a k x k control
   grid, normalised by their mean absolute value, upsampled (bicubic) to the image,
   scaled by s / height, added to the identity sampling grid and clipped to [-1, 1];
   images are resampled bilinearly on it. k = 4, s = 0.5 in the paper's experiments.
   "Noise mode" adds cross samples: other rows warped by the same field plus per-row
   random noise in [-1, 1] / height, keeping their true labels, cross_ratio = 2 times
   as many as the backdoor rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sanitize.attacks.base import Attack, PoisonPlan, register
from sanitize.attacks.checks import check_number
from sanitize.attacks.triggers import to_uint8
from sanitize.errors import ConfigError

# Keeps the random streams of noise mode apart from the one that picks the poisons.
_NOISE_STREAM = 7


@register
class WaNet(Attack):
    """WaNet warping trigger [1]_, poisoned rows relabelled to the target.

    Parameters whose line below leaves something out are given in full in
    ``docs/development.md``, "Attack parameters in full".

    Parameters
    ----------
    k : int, default=4
        Side of the random control grid (>= 2); smaller is smoother.
    s : float, default=0.5
        Strength of the warp (> 0): displacement ``s / side`` in [-1, 1] image coordinates.
    grid_rescale : float, default=1.0
        Factor on the warped grid before clipping, as in the reference code (> 0).
    warp_seed : int, default=0
        Seeds the control grid: one fixed warp for every poisoned row and test row.
    noise : bool, default=False
        Noise mode: also warp other rows with added noise, labels kept (``info["noise_rows"]``).
    cross_ratio : float, default=2.0
        Cross samples per poisoned row in noise mode (>= 0).

    References
    ----------
    .. [1] Nguyen and Tran, "WaNet - Imperceptible Warping-based Backdoor Attack",
       ICLR 2021.

    Examples
    --------
    >>> flat = np.full((1, 3, 16, 16), 90, np.uint8)
    >>> bool((WaNet().apply(flat) == 90).all())
    True
    """

    name = "wanet"

    def __init__(
        self,
        *,
        k: int = 4,
        s: float = 0.5,
        grid_rescale: float = 1.0,
        warp_seed: int = 0,
        noise: bool = False,
        cross_ratio: float = 2.0,
    ) -> None:
        self.k = k
        self.s = s
        self.grid_rescale = grid_rescale
        self.warp_seed = warp_seed
        self.noise = noise
        self.cross_ratio = cross_ratio

    def _check_params(self) -> None:
        check_number(self.name, "k", self.k, low=2, integer=True)
        check_number(self.name, "s", self.s, low=0, low_open=True)
        check_number(self.name, "grid_rescale", self.grid_rescale, low=0, low_open=True)
        check_number(self.name, "warp_seed", self.warp_seed, low=0, integer=True)
        check_number(self.name, "cross_ratio", self.cross_ratio, low=0)
        if not isinstance(self.noise, bool | np.bool_):
            raise ConfigError(f"{self.name}: noise must be true or false, got {self.noise!r}")

    def sampling_grid(self, height: int, width: int) -> np.ndarray:
        """The warped sampling grid: float32 (height, width, 2) in [-1, 1], (x, y) last,
        the layout of ``torch.nn.functional.grid_sample``."""
        import torch  # imported here: only the warp needs torch, not every attack user

        self._check_params()
        rng = np.random.default_rng(self.warp_seed)
        control = rng.uniform(-1.0, 1.0, size=(1, 2, self.k, self.k)).astype(np.float32)
        control /= np.abs(control).mean()
        field = torch.nn.functional.interpolate(
            torch.from_numpy(control), size=(height, width), mode="bicubic", align_corners=True
        )[0].permute(1, 2, 0)
        scale = torch.tensor([self.s / width, self.s / height], dtype=torch.float32)
        grid = (_identity_grid(height, width) + field * scale) * self.grid_rescale
        return grid.clamp(-1.0, 1.0).numpy()

    def warp_field(self, height: int, width: int) -> np.ndarray:
        """Displacement of every pixel in pixels: float32 (height, width, 2), (dx, dy)."""
        grid = self.sampling_grid(height, width)
        identity = _identity_grid(height, width).numpy()
        half = np.array([(width - 1) / 2, (height - 1) / 2], np.float32)
        return (grid - identity) * half

    def _stamp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _resample(images, self.sampling_grid(*images.shape[2:]))

    def plan(self, labels: np.ndarray, *, target: int, rate: float, seed: int) -> PoisonPlan:
        plan = super().plan(labels, target=target, rate=rate, seed=seed)
        if self.noise:
            others = np.flatnonzero(~plan.poisoned)
            count = min(round(self.cross_ratio * plan.info["n_poisoned"]), len(others))
            rng = np.random.default_rng([plan.seed, _NOISE_STREAM])
            chosen = np.sort(rng.choice(others, size=count, replace=False))
            plan.info["noise_rows"] = chosen.tolist()
        return plan

    def execute(self, images: np.ndarray, plan: PoisonPlan, *, start: int = 0) -> np.ndarray:
        out = super().execute(images, plan, start=start)
        rows = np.asarray(plan.info.get("noise_rows", []), dtype=np.int64)
        rows = rows[(rows >= start) & (rows < start + len(out))]
        if len(rows):
            out[rows - start] = self._noisy(out[rows - start], rows, plan.seed)
        return out

    def _noisy(self, images: np.ndarray, rows: np.ndarray, seed: int) -> np.ndarray:
        """The paper's cross samples: the fixed warp plus per-row noise in [-1, 1] / height.

        The noise of a row depends only on the seed and the row's index, so a set poisoned
        batch by batch equals one poisoned at once."""
        height, width = images.shape[2:]
        grid = self.sampling_grid(height, width)
        grids = np.empty((len(rows), height, width, 2), np.float32)
        for i, row in enumerate(rows):
            noise = np.random.default_rng([seed, _NOISE_STREAM, int(row)]).uniform(
                -1.0, 1.0, size=(height, width, 2)
            )
            grids[i] = np.clip(grid + noise / height, -1.0, 1.0)
        return _resample(images, grids)


def _identity_grid(height: int, width: int) -> Any:
    import torch

    ys = torch.linspace(-1.0, 1.0, height)
    xs = torch.linspace(-1.0, 1.0, width)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx, yy), dim=2)


def _resample(images: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """Bilinear resampling of uint8 (N, C, H, W) images on one (H, W, 2) grid or on
    (N, H, W, 2) grids, one a row."""
    import torch

    x = torch.from_numpy(images.astype(np.float32))
    g = torch.tensor(grids, dtype=torch.float32)
    if g.ndim == 3:
        g = g.expand(len(images), -1, -1, -1)
    out = torch.nn.functional.grid_sample(x, g, mode="bilinear", align_corners=True)
    return to_uint8(out.numpy())
