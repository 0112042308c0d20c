"""From architecture parameters to a discrete architecture, without building a network.

Both the supernets and ``tools/decode.py`` call these functions, so a checkpoint decodes to
exactly what the search wrote.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from autoseg.architecture import NetworkArch
from autoseg.genotype import CellGenotype, Genotype, topk_cell
from autoseg.trellis import transition_probabilities, viterbi_path


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return F.softmax(logits.detach().float().cpu(), dim=-1).numpy()


def decode_darts(alphas_normal: torch.Tensor, alphas_reduce: torch.Tensor, primitives: Sequence[str],
                 num_blocks: int, multiplier: int) -> Genotype:
    """The DARTS genotype (top-2 rule on both cell types; output concat of the last
    ``multiplier`` states)."""
    concat = range(2 + num_blocks - multiplier, num_blocks + 2)
    return Genotype(*(CellGenotype.from_blocks(topk_cell(_softmax(alpha), primitives), concat)
                      for alpha in (alphas_normal, alphas_reduce)))


def decode_hierarchical(alphas: torch.Tensor, betas: torch.Tensor, primitives: Sequence[str],
                        filter_multiplier: int, free_first_step: bool = True) -> NetworkArch:
    """The Auto-DeepLab architecture: the Viterbi path through the transition probabilities
    derived from beta, the top-2 cell from alpha, and the numbers behind both."""
    cell_weights = _softmax(alphas)
    transitions = transition_probabilities(betas.detach().float().cpu(), free_first_step).numpy()
    path = viterbi_path(transitions)
    layers, levels = transitions.shape[:2]
    return NetworkArch(
        path=tuple(path),
        cell=CellGenotype.from_blocks(topk_cell(cell_weights, primitives)),
        filter_multiplier=filter_multiplier,
        levels=int(levels),
        primitives=tuple(primitives),
        free_first_step=free_first_step,
        step_probabilities=tuple(round(float(transitions[l, path[l - 1] if l else 0, path[l]]), 6)
                                 for l in range(layers)),
        cell_weights=np.round(cell_weights, 6).tolist(),
        transitions=np.round(transitions, 6).tolist(),
    )
