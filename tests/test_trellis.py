"""Tests of the network-level trellis: node sets, beta softmax, Viterbi decoding."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from autoseg.space.trellis import (
    TIE_TOLERANCE,
    count_paths,
    node_exists,
    path_probability,
    predecessors,
    transition_mask,
    transition_probabilities,
    trellis_nodes,
    viterbi_path,
)

SIZES = [(layers, levels) for layers in range(1, 7) for levels in range(1, 6)]


def brute_force_path(transitions: np.ndarray) -> list[int] | None:
    """Lexicographically first level sequence whose log-probability is tied with the best."""
    num_layers, num_levels, _ = transitions.shape
    paths = np.array(list(itertools.product(range(num_levels), repeat=num_layers)))
    sources = np.concatenate([np.zeros((len(paths), 1), dtype=int), paths[:, :-1]], axis=1)
    with np.errstate(divide="ignore"):
        scores = np.log(transitions[np.arange(num_layers), sources, paths]).sum(axis=1)
    best = scores.max()
    if best == -np.inf:
        return None
    return paths[np.argmax(scores >= best - TIE_TOLERANCE)].tolist()


def random_transitions(rng: np.random.Generator, layers: int, levels: int) -> np.ndarray:
    """Random non-negative weights with roughly 40 % of the entries zeroed."""
    shape = (layers, levels, levels)
    return rng.random(shape) * (rng.random(shape) > 0.4)


# ---------------------------------------------------------------- nodes and path counts


def test_nodes_of_a_small_trellis() -> None:
    assert trellis_nodes(3, 4) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2),
                                   (2, 0), (2, 1), (2, 2), (2, 3)]
    assert trellis_nodes(3, 4, free_first_step=False) == [(0, 0), (1, 0), (1, 1),
                                                          (2, 0), (2, 1), (2, 2)]
    assert trellis_nodes(2, 1) == [(0, 0), (1, 0)]


def test_node_exists_edges_of_the_trellis() -> None:
    assert node_exists(-1, 0, 4) and not node_exists(-1, 1, 4)  # the stem
    assert not node_exists(-2, 0, 4)
    assert node_exists(0, 1, 4) and not node_exists(0, 1, 4, free_first_step=False)
    assert not node_exists(5, 4, 4) and not node_exists(5, -1, 4)
    with pytest.raises(ValueError):
        node_exists(0, 0, 0)


def test_predecessors() -> None:
    assert predecessors(0, 0, 4) == [0] and predecessors(0, 1, 4) == [0]
    assert predecessors(0, 1, 4, free_first_step=False) == []  # node does not exist
    assert predecessors(1, 0, 4) == [0, 1]
    assert predecessors(1, 2, 4) == [1]
    assert predecessors(1, 1, 4, free_first_step=False) == [0]
    assert predecessors(5, 2, 4) == [1, 2, 3]
    assert predecessors(5, 3, 4) == [2, 3]


def test_transition_mask_small_case() -> None:
    mask = transition_mask(2, 3)
    expected = torch.tensor([
        [[False, True, True], [False, False, False], [False, False, False]],
        [[False, True, True], [True, True, True], [False, False, False]],
    ])
    assert torch.equal(mask, expected)
    pinned = transition_mask(2, 3, free_first_step=False)
    expected[0, 0, 2] = False  # the stem may not move down
    expected[1, 1] = False  # (0, 1) does not exist
    assert torch.equal(pinned, expected)


def test_count_paths_matches_the_paper() -> None:
    assert count_paths(12, 4) == 75_025
    assert count_paths(12, 4, free_first_step=False) == 28_657
    assert count_paths(1, 1) == 1
    assert count_paths(2, 2) == 4
    assert count_paths(2, 2, free_first_step=False) == 2


@pytest.mark.parametrize("free", [True, False])
@pytest.mark.parametrize("layers,levels", [(1, 3), (3, 2), (4, 4), (5, 3)])
def test_count_paths_matches_enumeration(layers: int, levels: int, free: bool) -> None:
    allowed = transition_probabilities(torch.zeros(layers, levels, 3), free).numpy() > 0
    feasible = sum(
        all(allowed[layer, source, target]
            for layer, (source, target) in enumerate(zip((0, *path[:-1]), path)))
        for path in itertools.product(range(levels), repeat=layers)
    )
    assert count_paths(layers, levels, free) == feasible


# ---------------------------------------------------------------- transition probabilities


@pytest.mark.parametrize("free", [True, False])
@pytest.mark.parametrize("layers,levels", [(1, 1), (1, 4), (3, 2), (6, 4), (12, 4), (4, 6)])
def test_transition_probabilities_are_a_trellis(layers: int, levels: int, free: bool) -> None:
    beta = torch.randn(layers, levels, 3, generator=torch.Generator().manual_seed(layers))
    probs = transition_probabilities(beta, free)
    assert probs.shape == (layers, levels, levels)
    for layer in range(layers):
        for source in range(levels):
            row = probs[layer, source]
            if node_exists(layer - 1, source, levels, free):
                assert row.sum().item() == pytest.approx(1.0, abs=1e-6)
            else:
                assert torch.all(row == 0)
            for target in range(levels):
                allowed = abs(target - source) <= 1 and node_exists(layer, target, levels, free)
                assert (row[target] > 0).item() == (allowed and node_exists(
                    layer - 1, source, levels, free))


def test_transition_probabilities_softmax_over_valid_moves_only() -> None:
    beta = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(0))
    probs = transition_probabilities(beta)
    # Level 1 at layer 2 can move to 0, 1, 2: a plain softmax over its three logits.
    assert torch.allclose(probs[3, 1], torch.softmax(beta[3, 1], dim=0))
    # Level 2 (the coarsest) can only go finer or stay: softmax over those two.
    assert torch.allclose(probs[3, 2, 1:], torch.softmax(beta[3, 2, :2], dim=0))
    # The stem moves to level 0 or 1.
    assert torch.allclose(probs[0, 0, :2], torch.softmax(beta[0, 0, 1:], dim=0))
    pinned = transition_probabilities(beta, free_first_step=False)
    assert pinned[0, 0].tolist() == [1.0, 0.0, 0.0]


def test_gradient_flows_to_valid_betas_only() -> None:
    beta = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    weights = torch.randn(5, 4, 4, generator=torch.Generator().manual_seed(2))
    (transition_probabilities(beta) * weights).sum().backward()
    mask = transition_mask(5, 4)
    assert torch.all(torch.isfinite(beta.grad))
    assert torch.all(beta.grad[~mask] == 0)
    # Every source with a real choice (two or more moves) gets a gradient on its valid moves.
    choice = mask & (mask.sum(dim=-1, keepdim=True) > 1)
    assert torch.all(beta.grad[choice] != 0)


@pytest.mark.parametrize("beta", [
    torch.zeros(3, 4, 2),
    torch.zeros(3, 4),
    torch.zeros(0, 4, 3),
    torch.zeros(3, 0, 3),
    torch.zeros(3, 4, 3, dtype=torch.long),
])
def test_transition_probabilities_rejects_bad_beta(beta: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        transition_probabilities(beta)


# ---------------------------------------------------------------- Viterbi


def test_hand_worked_two_layer_example() -> None:
    # Paths: [0,0] 0.6*0.5 = 0.30, [0,1] 0.6*0.5 = 0.30, [1,0] 0.4*1.0 = 0.40, [1,1] 0.
    # A greedy walk would take level 0 first; the best path starts at level 1.
    transitions = np.array([
        [[0.6, 0.4], [0.0, 0.0]],
        [[0.5, 0.5], [1.0, 0.0]],
    ])
    assert viterbi_path(transitions) == [1, 0]
    assert path_probability(transitions, [1, 0]) == pytest.approx(0.4)
    assert path_probability(transitions, [0, 1]) == pytest.approx(0.3)
    assert path_probability(transitions, [1, 1]) == 0.0


@pytest.mark.parametrize("layers,levels", SIZES)
def test_viterbi_matches_brute_force_on_random_trellises(layers: int, levels: int) -> None:
    rng = np.random.default_rng(100 * layers + levels)
    for _ in range(6):
        transitions = random_transitions(rng, layers, levels)
        expected = brute_force_path(transitions)
        if expected is None:
            with pytest.raises(ValueError, match="no feasible path"):
                viterbi_path(transitions)
            continue
        path = viterbi_path(transitions)
        assert path == expected
        assert path_probability(transitions, path) > 0


@pytest.mark.parametrize("free", [True, False])
@pytest.mark.parametrize("layers,levels", SIZES)
def test_viterbi_matches_brute_force_on_beta(layers: int, levels: int, free: bool) -> None:
    generator = torch.Generator().manual_seed(10 * layers + levels)
    beta = 2 * torch.randn(layers, levels, 3, generator=generator)
    transitions = transition_probabilities(beta, free)
    path = viterbi_path(transitions)
    assert path == brute_force_path(transitions.double().numpy())
    nodes = set(trellis_nodes(layers, levels, free))
    assert all((layer, level) in nodes for layer, level in enumerate(path))


def test_viterbi_accepts_tensors_and_lists() -> None:
    transitions = transition_probabilities(torch.randn(4, 3, 3, requires_grad=True))
    path = viterbi_path(transitions)
    assert path == viterbi_path(transitions.detach().numpy().tolist())
    assert all(isinstance(level, int) for level in path)


def test_ties_go_to_the_lexicographically_smallest_path() -> None:
    # [0, 1] and [1, 0] both have probability 0.5. Backtracking from the lowest final level
    # would return [1, 0]; the lexicographic rule compares the first layer first.
    transitions = np.array([
        [[0.5, 0.5], [0.0, 0.0]],
        [[0.0, 1.0], [1.0, 0.0]],
    ])
    assert viterbi_path(transitions) == [0, 1]
    assert viterbi_path(np.ones((4, 3, 3))) == [0, 0, 0, 0]
    # Tie decided at the last layer: [1, 1, 0] and [1, 1, 2] both have the best probability.
    transitions = np.full((3, 3, 3), 0.1)
    transitions[0, 0] = [0.1, 0.8, 0.1]
    transitions[1, 1] = [0.1, 0.8, 0.1]
    transitions[2, 1] = [0.45, 0.1, 0.45]
    assert viterbi_path(transitions) == [1, 1, 0]


def test_ties_within_rounding_go_to_the_lower_level() -> None:
    # 0.1 * 3 is 0.30000000000000004: strictly larger than 0.3, but only by rounding.
    transitions = np.array([[[0.3, 0.1 * 3], [0.0, 0.0]]])
    assert transitions[0, 0, 1] > transitions[0, 0, 0]
    assert viterbi_path(transitions) == [0]


@pytest.mark.parametrize("transitions,message", [
    (-np.ones((2, 3, 3)), "negative"),
    (np.full((2, 3, 3), np.nan), "NaN"),
    (np.full((2, 3, 3), np.inf), "NaN or infinite"),
    (np.ones((3, 3)), "shape"),
    (np.ones((1, 2, 3, 3)), "shape"),
    (np.ones((2, 3, 4)), "shape"),
    (np.ones((0, 3, 3)), "shape"),
    (np.ones((2, 0, 0)), "shape"),
    (np.zeros((3, 2, 2)), "no feasible path"),
])
def test_viterbi_rejects_bad_input(transitions: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        viterbi_path(transitions)


def test_viterbi_rejects_trellises_without_a_feasible_path() -> None:
    transitions = np.ones((3, 2, 2))
    transitions[0, 0] = 0.0  # the stem cannot move
    with pytest.raises(ValueError, match="no feasible path"):
        viterbi_path(transitions)
    transitions = np.ones((3, 2, 2))
    transitions[1] = [[0.0, 0.0], [0.0, 0.0]]  # layer 1 is unreachable
    with pytest.raises(ValueError, match="no feasible path"):
        viterbi_path(transitions)


def test_viterbi_single_negative_entry_is_rejected() -> None:
    transitions = np.ones((2, 2, 2))
    transitions[1, 1, 0] = -1e-12
    with pytest.raises(ValueError, match="negative"):
        viterbi_path(transitions)


@pytest.mark.parametrize("path", [[0], [0, 0, 0], [0, 2], [-1, 0]])
def test_path_probability_rejects_bad_paths(path: list[int]) -> None:
    with pytest.raises(ValueError, match="path must list"):
        path_probability(np.ones((2, 2, 2)), path)
