"""The continuous relaxation of DARTS: mixed ops and the search cell built from them.

A mixed op is the softmax(alpha)-weighted sum of every candidate op on one edge. A cell's
edges are organised by the state they leave: :class:`MixedEdges` holds the mixed ops of all
edges leaving one state and runs each candidate op once for all of them (the wide ops of
:mod:`autoseg.search.wide_ops`); :class:`MixedCell` wires those fan-outs into the DAG of
docs/DESIGN.md §1. The result is the same as one mixed op per edge.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from autoseg.genotype import num_edges
from autoseg.ops import check_primitives
from autoseg.search.wide_ops import EdgeInput, build_wide_op


class MixedEdges(nn.Module):
    """The mixed ops of ``num_edges`` edges that read the same state.

    ``forward(x, weights)`` takes the state and the ``(num_edges, num_ops)`` softmax(alpha)
    rows of those edges and returns ``(N, num_edges, C, H', W')``: slice ``i`` is
    ``sum_o weights[i, o] * op_o(x)`` with edge ``i``'s own op weights. The ``none`` op adds
    exactly zero to the sum and to every gradient, so it is skipped.
    """

    def __init__(self, channels: int, num_edges: int, stride: int, primitives: Sequence[str]):
        super().__init__()
        self.active = [i for i, name in enumerate(primitives) if name != "none"]
        if not self.active:
            raise ValueError("a mixed op needs at least one op other than 'none'")
        self.ops = nn.ModuleList(build_wide_op(primitives[i], channels, num_edges, stride) for i in self.active)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        inputs = EdgeInput(x)
        out = None
        for i, op in zip(self.active, self.ops):
            y = op(inputs)
            term = weights[:, i].to(y.dtype).view(1, -1, 1, 1, 1) * y
            out = term if out is None else out + term
        return out


class MixedCell(nn.Module):
    """The DAG of a search cell on two preprocessed inputs of ``channels`` channels.

    Block i sums the mixed ops applied to every earlier state (the two inputs and blocks
    0..i-1); the output concatenates the last ``multiplier`` states. Edges, and the rows of the
    alpha matrix, are ordered block by block: edge ``(block i, state j)`` is row
    ``num_edges(i) + j``. With ``reduction`` the edges leaving the two inputs have stride 2.

    State ``j`` feeds blocks ``max(j - 1, 0) .. num_blocks - 1``; ``fan_outs[j]`` runs those
    edges together as soon as state ``j`` exists, and block ``i`` is complete once state
    ``i + 1`` has been fanned out.
    """

    def __init__(self, channels: int, num_blocks: int, multiplier: int, primitives: Sequence[str],
                 reduction: bool = False):
        super().__init__()
        check_primitives(primitives)
        if not 1 <= multiplier <= num_blocks:
            raise ValueError(f"multiplier must be between 1 and the number of blocks ({num_blocks}), got {multiplier}")
        self.num_blocks = num_blocks
        self.multiplier = multiplier
        self.targets = [list(range(max(state - 1, 0), num_blocks)) for state in range(num_blocks + 1)]
        self.fan_outs = nn.ModuleList(
            MixedEdges(channels, len(blocks), 2 if reduction and state < 2 else 1, primitives)
            for state, blocks in enumerate(self.targets)
        )
        # the alpha rows of the fan-outs' edges, fan-out after fan-out
        rows = [num_edges(block) + state for state, blocks in enumerate(self.targets) for block in blocks]
        assert sorted(rows) == list(range(num_edges(num_blocks)))
        self.register_buffer("rows", torch.tensor(rows), persistent=False)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [s0, s1]
        blocks: list[torch.Tensor | None] = [None] * self.num_blocks
        fan_out_weights = weights[self.rows].split([len(targets) for targets in self.targets])
        for state, (fan_out, targets, rows) in enumerate(zip(self.fan_outs, self.targets, fan_out_weights)):
            out = fan_out(states[state], rows)
            for slot, block in enumerate(targets):
                blocks[block] = out[:, slot] if blocks[block] is None else blocks[block] + out[:, slot]
            if state >= 1:
                states.append(blocks[state - 1])
        return torch.cat(states[-self.multiplier:], dim=1)
