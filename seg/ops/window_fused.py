"""SoftPool's and LIP's fused eager path: softmax-weighted 2d pooling as a ratio of window sums,
for CPU tensors (where there is no Triton kernel).

The reference (`seg.ops._window`) unfolds every window into a padded copy and takes a
softmax over its last, strided axis: ~15x (SoftPool) and ~30x (LIP) an avg_pool2d on the
CPU. Here the same quantity is a ratio of two window sums:

    y = sum_w(e * v) / sum_w(e),   e = exp(l - M),

with one shift ``M`` per (sample, channel) plane instead of one per window. The shift
cancels in the ratio; zero padding gives padded positions zero weight, as in the
reference. A window sum is k strided slices added along W, then along H (faster on the
CPU than avg_pool2d, and its adjoint is as simple). A shift per
plane equals the reference to float rounding while the plane's logits span less than
``SAFE_RANGE`` (40 in float32: every e, every e v and the backward's g / sum(e) stay
far from underflow and overflow); a wider spread sends the whole call to the reference,
which shifts per window. Backward is written out (first order only): with S = sum e and
y = sum e v / S over each window,

    dv_i = e_i A_i,   dl_i = e_i (v_i A_i - B_i),
    A_i = sum_{windows w with i} g_w / S_w,   B_i = sum_w g_w y_w / S_w,

where A and B are the window sum's adjoint applied to g / S and g y / S. Kept for
backward: the inputs, the shift and the two window sums (a quarter of the input each for
2x2 windows); e is recomputed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# Largest spread of logits within a plane for one shift per plane: exp(l - max) then stays
# far from underflow (so e * v does too), and the backward's g / sum(e) ~ g e^spread far
# from overflow even for loss-scaled gradients (1e4 .. 1e8).
SAFE_RANGE = {torch.float32: 40.0, torch.float64: 350.0}


def _plane_shift(logits: Tensor) -> Tensor | None:
    """The maximum of every (sample, channel) plane as [N, C, 1, 1], or None when some
    plane's logits spread wider than `SAFE_RANGE`, are not finite, or there are none."""
    n, c = logits.shape[:2]
    if logits.numel() == 0:
        return None
    flat = logits.reshape(n * c, -1)
    high, low = flat.amax(1), flat.amin(1)  # torch.aminmax(dim=) is ~50x slower on CPU
    spread = float((high - low).max())
    if not spread <= SAFE_RANGE[logits.dtype]:  # also catches NaN and inf
        return None
    return high.view(n, c, 1, 1)


def _window_sum(t: Tensor, kernel, stride, padding, out_size) -> Tensor:
    """Sum of each pooling window of [N, C, H, W] (zero padding): k strided slices added
    along W, then along H. On the CPU these adds run ~10x faster than avg_pool2d."""
    if any(padding):
        t = F.pad(t, (padding[1], padding[1], padding[0], padding[0]))
    for dim, k, s, size in ((3, kernel[1], stride[1], out_size[1]),
                            (2, kernel[0], stride[0], out_size[0])):  # fmt: skip
        span = s * (size - 1) + 1
        acc = t.narrow(dim, 0, span)[_every(dim, s)].clone()
        for i in range(1, k):
            acc += t.narrow(dim, i, span)[_every(dim, s)]
        t = acc
    return t


def _window_spread(g: Tensor, kernel, stride, padding, in_size) -> Tensor:
    """The adjoint of `_window_sum`: every input position gets the sum of g over the
    windows that contain it."""
    padded = [in_size[0] + 2 * padding[0], in_size[1] + 2 * padding[1]]
    for dim, k, s in ((2, kernel[0], stride[0]), (3, kernel[1], stride[1])):
        shape = list(g.shape)
        shape[dim] = padded[dim - 2]
        count = g.shape[dim]
        span = s * (count - 1) + 1
        if k < s:  # gaps between windows
            out = g.new_zeros(shape)
            first = 0
        else:  # the first s slices tile [0, s * count) once: written, not added to zeros
            out = g.new_empty(shape)
            out.narrow(dim, s * count, shape[dim] - s * count).zero_()
            for i in range(s):
                out.narrow(dim, i, span)[_every(dim, s)] = g
            first = s
        for i in range(first, k):
            out.narrow(dim, i, span)[_every(dim, s)] += g
        g = out
    return g[:, :, padding[0] : padding[0] + in_size[0], padding[1] : padding[1] + in_size[1]]


def _every(dim: int, step: int) -> tuple:
    """Index of every step-th position along dim (2 or 3) of a 4d tensor."""
    return (slice(None),) * dim + (slice(None, None, step),)


class WindowSoftmaxPool2d(torch.autograd.Function):
    """(values, logits, shift, kernel, stride, padding, out_size) -> sum of softmax(logits) *
    values over each window's valid positions; ``shift`` from `_plane_shift`."""

    @staticmethod
    def forward(ctx, values: Tensor, logits: Tensor, shift: Tensor, kernel, stride, padding,
                out_size):  # fmt: skip
        pool = (kernel, stride, padding)
        e = torch.sub(logits, shift).exp_()
        den = _window_sum(e, *pool, out_size)
        num = _window_sum(e.mul_(values), *pool, out_size)
        ctx.pool = pool
        ctx.same = values is logits
        # num, not the output: a caller may modify the output in place
        ctx.save_for_backward(values, logits, shift, num, den)
        return num / den

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        values, logits, shift, num, den = ctx.saved_tensors
        size = values.shape[2:]
        g = grad / den
        e = torch.sub(logits, shift).exp_()
        ea = _window_spread(g, *ctx.pool, size).mul_(e)  # e_i A_i: the values' gradient
        if not (ctx.same or ctx.needs_input_grad[1]):
            return ea, None, None, None, None, None, None
        eb = e.mul_(_window_spread(g.mul_(num).div_(den), *ctx.pool, size))
        g_logits = torch.mul(ea, values).sub_(eb)
        if ctx.same:  # SoftPool: values and logits are the same tensor
            return g_logits.add_(ea), None, None, None, None, None, None
        return ea, g_logits, None, None, None, None, None


def window_softmax_pool2d(
    values: Tensor, logits: Tensor, kernel: tuple, stride: tuple, padding: tuple, out_size
) -> Tensor | None:
    """`seg.ops._window.window_softmax_pool` for [N, C, H, W] (checked windows, their
    output size), or None when a plane's logits spread too wide for one shift per plane
    (use the reference)."""
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
        out = WindowSoftmaxPool2d.apply(values, logits, shift, kernel, stride, padding, out_size)
    return out.to(dtype)
