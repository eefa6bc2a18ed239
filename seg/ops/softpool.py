"""SoftPool (Stergiou et al., 2021): softmax-weighted pooling, 1d/2d/3d reference.

``y = sum_{i in window} w_i x_i`` with ``w = softmax(x)`` over the window. The
window maximum is subtracted before ``exp`` so the result stays finite for any
input (x = 1000 in float32, x = 60 in float16); half inputs are computed in
float32.

The gradient is the exact one, ``dy/dx_i = w_i * (1 + x_i - y)``: autograd
differentiates through the softmax. The original SoftPool CUDA extension
returns ``g * w_i``, dropping the ``w_i * (x_i - y)`` term, so its gradients
are wrong wherever the window is not constant.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._window import window_softmax_pool
from .common import check_float
from .dispatch import triton_kernels, use_fused, use_triton


def _check(x: Tensor, dims: int) -> None:
    check_float(x, f"soft_pool{dims}d")
    if x.dim() != dims + 2:
        raise ValueError(f"soft_pool{dims}d expects a {dims + 2}d tensor, got {tuple(x.shape)}")


def _soft_pool(x: Tensor, dims: int, kernel_size, stride, padding) -> Tensor:
    _check(x, dims)
    return window_softmax_pool(x, x, kernel_size, stride, padding)


def soft_pool1d(x: Tensor, kernel_size=2, stride=None, padding=0) -> Tensor:
    """SoftPool over [N, C, L] -> [N, C, L_out] (output size as ``max_pool1d``)."""
    return _soft_pool(x, 1, kernel_size, stride, padding)


def soft_pool2d(x: Tensor, kernel_size=2, stride=None, padding=0) -> Tensor:
    """SoftPool over [N, C, H, W] -> [N, C, H_out, W_out] (output size as ``max_pool2d``)."""
    _check(x, 2)
    if use_triton(x):
        return triton_kernels().soft_pool2d(x, kernel_size, stride, padding)
    return window_softmax_pool(x, x, kernel_size, stride, padding, fused=use_fused(x))


def soft_pool3d(x: Tensor, kernel_size=2, stride=None, padding=0) -> Tensor:
    """SoftPool over [N, C, D, H, W] -> [N, C, D_out, H_out, W_out]."""
    return _soft_pool(x, 3, kernel_size, stride, padding)


def soft_pool2d_reference(x: Tensor, kernel_size=2, stride=None, padding=0) -> Tensor:
    """Pure-PyTorch SoftPool 2d (the reference the GPU kernel is checked against)."""
    return _soft_pool(x, 2, kernel_size, stride, padding)


class _SoftPoolNd(nn.Module):
    _fn = staticmethod(soft_pool2d)

    def __init__(self, kernel_size=2, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return self._fn(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class SoftPool1d(_SoftPoolNd):
    _fn = staticmethod(soft_pool1d)


class SoftPool2d(_SoftPoolNd):
    _fn = staticmethod(soft_pool2d)


class SoftPool3d(_SoftPoolNd):
    _fn = staticmethod(soft_pool3d)
