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
    penultimate activations, shape (batch, 8 * width), which the detectors read.
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
