"""Chooses, per call, the fused GPU kernel or the PyTorch reference of an operator.

``SEG_OPS_BACKEND`` (read on every call, so tests can switch it):

* ``auto`` (default): Triton kernels for CUDA tensors when Triton imports, the
  reference otherwise, and always the reference under
  ``torch.use_deterministic_algorithms(True)`` (the kernels' backwards use atomics).
* ``reference``: always the reference.
* ``triton``: always the kernels; an error if Triton is missing, and a backward
  under deterministic mode raises as PyTorch's non-deterministic ops do. With
  ``TRITON_INTERPRET=1`` set before Triton is imported, the kernels run on CPU
  tensors through Triton's interpreter (how CI checks them without a GPU).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

BACKENDS = ("auto", "reference", "triton")


def backend() -> str:
    name = os.environ.get("SEG_OPS_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"SEG_OPS_BACKEND={name!r} is not one of {BACKENDS}")
    return name


_KERNELS: list = []  # [module or None] once looked up (a plain cache: torch.compile traces it)


def triton_kernels():
    """The ``seg.ops.triton`` kernel module, or None when Triton (or its kernels) can't load."""
    if not _KERNELS:
        try:
            from . import triton as kernels
        except ImportError:
            kernels = None
        _KERNELS.append(kernels if getattr(kernels, "AVAILABLE", False) else None)
    return _KERNELS[0]


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# The kernels compute in fp32 for these; float64 (gradcheck, tests) stays on the reference.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def use_triton(*tensors: Tensor) -> bool:
    """Whether this call goes to the Triton kernels (float64 inputs never do)."""
    name = backend()
    if name == "reference":
        return False
    if name == "auto" and torch.are_deterministic_algorithms_enabled():
        return False  # the kernels' backwards accumulate with atomics; the reference does not
    kernels = triton_kernels()
    if name == "triton":
        if kernels is None:
            raise RuntimeError(
                "SEG_OPS_BACKEND=triton but the Triton kernels are unavailable: "
                "install triton (it ships with CUDA builds of torch) or use SEG_OPS_BACKEND=auto"
            )
        if not interpreter_enabled() and not all(t.is_cuda for t in tensors):
            raise RuntimeError(
                "SEG_OPS_BACKEND=triton needs CUDA tensors; for CPU tensors set "
                "TRITON_INTERPRET=1 before triton is imported"
            )
        return all(t.dtype in KERNEL_DTYPES for t in tensors)
    return kernels is not None and all(t.is_cuda and t.dtype in KERNEL_DTYPES for t in tensors)


def soft_pool2d(x: Tensor, kernel_size, stride, padding) -> Tensor:
    if use_triton(x):
        return triton_kernels().soft_pool2d(x, kernel_size, stride, padding)
    from .softpool import soft_pool2d_reference

    return soft_pool2d_reference(x, kernel_size, stride, padding)


def lip2d(x: Tensor, logit: Tensor, kernel_size, stride, padding) -> Tensor:
    if use_triton(x, logit):
        return triton_kernels().lip2d(x, logit, kernel_size, stride, padding)
    from .lip import lip2d_reference

    return lip2d_reference(x, logit, kernel_size, stride, padding)


def _stock_predictors(down) -> bool:
    """Whether ``down`` still has the predictors its ``predictor`` name promises.

    The kernels implement the stock learned/haar/legall53 predictors; a user who
    swapped in a module of their own gets the reference, which calls it.
    """
    from .lifting import FIXED_PREDICTORS, LearnedPredictor

    (pw, ph), (uw, uh) = down.predictors
    if down.predictor == "learned":
        # The kernels read kernel_size and channels from the layer: every predictor must agree.
        return all(
            type(p) is LearnedPredictor
            and p.kernel_size == down.kernel_size
            and p.channels == down.channels
            for p in (pw, ph, uw, uh)
        )
    stock = FIXED_PREDICTORS.get(down.predictor)
    return stock is not None and (pw, uw) == stock and (ph, uh) == stock


def lift_down2d(down, x: Tensor, with_reg: bool):
    """LiftDownPool2d.decompose: (LiftBands, LiftRegularization or None)."""
    if use_triton(x) and _stock_predictors(down):
        return triton_kernels().lift_down2d(down, x, with_reg)
    from .lifting import _lift_down2d

    predict, update = down.predictors
    return _lift_down2d(x, predict, update, with_reg)


def lift_up2d(down, bands) -> Tensor:
    """LiftUpPool2d.forward with ``bands.ll`` already replaced by the decoder feature."""
    if use_triton(bands.ll) and _stock_predictors(down):
        return triton_kernels().lift_up2d(down, bands)
    from .lifting import lift_up2d as reference

    return reference(bands, *down.predictors)
