"""The Auto-DeepLab search supernet: a trellis of search cells over layers and resolutions.

Built by loops over (layer, level) from the definition of Auto-DeepLab §3.2 (docs/DESIGN.md §3); nothing
depends on there being 12 layers or 4 levels.

- Stem: three 3x3 convs (64 s2, 64, 128 s2; BN, ReLU), stride 4 overall, at level 0.
- Node (l, s): one :class:`~autoseg.search.mixed_op.MixedCell` of ``blocks`` blocks on
  ``F * 2**s`` channels (output ``blocks * F * 2**s``), shared alpha. For every incoming
  transition from level p at layer l-1, the predecessor is resized to level s and given its
  own preprocessing — FactorizedReduce going down (stride-2 reduction), bilinear upsampling
  then ReLU-1x1 conv-BN going up, ReLU-1x1 conv-BN on the same level — and the cell runs on
  it, with the same-level state of layer l-2 (ReLU-1x1 conv-BN) as second input. The node's
  value is the transition-probability-weighted sum of those cell outputs.
- Where the same-level state two layers back does not exist (the stem counts as layer -1
  at level 0; a level first reached at layer l has nothing at layer l-2), the cell's own
  preprocessed first input stands in for it, i.e. the cell receives H^{l-1} twice.
- beta has shape (L, S, 3): logits of the moves to one level finer / same / coarser; they
  are turned into transition probabilities by a softmax over each node's outgoing moves
  (:func:`autoseg.space.trellis.transition_probabilities`).
- Head: an ASPP module on every node of the last layer (a 1x1 branch, one 3x3 branch of
  atrous rate ``aspp_base_rate / stride`` = 96/s, image pooling), a 1x1 classifier, logits
  upsampled to the input size and summed.
- Collapse guards (:mod:`autoseg.search.collapse_guards`), the settings of ``guards``
  (:class:`~autoseg.config.CollapseGuardSettings`), all off by default (None): ``partial_channels``,
  ``auxiliary_skip`` and ``skip_dropout`` change every cell's mixed ops; ``edge_normalization``
  adds PC-DARTS's per-edge logits ``edge_betas`` (shared by every cell, like alpha) to the
  architecture parameters; ``max_skip_connect`` caps the ``skip_connect`` edges of the decoded
  cell (P-DARTS).
- Memory options, off by default and exact: ``checkpoint_cells`` recomputes every node in
  backward (:mod:`autoseg.search.node_recomputation`), ``selective_checkpoint`` only the ReLUs
  and depthwise convs of the cells' conv stages (:mod:`autoseg.search.stage_recomputation`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autoseg.space.architecture import NetworkArch
from autoseg.space.genotype import num_edges
from autoseg.layers.aspp import ASPP
from autoseg.config import CollapseGuardSettings
from autoseg.layers.ops import PRIMITIVES, FactorizedReduce, ReLUConvBN
from autoseg.search.arch_decoding import decode_hierarchical
from autoseg.search.collapse_guards import CollapseGuards, edge_normalization_weights
from autoseg.search.grouped_batchnorm import batch_groups, convert_batchnorm, deferred_running_statistics
from autoseg.search.mixed_op import MixedCell
from autoseg.search.network import SearchNetwork
from autoseg.space.sampling import sample_network_arch
from autoseg.search.relaxation import cell_choice_weights, path_transition_weights
from autoseg.search.node_recomputation import recomputed_in_backward
from autoseg.space.trellis import predecessors, transition_mask, transition_probabilities, trellis_nodes
from autoseg.analysis.visualize import alpha_heatmap, cell_figure, trellis_figure

STEM_CHANNELS = (64, 64, 128)


class Upsample(nn.Module):
    """Bilinear upsampling by two, then ReLU - 1x1 conv - BN to the target channels."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.project = ReLUConvBN(c_in, c_out, 1, 1, 0, affine=False)

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return self.project(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


class TrellisNode(nn.Module):
    """One (layer, level) node: its cell, the preprocessing of each incoming transition, and
    the preprocessing of the same-level state two layers back (when it exists)."""

    def __init__(self, level: int, sources: Sequence[int], source_channels: dict[int, int],
                 prev_prev_channels: int | None, filter_multiplier: int, num_blocks: int,
                 primitives: Sequence[str], guards: CollapseGuards | None = None):
        super().__init__()
        self.level = level
        self.sources = list(sources)
        channels = filter_multiplier * 2 ** level
        self.inputs = nn.ModuleDict()
        for source in self.sources:
            c_in = source_channels[source]
            if source < level:
                self.inputs[str(source)] = FactorizedReduce(c_in, channels, affine=False)
            elif source > level:
                self.inputs[str(source)] = Upsample(c_in, channels)
            else:
                self.inputs[str(source)] = ReLUConvBN(c_in, channels, 1, 1, 0, affine=False)
        self.preprocess0 = (ReLUConvBN(prev_prev_channels, channels, 1, 1, 0, affine=False)
                            if prev_prev_channels is not None else None)
        self.cell = MixedCell(channels, num_blocks, num_blocks, primitives, guards=guards)
        self.out_channels = num_blocks * channels

    def forward(self, prev: dict[int, torch.Tensor], prev_prev: torch.Tensor | None,
                probs: torch.Tensor, cell_weights: torch.Tensor, size: torch.Size,
                edge_weights: torch.Tensor | None = None, chosen: Sequence[bool] | None = None) -> torch.Tensor:
        """``prev`` maps levels of layer l-1 to states, ``probs[p]`` is the probability of the
        transition from level p; ``size`` is this level's spatial size (the target of upsampling);
        ``edge_weights`` are the PC-DARTS edge weights (edge normalisation), if on.

        The inputs of all incoming transitions are stacked into one batch and the cell runs
        once on it, with per-transition batch-norm statistics; this equals running the cell
        once per transition (see :mod:`autoseg.search.grouped_batchnorm`).

        ``chosen`` (single path): None, or per level whether the transition from it has nonzero
        weight in ``probs`` (one-hot rows); then only those transitions are run (none: the node is
        zero), and each one left out adds its weight, a scalar 0 in value, to the output, which
        passes it the sum of the output's gradient (the coarse gradient of
        :meth:`~autoseg.search.mixed_op.MixedEdges.single_path_sum`)."""
        sources = self.sources if chosen is None else [source for source in self.sources if chosen[source]]
        out = self.run_cell(prev, prev_prev, probs[sources], sources, cell_weights, size, edge_weights)
        skipped = [source for source in self.sources if source not in sources]
        if skipped and probs.requires_grad:
            out = out + probs[skipped].sum().to(out.dtype)
        return out

    def run_cell(self, prev: dict[int, torch.Tensor], prev_prev: torch.Tensor | None, weights: torch.Tensor,
                 sources: Sequence[int], cell_weights: torch.Tensor, size: torch.Size,
                 edge_weights: torch.Tensor | None) -> torch.Tensor:
        """The ``weights``-weighted sum of the cell's outputs on the transitions from ``sources``
        (zero for no source)."""
        if not sources:
            like = next(iter(prev.values()))
            return like.new_zeros((like.shape[0], self.out_channels, *size))
        inputs = []
        for source in sources:
            module = self.inputs[str(source)]
            inputs.append(module(prev[source], size) if source > self.level else module(prev[source]))
        groups = len(inputs)
        s1 = torch.stack(inputs, dim=1).flatten(0, 1) if groups > 1 else inputs[0]
        if self.preprocess0 is None:
            s0 = s1
        else:
            s0 = self.preprocess0(prev_prev)
            if groups > 1:
                s0 = s0.unsqueeze(1).expand(-1, groups, -1, -1, -1).flatten(0, 1)
        with batch_groups(groups):
            out = self.cell(s0, s1, cell_weights, edge_weights)
        if groups == 1:
            return out * weights[0]
        out = out.unflatten(0, (-1, groups))
        return (out * weights.view(1, groups, 1, 1, 1).to(out.dtype)).sum(dim=1)


class SearchHead(nn.Module):
    """ASPP (one atrous rate) and a 1x1 classifier on one last-layer node."""

    def __init__(self, c_in: int, channels: int, rate: int, num_classes: int):
        super().__init__()
        self.aspp = ASPP(c_in, channels, rates=(rate,))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.aspp(x))


class TrellisSearchNetwork(SearchNetwork):
    """The hierarchical (Auto-DeepLab) supernet; see the module docstring for its definition."""

    cell_types = ("cell",)

    def __init__(self, num_classes: int, layers: int = 12, levels: int = 4, blocks: int = 5,
                 filter_multiplier: int = 8, primitives: Sequence[str] = PRIMITIVES,
                 free_first_step: bool = True, aspp_base_rate: int = 96, aspp_channels: int | None = None,
                 checkpoint_cells: bool = False, guards: CollapseGuardSettings | None = None,
                 selective_checkpoint: bool = False):
        super().__init__()
        self.guards = CollapseGuards(guards)
        if layers < 1 or levels < 1 or blocks < 1 or filter_multiplier < 1:
            raise ValueError("layers, levels, blocks and filter_multiplier must all be positive")
        if checkpoint_cells and selective_checkpoint:
            raise ValueError("checkpoint_cells already keeps only each node's inputs, leaving selective_checkpoint "
                             "nothing to save: turn on one of them")
        self.num_layers, self.num_levels, self.num_blocks = layers, levels, blocks
        self.filter_multiplier = filter_multiplier
        self.primitives = tuple(primitives)
        self.free_first_step = free_first_step
        self.checkpoint_cells = checkpoint_cells
        c1, c2, c3 = STEM_CHANNELS
        self.stem = nn.Sequential(
            nn.Conv2d(3, c1, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c3), nn.ReLU(),
        )
        self.nodes = nn.ModuleDict()
        channels: dict[tuple[int, int], int] = {(-1, 0): c3}
        for layer, level in trellis_nodes(layers, levels, free_first_step):
            sources = predecessors(layer, level, levels, free_first_step)
            node = TrellisNode(level, sources, {p: channels[(layer - 1, p)] for p in sources},
                               channels.get((layer - 2, level)), filter_multiplier, blocks, self.primitives,
                               self.guards)
            self.nodes[self.node_key(layer, level)] = node
            channels[(layer, level)] = node.out_channels
        self.last_levels = [lv for (l, lv) in channels if l == layers - 1]
        self.heads = nn.ModuleDict({
            str(level): SearchHead(channels[(layers - 1, level)], aspp_channels or channels[(layers - 1, level)],
                                   max(1, aspp_base_rate // (4 * 2 ** level)), num_classes)
            for level in self.last_levels
        })
        self.alphas = nn.Parameter(1e-3 * torch.randn(num_edges(blocks), len(self.primitives)))
        self.betas = nn.Parameter(1e-3 * torch.randn(layers, levels, 3))
        if self.guards.settings.edge_normalization:  # PC-DARTS's per-edge logits (not the network-level beta)
            self.edge_betas = nn.Parameter(1e-3 * torch.randn(num_edges(blocks)))
        convert_batchnorm(self)
        self.selective_checkpoint = selective_checkpoint

    @staticmethod
    def node_key(layer: int, level: int) -> str:
        """Name of node (layer, level) in :attr:`nodes`."""
        return f"{layer}_{level}"

    def arch_parameters(self) -> list[nn.Parameter]:
        """alpha (shared by every cell), beta (the transitions) and, with ``edge_normalization``,
        the cell's edge logits."""
        return [self.alphas, self.betas, *([self.edge_betas] if self.guards.settings.edge_normalization else [])]

    def set_search_progress(self, fraction: float) -> None:
        """Tell the decaying collapse guards which fraction (0..1) of the search is done."""
        self.guards.set_progress(fraction)

    def transition_probabilities(self) -> torch.Tensor:
        """The (L, S, S) transition probabilities derived from beta (the relaxation's distribution)."""
        return transition_probabilities(self.betas, self.free_first_step, self.relaxation.probabilities)

    def transition_weights(self) -> torch.Tensor:
        """The (L, S, S) transition weights of the forward pass (the relaxation's, or pinned)."""
        weights = transition_probabilities(self.betas, self.free_first_step,
                                           lambda logits: self.relaxation.weights(logits, self.training))
        return self.choice_weights("transitions", weights)

    def cell_logits(self) -> dict[str, torch.Tensor]:
        """alpha, shared by every cell."""
        return {"cell": self.alphas}

    def choice_logits(self) -> dict[str, torch.Tensor]:
        """alpha, and beta with the invalid moves at ``-inf`` (a node without a move: a row of ``-inf``)."""
        mask = transition_mask(self.num_layers, self.num_levels, self.free_first_step).to(self.betas.device)
        return {**self.cell_logits(), "transitions": self.betas.masked_fill(~mask, float("-inf"))}

    def architecture_weights(self, arch: NetworkArch) -> dict[str, torch.Tensor]:
        """One-hot rows of the cell of ``arch`` and one-hot transitions along its path."""
        if len(arch.path) != self.num_layers:
            raise ValueError(f"the architecture has {len(arch.path)} layers, the supernet {self.num_layers}")
        return {"cell": cell_choice_weights(arch.cell, self.primitives, self.num_blocks),
                "transitions": path_transition_weights(arch.path, self.num_levels)}

    @deferred_running_statistics()  # the batch norms' running statistics updated in a few calls at the end
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cell_weights = self.choice_weights("cell", self.relaxation.weights(self.alphas, self.training))
        self.route_choices("cell", cell_weights)
        edge_weights = (edge_normalization_weights(self.edge_betas, self.num_blocks)
                        if self.guards.settings.edge_normalization else None)
        probs = self.transition_weights()
        chosen = (probs.detach() != 0).cpu().tolist() if self.single_path else None  # [layer][source][level]
        states: dict[tuple[int, int], torch.Tensor] = {(-1, 0): self.stem(x)}
        sizes = {0: states[(-1, 0)].shape[-2:]}
        for level in range(1, self.num_levels):
            h, w = sizes[level - 1]
            sizes[level] = torch.Size(((h + 1) // 2, (w + 1) // 2))
        for layer in range(self.num_layers):
            prev = {lv: s for (l, lv), s in states.items() if l == layer - 1}
            for level in range(self.num_levels):
                key = self.node_key(layer, level)
                if key not in self.nodes:
                    continue
                args = (prev, states.get((layer - 2, level)), probs[layer, :, level], cell_weights, sizes[level],
                        edge_weights, None if chosen is None else [row[level] for row in chosen[layer]])
                node = self.nodes[key]
                if self.checkpoint_cells and torch.is_grad_enabled():
                    states[(layer, level)] = recomputed_in_backward(node, args)
                else:
                    states[(layer, level)] = node(*args)
            for stale in [k for k in states if k[0] == layer - 2]:
                del states[stale]
        logits = None
        for level in self.last_levels:
            out = F.interpolate(self.heads[str(level)](states[(self.num_layers - 1, level)]), size=x.shape[-2:],
                                mode="bilinear", align_corners=False)
            logits = out if logits is None else logits + out
        return logits

    def choice_cells(self, name: str) -> list[MixedCell]:
        """Every node's cell (they share alpha); the transitions weight no cell."""
        return [node.cell for node in self.nodes.values()] if name == "cell" else []

    def sample_architecture(self, rng: np.random.Generator) -> NetworkArch:
        """A random cell and a uniform path (:func:`autoseg.space.sampling.sample_network_arch`)."""
        return sample_network_arch(self.num_layers, self.num_levels, self.num_blocks, self.primitives, rng,
                                   self.filter_multiplier, self.free_first_step)

    def arch_weights(self) -> dict[str, np.ndarray]:
        """The op probabilities (softmax(alpha) in DARTS, num_edges x num_ops) and the transition
        probabilities (L x S x S), pinned rows as pinned."""
        probabilities = self.relaxation.probabilities
        transitions = transition_probabilities(self.betas.detach().float().cpu(), self.free_first_step, probabilities)
        return {"cell": self.choice_weights("cell", probabilities(self.alphas.detach().float().cpu())).numpy(),
                "transitions": self.choice_weights("transitions", transitions).numpy()}

    def decode(self) -> NetworkArch:
        """The discrete architecture: Viterbi path, top-2 cell (from :meth:`arch_weights`), and the
        numbers behind them."""
        weights = self.arch_weights()
        return decode_hierarchical(weights["cell"], weights["transitions"], self.primitives, self.filter_multiplier,
                                   self.free_first_step,
                                   edge_betas=self.edge_betas if self.guards.settings.edge_normalization else None,
                                   max_skip_connect=self.guards.settings.max_skip_connect)

    def figures(self, arch: NetworkArch) -> dict[str, np.ndarray]:
        """softmax(alpha), the trellis of transition probabilities with the decoded path, and
        the decoded cell."""
        weights = self.arch_weights()
        return {"alpha/cell": alpha_heatmap(weights["cell"], list(self.primitives), title="softmax(alpha)"),
                "beta/trellis": trellis_figure(weights["transitions"], list(arch.path),
                                               title="transitions and Viterbi path"),
                "cell/decoded": cell_figure(arch.cell.to_dict()["blocks"], title="decoded cell")}

    def summary(self) -> dict[str, Any]:
        """The dry-run summary, with the number of trellis nodes."""
        return {**super().summary(), "trellis_nodes": len(self.nodes)}
