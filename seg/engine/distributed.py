"""Process-group helpers for one process or many under ``torchrun``.

``init_distributed()`` reads torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)
and joins the group with NCCL on CUDA and gloo otherwise, so the same command runs on a
laptop, one GPU, several GPUs or several nodes. Without those variables it is a no-op and
every helper here behaves as for a single process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from seg.engine.cli import exit_code


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join torchrun's process group if there is one; pick this process's device.

    ``device``: ``"cpu"``, ``"cuda"`` or None (CUDA when available). Under torchrun on
    CUDA each process takes the GPU of its ``LOCAL_RANK``.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        kwargs = {"device_id": torch_device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(rank, world_size, local_rank, torch_device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place, on its own device; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class MainProcessStopped(RuntimeError):
    """Under torchrun: the main process stopped on an error (which it prints), so this one
    stops too, with the main process's exit code."""

    def __init__(self, exit_code: int):
        super().__init__("the main process stopped (its error says why)")
        self.exit_code = exit_code


def on_main_process(work: Callable[[], None], dist_info: DistInfo, errors=(OSError,)) -> None:
    """``work()`` on the main process only (writing a shared folder); where it raises one
    of ``errors``, every process stops with it: the main one re-raises the error, the
    others raise `MainProcessStopped` with its exit code (instead of waiting at the next
    collective until the connection to the main process closes)."""
    failure = None
    if dist_info.is_main:
        try:
            work()
        except errors as error:
            failure = error
    code = exit_code(failure) if failure is not None else 0
    if is_distributed():
        shared = torch.tensor([code], device=dist_info.device)
        dist.all_reduce(shared, op=dist.ReduceOp.MAX)
        code = int(shared.item())
    if code:
        raise failure or MainProcessStopped(code)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
