"""The continuous relaxation of DARTS: a mixed op and a cell of mixed ops."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from autoseg.genotype import num_edges
from autoseg.ops import Zero, build_op, check_primitives
from autoseg.search.grouped_batchnorm import convert_batchnorm


class MixedOp(nn.Module):
    """Sum of every candidate op on one edge, weighted by that edge's softmax(alpha).

    Pools are followed by an affine-free BN as in the reference search network. The ``none``
    op contributes exactly zero to the sum and to every gradient, so it is skipped instead of
    materialising a tensor of zeros (same result, less memory).
    """

    def __init__(self, channels: int, stride: int, primitives: Sequence[str]):
        super().__init__()
        self.ops = nn.ModuleList()
        for name in primitives:
            op = build_op(name, channels, stride, affine=False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            self.ops.append(op)
        self.active = [i for i, op in enumerate(self.ops) if not isinstance(op, Zero)]
        if not self.active:
            raise ValueError("a mixed op needs at least one op other than 'none'")

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = weights[self.active[0]] * self.ops[self.active[0]](x)
        for i in self.active[1:]:
            out = out + weights[i] * self.ops[i](x)
        return out


class MixedCell(nn.Module):
    """The DAG of a search cell on two preprocessed inputs of ``channels`` channels.

    Block i sums the mixed ops applied to every earlier state (the two inputs and blocks
    0..i-1); the output concatenates the last ``multiplier`` states. Edges are ordered block by
    block, matching the rows of the alpha matrix. With ``reduction`` the edges leaving the two
    inputs have stride 2.
    """

    def __init__(self, channels: int, num_blocks: int, multiplier: int, primitives: Sequence[str],
                 reduction: bool = False):
        super().__init__()
        check_primitives(primitives)
        if not 1 <= multiplier <= num_blocks:
            raise ValueError(f"multiplier must be between 1 and the number of blocks ({num_blocks}), got {multiplier}")
        self.num_blocks = num_blocks
        self.multiplier = multiplier
        self.edges = nn.ModuleList(
            MixedOp(channels, 2 if reduction and state < 2 else 1, primitives)
            for block in range(num_blocks)
            for state in range(2 + block)
        )
        assert len(self.edges) == num_edges(num_blocks)
        convert_batchnorm(self)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [s0, s1]
        edge = 0
        for _ in range(self.num_blocks):
            block = sum(self.edges[edge + j](h, weights[edge + j]) for j, h in enumerate(states))
            edge += len(states)
            states.append(block)
        return torch.cat(states[-self.multiplier:], dim=1)
