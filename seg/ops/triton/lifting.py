"""LiftPool 2d (down and exact up) as ``torch.ops.seg.lift_down2d`` / ``lift_up2d``.

A lifting step along an axis splits x into even and odd samples x_e, x_o (odd
lengths repeat their last sample) and runs two *stages*, each of the form

    out = base + sign * F(src)        F = P (predict) or U (update)

forward:  d = x_o - P(x_e)            s = x_e + U(d)
inverse:  x_e = s - U(d)              x_o = d + P(x_e)

A 2d step lifts along W, then along H on both results: s, d -> (LL, LH), (HL, HH).
``Stage`` is one such equation on [B, C, A, L] views of the tensors (L the
lifting axis, A the other one), and ``_down_stages`` / ``_up_stages`` list them
in the order above. The split into x_e, x_o and the interleave back are not
copies: a stage's ``IndexMap``s place its sample j at ``step * j + offset`` of
the full-length base it reads or out it writes.

The Triton kernels live in ``_lifting.py`` (its doc gives F for each
predictor and names the kernel modes). A stage runs forward in one launch of
``_stage_fwd_kernel``: it reads ``src`` at the predictor's taps and ``base``
once, and writes ``out`` once. For the learned predictor the depthwise conv
(reflect/replicate borders), ReLU, the 1x1 channel mix (``tl.dot`` of a
[BLOCK_C, BLOCK_C] weight tile with a [BLOCK_C, BLOCK_P] activation tile,
accumulated over input-channel blocks, in fp32 with IEEE precision), the Tanh
and the residual add are fused; haar and legall53 are the same kernel with a
fixed two-tap stencil.

Launches: LiftDownPool2d forward 4 (P_w, U_w on x; then P_h, U_h on the s and d
rows stacked in one [2N, C, H, ceil(W/2)] buffer, one launch each).
LiftUpPool2d forward 6 (the vertical inverse runs once per branch because its
inputs are the caller's separate band tensors).

Backward: nothing but the op's inputs (x, or the four bands) and the weights
is saved; the backward re-runs the forward stages it needs (3 launches for the
down, 5 for the up) and then walks the stages in reverse, each in one launch
for haar/legall53 and two for learned (``_stage_bwd_mix_kernel`` recomputes
the pre-activation, writes dL/dz and reduces the 1x1 weights' and bias'
gradients; ``_stage_bwd_src_kernel`` applies the transposed mix, the ReLU mask
and the transposed depthwise conv and reduces its weight gradients). Scatter
into overlapping taps uses fp32 atomics. Intermediates (s, d of the first
step; dL/dz) live in fp32 work buffers of the input's size.

Regularisers (``with_reg``): the op also returns its fp32 (s, d) buffer, and
c_u, c_p are computed from it and from the fp32 bands with a few PyTorch ops,
exactly the reference formula; autograd carries their gradient back into the
op's backward (as a gradient for that buffer). 1d LiftPool runs on the
reference. float64 runs on the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..common import (
    LiftBands,
    LiftRegularization,
    alert_not_deterministic,
    check_bands,
    check_channels,
    check_rank,
    compute_dtype,
)
from ._lifting import (
    HAAR_PREDICT,
    HAAR_UPDATE,
    LEARNED,
    LEGALL_PREDICT,
    LEGALL_UPDATE,
    _stage_bwd_mix_kernel,
    _stage_bwd_src_kernel,
    _stage_fwd_kernel,
)

# (P, U) kernel modes of the fixed predictors
FIXED_MODES = {"haar": (HAAR_PREDICT, HAAR_UPDATE), "legall53": (LEGALL_PREDICT, LEGALL_UPDATE)}
UNBOUNDED = 2**31 - 1  # an IndexMap bound that never clamps a read nor masks a write


# --------------------------------------------------------------------------- launchers

BLOCK_P = 64
MAX_GRID_BATCH = 65535  # CUDA's limit on grid axes 1 and 2 (axis 0: 2^31 - 1)


def _axis_strides(t: Tensor, axis: str) -> tuple[int, int, int, int]:
    """Strides of [B, C, H, W] as (batch, channel, other axis, lifting axis)."""
    sb, sc, sh, sw = t.stride()
    return (sb, sc, sh, sw) if axis == "w" else (sb, sc, sw, sh)


class Predictor:
    """A predictor's kernel mode (one of ``_lifting``'s MODE constants, tl.constexpr; the
    launches pass its int ``mode.value``) and (for learned) its fp32-loadable weights."""

    def __init__(self, mode: tl.constexpr, kernel_size: int, weights: list[Tensor] | None = None):
        self.mode = mode
        self.kernel_size = kernel_size if mode == LEARNED else 1
        self.weights = weights

    def pointers(self, fallback: Tensor):
        if self.mode == LEARNED:
            dw, db, mw, mb = self.weights
            return dw.contiguous(), db.contiguous(), mw.contiguous(), mb.contiguous()
        return fallback, fallback, fallback, fallback


def _blocks(mode: tl.constexpr, channels: int) -> int:
    if mode == LEARNED:  # tl.dot wants every tile dimension >= 16
        return max(16, min(64, triton.next_power_of_2(channels)))
    return min(16, triton.next_power_of_2(channels))


def _rows(t: Tensor | None, start: int, end: int) -> Tensor | None:
    return None if t is None else t[start:end]


@dataclass(frozen=True)
class IndexMap:
    """Where a stage's sample j sits along a tensor's lifting axis: at ``step * j + offset``.
    Reads there (base) are clamped to ``bound``; writes (out) are dropped at ``bound`` and
    beyond. Unpacks as the kernels' (step, offset, bound) arguments."""

    step: int
    offset: int
    bound: int = UNBOUNDED

    @classmethod
    def identity(cls) -> IndexMap:
        """j itself: a tensor of the stage's own length n (s, d, a band)."""
        return cls(step=1, offset=0)

    @classmethod
    def even(cls, bound: int = UNBOUNDED) -> IndexMap:
        """The even samples 2j of a full-length axis: x_e."""
        return cls(step=2, offset=0, bound=bound)

    @classmethod
    def odd(cls, bound: int) -> IndexMap:
        """The odd samples 2j + 1 of a full-length axis: x_o."""
        return cls(step=2, offset=1, bound=bound)

    def __iter__(self):
        return iter((self.step, self.offset, self.bound))


@dataclass(frozen=True, kw_only=True, eq=False)  # eq=False: tensors have no boolean ==
class Stage:
    """out = base + sign * F(src) along one axis of [B, C, A, L] views (see the module doc)."""

    out: Tensor | None  # None where the stage only runs backward
    out_map: IndexMap = IndexMap.identity()  # out's index of sample j (writes stop at bound)
    base: Tensor
    base_map: IndexMap = IndexMap.identity()  # base's index of sample j (reads clamp to bound)
    sign: float
    pred: Predictor  # F: its kernel mode and weights
    src: Tensor  # F's input, indexed by j (x_e is a strided view)
    axis: str  # the lifting axis L: "w" or "h"
    n: int  # samples j along L: ceil(length / 2)

    def batch_chunks(self):
        """Stages over at most ``MAX_GRID_BATCH`` images each: the batch is grid axis 1,
        which CUDA caps at 65535 (the vertical stages run on 2N images)."""
        batch = self.src.shape[0]
        if batch <= MAX_GRID_BATCH:
            yield 0, self
            return
        for start in range(0, batch, MAX_GRID_BATCH):
            end = min(batch, start + MAX_GRID_BATCH)
            src, base, out = (_rows(t, start, end) for t in (self.src, self.base, self.out))
            yield start, replace(self, src=src, base=base, out=out)

    def geometry(self):
        batch, channels = self.src.shape[:2]
        other = self.src.shape[2] if self.axis == "w" else self.src.shape[3]
        block_c = _blocks(self.pred.mode, channels)
        tiles = triton.cdiv(other * self.n, BLOCK_P) * triton.cdiv(channels, block_c)
        grid = (tiles, batch)  # channels ride on axis 0 (see _lifting._tiles); the batch is chunked
        return batch, channels, other, block_c, grid

    def common(self):
        k = self.pred.kernel_size
        return dict(
            SIGN=self.sign,
            K=k,
            REFLECT=self.n > k // 2,
            A_FASTEST=self.axis == "h",
            BLOCK_P=BLOCK_P,
        )

    def forward(self) -> None:
        if self.src.shape[0] > MAX_GRID_BATCH:
            for _, part in self.batch_chunks():
                part.forward()
            return
        _, channels, other, block_c, grid = self.geometry()
        if other * self.n == 0:
            return
        _stage_fwd_kernel[grid](
            self.src, *_axis_strides(self.src, self.axis),
            self.base, *_axis_strides(self.base, self.axis), *self.base_map,
            self.out, *_axis_strides(self.out, self.axis), *self.out_map,
            *self.pred.pointers(self.src),
            channels, other, self.n,
            MODE=self.pred.mode.value, BLOCK_C=block_c, **self.common(),
        )  # fmt: skip

    def backward(self, grad_out, grad_src, grad_base, grad_weights, work: Tensor) -> None:
        """Accumulate into grad_src, grad_base (fp32) and grad_weights from grad_out."""
        if self.src.shape[0] > MAX_GRID_BATCH:
            for start, part in self.batch_chunks():
                end = start + part.src.shape[0]
                grads = (_rows(t, start, end) for t in (grad_out, grad_src, grad_base))
                part.backward(*grads, grad_weights, work)  # work is reused chunk after chunk
            return
        batch, channels, other, block_c, grid = self.geometry()
        if other * self.n == 0:
            return
        weights = self.pred.pointers(self.src)
        grad_w = grad_weights if grad_weights is not None else (work,) * 4
        gz = work[: batch * channels * other * self.n]
        if self.pred.mode == LEARNED:
            _stage_bwd_mix_kernel[grid](
                self.src, *_axis_strides(self.src, self.axis),
                grad_out, *_axis_strides(grad_out, self.axis), *self.out_map,
                gz, *weights, grad_w[2], grad_w[3],
                channels, other, self.n,
                BLOCK_C=block_c, **self.common(),
            )  # fmt: skip
        _stage_bwd_src_kernel[grid](
            self.src, *_axis_strides(self.src, self.axis),
            grad_src, *_axis_strides(grad_src, self.axis),
            grad_base, *_axis_strides(grad_base, self.axis), *self.base_map,
            grad_out, *_axis_strides(grad_out, self.axis), *self.out_map,
            gz, weights[0], weights[1], weights[2], grad_w[0], grad_w[1],
            channels, other, self.n,
            MODE=self.pred.mode.value, BLOCK_C=block_c, **self.common(),
        )  # fmt: skip


def _predictors(params: list[Tensor], predictor: str, kernel_size: int):
    """(predict_w, update_w, predict_h, update_h) from the op's flat parameter list."""
    if predictor == "learned":
        return tuple(Predictor(LEARNED, kernel_size, params[4 * i : 4 * i + 4]) for i in range(4))
    if predictor not in FIXED_MODES:
        raise ValueError(f"no Triton kernel for LiftPool predictor {predictor!r}")
    p_mode, u_mode = FIXED_MODES[predictor]
    return (Predictor(p_mode, 1), Predictor(u_mode, 1)) * 2


def _half(size: int) -> int:
    return (size + 1) // 2


def _down_stages(x, sd, lo, hi, preds):
    """The four forward stages of LiftDownPool2d: x -> sd = [s; d] -> lo = [LL; HL], hi = [LH; HH].
    x_o reads clamp to the last sample: odd lengths repeat it."""
    predict_w, update_w, predict_h, update_h = preds
    batch = x.shape[0]
    height, width = x.shape[-2:]
    s, d = sd[:batch], sd[batch:]
    n_w, n_h = _half(width), _half(height)
    return [
        # d = x_o - P_w(x_e)
        Stage(out=d, base=x, base_map=IndexMap.odd(bound=width - 1),
              sign=-1.0, pred=predict_w, src=x[..., 0::2], axis="w", n=n_w),
        # s = x_e + U_w(d)
        Stage(out=s, base=x, base_map=IndexMap.even(),
              sign=1.0, pred=update_w, src=d, axis="w", n=n_w),
        # LH, HH = s_o - P_h(s_e), d_o - P_h(d_e)
        Stage(out=hi, base=sd, base_map=IndexMap.odd(bound=height - 1),
              sign=-1.0, pred=predict_h, src=sd[..., 0::2, :], axis="h", n=n_h),
        # LL, HL = s_e + U_h(LH), d_e + U_h(HH)
        Stage(out=lo, base=sd, base_map=IndexMap.even(),
              sign=1.0, pred=update_h, src=hi, axis="h", n=n_h),
    ]  # fmt: skip


def _up_stages(bands, sd, x, preds, height, width):
    """The six stages of LiftUpPool2d: (LL, LH), (HL, HH) -> sd = [s; d] -> x.
    Writes stop at the output's length: an odd length drops the repeated last sample."""
    predict_w, update_w, predict_h, update_h = preds
    batch = x.shape[0]
    s, d = sd[:batch], sd[batch:]
    n_w, n_h = _half(width), _half(height)
    stages = []
    for low, high, rows in ((bands[0], bands[1], s), (bands[2], bands[3], d)):
        stages += [
            # even rows = low - U_h(high)
            Stage(out=rows, out_map=IndexMap.even(bound=height), base=low,
                  sign=-1.0, pred=update_h, src=high, axis="h", n=n_h),
            # odd rows = high + P_h(even rows)
            Stage(out=rows, out_map=IndexMap.odd(bound=height), base=high,
                  sign=1.0, pred=predict_h, src=rows[..., 0::2, :], axis="h", n=n_h),
        ]  # fmt: skip
    stages += [
        # x_e = s - U_w(d)
        Stage(out=x, out_map=IndexMap.even(bound=width), base=s,
              sign=-1.0, pred=update_w, src=d, axis="w", n=n_w),
        # x_o = d + P_w(x_e)
        Stage(out=x, out_map=IndexMap.odd(bound=width), base=d,
              sign=1.0, pred=predict_w, src=x[..., 0::2], axis="w", n=n_w),
    ]  # fmt: skip
    return stages


def _weight_grads(params: list[Tensor]) -> list[Tensor]:
    return [torch.zeros(p.shape, device=p.device, dtype=torch.float32) for p in params]


def _grads_of(grads: list[Tensor], index: int):
    return tuple(grads[4 * index : 4 * index + 4]) if grads else None


def _band_shapes(x: Tensor):
    batch, channels, height, width = x.shape
    band = (2 * batch, channels, _half(height), _half(width))
    return band, (2 * batch, channels, height, _half(width))


# --------------------------------------------------------------------------- torch ops


@torch.library.custom_op("seg::lift_down2d", mutates_args=())
def lift_down2d_op(
    x: Tensor, params: list[Tensor], predictor: str, kernel_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """x [N, C, H, W] -> (lo = [LL; HL], hi = [LH; HH]: [2N, C, h, w]; sd = [s; d]: [2N, C, H, w]),
    all float32 (the compute dtype); h, w = ceil(H/2), ceil(W/2)."""
    band_shape, sd_shape = _band_shapes(x)
    cd = compute_dtype(x)
    lo = torch.empty(band_shape, device=x.device, dtype=cd)
    hi = torch.empty(band_shape, device=x.device, dtype=cd)
    sd = torch.empty(sd_shape, device=x.device, dtype=cd)
    for stage in _down_stages(x, sd, lo, hi, _predictors(params, predictor, kernel_size)):
        stage.forward()
    return lo, hi, sd


@lift_down2d_op.register_fake
def _(x, params, predictor, kernel_size):
    band_shape, sd_shape = _band_shapes(x)
    cd = compute_dtype(x)
    return (
        x.new_empty(band_shape, dtype=cd),
        x.new_empty(band_shape, dtype=cd),
        x.new_empty(sd_shape, dtype=cd),
    )


@torch.library.custom_op("seg::lift_down2d_backward", mutates_args=())
def lift_down2d_backward_op(
    grad_lo: Tensor,
    grad_hi: Tensor,
    grad_sd: Tensor | None,
    x: Tensor,
    params: list[Tensor],
    predictor: str,
    kernel_size: int,
) -> list[Tensor]:
    """[grad x, grad of each parameter]: recomputes s, d and the high bands from x."""
    alert_not_deterministic("seg::lift_down2d_backward")
    band_shape, sd_shape = _band_shapes(x)
    cd = compute_dtype(x)
    preds = _predictors(params, predictor, kernel_size)
    sd = torch.empty(sd_shape, device=x.device, dtype=cd)
    hi = torch.empty(band_shape, device=x.device, dtype=cd)
    stages = _down_stages(x, sd, None, hi, preds)
    for stage in stages[:3]:
        stage.forward()
    g_x = torch.zeros_like(x, dtype=cd)  # x's layout, as the fake implementation says
    g_sd = torch.zeros(sd_shape, device=x.device, dtype=cd) if grad_sd is None else grad_sd.to(cd)
    g_sd = g_sd.clone() if g_sd is grad_sd else g_sd
    g_hi = grad_hi.to(cd, copy=True).contiguous()
    g_w = _weight_grads(params)
    work = torch.empty(sd.numel(), device=x.device, dtype=torch.float32) if params else g_x
    batch = x.shape[0]
    g_s, g_d = g_sd[:batch], g_sd[batch:]
    # (stage, grad of its out, grad of its src, grad of its base, predictor index)
    backward = [
        (stages[3], grad_lo, g_hi, g_sd, 3),
        (stages[2], g_hi, g_sd[..., 0::2, :], g_sd, 2),
        (stages[1], g_s, g_d, g_x, 1),
        (stages[0], g_d, g_x[..., 0::2], g_x, 0),
    ]
    for stage, g_out, g_src, g_base, index in backward:
        stage.backward(g_out, g_src, g_base, _grads_of(g_w, index), work)
    return [g_x.to(x.dtype)] + [g.to(p.dtype) for g, p in zip(g_w, params)]


@lift_down2d_backward_op.register_fake
def _(grad_lo, grad_hi, grad_sd, x, params, predictor, kernel_size):
    return [torch.empty_like(x)] + [torch.empty_like(p) for p in params]


def _down_setup(ctx, inputs, output):
    x, params, predictor, kernel_size = inputs
    ctx.save_for_backward(x, *params)
    ctx.config = (predictor, kernel_size)


def _down_backward(ctx, grad_lo, grad_hi, grad_sd):
    x, *params = ctx.saved_tensors
    band_shape, _ = _band_shapes(x)
    cd = compute_dtype(x)
    if grad_lo is None:
        grad_lo = x.new_zeros(band_shape, dtype=cd)
    if grad_hi is None:
        grad_hi = x.new_zeros(band_shape, dtype=cd)
    grads = lift_down2d_backward_op(grad_lo, grad_hi, grad_sd, x, params, *ctx.config)
    return grads[0], list(grads[1:]), None, None


lift_down2d_op.register_autograd(_down_backward, setup_context=_down_setup)


@torch.library.custom_op("seg::lift_up2d", mutates_args=())
def lift_up2d_op(
    ll: Tensor,
    lh: Tensor,
    hl: Tensor,
    hh: Tensor,
    params: list[Tensor],
    predictor: str,
    kernel_size: int,
    height: int,
    width: int,
) -> Tensor:
    """Bands [N, C, ceil(H/2), ceil(W/2)] -> x [N, C, H, W] in float32 (the compute dtype)."""
    batch, channels = ll.shape[:2]
    cd = compute_dtype(ll)
    sd = torch.empty((2 * batch, channels, height, ll.shape[-1]), device=ll.device, dtype=cd)
    x = torch.empty((batch, channels, height, width), device=ll.device, dtype=cd)
    preds = _predictors(params, predictor, kernel_size)
    for stage in _up_stages((ll, lh, hl, hh), sd, x, preds, height, width):
        stage.forward()
    return x


@lift_up2d_op.register_fake
def _(ll, lh, hl, hh, params, predictor, kernel_size, height, width):
    return ll.new_empty((ll.shape[0], ll.shape[1], height, width), dtype=compute_dtype(ll))


@torch.library.custom_op("seg::lift_up2d_backward", mutates_args=())
def lift_up2d_backward_op(
    grad: Tensor,
    ll: Tensor,
    lh: Tensor,
    hl: Tensor,
    hh: Tensor,
    params: list[Tensor],
    predictor: str,
    kernel_size: int,
) -> list[Tensor]:
    """[grad ll, lh, hl, hh, grad of each parameter]: recomputes s, d and x's even columns."""
    alert_not_deterministic("seg::lift_up2d_backward")
    batch, channels, height, width = grad.shape
    cd = compute_dtype(ll)
    sd = torch.empty((2 * batch, channels, height, ll.shape[-1]), device=ll.device, dtype=cd)
    x = torch.empty((batch, channels, height, width), device=ll.device, dtype=cd)
    preds = _predictors(params, predictor, kernel_size)
    bands = (ll, lh, hl, hh)
    stages = _up_stages(bands, sd, x, preds, height, width)
    for stage in stages[:5]:
        stage.forward()
    g_x = grad.to(cd, copy=True).contiguous()
    g_sd = torch.zeros_like(sd)
    g_bands = [torch.zeros_like(b, dtype=cd) for b in bands]  # each band's layout, as the fake
    g_w = _weight_grads(params)
    work = torch.empty(sd.numel(), device=ll.device, dtype=torch.float32) if params else g_x
    g_s, g_d = g_sd[:batch], g_sd[batch:]
    backward = [
        (stages[5], g_x, g_x[..., 0::2], g_d, 0),
        (stages[4], g_x, g_d, g_s, 1),
        (stages[3], g_d, g_d[..., 0::2, :], g_bands[3], 2),
        (stages[2], g_d, g_bands[3], g_bands[2], 3),
        (stages[1], g_s, g_s[..., 0::2, :], g_bands[1], 2),
        (stages[0], g_s, g_bands[1], g_bands[0], 3),
    ]
    for stage, g_out, g_src, g_base, index in backward:
        stage.backward(g_out, g_src, g_base, _grads_of(g_w, index), work)
    return [g.to(b.dtype) for g, b in zip(g_bands, bands)] + [
        g.to(p.dtype) for g, p in zip(g_w, params)
    ]


@lift_up2d_backward_op.register_fake
def _(grad, ll, lh, hl, hh, params, predictor, kernel_size):
    return [torch.empty_like(b) for b in (ll, lh, hl, hh)] + [torch.empty_like(p) for p in params]


def _up_setup(ctx, inputs, output):
    ll, lh, hl, hh, params, predictor, kernel_size, height, width = inputs
    ctx.save_for_backward(ll, lh, hl, hh, *params)
    ctx.config = (predictor, kernel_size)


def _up_backward(ctx, grad):
    ll, lh, hl, hh, *params = ctx.saved_tensors
    grads = lift_up2d_backward_op(grad, ll, lh, hl, hh, params, *ctx.config)
    return (*grads[:4], list(grads[4:]), None, None, None, None)


lift_up2d_op.register_autograd(_up_backward, setup_context=_up_setup)


# --------------------------------------------------------------------------- entry points


def _odd(t: Tensor, dim: int) -> Tensor:
    """x_o of the split along dim (odd lengths repeat their last sample)."""
    length = t.shape[dim]
    index = torch.arange(1, length + 1, 2, device=t.device).clamp_(max=length - 1)
    return t.index_select(dim, index)


def _regularization(x: Tensor, lo: Tensor, hi: Tensor, sd: Tensor) -> LiftRegularization:
    """The reference's c_u, c_p from the op's float32 outputs (differentiable through the op)."""
    batch = x.shape[0]
    s, d = sd[:batch], sd[batch:]
    x_o = _odd(x.to(sd.dtype), -1)
    c_u = (s - x_o).pow(2).mean()
    c_p = d.pow(2).mean()
    for rows, low, high in ((s, lo[:batch], hi[:batch]), (d, lo[batch:], hi[batch:])):
        c_u = c_u + (low - _odd(rows, -2)).pow(2).mean()
        c_p = c_p + high.pow(2).mean()
    return LiftRegularization(c_u, c_p)


def lift_down2d(
    x: Tensor, params: list[Tensor], predictor: str, kernel_size: int, channels, with_reg: bool
):
    """LiftDownPool2d.decompose on the kernels: x [N, C, H, W] (fp16/bf16/fp32) ->
    (LiftBands in x's dtype, LiftRegularization or None). ``params``: the layer's
    ``kernel_parameters()``; the layer sends float64 and custom predictors to the reference."""
    check_rank(x, 4, "lift_down2d")
    if predictor == "learned":
        check_channels(channels, x.shape[1])
    lo, hi, sd = lift_down2d_op(x, params, predictor, kernel_size)
    batch = x.shape[0]
    ll, lh, hl, hh = (t.to(x.dtype) for t in (lo[:batch], hi[:batch], lo[batch:], hi[batch:]))
    bands = LiftBands(ll, lh, hl, hh, size=(x.shape[-2], x.shape[-1]))
    return bands, (_regularization(x, lo, hi, sd) if with_reg else None)


def lift_up2d(
    bands: LiftBands, params: list[Tensor], predictor: str, kernel_size: int, channels
) -> Tensor:
    """LiftUpPool2d.forward on the kernels: bands (ll = the decoder feature) -> [N, C, H, W]."""
    check_bands(bands)
    if predictor == "learned":
        check_channels(channels, bands.ll.shape[1])
    ll, lh, hl, hh, (height, width) = bands
    x = lift_up2d_op(ll, lh, hl, hh, params, predictor, kernel_size, height, width)
    return x.to(ll.dtype)
