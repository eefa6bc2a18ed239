"""LiftPool: one lifting-scheme wavelet step as a pooling layer, and its exact inverse.

Reference implementation in plain PyTorch (CPU and CUDA). One lifting step
along an axis of length L, padded to even by repeating the last sample when L
is odd:

    x_e = x[0::2], x_o = x[1::2]          split
    d   = x_o - P(x_e)                    predict  (high-pass, detail)
    s   = x_e + U(d)                      update   (low-pass, approximation)
    inverse:  x_e = s - U(d);  x_o = d + P(x_e);  interleave; crop to L

Whatever P and U are, the inverse is exact: that is what lets the decoder's
LiftUpPool undo the encoder's LiftDownPool instead of guessing.

2d: a step along W gives (s, d); a step along H of each gives (LL, LH) from s
and (HL, HH) from d: the first letter is the horizontal band, the second the
vertical one. The horizontal step has its own P and U; the vertical step has
one P and one U shared by the s and d branches (a separable transform).

Predictors are callables acting along the *last* dimension of a tensor (the
vertical step transposes H to the end before calling them), so a fixed wavelet
is one line and a learned one is a small module:

* ``learned`` (the LiftPool paper): depthwise conv (kernel k, reflect borders)
  -> ReLU -> 1x1 conv (C -> C) -> Tanh, last conv zero-initialised so a fresh
  layer is the lazy wavelet (LL = x[0::2, 0::2]).
* ``haar``: P(t) = t, U(d) = d / 2. Equals PyWavelets ``haar`` up to scale.
* ``legall53``: P(t)[n] = (t[n] + t[n+1]) / 2, U(d)[n] = (d[n-1] + d[n]) / 4,
  with whole-sample symmetric borders. On even lengths it equals PyWavelets
  ``bior2.2`` (mode "reflect") up to scale; an odd length is first extended by
  repeating its last sample (as for every predictor, see ``_split``), so its last
  detail is 0 and its last LL row/column differ from bior2.2's symmetric extension.

Low-precision inputs (float16/bfloat16) are computed in float32 and the
results cast back, with autocast disabled inside the operator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import lifting_fused
from .common import (
    LiftBands,
    LiftBands1d,
    LiftRegularization,
    check_bands,
    check_channels,
    check_float,
    check_rank,
    compute_dtype,
)
from .dispatch import triton_kernels, use_fused, use_triton

Predictor = Callable[[Tensor], Tensor]

PREDICTORS = ("learned", "haar", "legall53")
OUTPUTS = ("LL", "sum")


# --------------------------------------------------------------------------- predictors


def haar_predict(t: Tensor) -> Tensor:
    return t


def haar_update(d: Tensor) -> Tensor:
    return d * 0.5


def _shift_next(t: Tensor) -> Tensor:
    """t[n+1] along the last axis, repeating the last sample (whole-sample symmetry)."""
    return torch.cat([t[..., 1:], t[..., -1:]], dim=-1)


def _shift_prev(t: Tensor) -> Tensor:
    """t[n-1] along the last axis, repeating the first sample (whole-sample symmetry)."""
    return torch.cat([t[..., :1], t[..., :-1]], dim=-1)


def legall53_predict(t: Tensor) -> Tensor:
    return (t + _shift_next(t)) * 0.5


def legall53_update(d: Tensor) -> Tensor:
    return (_shift_prev(d) + d) * 0.25


FIXED_PREDICTORS: dict[str, tuple[Predictor, Predictor]] = {
    "haar": (haar_predict, haar_update),
    "legall53": (legall53_predict, legall53_update),
}


class LearnedPredictor(nn.Module):
    """P or U of the LiftPool paper, acting along the last axis of [N, C, L] or [N, C, A, L].

    depthwise conv (kernel ``kernel_size``, reflect borders) -> ReLU -> 1x1 conv -> Tanh.
    The 1x1 conv starts at zero, so a fresh predictor returns 0 (the lazy wavelet).
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.depthwise_weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.depthwise_bias = nn.Parameter(torch.zeros(channels))
        self.mix_weight = nn.Parameter(torch.zeros(channels, channels))
        self.mix_bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.depthwise_weight, a=5**0.5)

    def forward(self, t: Tensor) -> Tensor:
        check_channels(self.channels, t.shape[1])
        dtype = t.dtype
        pad = self.kernel_size // 2
        if pad:
            # reflect needs pad < length; a length-1 axis can only be replicated.
            mode = "reflect" if t.shape[-1] > pad else "replicate"
            widths = (pad, pad) if t.dim() == 3 else (pad, pad, 0, 0)
            t = F.pad(t, widths, mode=mode)
        weight = self.depthwise_weight.to(dtype)
        if t.dim() == 3:
            h = F.conv1d(t, weight, self.depthwise_bias.to(dtype), groups=self.channels)
        elif t.dim() == 4:
            h = F.conv2d(
                t, weight.unsqueeze(2), self.depthwise_bias.to(dtype), groups=self.channels
            )
        else:
            raise ValueError(f"expected a 3d or 4d tensor, got shape {tuple(t.shape)}")
        h = torch.relu(h)
        # 1x1 channel mix: [C_out, C_in] x [N, C_in, ...]
        mix = self.mix_weight.to(dtype)
        out = torch.einsum("oc,nc...->no...", mix, h)
        out = out + self.mix_bias.to(dtype).view(1, -1, *([1] * (out.dim() - 2)))
        return torch.tanh(out)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"


# --------------------------------------------------------------------------- functional core


def _autocast_off(x: Tensor):
    return torch.autocast(device_type=x.device.type, enabled=False)


def _split(x: Tensor) -> tuple[Tensor, Tensor]:
    """Even and odd samples along the last axis; odd lengths repeat their last sample."""
    if x.shape[-1] % 2:
        x = torch.cat([x, x[..., -1:]], dim=-1)
    return x[..., 0::2], x[..., 1::2]


def _interleave(even: Tensor, odd: Tensor, length: int) -> Tensor:
    """Inverse of ``_split``: [..., n] x 2 -> [..., length] (length in {2n - 1, 2n})."""
    x = torch.stack([even, odd], dim=-1).flatten(-2)
    return x[..., :length]


def _lift_step(
    x: Tensor, predict: Predictor, update: Predictor, with_reg: bool
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    x_e, x_o = _split(x)
    d = x_o - predict(x_e)
    s = x_e + update(d)
    if with_reg:
        return s, d, (s - x_o).pow(2).mean(), d.pow(2).mean()
    return s, d, None, None


def _unlift_step(
    s: Tensor, d: Tensor, predict: Predictor, update: Predictor, length: int
) -> Tensor:
    x_e = s - update(d)
    x_o = d + predict(x_e)
    return _interleave(x_e, x_o, length)


def _pair(fn: Predictor | tuple[Predictor, Predictor]) -> tuple[Predictor, Predictor]:
    if isinstance(fn, tuple | list):
        if len(fn) != 2:
            raise ValueError("give one predictor for both axes or a pair (along_w, along_h)")
        return fn[0], fn[1]
    return fn, fn


def _lift_down1d(x: Tensor, predict: Predictor, update: Predictor, with_reg: bool):
    check_rank(x, 3, "lift_down1d")
    dtype = x.dtype
    with _autocast_off(x):
        s, d, c_u, c_p = _lift_step(x.to(compute_dtype(x)), predict, update, with_reg)
    bands = LiftBands1d(s.to(dtype), d.to(dtype), x.shape[-1])
    return bands, (LiftRegularization(c_u, c_p) if with_reg else None)


def _lift_down2d(x: Tensor, predict, update, with_reg: bool):
    check_rank(x, 4, "lift_down2d")
    predict_w, predict_h = _pair(predict)
    update_w, update_h = _pair(update)
    dtype = x.dtype
    with _autocast_off(x):
        x = x.to(compute_dtype(x))
        s, d, cu_w, cp_w = _lift_step(x, predict_w, update_w, with_reg)
        ll, lh, cu_s, cp_s = _lift_step(s.transpose(-1, -2), predict_h, update_h, with_reg)
        hl, hh, cu_d, cp_d = _lift_step(d.transpose(-1, -2), predict_h, update_h, with_reg)
    bands = LiftBands(
        *(b.transpose(-1, -2).to(dtype) for b in (ll, lh, hl, hh)), size=(x.shape[-2], x.shape[-1])
    )
    reg = LiftRegularization(cu_w + cu_s + cu_d, cp_w + cp_s + cp_d) if with_reg else None
    return bands, reg


def lift_down1d(x: Tensor, predict: Predictor, update: Predictor) -> LiftBands1d:
    """One lifting step along the last axis.

    Args:
        x: [N, C, L], any float dtype.
        predict, update: callables [N, C, n] -> [N, C, n] along the last axis.
    Returns:
        ``LiftBands1d(s, d, size=L)`` with s, d of shape [N, C, ceil(L/2)] and x's dtype.
    """
    return _lift_down1d(x, predict, update, with_reg=False)[0]


def lift_up1d(bands: LiftBands1d, predict: Predictor, update: Predictor) -> Tensor:
    """Exact inverse of :func:`lift_down1d`: returns [N, C, bands.size]."""
    s, d, length = bands
    check_float(s, "lift_up1d")
    if s.shape != d.shape or s.shape[-1] != (length + 1) // 2:
        raise ValueError(
            f"lift_up1d: bands {tuple(s.shape)} / {tuple(d.shape)} cannot come from length "
            f"{length} (that gives {(length + 1) // 2}): keep the size decompose() returned"
        )
    dtype = s.dtype
    with _autocast_off(s):
        cd = compute_dtype(s)
        x = _unlift_step(s.to(cd), d.to(cd), predict, update, length)
    return x.to(dtype)


def lift_down2d(x: Tensor, predict, update) -> LiftBands:
    """One 2d lifting step: along W, then along H of both results.

    Args:
        x: [N, C, H, W], any float dtype, any size (odd sizes repeat their last row/column).
        predict, update: callables acting along the last axis, or pairs ``(along_w, along_h)``.
    Returns:
        ``LiftBands(ll, lh, hl, hh, size=(H, W))``, bands [N, C, ceil(H/2), ceil(W/2)], x's dtype.
    """
    return _lift_down2d(x, predict, update, with_reg=False)[0]


def lift_up2d(bands: LiftBands, predict, update) -> Tensor:
    """Exact inverse of :func:`lift_down2d`: returns [N, C, H, W] with (H, W) = bands.size.

    ``bands.ll`` may be replaced by any tensor of the same shape (a decoder feature):
    ``lift_up2d(bands._replace(ll=feature), predict, update)``.
    """
    predict_w, predict_h = _pair(predict)
    update_w, update_h = _pair(update)
    check_bands(bands)
    ll, lh, hl, hh, (height, width) = bands
    dtype = ll.dtype
    with _autocast_off(ll):
        cd = compute_dtype(ll)
        ll, lh, hl, hh = (b.to(cd).transpose(-1, -2) for b in (ll, lh, hl, hh))
        s = _unlift_step(ll, lh, predict_h, update_h, height).transpose(-1, -2)
        d = _unlift_step(hl, hh, predict_h, update_h, height).transpose(-1, -2)
        x = _unlift_step(s, d, predict_w, update_w, width)
    return x.to(dtype)


def _global_module_hooks() -> bool:
    """Whether forward hooks were registered for every module (nn.modules.module's
    register_module_forward_hook / _pre_hook): the kernels would skip them."""
    from torch.nn.modules import module

    return bool(module._global_forward_hooks or module._global_forward_pre_hooks)


def _fused_down2d(x: Tensor, params: list[Tensor], channels: int, with_reg: bool):
    """`_lift_down2d` for the learned predictors on the fused eager path."""
    check_rank(x, 4, "lift_down2d")
    check_channels(channels, x.shape[1])
    dtype = x.dtype
    with _autocast_off(x):
        cd = compute_dtype(x)
        bands, (c_u, c_p) = lifting_fused.lift_down2d(
            x.to(cd), [p.to(cd) for p in params], with_reg
        )
    bands = LiftBands(*(b.to(dtype) for b in bands), size=(x.shape[-2], x.shape[-1]))
    return bands, (LiftRegularization(c_u, c_p) if with_reg else None)


def _fused_up2d(bands: LiftBands, params: list[Tensor], channels: int) -> Tensor:
    """`lift_up2d` for the learned predictors on the fused eager path."""
    check_bands(bands)
    check_channels(channels, bands.ll.shape[1])
    dtype = bands.ll.dtype
    with _autocast_off(bands.ll):
        cd = compute_dtype(bands.ll)
        x = lifting_fused.lift_up2d(
            *(b.to(cd) for b in bands[:4]), bands.size, [p.to(cd) for p in params]
        )
    return x.to(dtype)


# --------------------------------------------------------------------------- regulariser
#
# A LiftDownPool layer in training mode adds the paper's regulariser to the loss through
# the autograd graph: its bands pass through `_AddToLoss`, an identity whose backward gives
# the regulariser term the gradient 1, exactly as if ``lambda_u * c_u + lambda_p * c_p`` had
# been added to the loss. So every call of every layer counts, once per call; activation
# checkpointing (whose recomputation re-attaches the term), DDP, DataParallel replicas and
# torch.compile need nothing special; and nothing is stored on the module, so nothing
# outlives the step. `record_lift_regularization` collects the values for logging.


class _AddToLoss(torch.autograd.Function):
    """Identity on the bands; in backward, ``term`` receives gradient 1 (once per call,
    whichever bands the loss reached)."""

    @staticmethod
    def forward(ctx, term: Tensor, *bands: Tensor):
        ctx.term_meta = (term.shape, term.dtype, term.device)
        # Aliases, not views (autograd forbids in-place ops on a custom function's view
        # outputs, so `ReLU(inplace=True)` after the layer failed in training); they share
        # the bands' version counter, so an in-place op that spoils a saved tensor still
        # raises, as after any layer.
        return tuple(band.detach() for band in bands)

    @staticmethod
    def backward(ctx, *grads):
        shape, dtype, device = ctx.term_meta
        return (torch.ones(shape, dtype=dtype, device=device), *grads)


class LiftRegularizationRecord:
    """Regulariser values of the LiftDownPool calls made inside a `record_lift_regularization`
    block (detached: for logging; the gradient reaches the model through the graph).

    ``c_u``, ``c_p``: sums over calls; ``loss``: the weighted sum each layer added;
    ``calls``: how many LiftDownPool calls computed one.
    """

    def __init__(self) -> None:
        self.c_u: Tensor | float = 0.0
        self.c_p: Tensor | float = 0.0
        self.loss: Tensor | float = 0.0
        self.calls = 0

    def add(self, c_u: Tensor, c_p: Tensor, term: Tensor) -> None:
        self.c_u = self.c_u + c_u.detach()
        self.c_p = self.c_p + c_p.detach()
        self.loss = self.loss + term.detach()
        self.calls += 1


_RECORDS: list[LiftRegularizationRecord] = []  # a plain list: DataParallel threads see it too


class record_lift_regularization:  # noqa: N801  (a context manager used like a function)
    """``with record_lift_regularization() as record: logits = model(x)``: collect the
    regulariser values of every LiftDownPool call in the block (not under torch.compile,
    where the gradient is still exact but values are not collected)."""

    def __enter__(self) -> LiftRegularizationRecord:
        self.record = LiftRegularizationRecord()
        _RECORDS.append(self.record)
        return self.record

    def __exit__(self, *exc) -> None:
        _RECORDS.remove(self.record)


def _attach_regularization(module, reg: LiftRegularization | None, bands: tuple[Tensor, ...]):
    """Bands that carry ``module``'s weighted regulariser into the loss's gradient."""
    if reg is None:
        return bands
    term = module.lambda_u * reg.c_u + module.lambda_p * reg.c_p
    if _RECORDS and not torch.compiler.is_compiling():
        for record in list(_RECORDS):
            record.add(reg.c_u, reg.c_p, term)
    if not torch.is_grad_enabled() or not term.requires_grad:
        return bands
    return _AddToLoss.apply(term, *bands)


def set_lift_regularization(model: nn.Module, lambda_u: float = 0.01, lambda_p: float = 0.1):
    """Switch on the regulariser of every LiftDownPool layer in ``model`` with these weights
    (the paper's by default); returns how many layers. Layers are built with it off
    (``lambda_u = lambda_p = 0``), so a bare layer's gradient is that of its output only;
    ``set_lift_regularization(model, 0, 0)`` switches it off again.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, _LiftDownBase):
            module.lambda_u, module.lambda_p = float(lambda_u), float(lambda_p)
            count += 1
    return count


# --------------------------------------------------------------------------- modules


def _make_predictors(predictor: str, channels: int | None, kernel_size: int):
    if predictor == "learned":
        if channels is None:
            raise ValueError("predictor='learned' needs the number of channels")
        return LearnedPredictor(channels, kernel_size), LearnedPredictor(channels, kernel_size)
    if predictor in FIXED_PREDICTORS:
        return FIXED_PREDICTORS[predictor]
    raise ValueError(f"unknown LiftPool predictor {predictor!r}; choose one of {PREDICTORS}")


class _LiftDownBase(nn.Module):
    def __init__(
        self, channels, kernel_size, predictor, output, axes: int, lambda_u=0.0, lambda_p=0.0
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown LiftPool output {output!r}; choose one of {OUTPUTS}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.predictor = predictor
        self.output = output
        self.lambda_u = float(lambda_u)
        self.lambda_p = float(lambda_p)
        names = ("w", "h")[:axes] if axes == 2 else ("",)
        self._axis_names = names
        for name in names:
            predict, update = _make_predictors(predictor, channels, kernel_size)
            suffix = f"_{name}" if name else ""
            if isinstance(predict, nn.Module):
                self.add_module(f"predict{suffix}", predict)
                self.add_module(f"update{suffix}", update)
            else:
                object.__setattr__(self, f"predict{suffix}", predict)
                object.__setattr__(self, f"update{suffix}", update)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, "
            f"predictor={self.predictor!r}, output={self.output!r}, "
            f"lambda_u={self.lambda_u}, lambda_p={self.lambda_p}"
        )

    @property
    def _regularized(self) -> bool:
        return self.training and (self.lambda_u != 0.0 or self.lambda_p != 0.0)


class LiftDownPool1d(_LiftDownBase):
    """LiftPool along the last axis: [N, C, L] -> [N, C, ceil(L/2)].

    ``forward`` returns s (``output="LL"``) or s + d (``output="sum"``); ``decompose``
    returns both bands. With nonzero ``lambda_u`` / ``lambda_p`` (see
    :func:`set_lift_regularization`), every training-mode call adds ``lambda_u * c_u +
    lambda_p * c_p`` (the paper's regularisers) to the gradient of whatever loss its
    bands reach; :func:`record_lift_regularization` collects the values.
    """

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int = 3,
        predictor: str = "learned",
        output: str = "LL",
        lambda_u: float = 0.0,
        lambda_p: float = 0.0,
    ) -> None:
        super().__init__(channels, kernel_size, predictor, output, 1, lambda_u, lambda_p)

    @property
    def predictors(self) -> tuple[Predictor, Predictor]:
        return self.predict, self.update

    def decompose(self, x: Tensor) -> LiftBands1d:
        bands, reg = _lift_down1d(x, self.predict, self.update, with_reg=self._regularized)
        s, d = _attach_regularization(self, reg, (bands.s, bands.d))
        return bands._replace(s=s, d=d)

    def forward(self, x: Tensor) -> Tensor:
        bands = self.decompose(x)
        return bands.s if self.output == "LL" else bands.s + bands.d


class LiftDownPool2d(_LiftDownBase):
    """LiftPool in 2d: a drop-in for ``nn.MaxPool2d(2)`` (with ceil mode).

    [N, C, H, W] -> [N, C, ceil(H/2), ceil(W/2)]: the LL band (``output="LL"``) or
    LL + LH + HL + HH (``output="sum"``). ``decompose(x)`` returns all four bands
    and the input size, which :class:`LiftUpPool2d` inverts exactly. With nonzero
    ``lambda_u`` / ``lambda_p`` (see :func:`set_lift_regularization`), every training-mode
    call adds ``lambda_u * c_u + lambda_p * c_p`` (the paper's regularisers, summed over
    the three 1d steps) to the gradient of whatever loss its bands reach.
    """

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int = 3,
        predictor: str = "learned",
        output: str = "LL",
        lambda_u: float = 0.0,
        lambda_p: float = 0.0,
    ) -> None:
        super().__init__(channels, kernel_size, predictor, output, 2, lambda_u, lambda_p)

    @property
    def predictors(self):
        """((predict_w, predict_h), (update_w, update_h)) for the functional forms."""
        return (self.predict_w, self.predict_h), (self.update_w, self.update_h)

    def kernel_parameters(self) -> list[Tensor]:
        """The learned predictors' tensors in the kernels' order (w: P, U; h: P, U), each
        as depthwise weight, depthwise bias, mix weight, mix bias; [] for fixed wavelets."""
        if self.predictor != "learned":
            return []
        return [
            tensor
            for module in (self.predict_w, self.update_w, self.predict_h, self.update_h)
            for tensor in (
                module.depthwise_weight,
                module.depthwise_bias,
                module.mix_weight,
                module.mix_bias,
            )
        ]

    def kernel_ready(self, *tensors: Tensor) -> bool:
        """Whether this call can run on the kernels: they implement the stock predictors the
        layer was built with, so a swapped-in module, or a LearnedPredictor of another kernel
        size or channel count, goes to the reference (which just calls it)."""
        return use_triton(*tensors) and self._stock_predictors()

    def fused_ready(self, *tensors: Tensor) -> bool:
        """Whether this call takes the fused eager path (`seg.ops.lifting_fused`): learned
        stock predictors, no Triton kernel for these tensors (CPU), and not compiling."""
        return self.predictor == "learned" and use_fused(*tensors) and self._stock_predictors()

    def _stock_predictors(self) -> bool:
        """The predictors are the ones the layer was built with, unchanged and unhooked
        (a forward hook on a predictor must run, and only the reference calls them)."""
        (pw, ph), (uw, uh) = self.predictors
        if self.predictor == "learned":
            if _global_module_hooks():
                return False
            return all(
                type(p) is LearnedPredictor
                and p.kernel_size == self.kernel_size
                and p.channels == self.channels
                and not (p._forward_hooks or p._forward_pre_hooks)
                for p in (pw, ph, uw, uh)
            )
        stock = FIXED_PREDICTORS.get(self.predictor)
        return stock is not None and (pw, uw) == stock and (ph, uh) == stock

    def decompose(self, x: Tensor) -> LiftBands:
        with_reg = self._regularized
        if self.kernel_ready(x):
            bands, reg = triton_kernels().lift_down2d(
                x, self.kernel_parameters(), self.predictor, self.kernel_size, self.channels,
                with_reg,
            )  # fmt: skip
        elif self.fused_ready(x):
            bands, reg = _fused_down2d(x, self.kernel_parameters(), self.channels, with_reg)
        else:
            bands, reg = _lift_down2d(x, *self.predictors, with_reg)
        ll, lh, hl, hh = _attach_regularization(self, reg, tuple(bands[:4]))
        return LiftBands(ll, lh, hl, hh, bands.size)

    def forward(self, x: Tensor) -> Tensor:
        bands = self.decompose(x)
        if self.output == "LL":
            return bands.ll
        return bands.ll + bands.lh + bands.hl + bands.hh


class LiftUpPool1d(nn.Module):
    """Inverse of a :class:`LiftDownPool1d`, sharing its P and U: [N, C, n] -> [N, C, L]."""

    def __init__(self, down: LiftDownPool1d) -> None:
        super().__init__()
        if not isinstance(down, LiftDownPool1d):
            raise TypeError(f"LiftUpPool1d inverts a LiftDownPool1d, got {type(down).__name__}")
        self.down = down  # registered: tied parameters, moved and saved with this module

    def forward(self, s: Tensor, bands: LiftBands1d) -> Tensor:
        if s.shape != bands.d.shape:
            raise ValueError(
                f"LiftUpPool1d: feature of shape {tuple(s.shape)} does not match the stored "
                f"detail band {tuple(bands.d.shape)}"
            )
        if self.down.output == "sum":  # the feature stands in for s + d: take d back out
            s = s - bands.d
        return lift_up1d(bands._replace(s=s), *self.down.predictors)


class LiftUpPool2d(nn.Module):
    """Inverse of a :class:`LiftDownPool2d`, sharing its P and U.

    ``up(y, bands)`` puts ``y`` [N, C, h, w] in place of what the down layer returned
    and inverts the lifting step with the stored LH/HL/HH bands: returns [N, C, H, W],
    the size the down layer saw. ``up(down(x), bands)`` reconstructs ``x`` exactly for
    either ``output``: with ``"LL"`` y stands in for LL; with ``"sum"`` for
    LL + LH + HL + HH, so LL = y - LH - HL - HH.
    """

    def __init__(self, down: LiftDownPool2d) -> None:
        super().__init__()
        if not isinstance(down, LiftDownPool2d):
            raise TypeError(f"LiftUpPool2d inverts a LiftDownPool2d, got {type(down).__name__}")
        self.down = down  # registered: tied parameters, moved and saved with this module

    def forward(self, y: Tensor, bands: LiftBands) -> Tensor:
        bands = bands._replace(ll=y)
        check_bands(bands)
        if self.down.output == "sum":
            bands = bands._replace(ll=y - bands.lh - bands.hl - bands.hh)
        down = self.down
        if down.kernel_ready(bands.ll):
            return triton_kernels().lift_up2d(
                bands, down.kernel_parameters(), down.predictor, down.kernel_size, down.channels
            )
        if down.fused_ready(bands.ll):
            return _fused_up2d(bands, down.kernel_parameters(), down.channels)
        return lift_up2d(bands, *down.predictors)
