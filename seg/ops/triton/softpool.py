"""SoftPool 2d as ``torch.ops.seg.soft_pool2d``: fused Triton forward and exact backward.

Forward: one launch, each window read once, each output written once.
Backward: one launch (plus the zero fill of the gradient), recomputing the
softmax from the input; the exact gradient ``g * w_i * (1 + x_i - y)``. Only
the input is saved for the backward. 1d and 3d SoftPool run on the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._window import empty_pooled, window_geometry, window_pool_bwd, window_pool_fwd


@torch.library.custom_op("seg::soft_pool2d", mutates_args=())
def soft_pool2d_op(x: Tensor, kernel: list[int], stride: list[int], padding: list[int]) -> Tensor:
    return window_pool_fwd(x, None, kernel, stride, padding)


@soft_pool2d_op.register_fake
def _(x, kernel, stride, padding):
    _, _, _, (ho, wo) = window_geometry(x, kernel, stride, padding)
    return empty_pooled(x, (x.shape[0], x.shape[1], ho, wo), x.dtype)


@torch.library.custom_op("seg::soft_pool2d_backward", mutates_args=())
def soft_pool2d_backward_op(
    grad: Tensor, x: Tensor, kernel: list[int], stride: list[int], padding: list[int]
) -> Tensor:
    return window_pool_bwd(grad, x, None, kernel, stride, padding)[0]


@soft_pool2d_backward_op.register_fake
def _(grad, x, kernel, stride, padding):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, kernel, stride, padding = inputs
    ctx.save_for_backward(x)
    ctx.window = (kernel, stride, padding)


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return soft_pool2d_backward_op(grad, x, *ctx.window), None, None, None


soft_pool2d_op.register_autograd(_backward, setup_context=_setup_context)


def soft_pool2d(x: Tensor, kernel_size=2, stride=None, padding=0) -> Tensor:
    """SoftPool over [N, C, H, W] (float16/bfloat16/float32) -> [N, C, Ho, Wo], x's dtype.

    float64 is sent to the reference by ``seg.ops.dispatch``.
    """
    kernel, stride, padding, _ = window_geometry(x, kernel_size, stride, padding)
    return soft_pool2d_op(x, list(kernel), list(stride), list(padding))
