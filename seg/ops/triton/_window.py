"""Triton kernels for windowed softmax pooling, shared by SoftPool and LIP.

``y = sum_{i in window} softmax(logits)_i * values_i`` over the valid (unpadded)
positions of each window, any kernel/stride/padding. One program handles
``BLOCK`` outputs; each output reads its window (logits and values) and writes
one value. The backward recomputes the window maximum, normaliser and output
from the inputs (nothing but the inputs is saved) and writes

    d values_i = g * w_i,    d logits_i = g * w_i * (values_i - y)

straight into the gradient when windows do not overlap (stride >= kernel), and
with fp32 atomics otherwise. SoftPool is the ``SAME`` case (values are the
logits), whose gradient is the sum of the two, ``g * w_i * (1 + x_i - y)``.

Outputs are enumerated in the memory order of the output (NCHW, or NHWC for
channels_last inputs) so neighbouring lanes read neighbouring addresses.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._window import output_size, pool_params
from ..common import alert_not_deterministic


@triton.jit
def _decode(offs, C, Ho, Wo, CHANNELS_LAST: tl.constexpr):
    if CHANNELS_LAST:
        c = offs % C
        rest = offs // C
        wo = rest % Wo
        rest = rest // Wo
        ho = rest % Ho
        n = rest // Ho
    else:
        wo = offs % Wo
        rest = offs // Wo
        ho = rest % Ho
        rest = rest // Ho
        c = rest % C
        n = rest // C
    return n, c, ho, wo


@triton.jit
def _window_softmax(
    v_base, v_sh, v_sw, l_base, l_sh, l_sw, mask, ho, wo, H, W,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, SAME: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Per output: window maximum m of the logits, normaliser z = sum exp(l - m) and
    acc = sum exp(l - m) * v over the window's valid positions (padding takes no part)."""
    # pass 1: window maximum of the logits
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            ih = ho * SH - PH + kh
            iw = wo * SW - PW + kw
            ok = mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            lg = tl.load(l_base + ih * l_sh + iw * l_sw, mask=ok, other=float("-inf"))
            m = tl.maximum(m, lg.to(tl.float32))
    m = tl.where(mask, m, 0.0)
    # pass 2: normaliser and weighted sum (the window is in cache by now)
    z = tl.zeros([BLOCK], tl.float32)
    acc = tl.zeros([BLOCK], tl.float32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            ih = ho * SH - PH + kh
            iw = wo * SW - PW + kw
            ok = mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            lg = tl.load(l_base + ih * l_sh + iw * l_sw, mask=ok, other=0.0).to(tl.float32)
            if SAME:
                val = lg
            else:
                val = tl.load(v_base + ih * v_sh + iw * v_sw, mask=ok, other=0.0).to(tl.float32)
            e = tl.where(ok, tl.exp(lg - m), 0.0)
            z += e
            acc += e * val
    return m, z, acc


@triton.jit
def _window_fwd_kernel(
    v_ptr, v_sn, v_sc, v_sh, v_sw,
    l_ptr, l_sn, l_sc, l_sh, l_sw,
    y_ptr, y_sn, y_sc, y_sh, y_sw,
    total, C, H, W, Ho, Wo,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr,
    SAME: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    n, c, ho, wo = _decode(offs, C, Ho, Wo, CHANNELS_LAST)
    v_base = v_ptr + n * v_sn + c * v_sc
    l_base = l_ptr + n * l_sn + c * l_sc
    m, z, acc = _window_softmax(
        v_base, v_sh, v_sw, l_base, l_sh, l_sw, mask, ho, wo, H, W,
        KH, KW, SH, SW, PH, PW, SAME, BLOCK,
    )  # fmt: skip
    y = acc / tl.where(mask, z, 1.0)
    tl.store(
        y_ptr + n * y_sn + c * y_sc + ho * y_sh + wo * y_sw,
        y.to(y_ptr.dtype.element_ty),
        mask=mask,
    )


@triton.jit
def _window_bwd_kernel(
    g_ptr, g_sn, g_sc, g_sh, g_sw,
    v_ptr, v_sn, v_sc, v_sh, v_sw,
    l_ptr, l_sn, l_sc, l_sh, l_sw,
    gv_ptr, gv_sn, gv_sc, gv_sh, gv_sw,
    gl_ptr, gl_sn, gl_sc, gl_sh, gl_sw,
    total, C, H, W, Ho, Wo,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr,
    SAME: tl.constexpr, ATOMIC: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    n, c, ho, wo = _decode(offs, C, Ho, Wo, CHANNELS_LAST)
    v_base = v_ptr + n * v_sn + c * v_sc
    l_base = l_ptr + n * l_sn + c * l_sc
    g = tl.load(g_ptr + n * g_sn + c * g_sc + ho * g_sh + wo * g_sw, mask=mask, other=0.0)
    g = g.to(tl.float32)
    # recompute the forward: window maximum, normaliser, output
    m, z, acc = _window_softmax(
        v_base, v_sh, v_sw, l_base, l_sh, l_sw, mask, ho, wo, H, W,
        KH, KW, SH, SW, PH, PW, SAME, BLOCK,
    )  # fmt: skip
    inv_z = 1.0 / tl.where(mask, z, 1.0)
    y = acc * inv_z
    # gradients of every window position
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            ih = ho * SH - PH + kh
            iw = wo * SW - PW + kw
            ok = mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            lg = tl.load(l_base + ih * l_sh + iw * l_sw, mask=ok, other=0.0).to(tl.float32)
            if SAME:
                val = lg
            else:
                val = tl.load(v_base + ih * v_sh + iw * v_sw, mask=ok, other=0.0).to(tl.float32)
            gw = g * tl.where(ok, tl.exp(lg - m), 0.0) * inv_z
            grad_logit = gw * (val - y)
            if SAME:
                grad_logit += gw
            gl_addr = gl_ptr + n * gl_sn + c * gl_sc + ih * gl_sh + iw * gl_sw
            if ATOMIC:
                tl.atomic_add(gl_addr, grad_logit, mask=ok)
            else:
                tl.store(gl_addr, grad_logit.to(gl_ptr.dtype.element_ty), mask=ok)
            if not SAME:
                gv_addr = gv_ptr + n * gv_sn + c * gv_sc + ih * gv_sh + iw * gv_sw
                if ATOMIC:
                    tl.atomic_add(gv_addr, gw, mask=ok)
                else:
                    tl.store(gv_addr, gw.to(gv_ptr.dtype.element_ty), mask=ok)


BLOCK = 256


def is_channels_last(x: Tensor) -> bool:
    return (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not (x.is_contiguous())
    )


def window_geometry(x: Tensor, kernel_size, stride, padding):
    """Normalised (kernel, stride, padding) and the output size (Ho, Wo) of a 2d window pool."""
    if x.dim() != 4:
        raise ValueError(f"expected [N, C, H, W], got {tuple(x.shape)}")
    kernel, stride, padding = pool_params(kernel_size, stride, padding, 2)
    out = tuple(
        output_size(size, k, s, p) for size, k, s, p in zip(x.shape[2:], kernel, stride, padding)
    )
    return kernel, stride, padding, out


def empty_pooled(x: Tensor, shape, dtype) -> Tensor:
    """The pooled output of ``x``: channels_last when ``x`` is, else contiguous (the kernel
    and its fake implementation both allocate through here, so their strides agree)."""
    fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    return torch.empty(shape, device=x.device, dtype=dtype, memory_format=fmt)


def window_pool_fwd(values: Tensor, logits: Tensor | None, kernel, stride, padding) -> Tensor:
    """Forward launch: values (and logits, None for SoftPool) [N, C, H, W] -> [N, C, Ho, Wo].

    One launch; reads each window once (twice from cache), writes each output once.
    """
    same = logits is None
    logits = values if same else logits
    kernel, stride, padding, (ho, wo) = window_geometry(values, kernel, stride, padding)
    n, c, h, w = values.shape
    y = empty_pooled(values, (n, c, ho, wo), values.dtype)
    total = y.numel()
    if total == 0:
        return y
    grid = (triton.cdiv(total, BLOCK),)
    _window_fwd_kernel[grid](
        values, *values.stride(),
        logits, *logits.stride(),
        y, *y.stride(),
        total, c, h, w, ho, wo,
        KH=kernel[0], KW=kernel[1], SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
        SAME=same, CHANNELS_LAST=is_channels_last(y), BLOCK=BLOCK,
    )  # fmt: skip
    return y


def window_pool_bwd(
    grad: Tensor, values: Tensor, logits: Tensor | None, kernel, stride, padding
) -> tuple[Tensor, Tensor | None]:
    """Backward launch: (grad wrt values, grad wrt logits) [N, C, H, W], in the inputs' dtypes.

    For SoftPool (``logits is None``) the first is the whole gradient and the second None.
    """
    same = logits is None
    logits_t = values if same else logits
    kernel, stride, padding, (ho, wo) = window_geometry(values, kernel, stride, padding)
    n, c, h, w = values.shape
    overlap = stride[0] < kernel[0] or stride[1] < kernel[1]
    # Overlapping windows accumulate with fp32 atomics; otherwise every position has one writer.
    if overlap:
        alert_not_deterministic("seg::soft_pool2d/lip2d backward with overlapping windows")
    acc_dtype = torch.float32 if overlap else None
    grad_logits = torch.zeros_like(logits_t, dtype=acc_dtype or logits_t.dtype)
    grad_values = grad_logits if same else torch.zeros_like(values, dtype=acc_dtype or values.dtype)
    total = n * c * ho * wo
    if total:
        grid = (triton.cdiv(total, BLOCK),)
        _window_bwd_kernel[grid](
            grad, *grad.stride(),
            values, *values.stride(),
            logits_t, *logits_t.stride(),
            grad_values, *grad_values.stride(),
            grad_logits, *grad_logits.stride(),
            total, c, h, w, ho, wo,
            KH=kernel[0], KW=kernel[1], SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
            SAME=same, ATOMIC=overlap, CHANNELS_LAST=is_channels_last(grad), BLOCK=BLOCK,
        )  # fmt: skip
    if same:
        return grad_logits.to(values.dtype), None
    return grad_values.to(values.dtype), grad_logits.to(logits_t.dtype)
