"""Baseline 2x down- and up-sampling layers that LiftPool is measured against.

Every down layer maps [N, C, H, W] to [N, C, ceil(H/2), ceil(W/2)] (ceil mode,
so odd sizes lose no row or column) and every up layer takes the size to
restore, so any down can pair with any up of matching kind.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def max_pool2d_with_indices(x: Tensor) -> tuple[Tensor, Tensor]:
    """2x2 max pooling, ceil mode: ([N, C, ceil(H/2), ceil(W/2)], int64 flat indices into H*W)."""
    return F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)


def max_unpool2d(y: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
    """Scatter ``y`` back to the argmax positions of an [.., H, W] map; zeros elsewhere."""
    return F.max_unpool2d(y, indices, 2, 2, output_size=tuple(size))


def avg_pool2d(x: Tensor) -> Tensor:
    """2x2 average pooling, ceil mode (edge windows average their valid part)."""
    return F.avg_pool2d(x, 2, 2, ceil_mode=True)


def upsample_bilinear(y: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)


def upsample_nearest(y: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(y, size=tuple(size), mode="nearest")


class StridedConvDown(nn.Module):
    """3x3 convolution with stride 2 and padding 1: [N, C, H, W] -> [N, C, ceil(H/2), ceil(W/2)]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class TransposedConvUp(nn.Module):
    """2x2 transposed convolution with stride 2, cropped to the requested size."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, channels, 2, stride=2)

    def forward(self, y: Tensor, size: tuple[int, int]) -> Tensor:
        height, width = size
        return self.conv(y)[..., :height, :width]
