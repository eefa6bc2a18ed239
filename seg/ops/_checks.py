"""Input checks every operator shares, on the reference and the kernel paths alike."""

from __future__ import annotations

from torch import Tensor


def check_float(x: Tensor, name: str) -> None:
    """Pooling is defined on real-valued features: integer and bool tensors are refused."""
    if not x.is_floating_point():
        raise TypeError(
            f"{name} expects a floating-point tensor (float32/64, float16, bfloat16), got "
            f"{x.dtype}; convert it first, e.g. x.float()"
        )
