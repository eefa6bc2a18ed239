"""LiftPool's fused eager path: the learned 2d lifting step and its inverse as two autograd
Functions over plain PyTorch ops, for CPU tensors (where there is no Triton kernel).

What makes it faster than the reference (`seg.ops.lifting`), same maths:

* **Keep the expensive part, recompute the cheap part.** Forward keeps the inputs and
  each predictor's output (its GEMM and tanh); backward rebuilds the rest (depthwise conv,
  ReLU, the s and d bands) from them, while it runs. The reference's autograd graph stores
  about six tensors per predictor call.
* **Cache-sized pieces.** Every sample is independent, so forward and backward run the
  whole 2d step on a few samples at a time (``CHUNK_BYTES`` of input): the dozen
  elementwise passes of a lifting step then read and write cache instead of memory.
* **Fewer, cheaper ops.** The horizontal split is one de-interleaving copy into
  contiguous planes (strided views along W would make every later op a scalar loop); the
  vertical step works on row views (no transposes) and on the s and d halves of the
  horizontal step at once (they share P and U); the depthwise conv is k multiply-adds on
  views with the borders fixed up in place (no padded copy; oneDNN's depthwise conv is
  slow for 1 x k kernels on CPU) and its backward is written out; the 1x1 mix is one GEMM
  with its bias; tanh is computed as 2 sigmoid(2m) - 1.

First-order only: a second backward raises (``once_differentiable``). Exactness is tested
against the reference (forward, input and weight gradients, the regulariser, odd sizes,
the inverse) and by gradcheck in float64. Dispatch: `seg.ops.dispatch.use_fused` (CPU
tensors; the reference under torch.compile/export, jit tracing and torch.func transforms).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _cpu_ext

# Input bytes per piece: small enough that a piece's intermediates (~8x the input) stay in
# a CPU's caches, big enough that per-op overhead (~5-10 us) does not dominate.
CHUNK_BYTES = 1 << 21


class Weights(NamedTuple):
    """One learned predictor: depthwise weight [C, k] and bias [C], mix [C, C], mix bias
    [C]; ``taps`` and ``bias``: the depthwise weight's k columns and its bias as [C, 1, 1]
    views."""

    dw: Tensor
    db: Tensor
    mix: Tensor
    mb: Tensor
    taps: tuple[Tensor, ...]
    bias: Tensor


class Grads(NamedTuple):
    """Gradient accumulators of one predictor (``taps``: [C, k], the depthwise weight's)."""

    taps: Tensor
    db: Tensor
    mix: Tensor
    mb: Tensor


def _weights(params: list[Tensor]) -> list[Weights]:
    """The layer's kernel_parameters() (w: P, U; h: P, U) as four Weights."""
    out = []
    for i in range(4):
        dw, db, mix, mb = params[4 * i : 4 * i + 4]
        dw = dw.reshape(dw.shape[0], -1)
        taps = tuple(dw[:, j].view(-1, 1, 1) for j in range(dw.shape[1]))
        out.append(Weights(dw.contiguous(), db.contiguous(), mix, mb, taps, db.view(-1, 1, 1)))
    return out


def _flat_grads(g: list[Grads], params) -> list[Tensor]:
    """Weight gradients in kernel_parameters() order and shapes."""
    out = []
    for i, wg in enumerate(g):
        out += [wg.taps.view_as(params[4 * i]), wg.db, wg.mix, wg.mb]
    return out


def _grads_like(weights: list[Weights]) -> list[Grads]:
    return [
        Grads(torch.zeros_like(w.dw), torch.zeros_like(w.db), torch.zeros_like(w.mix),
              torch.zeros_like(w.mb))
        for w in weights
    ]  # fmt: skip


def _source(position: int, length: int, pad: int) -> int:
    """Where a position outside [0, length) reads from: reflect, or replicate when the axis
    is too short to reflect (the reference's rule)."""
    if length > pad:
        position = abs(position)
        if position > length - 1:
            position = 2 * (length - 1) - position
    return min(max(position, 0), length - 1)


@functools.lru_cache(maxsize=256)
def _taps(length: int, k: int) -> tuple:
    """(tap j, output range, input range, border pairs) of a k-tap conv along an axis of
    this length: the output slice [out0, out0 + count) reads the input slice [in0, ...);
    each (i, src) border pair is one output position whose tap falls outside the axis."""
    pad = k // 2
    out = []
    for j in range(k):
        offset = j - pad
        count = length - abs(offset)
        borders = tuple(
            (i, _source(i + offset, length, pad))
            for i in range(length)
            if not 0 <= i + offset < length
        )
        out.append((j, max(0, -offset), max(0, offset), count, borders))
    return tuple(out)


# --------------------------------------------------------------------------- one predictor


class _Cache(NamedTuple):
    z: Tensor  # the predictor's input
    relu: Tensor  # ReLU(depthwise conv), the mix's input
    out: Tensor  # tanh(mix(relu)), the predictor's output


def _mix_tanh(w: Weights, r: Tensor) -> Tensor:
    """tanh(1x1 conv of [n, C, ...] with bias): one GEMM (a batched one for n > 1), and tanh
    as 2 sigmoid(2 m) - 1: several times faster than torch.tanh on CPU, with an absolute
    error of ~6e-8 in float32 (not a relative one: near 0 it loses tanh's low bits)."""
    n, c = r.shape[:2]
    flat = r.reshape(n, c, -1)
    if n == 1:
        m2 = torch.addmm(w.mb.view(c, 1), w.mix, flat[0], beta=2, alpha=2)
    else:
        m2 = torch.baddbmm(w.mb.view(1, c, 1), w.mix.expand(n, c, c), flat, beta=2, alpha=2)
    return m2.sigmoid_().mul_(2).sub_(1).view_as(r)


def _depthwise(z: Tensor, w: Weights, dim: int) -> Tensor:
    """Depthwise conv along dim with reflect borders, plus bias, without a padded copy."""
    taps = _taps(z.shape[dim], len(w.taps))
    centre = len(taps) // 2
    h = torch.mul(z, w.taps[centre])
    for j, out0, in0, count, borders in taps:
        if j == centre:
            continue
        weight = w.taps[j]
        if count > 0:
            h.narrow(dim, out0, count).addcmul_(z.narrow(dim, in0, count), weight)
        for i, src in borders:
            h.narrow(dim, i, 1).addcmul_(z.narrow(dim, src, 1), weight)
    return h.add_(w.bias)


def _predict(z: Tensor, w: Weights, dim: int, out: Tensor | None = None) -> _Cache:
    """tanh(mix(relu(depthwise_conv(z) along dim))) with reflect borders (replicate on an
    axis too short to reflect, as the reference). Given ``out`` (the
    output kept from the forward), only the cheap part is recomputed: no GEMM, no sigmoid."""
    ext = _extension(z)
    r = ext.dw_relu(z, w.dw, w.db, dim) if ext else _depthwise(z, w, dim).relu_()
    return _Cache(z, r, _mix_tanh(w, r) if out is None else out)


def _extension(z: Tensor):
    """The compiled depthwise conv + ReLU (`seg.ops._cpu_ext`) for this tensor, or None."""
    if z.device.type != "cpu" or z.dtype not in (torch.float32, torch.float64):
        return None
    return _cpu_ext.extension()


def _channel_sum(t: Tensor) -> Tensor:
    """[n, C, ...] -> [C]: the sum over all but the channel axis."""
    return t.reshape(t.shape[0], t.shape[1], -1).sum(2).sum(0)


def _predict_backward(
    grad: Tensor, cache: _Cache, w: Weights, g: Grads, dim: int, negate: bool = False
) -> Tensor:
    """Accumulates the weight gradients into ``g``; returns the gradient of the input.
    ``negate``: the predictor's output entered with a minus sign (use -grad)."""
    z, r, p = cache
    n, c = r.shape[:2]
    gm = torch.ops.aten.tanh_backward(grad, p)
    if negate:
        gm.neg_()
    gm_flat, r_flat = gm.reshape(n, c, -1), r.reshape(n, c, -1)
    if n == 1:
        g.mix.addmm_(gm_flat[0], r_flat[0].t())
        gr = torch.mm(w.mix.t(), gm_flat[0]).view_as(r)
    else:
        g.mix.add_(torch.bmm(gm_flat, r_flat.transpose(1, 2)).sum(0))
        gr = torch.bmm(w.mix.t().expand(n, c, c), gm_flat).view_as(r)
    g.mb.add_(_channel_sum(gm))
    ext = _extension(z)
    if ext:
        gz, g_taps, g_bias = ext.dw_relu_backward(gr, r, z, w.dw, dim)
        g.taps.add_(g_taps)
        g.db.add_(g_bias)
        return gz
    gh = torch.ops.aten.threshold_backward(gr, r, 0)
    g.db.add_(_channel_sum(gh))
    taps = _taps(z.shape[dim], len(w.taps))
    centre = len(taps) // 2
    gz = gh * w.taps[centre]
    for j, out0, in0, count, borders in taps:
        if j == centre:
            g.taps[:, j].add_(_channel_sum(gh * z))
            continue
        weight = w.taps[j]
        if count > 0:
            g_out = gh.narrow(dim, out0, count)
            g.taps[:, j].add_(_channel_sum(g_out * z.narrow(dim, in0, count)))
            gz.narrow(dim, in0, count).addcmul_(g_out, weight)
        for i, src in borders:
            g_out = gh.narrow(dim, i, 1)
            g.taps[:, j].add_(_channel_sum(g_out * z.narrow(dim, src, 1)))
            gz.narrow(dim, src, 1).addcmul_(g_out, weight)
    return gz


# --------------------------------------------------------------------------- 1d steps


def _split_w(x: Tensor) -> tuple[Tensor, Tensor]:
    """Even and odd columns of x as contiguous tensors (an odd width repeats its last
    column): strided views along W would make every later op a scalar loop."""
    width = x.shape[3]
    x_e = x[..., 0::2].contiguous()
    x_o = torch.empty_like(x_e)
    x_o[..., : width // 2] = x[..., 1::2]
    if width % 2:
        x_o[..., -1] = x[..., -1]
    return x_e, x_o


def _merge_w(out: Tensor, x_e: Tensor, x_o: Tensor, accumulate_last: bool) -> None:
    """Inverse of `_split_w` into out [.., W]: the repeated column is dropped (an inverse's
    crop) or, with ``accumulate_last``, added to the last one (a gradient)."""
    width = out.shape[3]
    out[..., 0::2] = x_e
    out[..., 1::2] = x_o[..., : width // 2]
    if width % 2 and accumulate_last:
        out[..., -1] += x_o[..., -1]


class _Down(NamedTuple):
    """One piece's forward, kept while its backward runs (W step, then H step on [s; d])."""

    x_o: Tensor
    p_w: _Cache
    u_w: _Cache
    sd: Tensor  # [s; d] of the W step, rows made even
    p_h: _Cache
    u_h: _Cache
    s_h: Tensor  # [LL; HL]
    d_h: Tensor  # [LH; HH]


def _down_piece(x: Tensor, w: list[Weights], kept=(None,) * 4) -> _Down:
    """The 2d step on a few samples; ``kept``: the predictors' outputs from the forward,
    when the backward rebuilds the piece."""
    m, c, height, _ = x.shape
    x_e, x_o = _split_w(x)
    p_w = _predict(x_e, w[0], 3, kept[0])
    sd = x.new_empty(2 * m, c, height + height % 2, x_e.shape[3])
    d = torch.sub(x_o, p_w.out, out=sd[m:, :, :height])
    u_w = _predict(d, w[1], 3, kept[1])
    torch.add(x_e, u_w.out, out=sd[:m, :, :height])
    if height % 2:
        sd[:, :, height] = sd[:, :, height - 1]
    h_e, h_o = sd[:, :, 0::2], sd[:, :, 1::2]
    p_h = _predict(h_e, w[2], 2, kept[2])
    d_h = h_o - p_h.out
    u_h = _predict(d_h, w[3], 2, kept[3])
    return _Down(x_o, p_w, u_w, sd, p_h, u_h, h_e + u_h.out, d_h)


def _reg_sums(piece: _Down) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sums of (s - x_o)^2 and d^2 of the W step and of the H step (both halves)."""
    m, height = piece.x_o.shape[0], piece.x_o.shape[2]
    s, d = piece.sd[:m, :, :height], piece.sd[m:, :, :height]
    return (
        (s - piece.x_o).square().sum(),
        d.square().sum(),
        (piece.s_h - piece.sd[:, :, 1::2]).square().sum(),
        piece.d_h.square().sum(),
    )


def _step_backward(gs, gd, x_o, s, d, p: _Cache, u: _Cache, wp, wu, gp, gu, dim, reg):
    """Gradients of x_e and x_o of d = x_o - P(x_e), s = x_e + U(d) from those of s and d;
    ``reg`` = (weight of c_u, weight of c_p) over their counts, or None."""
    diff = None
    if reg is not None:
        diff = (s - x_o).mul_(2 * reg[0])
        gs = gs + diff
        gd = gd + d * (2 * reg[1])
    gd = gd + _predict_backward(gs, u, wu, gu, dim)
    g_xe = gs + _predict_backward(gd, p, wp, gp, dim, negate=True)
    return g_xe, (gd if diff is None else gd - diff)


def _down_backward(piece: _Down, grads, x_width: int, w, g, reg_w, reg_h) -> Tensor:
    """Gradient of one piece's input from its bands' gradients [g_ll, g_lh, g_hl, g_hh]."""
    m, c, height, _ = piece.x_o.shape
    gs = torch.cat([grads[0], grads[2]])
    gd = torch.cat([grads[1], grads[3]])
    sd = piece.sd
    g_he, g_ho = _step_backward(
        gs, gd, sd[:, :, 1::2], piece.s_h, piece.d_h, piece.p_h, piece.u_h,
        w[2], w[3], g[2], g[3], 2, reg_h,
    )  # fmt: skip
    g_sd = torch.stack([g_he, g_ho], 3).flatten(2, 3)
    if height % 2:
        g_sd[:, :, height - 1] += g_sd[:, :, height]
    g_sd = g_sd[:, :, :height]
    g_xe, g_xo = _step_backward(
        g_sd[:m], g_sd[m:], piece.x_o, sd[:m, :, :height], sd[m:, :, :height],
        piece.p_w, piece.u_w, w[0], w[1], g[0], g[1], 3, reg_w,
    )  # fmt: skip
    grad = g_xe.new_empty(m, c, height, x_width)
    _merge_w(grad, g_xe, g_xo, accumulate_last=True)
    return grad


class _Up(NamedTuple):
    """One piece's inverse, kept while its backward runs (H step, then W step)."""

    u_h: _Cache
    p_h: _Cache
    u_w: _Cache
    p_w: _Cache


def _up_piece(
    ll, lh, hl, hh, height: int, out: Tensor | None, w: list[Weights], kept=(None,) * 4
) -> _Up:
    """Inverse of the 2d step on a few samples, written into out [m, C, height, width];
    ``kept`` as in `_down_piece`."""
    m = ll.shape[0]
    s2, d2 = torch.cat([ll, hl]), torch.cat([lh, hh])
    u_h = _predict(d2, w[3], 2, kept[0])
    h_e = s2 - u_h.out
    p_h = _predict(h_e, w[2], 2, kept[1])
    h_o = d2 + p_h.out
    sd = torch.stack([h_e, h_o], 3).flatten(2, 3)[:, :, :height]
    s, d = sd[:m], sd[m:]
    u_w = _predict(d, w[1], 3, kept[2])
    x_e = s - u_w.out
    p_w = _predict(x_e, w[0], 3, kept[3])
    if out is not None:  # None: the backward rebuilding the piece needs no output
        _merge_w(out, x_e, d + p_w.out, accumulate_last=False)
    return _Up(u_h, p_h, u_w, p_w)


def _up_backward(piece: _Up, grad: Tensor, w, g) -> list[Tensor]:
    """[g_ll, g_lh, g_hl, g_hh] of one piece from its output's gradient."""
    g_xe, g_xo = _split_w(grad)
    width = grad.shape[3]
    if width % 2:  # the inverse dropped the repeated column: it had no gradient
        g_xo[..., -1] = 0
    # x_o = d + P(x_e), x_e = s - U(d)
    gs = g_xe + _predict_backward(g_xo, piece.p_w, w[0], g[0], 3)
    gd = g_xo + _predict_backward(gs, piece.u_w, w[1], g[1], 3, negate=True)
    m, c, height, half = gs.shape
    g_sd = gs.new_zeros(2 * m, c, height + height % 2, half)
    g_sd[:m, :, :height] = gs
    g_sd[m:, :, :height] = gd
    g_he, g_ho = g_sd[:, :, 0::2], g_sd[:, :, 1::2]
    gs2 = g_he + _predict_backward(g_ho, piece.p_h, w[2], g[2], 2)
    gd2 = g_ho + _predict_backward(gs2, piece.u_h, w[3], g[3], 2, negate=True)
    return [gs2[:m], gd2[:m], gs2[m:], gd2[m:]]


# --------------------------------------------------------------------------- autograd


def _pieces(t: Tensor, bands: int = 1) -> list[tuple[int, int]]:
    """[start, stop) sample ranges of about ``CHUNK_BYTES`` of input (``bands`` tensors
    shaped like t); the forward stores them so its backward walks the same pieces."""
    sample_bytes = bands * math.prod(t.shape[1:]) * t.element_size()
    size = max(1, CHUNK_BYTES // max(1, sample_bytes))
    return [(start, min(t.shape[0], start + size)) for start in range(0, t.shape[0], size)]


class LiftDown2d(torch.autograd.Function):
    """(x, with_reg, *kernel_parameters) -> (ll, lh, hl, hh, c_u, c_p); c_u, c_p are 0-d
    tensors (zeros when with_reg is False), as in the reference's regulariser."""

    @staticmethod
    def forward(ctx, x: Tensor, with_reg: bool, keep: bool, *params: Tensor):
        w = _weights(list(params))
        n, c, height, width = x.shape
        h2, w2 = (height + 1) // 2, (width + 1) // 2
        bands = [x.new_empty(n, c, h2, w2) for _ in range(4)]
        sums = [x.new_zeros(()) for _ in range(4)]
        kept = []
        ctx.pieces = _pieces(x)
        for start, stop in ctx.pieces:
            piece = _down_piece(x[start:stop], w)
            if keep:
                kept += [piece.p_w.out, piece.u_w.out, piece.p_h.out, piece.u_h.out]
            m = stop - start
            for band, value in zip(bands, (piece.s_h[:m], piece.d_h[:m], piece.s_h[m:],
                                           piece.d_h[m:]), strict=True):  # fmt: skip
                band[start:stop] = value
            if with_reg:
                for total, value in zip(sums, _reg_sums(piece), strict=True):
                    total.add_(value)
        ctx.counts = (n * c * height * w2, n * c * h2 * w2)
        ctx.with_reg = with_reg
        ctx.save_for_backward(x, *params, *kept)
        ctx.num_params = len(params)
        c_u = sums[0] / ctx.counts[0] + sums[2] / ctx.counts[1]
        c_p = sums[1] / ctx.counts[0] + sums[3] / ctx.counts[1]
        return (*bands, c_u, c_p)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        # autograd materialises missing gradients as zeros (materialize_grads is on)
        x, *saved = ctx.saved_tensors
        params, kept = saved[: ctx.num_params], saved[ctx.num_params :]
        w = _weights(params)
        g = _grads_like(w)
        width = x.shape[3]
        reg_w = reg_h = None
        if ctx.with_reg:
            g_cu, g_cp = grads[4:]
            reg_w = (g_cu / ctx.counts[0], g_cp / ctx.counts[0])
            reg_h = (g_cu / ctx.counts[1], g_cp / ctx.counts[1])
        gx = torch.empty_like(x)
        for i, (start, stop) in enumerate(ctx.pieces):
            piece = _down_piece(x[start:stop], w, kept[4 * i : 4 * i + 4])
            piece_grads = [b[start:stop] for b in grads[:4]]
            gx[start:stop] = _down_backward(piece, piece_grads, width, w, g, reg_w, reg_h)
        return (gx, None, None, *_flat_grads(g, params))


class LiftUp2d(torch.autograd.Function):
    """(ll, lh, hl, hh, height, width, *kernel_parameters) -> x [N, C, height, width]."""

    @staticmethod
    def forward(ctx, ll, lh, hl, hh, height: int, width: int, keep: bool, *params: Tensor):
        w = _weights(list(params))
        n, c = ll.shape[:2]
        out = ll.new_empty(n, c, height, width)
        kept = []
        ctx.pieces = _pieces(ll, bands=4)
        for start, stop in ctx.pieces:
            pieces = (b[start:stop] for b in (ll, lh, hl, hh))
            piece = _up_piece(*pieces, height, out[start:stop], w)
            if keep:
                kept += [piece.u_h.out, piece.p_h.out, piece.u_w.out, piece.p_w.out]
        ctx.size = (height, width)
        ctx.num_params = len(params)
        ctx.save_for_backward(ll, lh, hl, hh, *params, *kept)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        ll, lh, hl, hh, *saved = ctx.saved_tensors
        params, kept = saved[: ctx.num_params], saved[ctx.num_params :]
        w = _weights(params)
        g = _grads_like(w)
        height = ctx.size[0]
        band_grads = [torch.empty_like(ll) for _ in range(4)]
        for i, (start, stop) in enumerate(ctx.pieces):
            pieces = (b[start:stop] for b in (ll, lh, hl, hh))
            piece = _up_piece(*pieces, height, None, w, kept[4 * i : 4 * i + 4])
            for band, value in zip(band_grads, _up_backward(piece, grad[start:stop], w, g),
                                   strict=True):  # fmt: skip
                band[start:stop] = value
        return (*band_grads, None, None, None, *_flat_grads(g, params))


def _needs_backward(*tensors: Tensor) -> bool:
    """Whether autograd will record this call (else nothing is kept for a backward)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def lift_down2d(x: Tensor, params: list[Tensor], with_reg: bool):
    """Bands and (c_u, c_p) of the learned 2d step; x and params in one float dtype (the
    caller casts: `seg.ops.lifting._fused_down2d`)."""
    keep = _needs_backward(x, *params)
    *bands, c_u, c_p = LiftDown2d.apply(x, with_reg, keep, *params)
    return bands, (c_u, c_p)


def lift_up2d(ll, lh, hl, hh, size: tuple[int, int], params: list[Tensor]) -> Tensor:
    """The inverse: bands [N, C, ceil(H/2), ceil(W/2)] -> [N, C, H, W] (size = (H, W))."""
    keep = _needs_backward(ll, lh, hl, hh, *params)
    return LiftUp2d.apply(ll, lh, hl, hh, size[0], size[1], keep, *params)
