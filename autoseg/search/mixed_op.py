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

from autoseg.utils.compilation import varying_dropout
from autoseg.space.genotype import num_edges
from autoseg.layers.ops import check_primitives
from autoseg.search.collapse_guards import CollapseGuards, channel_shuffle, check_partial_channels
from autoseg.search.stage_recomputation import RecomputableModule
from autoseg.search.weighted_sum import compact_index, weighted_sum
from autoseg.search.wide_ops import EdgeInput, build_wide_op


class MixedEdges(RecomputableModule):
    """The mixed ops of ``num_edges`` edges that read the same state.

    ``forward(x, weights)`` takes the state and the ``(num_edges, num_ops)`` softmax(alpha)
    rows of those edges and returns ``(N, num_edges, C, H', W')``: slice ``i`` is
    ``sum_o weights[i, o] * op_o(x)`` with edge ``i``'s own op weights, summed in a few ops
    (:func:`~autoseg.search.weighted_sum.weighted_sum`). The ``none`` op adds exactly zero to the
    sum and to every gradient, so it is skipped.

    The collapse guards (:mod:`autoseg.search.collapse_guards`), none without ``guards``:
    ``partial_channels`` K runs the ops on the first C/K channels only, concatenates the
    bypassing rest and shuffles the channels (PC-DARTS); ``edge_weights`` (PC-DARTS edge
    normalisation) scale each edge's output; the identity ``skip_connect`` gets dropout at
    ``guards.current_skip_dropout`` in training mode (P-DARTS); with ``auxiliary_skip`` on,
    every edge adds ``guards.current_auxiliary_skip`` times a skip connection of the whole
    input (DARTS-).

    With ``recompute_activations`` (``selective_checkpoint``) the state's shared ReLU keeps its
    input for backward instead of its output (:mod:`autoseg.search.stage_recomputation`).
    """

    def __init__(self, channels: int, num_edges: int, stride: int, primitives: Sequence[str],
                 guards: CollapseGuards | None = None):
        super().__init__()
        self.partial_channels = guards.settings.partial_channels if guards is not None else 1
        check_partial_channels(channels, self.partial_channels)
        self.active = [i for i, name in enumerate(primitives) if name != "none"]
        if not self.active:
            raise ValueError("a mixed op needs at least one op other than 'none'")
        self.columns = compact_index(self.active)  # the weight columns of the active ops
        self.ops = nn.ModuleList(build_wide_op(primitives[i], channels // self.partial_channels, num_edges, stride)
                                 for i in self.active)
        self.guards = guards
        # P-DARTS drops out the identity only (a stride-2 skip_connect is a FactorizedReduce)
        self.dropout_op = (self.active.index(list(primitives).index("skip_connect"))
                           if stride == 1 and "skip_connect" in primitives else None)
        self.bypass_pool = (nn.MaxPool2d(2, 2, ceil_mode=True) if self.partial_channels > 1 and stride == 2
                            else None)
        self.auxiliary = (build_wide_op("skip_connect", channels, num_edges, stride)
                          if guards is not None and guards.settings.auxiliary_skip > 0 else None)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor | None = None,
                chosen: torch.Tensor | None = None) -> torch.Tensor:
        """``chosen``: None (every op), or a boolean CPU ``(num_edges, num_ops)`` mask of the ops the
        rows of one-hot ``weights`` choose; then only the ops some edge chooses are run (see
        :meth:`single_path_sum`)."""
        k = self.partial_channels
        inputs = EdgeInput(x[:, :x.shape[1] // k] if k > 1 else x, self.recompute_activations)
        dropout = self.guards.current_skip_dropout if self.guards is not None and self.training else 0.0
        slots = range(len(self.ops)) if chosen is None else self.chosen_slots(chosen)
        terms = []
        for slot in slots:
            y = self.ops[slot](inputs)
            if slot == self.dropout_op and dropout > 0:  # an independent mask per edge
                y = varying_dropout(y.expand(-1, weights.shape[0], -1, -1, -1), dropout)
            terms.append(y)
        out = (weighted_sum(weights[:, self.columns], terms) if chosen is None
               else self.single_path_sum(weights, chosen, slots, terms))
        if k > 1:
            rest = x[:, x.shape[1] // k:]
            if self.bypass_pool is not None:
                rest = self.bypass_pool(rest)
            out = channel_shuffle(torch.cat([out, rest.unsqueeze(1).expand(-1, out.shape[1], -1, -1, -1)], dim=2),
                                  k, dim=2)
        if edge_weights is not None:
            out = out * edge_weights.to(out.dtype).view(1, -1, 1, 1, 1)
        if self.auxiliary is not None and self.guards.current_auxiliary_skip > 0:
            out = out + self.guards.current_auxiliary_skip * self.auxiliary(inputs if k == 1 else EdgeInput(x))
        return out

    def chosen_slots(self, chosen: torch.Tensor) -> list[int]:
        """The slots of :attr:`ops` that some edge chooses in the mask ``chosen``; the first slot when
        every edge chooses ``none`` (its term then gets weight 0, giving the output its shape)."""
        slots = [slot for slot, column in enumerate(self.active) if bool(chosen[:, column].any())]
        return slots or [0]

    def single_path_sum(self, weights: torch.Tensor, chosen: torch.Tensor, slots: Sequence[int],
                        terms: Sequence[torch.Tensor]) -> torch.Tensor:
        """The single-path sum of GDAS's code (Dong & Yang, CVPR 2019) over the ``terms`` of ``slots``:
        edge ``e`` outputs ``w[e, o] * op_o(x)`` for its chosen op ``o`` only, plus ``w[e, o']`` for
        every op ``o'`` it does not choose (``none`` included): a scalar, 0 in value for a hard sample,
        that passes the sum of the edge's output gradient to ``w[e, o']``. The chosen op's weight gets
        the gradient of its output, the others the coarse one, whichever ops the fan-out runs."""
        mask = chosen.to(device=weights.device, dtype=weights.dtype)
        columns = [self.active[slot] for slot in slots]
        out = weighted_sum((weights * mask)[:, columns], terms)
        if weights.requires_grad:
            out = out + (weights * (1 - mask)).sum(1).to(out.dtype).view(1, -1, *[1] * (out.dim() - 2))
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

    ``guards`` (:class:`~autoseg.search.collapse_guards.CollapseGuards`, default none) switches
    on the collapse guards of every edge (see :class:`MixedEdges`).

    :attr:`chosen` (None by default: every op of every edge is run) is set by a single-path
    supernet before each forward pass (:meth:`~autoseg.search.network.SearchNetwork.route_choices`):
    the boolean CPU ``(num_edges, num_ops)`` mask of the ops its one-hot weights choose.
    """

    def __init__(self, channels: int, num_blocks: int, multiplier: int, primitives: Sequence[str],
                 reduction: bool = False, guards: CollapseGuards | None = None):
        super().__init__()
        check_primitives(primitives)
        if not 1 <= multiplier <= num_blocks:
            raise ValueError(f"multiplier must be between 1 and the number of blocks ({num_blocks}), got {multiplier}")
        self.num_blocks = num_blocks
        self.multiplier = multiplier
        self.targets = [list(range(max(state - 1, 0), num_blocks)) for state in range(num_blocks + 1)]
        self.fan_outs = nn.ModuleList(
            MixedEdges(channels, len(blocks), 2 if reduction and state < 2 else 1, primitives, guards)
            for state, blocks in enumerate(self.targets)
        )
        # the alpha rows of the fan-outs' edges, fan-out after fan-out
        rows = [num_edges(block) + state for state, blocks in enumerate(self.targets) for block in blocks]
        assert sorted(rows) == list(range(num_edges(num_blocks)))
        self.register_buffer("rows", torch.tensor(rows), persistent=False)
        self.row_order = rows  # the same rows, for indexing the host-side mask of chosen ops without a device copy
        self.chosen: torch.Tensor | None = None

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                edge_weights: torch.Tensor | None = None) -> torch.Tensor:
        """``weights``: softmax(alpha); ``edge_weights``: the PC-DARTS edge weights, one per alpha row."""
        states = [s0, s1]
        blocks: list[torch.Tensor | None] = [None] * self.num_blocks
        sizes = [len(targets) for targets in self.targets]
        fan_out_weights = weights[self.rows].split(sizes)
        fan_out_edges = edge_weights[self.rows].split(sizes) if edge_weights is not None else [None] * len(sizes)
        fan_out_chosen = self.chosen[self.row_order].split(sizes) if self.chosen is not None else [None] * len(sizes)
        for state, (fan_out, targets, rows, edges, chosen) in enumerate(zip(
                self.fan_outs, self.targets, fan_out_weights, fan_out_edges, fan_out_chosen)):
            out = fan_out(states[state], rows, edges, chosen).unbind(1)  # one view per edge, one gradient op backward
            for slot, block in enumerate(targets):
                blocks[block] = out[slot] if blocks[block] is None else blocks[block] + out[slot]
            if state >= 1:
                states.append(blocks[state - 1])
        return torch.cat(states[-self.multiplier:], dim=1)
