"""LIP: local importance pooling (Gao et al., 2019), 2d reference and logit modules.

``y = avg_pool(x * exp(l)) / avg_pool(exp(l))`` where the logits ``l`` come from a
small learned module. Written as a softmax of ``l`` over each window's valid
positions (the window maximum subtracted), it is finite in half precision even
where ``exp(l)`` itself would overflow (``exp(12) > 65504``): the published LIP
code computes ``exp`` directly and ignores padding in the normaliser.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._window import window_softmax_pool
from .common import check_float
from .dispatch import triton_kernels, use_fused, use_triton

LOGIT_MODULES = ("projection", "bottleneck")


class SoftGate(nn.Module):
    """Amplified sigmoid ``coefficient * sigmoid(x)``: logits in (0, coefficient)."""

    def __init__(self, coefficient: float = 12.0) -> None:
        super().__init__()
        self.coefficient = coefficient

    def forward(self, x: Tensor) -> Tensor:
        return self.coefficient * torch.sigmoid(x)


class ProjectionLogit(nn.Module):
    """3x3 conv -> affine InstanceNorm -> 12 * sigmoid.

    The norm's scale and shift start at zero, so a fresh module returns a constant
    and LIP starts as average pooling (over valid positions).
    """

    def __init__(self, channels: int, coefficient: float = 12.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.InstanceNorm2d(channels, affine=True)
        self.gate = SoftGate(coefficient)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(self.norm(self.conv(x)))


class BottleneckLogit(nn.Module):
    """1x1 reduce -> IN -> ReLU -> 3x3 -> IN -> ReLU -> 1x1 expand -> affine IN -> 12 * sigmoid.

    Zero-initialised last norm: a fresh module makes LIP an average pooling.
    """

    def __init__(self, channels: int, reduction: int = 2, coefficient: float = 12.0) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.InstanceNorm2d(hidden, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.InstanceNorm2d(hidden, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.norm = nn.InstanceNorm2d(channels, affine=True)
        self.gate = SoftGate(coefficient)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(self.norm(self.body(x)))


def _check(x: Tensor, logit: Tensor) -> None:
    check_float(x, "lip2d")
    check_float(logit, "lip2d (logit)")
    if x.dim() != 4:
        raise ValueError(f"lip2d expects [N, C, H, W], got {tuple(x.shape)}")
    if logit.shape != x.shape:
        raise ValueError(
            f"lip2d: logit of shape {tuple(logit.shape)} must have the features' shape "
            f"{tuple(x.shape)} (one importance logit per value)"
        )


def lip2d_reference(x: Tensor, logit: Tensor, kernel_size=3, stride=2, padding=1) -> Tensor:
    """Pure-PyTorch LIP (the reference the GPU kernel is checked against)."""
    _check(x, logit)
    return window_softmax_pool(x, logit, kernel_size, stride, padding)


def lip2d(x: Tensor, logit: Tensor, kernel_size=3, stride=2, padding=1) -> Tensor:
    """Local importance pooling.

    Args:
        x: [N, C, H, W] features; logit: [N, C, H, W] importance logits (same shape).
    Returns:
        [N, C, H_out, W_out] (output size as ``avg_pool2d``) in x's dtype: the
        ``exp(logit)``-weighted mean of each window's valid positions.
    """
    _check(x, logit)
    if use_triton(x, logit):
        return triton_kernels().lip2d(x, logit, kernel_size, stride, padding)
    return window_softmax_pool(x, logit, kernel_size, stride, padding, fused=use_fused(x, logit))


def build_logit_module(name: str, channels: int) -> nn.Module:
    if name == "projection":
        return ProjectionLogit(channels)
    if name == "bottleneck":
        return BottleneckLogit(channels)
    raise ValueError(f"unknown LIP logit module {name!r}; choose one of {LOGIT_MODULES}")


class LIP2d(nn.Module):
    """LIP layer: [N, C, H, W] -> [N, C, H_out, W_out]; with the defaults a 2x downsampling
    to ceil(H/2) x ceil(W/2)."""

    def __init__(
        self, channels: int, logit: str = "projection", kernel_size=3, stride=2, padding=1
    ) -> None:
        super().__init__()
        self.logit = build_logit_module(logit, channels)
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return lip2d(x, self.logit(x), self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
