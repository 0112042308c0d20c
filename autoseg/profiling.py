"""Measuring what a forward pass keeps alive for the backward pass, on any device."""
from __future__ import annotations

from typing import Any, Callable

import torch


def saved_activation_bytes(forward: Callable[[], Any]) -> int:
    """Bytes of the distinct tensor storages that autograd saves for backward while ``forward()`` runs.

    This is the activation memory a training step holds at its peak, whatever the device: on a
    GPU the peak allocation is this plus the weights, their gradients, the optimiser state and
    short-lived temporaries. Storages shared by several saved tensors (views, or one output kept
    by two ops) count once.
    """
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())
