"""LIP 2d as ``torch.ops.seg.lip2d``: fused Triton forward and backward.

``y = sum softmax(logit)_i * x_i`` over each window's valid positions (padding
excluded from the normaliser, window maximum subtracted: finite in half
precision). Forward: one launch. Backward: one launch (plus zero fills)
recomputing the softmax; gradients ``g * w_i`` for x and ``g * w_i * (x_i - y)``
for the logits. Only x and the logits are saved for the backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._window import empty_pooled, window_geometry, window_pool_bwd, window_pool_fwd


@torch.library.custom_op("seg::lip2d", mutates_args=())
def lip2d_op(
    x: Tensor, logit: Tensor, kernel: list[int], stride: list[int], padding: list[int]
) -> Tensor:
    return window_pool_fwd(x, logit, kernel, stride, padding)


@lip2d_op.register_fake
def _(x, logit, kernel, stride, padding):
    _, _, _, (ho, wo) = window_geometry(x, kernel, stride, padding)
    return empty_pooled(x, (x.shape[0], x.shape[1], ho, wo), x.dtype)


@torch.library.custom_op("seg::lip2d_backward", mutates_args=())
def lip2d_backward_op(
    grad: Tensor,
    x: Tensor,
    logit: Tensor,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
) -> tuple[Tensor, Tensor]:
    grad_x, grad_logit = window_pool_bwd(grad, x, logit, kernel, stride, padding)
    return grad_x, grad_logit


@lip2d_backward_op.register_fake
def _(grad, x, logit, kernel, stride, padding):
    return torch.empty_like(x), torch.empty_like(logit)


def _setup_context(ctx, inputs, output):
    x, logit, kernel, stride, padding = inputs
    ctx.save_for_backward(x, logit)
    ctx.window = (kernel, stride, padding)


def _backward(ctx, grad):
    x, logit = ctx.saved_tensors
    grad_x, grad_logit = lip2d_backward_op(grad, x, logit, *ctx.window)
    return grad_x, grad_logit, None, None, None


lip2d_op.register_autograd(_backward, setup_context=_setup_context)


def lip2d(x: Tensor, logit: Tensor, kernel_size=3, stride=2, padding=1) -> Tensor:
    """LIP: x, logit [N, C, H, W] (float16/bfloat16/float32) -> [N, C, Ho, Wo], x's dtype.

    float64 is sent to the reference by ``seg.ops.dispatch``.
    """
    if x.shape != logit.shape:
        raise ValueError(f"lip2d: logit {tuple(logit.shape)} must match x {tuple(x.shape)}")
    kernel, stride, padding, _ = window_geometry(x, kernel_size, stride, padding)
    return lip2d_op(x, logit, list(kernel), list(stride), list(padding))
