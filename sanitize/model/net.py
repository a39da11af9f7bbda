"""The bootstrap network: a compact CNN whose penultimate layer feeds the detectors."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to rebuild the network (stored in checkpoints).

    channels : int
        Input channels (1 grey, 3 RGB).
    n_classes : int
    width : int
        Channels of the first block; each of the four blocks doubles it.
    """

    channels: int
    n_classes: int
    width: int = 32

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class BootstrapNet(nn.Module):
    """Four conv-BN-ReLU blocks (widths w, 2w, 4w, 8w), global average pool, linear head.

    Input is a float tensor of shape (batch, channels, H, W), already normalised; any H, W
    >= 8 works because the head follows a global pool. ``features`` returns the pooled
    penultimate activations, shape (batch, 8 * width), which the detectors read;
    ``forward_with_maps`` also returns per-channel norms of the last block's maps (the
    ones the pool averages), from the same forward pass.
    """

    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        w = spec.width
        self.body = nn.Sequential(
            _block(spec.channels, w, pool=True),
            _block(w, 2 * w, pool=True),
            _block(2 * w, 4 * w, pool=True),
            _block(4 * w, 8 * w, pool=False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8 * w, spec.n_classes)

    @property
    def feature_dim(self) -> int:
        return 8 * self.spec.width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(x)
        return self.head(feats), feats

    def forward_with_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, pooled features and :func:`channel_norms` of the last conv block's maps."""
        maps = self.body[:-2](x)  # the blocks, before the global pool and the flatten
        feats = self.body[-2:](maps)
        return self.head(feats), feats, channel_norms(maps)


def channel_norms(maps: torch.Tensor) -> torch.Tensor:
    """``a_k^p = ||vec A_k||_p`` for p = 1, 2, inf of every channel map ``A_k``.

    Cheng et al., arXiv 2002.12162, Sec. 3: a triggered input drives a few channels of the
    last convolutional layer to a sharp peak, so its l_inf norm stands out far more than
    its l_1 and l_2 norms. ``maps`` has shape (batch, channels, H, W); the result (batch,
    3, channels), rows l_1, l_2, l_inf. After a ReLU the maps are non-negative, so the
    pooled features are exactly ``a^1 / (H * W)``.
    """
    flat = maps.float().flatten(2).abs()
    return torch.stack((flat.sum(dim=2), flat.square().sum(dim=2).sqrt(), flat.amax(dim=2)), dim=1)
