"""Answers one question per call: the fused GPU kernel, the fused CPU path, or the reference?

A leaf: it imports torch only (the kernel module lazily). Each operator asks
`use_triton` and calls `triton_kernels()` or its own reference.

``SEG_OPS_BACKEND`` (read on every call, so tests can switch it):

* ``auto`` (default): Triton kernels for CUDA tensors when Triton imports, and always
  the reference under ``torch.use_deterministic_algorithms(True)`` (the kernels'
  backwards use atomics); for CPU tensors, the fused eager path where an operator has
  one (the learned LiftPool: `seg.ops.lifting_fused`; SoftPool and LIP in 2d:
  `seg.ops.window_fused`), else the reference; under
  torch.compile / torch.export, the reference (the compilers fuse it themselves).
* ``reference``: always the reference.
* ``fused``: the fused eager path wherever an operator has one (any device), else the
  reference.
* ``triton``: always the kernels; an error if Triton is missing, and a backward
  under deterministic mode raises as PyTorch's non-deterministic ops do. With
  ``TRITON_INTERPRET=1`` set before Triton is imported, the kernels run on CPU
  tensors through Triton's interpreter (how CI checks them without a GPU).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

BACKENDS = ("auto", "reference", "triton", "fused")


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


def _transforming() -> bool:
    """Whether this call is being traced or transformed: torch.compile / torch.export,
    torch.jit.trace, torch.func (vmap, jacrev, ...) or forward-mode AD, which the fused
    path's first-order, Python-level autograd Functions do not support."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return True
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    return torch._C._is_fwd_grad_enabled() and torch.autograd.forward_ad._current_level >= 0


def use_fused(*tensors: Tensor) -> bool:
    """Whether an operator with a fused eager path (and no kernel for this call) takes it:
    for CPU tensors under ``auto``, any tensors under ``fused``; never while traced or
    transformed (`_transforming`)."""
    name = backend()
    if name not in ("auto", "fused") or _transforming():
        return False
    return name == "fused" or all(t.device.type == "cpu" for t in tensors)


def use_triton(*tensors: Tensor) -> bool:
    """Whether this call goes to the Triton kernels (float64 inputs never do)."""
    name = backend()
    if name in ("reference", "fused"):
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
