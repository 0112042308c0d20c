"""Guards against the collapse of differentiable search into parameter-free ops.

DARTS-style searches tend to end with cells made mostly of ``skip_connect``: parameter-free
ops make the supernet easy to train early and win the softmax. Each guard below is a setting of
:class:`~autoseg.config.CollapseGuardSettings`, the one value both search supernets take as
``guards``; all are off by default (then the computation is exactly the plain DARTS /
Auto-DeepLab one); the docs' "Collapse guards" guide lists them with their costs.

- ``partial_channels: K`` — PC-DARTS (Y. Xu et al., "PC-DARTS: Partial Channel Connections for
  Memory-Efficient Architecture Search", ICLR 2020, arXiv 1907.05737, "partial channel
  connections"): on every edge only the first 1/K of the channels go through the mixed op,
  the other channels bypass it (max-pooled 2x2 on stride-2 edges), and the two parts are
  concatenated and channel-shuffled (:func:`channel_shuffle`).
- ``edge_normalization`` — PC-DARTS, "edge normalization": one more architecture parameter
  per edge; each block weights its incoming edges by the softmax of theirs
  (:func:`edge_normalization_weights`), and decoding scores an edge by its op weights times
  that edge weight.
- ``auxiliary_skip: beta0`` — DARTS- (X. Chu et al., "DARTS-: Robustly Stepping out of
  Performance Collapse Without Indicators", ICLR 2021): every edge gets an auxiliary skip
  connection, ``beta * x`` (a FactorizedReduce of its own on stride-2 edges, as in the
  DARTS- code), outside the architecture's softmax; ``beta`` decays linearly from ``beta0`` to
  0 over the search (the paper's setting: ``beta0 = 1``).
- ``skip_dropout: p0`` — P-DARTS (X. Chen et al., "Progressive Differentiable Architecture
  Search: Bridging the Depth Gap between Search and Evaluation", ICCV 2019, "search space
  regularization"): dropout after the identity ``skip_connect`` of every edge during the
  search, an independent mask per edge, at a rate that decays from ``p0`` to 0 over the search.

The decode-time cap ``max_skip_connect`` of P-DARTS is part of decoding
(:func:`autoseg.space.genotype.topk_cell`), a pure function of the architecture parameters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from autoseg.config import CollapseGuardSettings
from autoseg.space.genotype import num_edges


class CollapseGuards:
    """The collapse-guard ``settings`` of one supernet (None: all off), and the strengths of the
    decaying guards at the current point of the search.

    One instance is shared by every mixed op of a supernet; the supernet's
    ``set_search_progress(fraction)`` moves it (:meth:`set_progress`). Both decaying strengths
    fall linearly to 0 with the fraction ``f`` of the search done:
    ``current_auxiliary_skip = auxiliary_skip * (1 - f)`` (DARTS-'s linear decay, applied at the
    start of each epoch as in the DARTS- code) and ``current_skip_dropout = skip_dropout * (1 - f)``
    (P-DARTS decays its rate "gradually"; its code decays it linearly during the weights-only
    epochs, then exponentially; here one linear decay over the whole search). Until the first
    :meth:`set_progress` they are at their initial values.
    """

    def __init__(self, settings: CollapseGuardSettings | None = None):
        self.settings = settings if settings is not None else CollapseGuardSettings()
        self.set_progress(0.0)

    def set_progress(self, fraction: float) -> None:
        """Set the decaying strengths for the point ``fraction`` (0 = start, 1 = end) of the search."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"the fraction of the search done must be in [0, 1], got {fraction}")
        self.current_auxiliary_skip = self.settings.auxiliary_skip * (1.0 - fraction)
        self.current_skip_dropout = self.settings.skip_dropout * (1.0 - fraction)


def check_partial_channels(channels: int, partial_channels: int) -> None:
    """Raise ValueError unless ``channels`` can be split into ``partial_channels`` equal parts."""
    if channels % partial_channels:
        raise ValueError(f"partial_channels {partial_channels} must divide the {channels} channels of every "
                         "search cell (C, or F for the hierarchical search)")


def channel_shuffle(x: torch.Tensor, groups: int, dim: int = 1) -> torch.Tensor:
    """ShuffleNet's channel shuffle along ``dim`` (as in the PC-DARTS code): the channels, seen as
    ``groups`` groups of ``C / groups``, are interleaved, so that channel ``g * C / groups + j``
    moves to ``j * groups + g``."""
    return x.unflatten(dim, (groups, -1)).transpose(dim, dim + 1).flatten(dim, dim + 1)


def edge_normalization_weights(edge_logits: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """The PC-DARTS edge weights: the softmax of ``edge_logits`` (one per edge, ordered block by
    block like the rows of alpha) over the incoming edges of each block."""
    if edge_logits.shape != (num_edges(num_blocks),):
        raise ValueError(f"expected {num_edges(num_blocks)} edge logits for {num_blocks} blocks, "
                         f"got shape {tuple(edge_logits.shape)}")
    sizes = [2 + block for block in range(num_blocks)]
    return torch.cat([F.softmax(part, dim=0) for part in edge_logits.split(sizes)])
