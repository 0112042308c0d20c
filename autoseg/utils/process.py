"""Which process this is and how processes combine numbers: the bottom-level helpers of runs
over several processes (launched with ``torchrun``).

Everything here is a no-op in a single process, so the maths and search modules can average
or sum across processes without knowing how a run was launched (that is
:mod:`autoseg.engine.distributed`'s business).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether this process is one of several (a process group is initialised)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without torchrun)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes files and logs (rank 0)."""
    return rank() == 0


def collective_device() -> torch.device:
    """Where collectives of the process group take their tensors (NCCL: the current GPU)."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_tensor_(tensor: torch.Tensor) -> torch.Tensor:
    """Replace ``tensor`` by its element-wise sum over all processes and return it (the tensor
    itself in one process). Works wherever ``tensor`` lives: it is moved to the collective's
    device and back when they differ."""
    if not is_distributed():
        return tensor
    device = collective_device()
    total = tensor.to(device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    if total is not tensor:
        tensor.copy_(total.to(tensor.device))
    return tensor


def average_(tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor by its mean over all processes (in place; no-op in one process)."""
    if not is_distributed():
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(world_size())


def sum_over_processes(values: Sequence[float]) -> list[float]:
    """The element-wise sum of ``values`` over all processes (the values themselves in one process)."""
    if not is_distributed():
        return list(values)
    return sum_tensor_(torch.tensor(values, dtype=torch.float64)).tolist()


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
