"""The compiled CPU helper of the fused LiftPool path (`csrc/lift_cpu.cpp`), built on first
use with torch's C++ extension loader (a C++ compiler and ninja; about a minute once,
cached under ``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``).

`extension()` returns the module, or None when it is switched off (``SEG_OPS_CPP=0``) or
cannot be built here; the fused path then runs its plain-PyTorch depthwise conv (same
maths). A failed build warns once, with the reason; with ``SEG_OPS_CPP=require`` it raises
instead, so a broken build cannot pass as a skip where the helper is expected.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("csrc") / "lift_cpu.cpp"
# Built where it runs (the cache is per machine), so -march=native is safe; reassociation
# lets the compiler vectorise the sums (not -ffast-math: NaN must still propagate).
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
          "-fno-signed-zeros", "-fassociative-math"]  # fmt: skip
_MODULE: list = []  # [module or None] once looked up

log = logging.getLogger(__name__)


MODES = ("0", "1", "require")


def mode() -> str:
    """SEG_OPS_CPP: 0 (off), 1 (default: on when it builds) or require (on, or raise)."""
    value = os.environ.get("SEG_OPS_CPP", "1").strip().lower()
    if value not in MODES:
        raise ValueError(f"SEG_OPS_CPP={value!r}: choose one of {', '.join(MODES)}")
    return value


def enabled() -> bool:
    return mode() != "0"


def extension():
    """The compiled module, or None (switched off with SEG_OPS_CPP=0, or no toolchain).
    SEG_OPS_CPP=require raises RuntimeError when it cannot be built."""
    if not enabled():
        return None
    if not _MODULE:
        _MODULE.append(_build())
    if _MODULE[0] is None and mode() == "require":
        raise RuntimeError(
            "SEG_OPS_CPP=require but the compiled CPU LiftPool helper could not be built "
            "(see the warning above); install a C++ compiler and ninja, or unset SEG_OPS_CPP"
        )
    return _MODULE[0]


def _cpu_signature() -> str:
    """A short hash of this CPU's model and instruction sets: a build made with -march=native
    on one machine is never loaded on another that shares the cache (a cluster's home)."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            text += "".join(
                line for line in info if line.startswith(("model name", "flags", "Features"))
            )[:65536]
    except OSError:
        text += platform.processor()
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _build():
    try:
        # importing it logs a warning about CUDA_HOME on machines without CUDA: not ours
        quiet = logging.getLogger("torch.utils.cpp_extension")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            from torch.utils.cpp_extension import load
        finally:
            quiet.setLevel(level)

        log.info("loading the CPU LiftPool helper (compiled on first use: about a minute)")
        return load(
            name=f"seg_lift_cpu_{_cpu_signature()}",
            sources=[str(SOURCE)],
            extra_cflags=CFLAGS,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # no compiler, no ninja, a read-only cache...: fall back
        warnings.warn(
            f"seg.ops: the compiled CPU LiftPool helper could not be built ({exc}); using the "
            "plain-PyTorch fused path (same results, slower). Install a C++ compiler and "
            "`pip install ninja`, or set SEG_OPS_CPP=0 to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
