"""Data-parallel runs over several processes, launched with ``torchrun``.

``torchrun --nproc_per_node N tools/search.py ...`` (or ``tools/retrain.py``) starts N
processes, one per GPU (or N CPU processes with the Gloo backend). :func:`setup` reads the
environment torchrun sets and joins the process group; without torchrun everything here is a
no-op and a tool runs as one process.

``data.batch_size`` stays the batch of one optimiser step: each process takes its
``batch_size / N`` samples of every batch (:func:`shard_batch_size`) and gradients are averaged
across processes (DistributedDataParallel for the weights, :func:`autoseg.utils.process.average_` for the
architecture gradients), so N processes make the updates of one, except for batch norm: each
process normalises over its own share of the batch. Retraining on GPUs synchronises the
statistics (``train.sync_batchnorm``); the search supernet's grouped batch norms stay per
process. Rank 0 writes the run directory, the logs and the checkpoints.
"""
from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from autoseg.engine.checkpoint import resolve_device, rng_state, set_rng_state
from autoseg.utils.errors import UserError
from autoseg.utils.process import gather_objects, is_distributed, is_main, rank, world_size

T = TypeVar("T")


def setup(device_name: str) -> torch.device:
    """Join torchrun's process group when launched by it, and return this process's device.

    Each process of a CUDA run takes the GPU of its local rank and communicates with NCCL; CPU
    processes use Gloo.
    """
    device = resolve_device(device_name)
    if "WORLD_SIZE" not in os.environ or is_distributed():  # torchrun sets it, also for one process
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} are visible; "
                            "start at most that many processes per node (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    """Leave the process group, if any."""
    if is_distributed():
        dist.destroy_process_group()


def shard_batch_size(batch_size: int) -> int:
    """Samples per process of one batch of ``batch_size``; raises unless it divides evenly."""
    processes = world_size()
    if batch_size % processes:
        raise UserError(f"batch size {batch_size} cannot be split over {processes} processes: use a multiple of "
                        f"{processes} (--batch-size) or fewer processes")
    return batch_size // processes


def broadcast_buffers(module: nn.Module) -> None:
    """Give every process rank 0's buffers of ``module`` (no-op in one process).

    DistributedDataParallel hands rank 0's buffers to the others at the start of each forward
    pass, so after a training step the batch-norm running statistics differ by the last local
    batch; an evaluation with this first matches the checkpoint that rank 0 writes.
    """
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result to every process.

    A :class:`UserError` raised by ``fn`` is raised on every process, so that none of them waits
    forever for a rank 0 that gave up.
    """
    if not is_distributed():
        return fn()
    outcome: list[Any] = [None]
    if is_main():
        try:
            outcome = [("done", fn())]
        except UserError as exc:
            outcome = [("user error", str(exc))]
        except Exception as exc:
            dist.broadcast_object_list([("failed", f"rank 0 failed: {type(exc).__name__}: {exc}")], src=0)
            raise
    dist.broadcast_object_list(outcome, src=0)
    status, value = outcome[0]
    if status == "user error":
        raise UserError(value)
    if status == "failed":
        raise RuntimeError(value)
    return value


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel in a run of several processes (which
    averages the gradients of its backward passes), else ``model`` itself."""
    if not is_distributed():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def process_rng_states() -> list[dict[str, Any]]:
    """The random number generator states of every process, in rank order (for checkpoints)."""
    return gather_objects(rng_state())


def restore_process_rng_state(states: list[dict[str, Any]] | dict[str, Any]) -> None:
    """Restore this process's entry of :func:`process_rng_states`; a run resumes with the
    number of processes it was started with."""
    if isinstance(states, dict):  # a checkpoint of one process written before runs could have several
        states = [states]
    if len(states) != world_size():
        raise UserError(f"the checkpoint was written by a run of {len(states)} process(es); resume it with the same "
                        f"number (torchrun --nproc_per_node {len(states)}, or no torchrun for 1), not {world_size()}")
    set_rng_state(states[rank()])
