"""Fused Triton kernels for the pooling operators, registered as ``torch.ops.seg.*``.

Importing this module needs Triton; ``seg.ops.dispatch`` imports it lazily and
routes calls here for CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``
with ``SEG_OPS_BACKEND=triton``). Covered: ``soft_pool2d``, ``lip2d``,
``LiftDownPool2d.decompose`` and ``LiftUpPool2d.forward`` (learned, haar and
legall53 predictors). 1d/3d SoftPool and 1d LiftPool run on the reference.
See docs/kernels.md for what is fused and how.
"""

from __future__ import annotations

import triton  # noqa: F401  (ImportError here means: no kernels, use the reference)

from .lifting import lift_down2d, lift_up2d
from .lip import lip2d
from .softpool import soft_pool2d

AVAILABLE = True

__all__ = ["AVAILABLE", "lift_down2d", "lift_up2d", "lip2d", "soft_pool2d"]
