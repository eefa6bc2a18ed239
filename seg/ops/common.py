"""What every operator and kernel shares: the LiftPool band types, the compute dtype, and
the input checks both paths run. A leaf: it imports torch only, so the reference ops, the
Triton kernels and the dispatcher can all import it without importing each other.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor


class LiftBands(NamedTuple):
    """Sub-bands of a 2d lifting step, each [N, C, ceil(H/2), ceil(W/2)]."""

    ll: Tensor
    lh: Tensor
    hl: Tensor
    hh: Tensor
    size: tuple[int, int]


class LiftBands1d(NamedTuple):
    """Sub-bands of a 1d lifting step, each [N, C, ceil(L/2)]."""

    s: Tensor
    d: Tensor
    size: int


class LiftRegularization(NamedTuple):
    """The paper's regularisers: c_u = mean((s - x_o)^2), c_p = mean(d^2), summed over steps."""

    c_u: Tensor
    c_p: Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    """The one rule: float16/bfloat16 compute in float32; float32/float64 in themselves."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def check_float(x: Tensor, name: str) -> None:
    """Pooling is defined on real-valued features: integer and bool tensors are refused."""
    if not x.is_floating_point():
        raise TypeError(
            f"{name} expects a floating-point tensor (float32/64, float16, bfloat16), got "
            f"{x.dtype}; convert it first, e.g. x.float()"
        )


def alert_not_deterministic(caller: str) -> None:
    """What PyTorch's own ops do under ``torch.use_deterministic_algorithms(True)`` when
    they have no deterministic implementation: raise (or warn with ``warn_only=True``)."""
    if not torch.are_deterministic_algorithms_enabled():
        return
    message = (
        f"{caller} does not have a deterministic implementation (it accumulates with float "
        "atomics), but you set 'torch.use_deterministic_algorithms(True)'. Use "
        "SEG_OPS_BACKEND=auto or reference (the PyTorch reference is used then), or "
        "the 'warn_only=True' option if that is acceptable for your application."
    )
    if torch.is_deterministic_algorithms_warn_only_enabled():
        warnings.warn(message, stacklevel=3)
    else:
        raise RuntimeError(message)


def check_rank(x: Tensor, rank: int, name: str) -> None:
    check_float(x, name)
    if x.dim() != rank:
        layout = {3: "[N, C, L]", 4: "[N, C, H, W]"}[rank]
        raise ValueError(f"{name} expects a {rank}d tensor {layout}, got shape {tuple(x.shape)}")


def check_bands(bands: LiftBands) -> None:
    """The LL stand-in must have the shape of the detail bands, and ``size`` must be the
    size those bands came from (``ceil(size / 2)`` each way), or the inverse would read or
    write outside them."""
    check_float(bands.ll, "LiftUpPool")
    for name in ("lh", "hl", "hh"):
        band = getattr(bands, name)
        if band.shape != bands.ll.shape:
            raise ValueError(
                f"LiftUpPool: feature of shape {tuple(bands.ll.shape)} does not match the stored "
                f"{name} band {tuple(band.shape)}: upsample the feature its own LiftDownPool made"
            )
    if bands.ll.dim() != 4:
        raise ValueError(f"LiftUpPool expects [N, C, h, w] bands, got {tuple(bands.ll.shape)}")
    height, width = bands.size
    expected = ((height + 1) // 2, (width + 1) // 2)
    if tuple(bands.ll.shape[-2:]) != expected:
        raise ValueError(
            f"LiftUpPool: bands of {tuple(bands.ll.shape[-2:])} cannot come from size "
            f"{tuple(bands.size)} (that gives {expected}): keep the size decompose() returned"
        )


def check_channels(expected: int | None, got: int) -> None:
    """A learned predictor's weights are per channel: the input must have as many."""
    if expected is not None and got != expected:
        raise ValueError(
            f"LiftPool predictor built for {expected} channels got {got}: "
            "build the layer with the channel count of its input"
        )
