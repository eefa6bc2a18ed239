"""What the trainer, the study tool and the benchmarks ask of the machine they run on.

`describe_device` names it the same way everywhere (results tables, ``metrics.json``,
benchmark reports), `autocast_dtype` turns ``train.amp`` into a dtype, and `peak_memory_mib`
reads the process's peak memory with what the figure counts.
"""

from __future__ import annotations

import platform
import resource

import torch

from seg.config import TrainConfig


def describe_device(device: str | torch.device | None = None) -> str:
    """``"NVIDIA H200"`` for a CUDA device, ``"cpu x86_64 (2 threads)"`` for the CPU.

    ``device=None``: the first CUDA device when there is one, else the CPU.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu {platform.machine()} ({threads} thread{'s' if threads != 1 else ''})"


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
