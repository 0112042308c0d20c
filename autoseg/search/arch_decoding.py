"""From architecture weights to a discrete architecture, without building a network: the
magnitude rule (DARTS's top-2 edges per block by op weight, Auto-DeepLab's Viterbi path).

The inputs are probabilities, not logits: the supernets turn their architecture parameters into
them with their relaxation (:mod:`autoseg.search.relaxation`) and pass them here, and
``tools/decode.py`` decodes through the supernet, so a checkpoint decodes to exactly what the
search wrote.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from autoseg.space.architecture import NetworkArch
from autoseg.space.genotype import CellGenotype, Genotype, blocks_from_edges, topk_cell
from autoseg.search.collapse_guards import edge_normalization_weights
from autoseg.space.trellis import viterbi_path


def _edge_weights(edge_betas: torch.Tensor, num_blocks: int) -> np.ndarray:
    return edge_normalization_weights(edge_betas.detach().float().cpu(), num_blocks).numpy()


def _edge_scores(cell_weights: np.ndarray, edge_betas: torch.Tensor | None) -> np.ndarray:
    """What the top-k rule ranks: softmax(alpha), times the PC-DARTS edge weights when the
    search normalised its edges (the PC-DARTS decoding)."""
    if edge_betas is None:
        return cell_weights
    return cell_weights * _edge_weights(edge_betas, blocks_from_edges(len(cell_weights)))[:, None]


def decode_darts(normal: np.ndarray, reduce: np.ndarray, primitives: Sequence[str],
                 num_blocks: int, multiplier: int, edge_betas_normal: torch.Tensor | None = None,
                 edge_betas_reduce: torch.Tensor | None = None, *,
                 max_skip_connect: int | None = None) -> Genotype:
    """The DARTS genotype from the ``(num_edges, num_ops)`` op weights of the normal and the
    reduction cell (softmax(alpha) in DARTS): top-2 rule on both cell types, output concat of the
    last ``multiplier`` states. With edge normalisation the edges are scored with their edge
    weights; ``max_skip_connect`` caps the normal cell's ``skip_connect`` edges (P-DARTS)."""
    concat = range(2 + num_blocks - multiplier, num_blocks + 2)

    def cell(weights: np.ndarray, edge_betas: torch.Tensor | None, cap: int | None) -> CellGenotype:
        scores = _edge_scores(np.asarray(weights), edge_betas)
        return CellGenotype.from_blocks(topk_cell(scores, primitives, max_skip_connect=cap), concat)

    return Genotype(cell(normal, edge_betas_normal, max_skip_connect),
                    cell(reduce, edge_betas_reduce, None))


def decode_hierarchical(cell_weights: np.ndarray, transitions: np.ndarray, primitives: Sequence[str],
                        filter_multiplier: int, free_first_step: bool = True, *, edge_betas: torch.Tensor | None = None,
                        max_skip_connect: int | None = None) -> NetworkArch:
    """The Auto-DeepLab architecture from the cell's ``(num_edges, num_ops)`` op weights
    (softmax(alpha)) and the ``(L, S, S)`` transition probabilities (derived from beta): the
    Viterbi path through the transitions, the top-2 cell, and the numbers behind both. With edge
    normalisation (``edge_betas``) the cell's edges are scored with their edge weights, which
    the architecture keeps as ``edge_weights``; ``max_skip_connect`` caps the cell's
    ``skip_connect`` edges (P-DARTS) and is recorded when set."""
    cell_weights, transitions = np.asarray(cell_weights), np.asarray(transitions)
    path = viterbi_path(transitions)
    cell = CellGenotype.from_blocks(topk_cell(_edge_scores(cell_weights, edge_betas), primitives,
                                              max_skip_connect=max_skip_connect))
    layers, levels = transitions.shape[:2]
    return NetworkArch(
        path=tuple(path),
        cell=cell,
        filter_multiplier=filter_multiplier,
        levels=int(levels),
        primitives=tuple(primitives),
        free_first_step=free_first_step,
        step_probabilities=tuple(round(float(transitions[l, path[l - 1] if l else 0, path[l]]), 6)
                                 for l in range(layers)),
        cell_weights=np.round(cell_weights, 6).tolist(),
        transitions=np.round(transitions, 6).tolist(),
        edge_weights=(None if edge_betas is None
                      else np.round(_edge_weights(edge_betas, cell.num_blocks), 6).tolist()),
        max_skip_connect=max_skip_connect,
    )
