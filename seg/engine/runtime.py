"""What the trainer, the study tool and the benchmarks ask of the machine they run on.

`describe_device` names it the same way everywhere (results tables, ``metrics.json``,
benchmark reports), `reproducing_command` prefixes a printed command with the settings that
change its digits, `autocast_dtype` turns ``train.amp`` into a dtype, and `peak_memory_mib`
reads the process's peak memory with what the figure counts.
"""

from __future__ import annotations

import os
import platform
import resource

import torch

from seg.config import TrainConfig

# Settings that change the float sums (threads) or the code path (seg.ops.dispatch, the
# compiled CPU helper): they belong to the command that reproduces a table's digits.
REPRODUCING_ENV = ("OMP_NUM_THREADS", "SEG_OPS_BACKEND", "SEG_OPS_CPP")


def reproducing_command(command: str) -> str:
    """``command`` with ``NAME=value`` in front for each set `REPRODUCING_ENV` variable it
    does not already name."""
    for name in reversed(REPRODUCING_ENV):
        value = os.environ.get(name)
        if value and f"{name}=" not in command:
            command = f"{name}={value} {command}"
    return command


def describe_device(device: str | torch.device | None = None) -> str:
    """``"NVIDIA H200"`` for a CUDA device, ``"cpu AMD EPYC, x86_64 (2 threads)"`` for the CPU.

    ``device=None``: the first CUDA device when there is one, else the CPU.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    name = _cpu_model()
    machine = f"{name}, {platform.machine()}" if name else platform.machine()
    return f"cpu {machine} ({threads} thread{'s' if threads != 1 else ''})"


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), or ''."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def use_compile(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the trainer runs its forward through ``torch.compile`` (``train.compile``).

    ``on``/``off`` (YAML booleans) force it; ``auto`` means eager on every device today.
    Measured on the 2-core CPU machine (docs/performance.md): for SegNet x1/4 lift/lift,
    inductor compiled for ~220 s and its step was slower than the fused eager LiftPool path
    (under compile the reference runs instead); for max/maxunpool it compiled for ~45 s to
    save ~15 % of a step, which the shipped CPU configs' short schedules do not win back. On CUDA nothing has been measured
    yet, so ``auto`` keeps the eager path there too; ``on`` compiles anywhere.
    """
    del device  # the measured answer is the same on both devices for now
    return cfg.compile is True


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``train.amp`` asks for on ``device`` (None: full precision; AMP
    runs on CUDA only)."""
    if device.type != "cuda" or cfg.amp == "none":
        return None
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """This process's peak memory so far and what it counts.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only). CPU: the process's peak
    resident set (``ru_maxrss``), which also holds the interpreter, the data set and the
    loader's buffers: compare CPU figures between runs of the same data, not as absolutes.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024, "cpu_max_rss"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
