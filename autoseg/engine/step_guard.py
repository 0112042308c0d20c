"""The NaN/inf guard of the training loops: what a step whose loss or gradient is not finite does.

Every optimiser step reads its loss and its gradient norm (the norm gradient clipping computes
anyway, or measured when there is no clipping; see :func:`autoseg.utils.precision.scaled_backward`)
back in one transfer, the device sync each step already had for the progress bar; in a run of
several processes the verdict is summed over them, so that they all decide alike. In an fp16 run
the gradients are left to the gradient scalers, whose overflows are expected and skip the step on
their own, and so is the search's architecture step (the scaled virtual step of the second order
can overflow into its loss); the weight loss is still checked: a forward pass that overflows is
beyond the scaler. ``train.nan_policy`` says what a non-finite value does:

- ``stop`` (the default): the run ends with a one-line UserError naming the value, the step and
  the last good checkpoint, which stays on disk as it was (nothing is written after the bad step);
  lower the learning rate or drop ``--amp`` and start again. The architecture step of a search is
  checked in the same transfer as the weight step that follows it.
- ``skip``: the batch's update is dropped (no optimiser step, gradients zeroed, the batch-norm
  statistics its forward pass changed restored) and counted in the epoch's record; the position,
  the learning-rate schedule and the data order go on. The architecture step of a search is then
  checked on its own before Adam applies it (one more sync per step). Skipping is meant for rare
  bad batches (a crop with no labelled pixel makes cross-entropy 0/0, a corrupt sample, an fp16
  forward pass that overflows); a run whose weights diverged has every batch bad, so after
  :data:`SKIPS_IN_A_ROW_LIMIT` steps in a row with a dropped update it stops as ``stop`` does.

Whatever the policy, a checkpoint is written only of finite weights (:func:`non_finite_tensors`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from autoseg.utils.process import sum_tensor_

SKIPS_IN_A_ROW_LIMIT = 20
"""Under ``nan_policy: skip``, this many steps in a row with a dropped update end the run."""


def read_step(quantities: dict[str, torch.Tensor]) -> tuple[dict[str, float], list[str]]:
    """The values of the named scalar tensors (this process's) and the names of those that are not
    finite in any process, read back in one transfer."""
    values = torch.stack([q.detach().float().reshape(()) for q in quantities.values()])
    flags = sum_tensor_((~torch.isfinite(values)).float())
    numbers = torch.cat([values, flags]).tolist()
    names = list(quantities)
    return dict(zip(names, numbers)), [name for name, flag in zip(names, numbers[len(names):]) if flag]


def non_finite_tensors(module: nn.Module) -> list[str]:
    """The names of ``module``'s floating-point parameters and buffers that hold a NaN or an
    infinity in any process (one transfer)."""
    state = {name: t for name, t in module.state_dict().items() if t.is_floating_point() and t.numel()}
    if not state:
        return []
    bad = sum_tensor_(torch.stack([~torch.isfinite(t).all() for t in state.values()]).float()).tolist()
    return [name for name, flag in zip(state, bad) if flag]


def divergence_message(what: str, step: int, epoch: int, kept: str, skipping: bool) -> str:
    """The one-line error of a run stopped by a non-finite value; ``what`` names the value (one of
    the architecture step says ``architecture``), ``kept`` the checkpoint left, ``skipping`` whether
    the run was dropping bad batches already."""
    lr = "arch_optimizer.lr" if "architecture" in what else "optimizer.lr"
    skip = "" if skipping else ", or set train.nan_policy: skip to drop the updates of such batches"
    return (f"{what} at step {step} (epoch {epoch}): the training diverged; lower the learning rate ({lr}) "
            f"or drop --amp and start again{skip}; {kept}")


def describe(name: str, value: float) -> str:
    """``"the loss is nan"``, ``"the gradient norm is inf"``..."""
    return f"the {name} is {value if math.isnan(value) or math.isinf(value) else 'not finite'}"


class BufferSnapshot:
    """A copy of a module's buffers (batch-norm running statistics), to undo a dropped forward pass."""

    def __init__(self, module: nn.Module) -> None:
        self.saved = [(buffer, buffer.clone()) for buffer in module.buffers()]

    def restore(self) -> None:
        """Put the copied values back."""
        with torch.no_grad():
            for buffer, value in self.saved:
                buffer.copy_(value)
