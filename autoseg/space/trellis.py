"""The network-level search space of Auto-DeepLab: a trellis of resolution levels.

Pure functions, usable without building a network (see docs/DESIGN.md §3).

Layers are numbered ``0 .. L-1`` and resolution levels ``0 .. S-1`` (level ``s`` has stride
``4 * 2**s``). The stem is "layer -1" and sits at level 0. A node ``(layer, level)`` is
reached from ``level - 1``, ``level`` or ``level + 1`` of the previous layer, so levels open
up one at a time. With ``free_first_step=True`` the first layer may already be at level 1
(the stem moves down at once); with ``False`` it is pinned to level 0.

Betas have shape ``(L, S, 3)``: ``beta[l, i, k]`` is the logit of moving from level ``i`` at
layer ``l - 1`` to level ``i + k - 1`` at layer ``l`` (``k = 0`` finer, ``1`` same, ``2``
coarser). :func:`transition_probabilities` turns them into an ``(L, S, S)`` tensor of
transition probabilities, which :func:`viterbi_path` decodes into the most probable path.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from autoseg.utils.errors import UserError

MOVES: tuple[int, ...] = (-1, 0, 1)
"""Level change of each beta slot ``k`` (finer, same, coarser)."""

TIE_TOLERANCE: float = 1e-9
"""Paths whose log-probabilities differ by at most this much are tied (see :func:`viterbi_path`)."""


def _check_num_levels(num_levels: int) -> None:
    if num_levels < 1:
        raise ValueError(f"num_levels must be at least 1, got {num_levels}")


def check_crop_size(crop_size: int, num_levels: int) -> None:
    """Raise a UserError unless a ``crop_size`` crop covers at least one pixel of the deepest
    level (stride ``4 * 2**(num_levels - 1)``): a smaller one ends in a batch-norm error mid-run."""
    deepest = 4 * 2 ** (num_levels - 1)
    if crop_size < deepest:
        raise UserError(f"crop_size {crop_size} is smaller than the stride {deepest} of the trellis's deepest level "
                        f"(model.levels {num_levels}): use --crop-size {deepest} or more, or fewer levels")


def node_exists(layer: int, level: int, num_levels: int, free_first_step: bool = True) -> bool:
    """Whether node ``(layer, level)`` is part of the trellis.

    Layer ``-1`` is the stem, which exists only at level 0. For ``layer >= 0`` the node exists
    iff ``0 <= level <= min(num_levels - 1, layer + int(free_first_step))``.
    """
    _check_num_levels(num_levels)
    if layer == -1:
        return level == 0
    highest = min(num_levels - 1, layer + int(free_first_step))
    return layer >= 0 and 0 <= level <= highest


def trellis_nodes(
    num_layers: int, num_levels: int, free_first_step: bool = True
) -> list[tuple[int, int]]:
    """All ``(layer, level)`` nodes of the trellis (stem excluded), layer-major order."""
    return [
        (layer, level)
        for layer in range(num_layers)
        for level in range(num_levels)
        if node_exists(layer, level, num_levels, free_first_step)
    ]


def predecessors(
    layer: int, level: int, num_levels: int, free_first_step: bool = True
) -> list[int]:
    """Levels at ``layer - 1`` from which node ``(layer, level)`` is reached, ascending.

    For layer 0 this is ``[0]`` (the stem). A node that does not exist has no predecessors.
    """
    if not node_exists(layer, level, num_levels, free_first_step):
        return []
    return [
        level - move
        for move in reversed(MOVES)
        if node_exists(layer - 1, level - move, num_levels, free_first_step)
    ]


def transition_mask(
    num_layers: int, num_levels: int, free_first_step: bool = True
) -> torch.Tensor:
    """Boolean tensor ``(L, S, 3)``: ``mask[l, i, k]`` is True iff the beta slot is a valid move.

    A move is valid when its source ``(l - 1, i)`` and its target ``(l, i + MOVES[k])`` both
    exist (layer -1 being the stem at level 0).
    """
    _check_num_levels(num_levels)
    mask = torch.zeros(num_layers, num_levels, len(MOVES), dtype=torch.bool)
    for layer in range(num_layers):
        for level in range(num_levels):
            for k, move in enumerate(MOVES):
                mask[layer, level, k] = node_exists(
                    layer - 1, level, num_levels, free_first_step
                ) and node_exists(layer, level + move, num_levels, free_first_step)
    return mask


def transition_probabilities(beta: torch.Tensor, free_first_step: bool = True,
                             normalize: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Softmax betas ``(L, S, 3)`` into transition probabilities ``(L, S, S)``.

    ``normalize`` replaces the softmax over each node's moves (it gets the ``(L, S, 3)`` logits,
    invalid moves at ``-inf``, and normalises the last dimension; a search method's relaxation).

    Entry ``[l, i, j]`` is the probability of moving from level ``i`` at layer ``l - 1`` to
    level ``j`` at layer ``l``. Each existing source node gets a softmax over its valid
    outgoing moves (invalid moves are excluded, not just zeroed afterwards), so its row sums to
    one; rows of non-existent source nodes are zero. Differentiable with respect to ``beta``.

    Raises:
        ValueError: ``beta`` is not a floating-point tensor of shape ``(L, S, 3)`` with
            ``L, S >= 1``.
    """
    if not isinstance(beta, torch.Tensor) or not beta.is_floating_point():
        raise ValueError("beta must be a floating-point torch.Tensor of shape (L, S, 3)")
    if beta.ndim != 3 or beta.shape[2] != len(MOVES) or beta.shape[0] < 1 or beta.shape[1] < 1:
        raise ValueError(
            f"beta must have shape (num_layers, num_levels, 3) with both sizes >= 1, "
            f"got {tuple(beta.shape)}"
        )
    num_layers, num_levels, _ = beta.shape
    mask = transition_mask(num_layers, num_levels, free_first_step).to(beta.device)
    # Rows without any valid move get finite logits so the softmax stays NaN-free (also in
    # the backward pass); they are zeroed by the final mask.
    has_move = mask.any(dim=-1, keepdim=True)
    logits = beta.masked_fill(~mask, float("-inf")).masked_fill(~has_move, 0.0)
    probs = (torch.softmax(logits, dim=-1) if normalize is None else normalize(logits)).masked_fill(~mask, 0.0)
    # Move slot k of source level i lands on target level i + MOVES[k]: a band of diagonals.
    return (
        torch.diag_embed(probs[:, 1:, 0], offset=-1)
        + torch.diag_embed(probs[:, :, 1])
        + torch.diag_embed(probs[:, :-1, 2], offset=1)
    )


def as_transition_array(transitions: object) -> np.ndarray:
    """Validate transition probabilities ``(L, S, S)`` and return them as a float64 array.

    Accepts numpy arrays, torch tensors (detached, moved to CPU) and nested sequences.

    Raises:
        ValueError: not 3-D, last two sizes differ, ``L < 1`` or ``S < 1``, or an entry is
            negative or not finite.
    """
    if isinstance(transitions, torch.Tensor):
        transitions = transitions.detach().cpu().double().numpy()
    array = np.asarray(transitions, dtype=np.float64)
    if array.ndim != 3 or array.shape[1] != array.shape[2] or 0 in array.shape:
        raise ValueError(
            "transitions must have shape (num_layers, num_levels, num_levels) with both "
            f"sizes >= 1, got {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("transitions contain NaN or infinite entries")
    if np.any(array < 0):
        raise ValueError("transitions contain negative entries; they must be probabilities")
    return array


def _log(array: np.ndarray) -> np.ndarray:
    """Elementwise log with ``log 0 = -inf`` and no warning."""
    with np.errstate(divide="ignore"):
        return np.log(array)


def viterbi_path(transitions: object) -> list[int]:
    """The most probable path through a trellis of transition probabilities.

    Args:
        transitions: array-like ``(L, S, S)``; entry ``[l, i, j]`` is the probability of
            moving from level ``i`` at layer ``l - 1`` to level ``j`` at layer ``l``. Layer -1
            is the stem at level 0, so only row 0 of ``transitions[0]`` is used. Zero means
            the move is not allowed.

    Returns:
        The ``L`` levels of the path maximising the product of its transition probabilities,
        computed in log space. Ties: among the paths whose log-probability is within
        :data:`TIE_TOLERANCE` of the best, the lexicographically smallest level sequence is
        returned (the lower level wins at the earliest layer where they differ).

    Raises:
        ValueError: invalid ``transitions`` (see :func:`as_transition_array`), or every path
            has probability zero.
    """
    log_t = _log(as_transition_array(transitions))
    num_layers, num_levels, _ = log_t.shape
    # to_go[l, i]: best log-probability of finishing the path from level i at layer l.
    to_go = np.zeros((num_layers, num_levels))
    for layer in range(num_layers - 1, 0, -1):
        to_go[layer - 1] = np.max(log_t[layer] + to_go[layer][None, :], axis=1)
    best = np.max(log_t[0, 0] + to_go[0])
    if best == -np.inf:
        raise ValueError("the trellis has no feasible path: every path has probability zero")
    # Walk forward from the stem, taking at each layer the lowest level that still completes
    # a path tied with the best (the min() only guards against rounding in the sums).
    path: list[int] = []
    prefix, source = 0.0, 0
    for layer in range(num_layers):
        totals = prefix + log_t[layer, source] + to_go[layer]
        level = int(np.argmax(totals >= min(best - TIE_TOLERANCE, totals.max())))
        prefix += log_t[layer, source, level]
        path.append(level)
        source = level
    return path


def path_probability(transitions: object, path: list[int]) -> float:
    """Product of the transition probabilities along ``path`` (one level per layer, from the stem).

    Raises:
        ValueError: invalid ``transitions``, or ``path`` has the wrong length or a level out
            of range.
    """
    array = as_transition_array(transitions)
    num_layers, num_levels, _ = array.shape
    if len(path) != num_layers or any(not 0 <= level < num_levels for level in path):
        raise ValueError(
            f"path must list {num_layers} levels in [0, {num_levels - 1}], got {list(path)}"
        )
    sources = [0, *path[:-1]]
    return float(np.prod(array[np.arange(num_layers), sources, path]))


def count_paths(num_layers: int, num_levels: int, free_first_step: bool = True) -> int:
    """Number of distinct paths from the stem through all ``num_layers`` layers (exact)."""
    counts = {0: 1}  # paths reaching each level of the previous layer; the stem is level 0
    for layer in range(num_layers):
        counts = {
            level: sum(
                counts[source]
                for source in predecessors(layer, level, num_levels, free_first_step)
            )
            for level in range(num_levels)
            if node_exists(layer, level, num_levels, free_first_step)
        }
    return sum(counts.values())
