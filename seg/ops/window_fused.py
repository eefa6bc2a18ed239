"""SoftPool's and LIP's fused eager path: softmax-weighted 2d pooling through avg_pool2d,
for CPU tensors (where there is no Triton kernel).

The reference (`seg.ops._window`) unfolds every window into a padded copy and takes a
softmax over its last, strided axis: ~15x (SoftPool) and ~30x (LIP) an avg_pool2d on the
CPU. Here the same quantity is two average pools:

    y = avg_pool(e * v) / avg_pool(e),   e = exp(l - M),

with one shift ``M`` per (sample, channel) plane instead of one per window. The shift
cancels in the ratio; the zero padding of avg_pool2d gives padded positions zero weight,
as in the reference (count_include_pad: both pools divide by the same count). A shift per
plane is exact as long as no ``e`` underflows, i.e. the plane's logits span less than
``SAFE_RANGE`` (80 in float32: every e stays a normal number with full relative
precision); planes with a wider spread send the whole call to the reference, which
shifts per window. Backward is written out (first order only): with S = sum e and
y = sum e v / S over each window,

    dv_i = e_i A_i,   dl_i = e_i (v_i A_i - B_i),
    A_i = sum_{windows w with i} g_w / S_w,   B_i = sum_w g_w y_w / S_w,

where A and B are avg_pool2d's own backward applied to g / avg_pool(e) and g y /
avg_pool(e). Kept for backward: the inputs, the shift, avg_pool(e v) and avg_pool(e) (a
quarter of the input each for 2x2 windows); e is recomputed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# Largest spread of logits within a plane for which exp(l - max) stays a normal number.
SAFE_RANGE = {torch.float32: 80.0, torch.float64: 700.0}


def _plane_shift(logits: Tensor) -> Tensor | None:
    """The maximum of every (sample, channel) plane as [N, C, 1, 1], or None when some
    plane's logits spread wider than `SAFE_RANGE`, are not finite, or there are none."""
    n, c = logits.shape[:2]
    if logits.numel() == 0:
        return None
    low, high = torch.aminmax(logits.reshape(n * c, -1), dim=1)
    spread = float((high - low).max())
    if not spread <= SAFE_RANGE[logits.dtype]:  # also catches NaN and inf
        return None
    return high.view(n, c, 1, 1)


class WindowSoftmaxPool2d(torch.autograd.Function):
    """(values, logits, shift, kernel, stride, padding) -> sum of softmax(logits) * values
    over each window's valid positions; ``shift`` from `_plane_shift`."""

    @staticmethod
    def forward(ctx, values: Tensor, logits: Tensor, shift: Tensor, kernel, stride, padding):
        pool = (kernel, stride, padding)
        e = torch.sub(logits, shift).exp_()
        den = F.avg_pool2d(e, *pool)
        num = F.avg_pool2d(e.mul_(values), *pool)
        ctx.pool = pool
        ctx.same = values is logits
        # num, not the output: a caller may modify the output in place
        ctx.save_for_backward(values, logits, shift, num, den)
        return num / den

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        values, logits, shift, num, den = ctx.saved_tensors
        kernel, stride, padding = ctx.pool
        g = grad / den

        def spread(t: Tensor) -> Tensor:  # the adjoint of avg_pool2d
            return torch.ops.aten.avg_pool2d_backward(
                t, values, kernel, stride, padding, False, True, None
            )

        e = torch.sub(logits, shift).exp_()
        a = spread(g)
        b = spread(g.mul_(num).div_(den))  # g y / avg_pool(e)
        g_values = e * a if ctx.needs_input_grad[0] or ctx.same else None
        g_logits = None
        if ctx.needs_input_grad[1] or ctx.same:
            g_logits = a.mul_(values).sub_(b).mul_(e)
        if ctx.same:  # SoftPool: values and logits are the same tensor
            return g_values.add_(g_logits), None, None, None, None, None
        return g_values, g_logits, None, None, None, None


def window_softmax_pool2d(
    values: Tensor, logits: Tensor, kernel: tuple, stride: tuple, padding: tuple
) -> Tensor | None:
    """`seg.ops._window.window_softmax_pool` for [N, C, H, W] (checked windows), or None
    when a plane's logits spread too wide for one shift per plane (use the reference)."""
    dtype = values.dtype
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    if compute not in SAFE_RANGE:
        return None
    same = values is logits
    with torch.autocast(device_type=values.device.type, enabled=False):
        values = values.to(compute)
        logits = values if same else logits.to(compute)
        shift = _plane_shift(logits.detach())
        if shift is None:
            return None
        out = WindowSoftmaxPool2d.apply(values, logits, shift, kernel, stride, padding)
    return out.to(dtype)
