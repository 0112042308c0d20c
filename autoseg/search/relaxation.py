"""How architecture logits become the weights a supernet's forward pass mixes its choices with.

Every choice of a search space is a row of logits: the ops of one cell edge (a row of alpha) or
the moves out of one trellis node (a row of beta, invalid moves at ``-inf``). A
:class:`Relaxation` maps such rows to weights:

- :meth:`Relaxation.weights`: what the forward pass mixes with (DARTS: ``softmax``; GDAS: a
  Gumbel sample, one-hot in the forward pass with the softmax's gradient);
- :meth:`Relaxation.probabilities`: the distribution the logits stand for, what decoding,
  figures and the expected cost read (``softmax`` for every method here).

The search method owns its relaxation (:mod:`autoseg.search.methods`); a supernet holds one and
asks it for the weights of each choice. :func:`cell_choice_weights` and
:func:`path_transition_weights` encode a discrete architecture as such weights (one-hot rows), so
a supernet can be run at one architecture of its space with the weights it has learnt.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from autoseg.space.genotype import CellGenotype, num_edges


class Relaxation:
    """DARTS's continuous relaxation (Liu et al., ICLR 2019, eq. 2): ``softmax`` over each row."""

    def weights(self, logits: torch.Tensor, training: bool) -> torch.Tensor:
        """The weights of the forward pass for rows of ``logits`` (last dimension); ``training``
        says whether the supernet is in training mode."""
        return F.softmax(logits, dim=-1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution the rows of ``logits`` stand for (decoding, figures, expected cost)."""
        return F.softmax(logits, dim=-1)


SOFTMAX = Relaxation()
"""The relaxation a supernet uses until a search method gives it its own."""


def cell_choice_weights(cell: CellGenotype, primitives: Sequence[str], num_blocks: int) -> torch.Tensor:
    """``(num_edges, num_ops)`` weights of ``cell``: row ``num_edges(i) + j`` (block ``i`` reading
    state ``j``) is one-hot on the op the cell puts there, zero for an edge the cell does not use."""
    if cell.num_blocks != num_blocks:
        raise ValueError(f"the cell has {cell.num_blocks} blocks, the supernet {num_blocks}")
    weights = torch.zeros(num_edges(num_blocks), len(primitives))
    for block, edges in enumerate(cell.blocks):
        for op, state in edges:
            if op not in primitives:
                raise ValueError(f"op {op!r} of the cell is not among the supernet's ops {list(primitives)}")
            weights[num_edges(block) + state, list(primitives).index(op)] = 1.0
    return weights


def path_transition_weights(path: Sequence[int], num_levels: int) -> torch.Tensor:
    """``(L, S, S)`` transition weights of a network path: 1 on each step of ``path`` (from level 0,
    the stem, into layer 0), 0 elsewhere."""
    weights = torch.zeros(len(path), num_levels, num_levels)
    previous = 0
    for layer, level in enumerate(path):
        weights[layer, previous, level] = 1.0
        previous = level
    return weights
