"""The DARTS evaluation network for CIFAR-10, built from a discrete :class:`~autoseg.space.genotype.Genotype`.

Same structure as the reference ``NetworkCIFAR`` (docs/DESIGN.md §2): a 3x3 conv stem
to ``3 C`` channels, ``layers`` cells with reduction cells at 1/3 and 2/3 of the depth
(channels doubled), an optional auxiliary classifier after the second reduction cell, global
average pooling and a linear classifier. All batch norms are affine. DARTS_V2 with C=36 and
20 layers has 3,349,342 parameters without its auxiliary head, the reference's "3.35 MB".
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoseg.space.genotype import Genotype, get_genotype
from autoseg.models.fixed_cell import FixedCell
from autoseg.models.registry import register_model
from autoseg.layers.ops import FactorizedReduce, ReLUConvBN


class DartsCell(nn.Module):
    """A normal or reduction cell: 1x1 preprocessing of both inputs, then the genotype's blocks.

    Input state 0 is reduced with :class:`~autoseg.layers.ops.FactorizedReduce` when the previous
    cell was a reduction cell (it is then at twice the resolution of state 1).
    """

    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, channels: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_prev_prev, channels) if reduction_prev
                            else ReLUConvBN(c_prev_prev, channels, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)
        cell = genotype.reduce if reduction else genotype.normal
        self.blocks = FixedCell(cell, channels, 2 if reduction else 1, family="darts")
        self.out_channels = self.blocks.out_channels

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        return self.blocks(self.preprocess0(s0), self.preprocess1(s1), drop_prob)


class AuxiliaryHeadCIFAR(nn.Sequential):
    """The reference auxiliary classifier for 8x8 feature maps: ReLU, 5x5 average pool with
    stride 3 (to 2x2), 1x1 conv to 128, 2x2 conv to 768 (each with BN-ReLU), linear."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(in_channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(768, num_classes),
        )


class DartsCifarNetwork(nn.Module):
    """DARTS evaluation network (reference ``NetworkCIFAR``).

    ``forward`` returns the logits, or ``(logits, aux_logits)`` in training mode when built with
    ``auxiliary=True``. The training loop sets :attr:`drop_path_prob` (0 by default) every
    epoch; drop-path is applied in training mode to every op output that is not an identity.
    """

    def __init__(self, genotype: Genotype, num_classes: int = 10, C: int = 36, layers: int = 20,
                 auxiliary: bool = False, stem_multiplier: int = 3):
        super().__init__()
        self.drop_path_prob = 0.0
        self.auxiliary = auxiliary
        self.aux_position = 2 * layers // 3
        c_stem = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_prev_prev, c_prev, channels = c_stem, c_stem, C
        reduction_prev = False
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                channels *= 2
            cell = DartsCell(genotype, c_prev_prev, c_prev, channels, reduction, reduction_prev)
            self.cells.append(cell)
            c_prev_prev, c_prev, reduction_prev = c_prev, cell.out_channels, reduction
            if i == self.aux_position and auxiliary:
                self.auxiliary_head = AuxiliaryHeadCIFAR(c_prev, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        aux_logits = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary and self.training:
                aux_logits = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits if aux_logits is None else (logits, aux_logits)


def resolve_genotype(genotype: Genotype | Mapping[str, Any] | str | Path) -> Genotype:
    """A :class:`Genotype` as is or in its dict form, a published genotype by name, or one read
    from a ``.json`` file."""
    if isinstance(genotype, Genotype):
        return genotype
    if isinstance(genotype, Mapping):
        return Genotype.from_dict(genotype)
    if Path(genotype).suffix == ".json":
        return Genotype.from_json(genotype)
    return get_genotype(str(genotype))


@register_model("darts-cifar")
def darts_cifar(num_classes: int, genotype: Genotype | Mapping[str, Any] | str | Path = "DARTS_V2", C: int = 36,
                layers: int = 20,
                auxiliary: bool = False) -> DartsCifarNetwork:
    """DARTS CIFAR evaluation network (defaults: DARTS_V2, C=36, 20 cells, no auxiliary head)."""
    return DartsCifarNetwork(resolve_genotype(genotype), num_classes, C, layers, auxiliary)
