"""The DARTS search network for CIFAR-10 (DARTS §2.2 and §3.1.1; docs/DESIGN.md §2)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from autoseg.config import CollapseGuardSettings
from autoseg.space.genotype import Genotype, num_edges
from autoseg.layers.ops import PRIMITIVES, FactorizedReduce, ReLUConvBN
from autoseg.search.arch_decoding import decode_darts
from autoseg.search.collapse_guards import CollapseGuards, edge_normalization_weights
from autoseg.search.grouped_batchnorm import convert_batchnorm, deferred_running_statistics
from autoseg.search.mixed_op import MixedCell
from autoseg.search.network import SearchNetwork
from autoseg.space.sampling import sample_genotype
from autoseg.search.relaxation import cell_choice_weights
from autoseg.analysis.visualize import alpha_heatmap, cell_figure


class DartsSearchCell(nn.Module):
    """A DARTS search cell: 1x1 preprocessing of both inputs, then the mixed-op DAG.

    When the previous cell reduced, input state 0 is still at twice the resolution and is
    preprocessed with FactorizedReduce, as in the reference code.
    """

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, num_blocks: int, multiplier: int,
                 primitives: Sequence[str], reduction: bool, reduction_prev: bool,
                 guards: CollapseGuards | None = None):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_prev_prev, channels, affine=False) if reduction_prev
                            else ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=False)
        self.dag = MixedCell(channels, num_blocks, multiplier, primitives, reduction, guards)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                edge_weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.dag(self.preprocess0(s0), self.preprocess1(s1), weights, edge_weights)


class DartsSearchNetwork(SearchNetwork):
    """Stem, ``layers`` search cells (reductions at 1/3 and 2/3 depth), global pool, linear.

    Holds one alpha matrix per cell type (normal, reduce), initialised as 1e-3 * N(0, 1);
    :meth:`arch_parameters` and :meth:`weight_parameters` keep them apart for the two optimisers.

    The collapse guards (:mod:`autoseg.search.collapse_guards`) are the settings of ``guards``
    (:class:`~autoseg.config.CollapseGuardSettings`), all off by default (None):
    ``partial_channels``, ``auxiliary_skip`` and ``skip_dropout`` change the mixed ops;
    ``edge_normalization`` adds the PC-DARTS edge logits ``edge_betas_normal`` and
    ``edge_betas_reduce`` (one per edge, 1e-3 * N(0, 1), as in the PC-DARTS code) to the
    architecture parameters; ``max_skip_connect`` caps the ``skip_connect`` edges of the
    decoded normal cell (P-DARTS caps the normal cell only).

    ``selective_checkpoint`` (off by default; exact) recomputes the ReLUs and depthwise convs of
    the cells' conv stages in backward instead of keeping their outputs
    (:mod:`autoseg.search.stage_recomputation`).
    """

    cell_types = ("normal", "reduce")

    def __init__(self, num_classes: int = 10, init_channels: int = 16, layers: int = 8, num_blocks: int = 4,
                 multiplier: int = 4, stem_multiplier: int = 3, primitives: Sequence[str] = PRIMITIVES,
                 guards: CollapseGuardSettings | None = None, selective_checkpoint: bool = False):
        super().__init__()
        self.guards = CollapseGuards(guards)
        self.primitives = tuple(primitives)
        self.num_blocks = num_blocks
        self.multiplier = multiplier
        c_curr = stem_multiplier * init_channels
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, init_channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            self.cells.append(DartsSearchCell(c_prev_prev, c_prev, c_curr, num_blocks, multiplier,
                                              self.primitives, reduction, reduction_prev, self.guards))
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, multiplier * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        shape = (num_edges(num_blocks), len(self.primitives))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(shape))
        if self.guards.settings.edge_normalization:
            self.edge_betas_normal = nn.Parameter(1e-3 * torch.randn(shape[0]))
            self.edge_betas_reduce = nn.Parameter(1e-3 * torch.randn(shape[0]))
        convert_batchnorm(self)
        self.selective_checkpoint = selective_checkpoint

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters (alpha of the normal and of the reduction cell, then
        their edge logits with ``edge_normalization``)."""
        edges = [self.edge_betas_normal, self.edge_betas_reduce] if self.guards.settings.edge_normalization else []
        return [self.alphas_normal, self.alphas_reduce, *edges]

    def set_search_progress(self, fraction: float) -> None:
        """Tell the decaying collapse guards which fraction (0..1) of the search is done."""
        self.guards.set_progress(fraction)

    @deferred_running_statistics()  # the batch norms' running statistics updated in a few calls at the end
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        normal = self.choice_weights("normal", self.relaxation.weights(self.alphas_normal, self.training))
        reduce = self.choice_weights("reduce", self.relaxation.weights(self.alphas_reduce, self.training))
        self.route_choices("normal", normal)
        self.route_choices("reduce", reduce)
        edges_normal = edges_reduce = None
        if self.guards.settings.edge_normalization:
            edges_normal = edge_normalization_weights(self.edge_betas_normal, self.num_blocks)
            edges_reduce = edge_normalization_weights(self.edge_betas_reduce, self.num_blocks)
        for cell in self.cells:
            s0, s1 = s1, (cell(s0, s1, reduce, edges_reduce) if cell.reduction else cell(s0, s1, normal, edges_normal))
        return self.classifier(self.global_pooling(s1).flatten(1))

    def choice_cells(self, name: str) -> list[MixedCell]:
        """The DAGs of the normal or of the reduction cells."""
        return [cell.dag for cell in self.cells if cell.reduction == (name == "reduce")]

    def cell_logits(self) -> dict[str, torch.Tensor]:
        """alpha of the normal and of the reduction cell."""
        return {"normal": self.alphas_normal, "reduce": self.alphas_reduce}

    def architecture_weights(self, arch: Genotype) -> dict[str, torch.Tensor]:
        """One-hot rows of the normal and the reduction cell of ``arch``."""
        return {name: cell_choice_weights(cell, self.primitives, self.num_blocks)
                for name, cell in (("normal", arch.normal), ("reduce", arch.reduce))}

    def sample_architecture(self, rng: np.random.Generator) -> Genotype:
        """Random normal and reduction cells (:func:`autoseg.space.sampling.sample_genotype`)."""
        return sample_genotype(self.num_blocks, self.multiplier, self.primitives, rng)

    def arch_weights(self) -> dict[str, np.ndarray]:
        """The op probabilities of each cell type (softmax(alpha) in DARTS; pinned rows as pinned),
        as (num_edges x num_ops) arrays."""
        return {name: self.choice_weights(name, self.relaxation.probabilities(alpha.detach().float().cpu())).numpy()
                for name, alpha in self.cell_logits().items()}

    def decode(self) -> Genotype:
        """The discrete cells decoded with the DARTS top-2 rule from :meth:`arch_weights`."""
        edges = ((self.edge_betas_normal, self.edge_betas_reduce) if self.guards.settings.edge_normalization
                 else (None, None))
        weights = self.arch_weights()
        return decode_darts(weights["normal"], weights["reduce"], self.primitives, self.num_blocks,
                            self.multiplier, *edges, max_skip_connect=self.guards.settings.max_skip_connect)

    def figures(self, arch: Genotype) -> dict[str, np.ndarray]:
        """softmax(alpha) of each cell type as a heat map, and each decoded cell."""
        images = {f"alpha/{name}": alpha_heatmap(w, list(self.primitives), title=f"softmax(alpha) {name}")
                  for name, w in self.arch_weights().items()}
        for name, cell in (("normal", arch.normal), ("reduce", arch.reduce)):
            images[f"cell/{name}"] = cell_figure(cell.to_dict()["blocks"], title=f"{name} cell")
        return images
