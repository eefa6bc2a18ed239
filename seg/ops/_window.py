"""Windowed softmax-weighted pooling: the reference core shared by SoftPool and LIP.

Both operators are ``y = sum_{i in window} softmax(logits)_i * values_i`` over the
valid (unpadded) positions of each pooling window: SoftPool with logits = values,
LIP with logits from a learned module. Computing the softmax per window (window
maximum subtracted) keeps it finite for any logits, in any precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .window_fused import window_softmax_pool2d


def _tuple(value, dims: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    value = tuple(int(v) for v in value)
    if len(value) != dims:
        raise ValueError(f"{name} needs {dims} values, got {value}")
    return value


def pool_params(kernel_size, stride, padding, dims: int):
    """Normalise kernel/stride/padding like torch's pooling layers do, and check them."""
    kernel = _tuple(kernel_size, dims, "kernel_size")
    stride = kernel if stride is None else _tuple(stride, dims, "stride")
    padding = _tuple(padding, dims, "padding")
    if any(k < 1 for k in kernel) or any(s < 1 for s in stride) or any(p < 0 for p in padding):
        raise ValueError(
            f"invalid pooling window kernel={kernel} stride={stride} padding={padding}"
        )
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(
            f"padding {padding} must be at most half the kernel {kernel}, "
            "otherwise a window can hold padding only"
        )
    return kernel, stride, padding


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"input of size {size} is smaller than the pooling window {kernel} (padding {padding})"
        )
    return out


def _windows(t: Tensor, kernel, stride, padding, fill: float) -> Tensor:
    """[N, C, *S] -> [N, C, *S_out, K] views of each window (padded with ``fill``)."""
    dims = len(kernel)
    pad = []
    for p in reversed(padding):
        pad += [p, p]
    if any(padding):
        t = F.pad(t, pad, value=fill)
    for axis, (k, s) in enumerate(zip(kernel, stride)):
        t = t.unfold(2 + axis, k, s)
    return t.flatten(-dims)


def window_softmax_pool(
    values: Tensor, logits: Tensor, kernel_size, stride, padding, fused: bool = False
) -> Tensor:
    """``sum softmax(logits) * values`` over each pooling window.

    Args:
        values, logits: [N, C, *spatial] with 1 to 3 spatial dims, same shape.
        kernel_size, stride, padding: ints or tuples as in ``nn.MaxPool{d}d``; padded
            positions take no part (zero weight).
        fused: take the fused eager path (`seg.ops.window_fused`) for 2d windows when the
            logits allow one shift per plane (the caller asks `dispatch.use_fused`).
    Returns:
        [N, C, *out] in ``values.dtype``, computed in float32 for half inputs.
    """
    dims = values.dim() - 2
    if dims not in (1, 2, 3):
        raise ValueError(
            f"expected [N, C, *spatial] with 1-3 spatial dims, got {tuple(values.shape)}"
        )
    if logits.shape != values.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must match values {tuple(values.shape)}")
    kernel, stride, padding = pool_params(kernel_size, stride, padding, dims)
    out_size = [output_size(*window) for window in zip(values.shape[2:], kernel, stride, padding)]
    if fused and dims == 2:
        out = window_softmax_pool2d(values, logits, kernel, stride, padding, out_size)
        if out is not None:
            return out
    dtype = values.dtype
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    with torch.autocast(device_type=values.device.type, enabled=False):
        v = _windows(values.to(compute), kernel, stride, padding, 0.0)
        lg = _windows(logits.to(compute), kernel, stride, padding, float("-inf"))
        weights = torch.softmax(lg, dim=-1)
        out = (weights * v).sum(dim=-1)
    return out.to(dtype)
