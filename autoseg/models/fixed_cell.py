"""The DAG of a discrete (decoded) cell, shared by the retrained DARTS and Auto-DeepLab networks.

A :class:`FixedCell` runs the blocks of a :class:`~autoseg.space.genotype.CellGenotype` on two
already preprocessed input states of ``channels`` channels each: block ``i`` is the sum of
its kept ops applied to their input states, and the output concatenates the states listed
in ``genotype.concat``. Ops come from the :mod:`autoseg.layers.ops` registry of the given family;
only ops applied to the two cell inputs (states 0 and 1) carry the cell's stride, as in both
reference codes. Preprocessing of the inputs is left to the network, since it is what
differs between DARTS and Auto-DeepLab.
"""
from __future__ import annotations

import torch
from torch import nn

from autoseg.utils.compilation import bernoulli_mask
from autoseg.space.genotype import CellGenotype
from autoseg.layers.ops import build_op


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``drop_prob`` and rescale the others by
    ``1 / (1 - drop_prob)`` (the DARTS reference regulariser; not in place)."""
    if drop_prob <= 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    mask = bernoulli_mask(torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device), keep_prob)
    return x * mask / keep_prob


def edge_stride(state: int, cell_stride: int) -> int:
    """Stride of an op reading ``state``: the cell's stride for the two cell inputs, 1 for blocks."""
    return cell_stride if state < 2 else 1


class FixedCell(nn.Module):
    """The blocks of ``genotype`` on two preprocessed inputs of ``channels`` channels.

    ``forward(s0, s1, drop_prob)`` applies drop-path with ``drop_prob`` to the output of every
    op that is not an identity, in training mode only (as the DARTS reference does).
    """

    def __init__(self, genotype: CellGenotype, channels: int, stride: int, family: str):
        super().__init__()
        self.inputs = tuple(tuple(state for _, state in block) for block in genotype.blocks)
        self.ops = nn.ModuleList(
            nn.ModuleList(build_op(op, channels, edge_stride(state, stride), True, family) for op, state in block)
            for block in genotype.blocks
        )
        self.concat = genotype.concat
        self.out_channels = len(genotype.concat) * channels

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [s0, s1]
        for ops, inputs in zip(self.ops, self.inputs):
            outputs = [op(states[state]) for op, state in zip(ops, inputs)]
            if self.training and drop_prob > 0.0:
                outputs = [h if isinstance(op, nn.Identity) else drop_path(h, drop_prob) for op, h in zip(ops, outputs)]
            states.append(sum(outputs[1:], outputs[0]))
        return torch.cat([states[i] for i in self.concat], dim=1)
