"""Recomputing a trellis node's activations in the backward pass instead of keeping them.

Two exact memory options of the hierarchical supernet, off by default (docs/BENCHMARKS.md has
their measured cost):

- ``checkpoint_cells``: activation checkpointing (Chen et al., "Training Deep Nets with
  Sublinear Memory Cost", arXiv 2016) of every node, whose forward pass the backward pass
  runs again in full; only the node's inputs are kept.
- ``selective_checkpoint``: selective activation checkpointing (Korthikanti et al., "Reducing
  Activation Recomputation in Large Transformer Models", MLSys 2023: keep what is expensive
  to recompute, recompute what is cheap) of every node with
  :func:`torch.utils.checkpoint.create_selective_checkpoint_contexts`. The node keeps the
  outputs of its convolutions and matrix products (:data:`KEPT_OPS`: the depthwise and
  pointwise convs of the candidate ops, the 1x1 convs of the preprocessing); batch norm,
  ReLU, pooling, copies and the weighted sums are recomputed from them.

Both give the same outputs and gradients as the plain computation: the recomputation repeats
the forward pass's ops on the same values, with the random state of the forward pass (so the
P-DARTS skip dropout draws the same masks), and leaves the batch-norm running statistics
alone, which the forward pass has already updated once
(:func:`~autoseg.search.grouped_batchnorm.frozen_running_statistics`). It also uses the
parameters and buffers the forward pass used, even where those were swapped in for one call
(:func:`torch.func.functional_call`, as the second-order architect evaluates the loss at the
virtual weights w' and at w +- eps v).
"""
from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Iterator

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import (CheckpointPolicy, SelectiveCheckpointContext, checkpoint,
                                    create_selective_checkpoint_contexts)

from autoseg.search.grouped_batchnorm import frozen_running_statistics

KEPT_OPS = frozenset({torch.ops.aten.convolution.default, torch.ops.aten.bmm.default, torch.ops.aten.mm.default})
"""The ops whose outputs a selectively checkpointed node keeps (the wide pointwise convs are grouped
1x1 convolutions; ``torch.matmul`` reaches the dispatcher as ``bmm`` or ``mm``)."""


def keep_products(ctx: SelectiveCheckpointContext, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """The selective checkpointing policy: keep the outputs of :data:`KEPT_OPS`, recompute the rest."""
    return CheckpointPolicy.MUST_SAVE if op in KEPT_OPS else CheckpointPolicy.PREFER_RECOMPUTE


@contextlib.contextmanager
def _together(*contexts: contextlib.AbstractContextManager) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        yield


def recompute_contexts(selective: bool) -> tuple[contextlib.AbstractContextManager,
                                                 contextlib.AbstractContextManager]:
    """The ``context_fn`` of :func:`torch.utils.checkpoint.checkpoint` for a node: contexts of the
    node's forward pass and of its recomputation in backward, which keeps the batch-norm running
    statistics as they are. ``selective`` keeps the outputs of :data:`KEPT_OPS`
    (``selective_checkpoint``); otherwise the whole node is recomputed (``checkpoint_cells``)."""
    forward, recompute = (create_selective_checkpoint_contexts(keep_products) if selective
                          else (contextlib.nullcontext(), contextlib.nullcontext()))
    return forward, _together(recompute, frozen_running_statistics())


def _call_with(module: nn.Module, tensors: dict[str, torch.Tensor], *args: Any) -> Any:
    return functional_call(module, tensors, args)


def recomputed_in_backward(module: nn.Module, args: tuple, selective: bool) -> Any:
    """``module(*args)``, its activations recomputed in backward (:func:`recompute_contexts`).

    The module's parameters and buffers of this call go into the checkpoint with the inputs, so
    the recomputation runs on them even when they are not the module's own tensors at that time
    (a :func:`torch.func.functional_call` has swapped them in for the forward pass only)."""
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    return checkpoint(_call_with, module, tensors, *args, use_reentrant=False,
                      context_fn=partial(recompute_contexts, selective))
