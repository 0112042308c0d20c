"""Recomputing a trellis node's activations in the backward pass instead of keeping them.

``checkpoint_cells``, an exact memory option of the hierarchical supernet, off by default
(docs/BENCHMARKS.md has its measured cost): activation checkpointing (Chen et al., "Training
Deep Nets with Sublinear Memory Cost", arXiv 2016) of every node, whose forward pass the
backward pass runs again in full; only the node's inputs are kept.

It gives the same outputs and gradients as the plain computation: the recomputation repeats
the forward pass's ops on the same values, with the random state of the forward pass (so the
P-DARTS skip dropout draws the same masks), and leaves the batch-norm running statistics
alone, which the forward pass has already updated once
(:func:`~autoseg.search.grouped_batchnorm.frozen_running_statistics`). It also uses the
parameters and buffers the forward pass used, even where those were swapped in for one call
(:func:`torch.func.functional_call`, as the second-order architect evaluates the loss at the
virtual weights w' and at w +- eps v).

``selective_checkpoint``, which recomputes only the cheap part of each conv stage, is
:mod:`autoseg.search.stage_recomputation`.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from autoseg.search.grouped_batchnorm import frozen_running_statistics


def recompute_contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """The ``context_fn`` of :func:`torch.utils.checkpoint.checkpoint` for a node: nothing special in
    the forward pass; the recomputation in backward keeps the batch-norm running statistics as they are."""
    return contextlib.nullcontext(), frozen_running_statistics()


def _call_with(module: nn.Module, tensors: dict[str, torch.Tensor], *args: Any) -> Any:
    return functional_call(module, tensors, args)


def recomputed_in_backward(module: nn.Module, args: tuple) -> Any:
    """``module(*args)``, its activations recomputed in backward (:func:`recompute_contexts`).

    The module's parameters and buffers of this call go into the checkpoint with the inputs, so
    the recomputation runs on them even when they are not the module's own tensors at that time
    (a :func:`torch.func.functional_call` has swapped them in for the forward pass only)."""
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    return checkpoint(_call_with, module, tensors, *args, use_reentrant=False, context_fn=recompute_contexts)
