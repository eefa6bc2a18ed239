"""Input checks every operator shares, on the reference and the kernel paths alike."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


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
