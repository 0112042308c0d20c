"""Single-path search steps: only the chosen ops run, with GDAS's coarse gradient for the others."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autoseg.layers.ops import PRIMITIVES
from autoseg.search.darts_network import DartsSearchNetwork
from autoseg.search.methods import SearchSchedule, build_method
from autoseg.search.mixed_op import MixedEdges
from autoseg.search.trellis_network import TrellisNode, TrellisSearchNetwork
from autoseg.space.genotype import num_edges

CHOICES = ["sep_conv_3x3", "none", "skip_connect"]
"""The ops three edges of one fan-out choose; sep_conv_5x5, the pools and the dilated convs are chosen by none."""


def _fan_out_and_hard_weights(stride: int) -> tuple[MixedEdges, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    fan_out = MixedEdges(4, len(CHOICES), stride, PRIMITIVES)
    hard = torch.zeros(len(CHOICES), len(PRIMITIVES))
    for edge, op in enumerate(CHOICES):
        hard[edge, PRIMITIVES.index(op)] = 1.0
    return fan_out, hard, torch.randn(2, 4, 8, 8)


@pytest.mark.parametrize("stride", [1, 2])
def test_single_path_gives_the_full_output_and_gdas_codes_gradients(stride):
    fan_out, hard, x = _fan_out_and_hard_weights(stride)
    full_weights, single_weights = hard.clone().requires_grad_(), hard.clone().requires_grad_()
    full = fan_out(x, full_weights)
    single = fan_out(x, single_weights, chosen=hard != 0)
    torch.testing.assert_close(single, full, rtol=0, atol=0)
    upstream = torch.randn_like(full)
    (full * upstream).sum().backward()
    fan_out.zero_grad(set_to_none=True)
    (single * upstream).sum().backward()
    # the chosen op's weight: the gradient of its output (as with every op run); the others: the
    # sum of the edge's output gradient (GDAS's code adds their weight, 0 in value, to the edge)
    expected = upstream.sum(dim=(0, 2, 3, 4)).unsqueeze(1).expand_as(hard).clone()
    expected[hard != 0] = full_weights.grad[hard != 0]
    torch.testing.assert_close(single_weights.grad, expected)
    for slot, column in enumerate(fan_out.active):
        grads = [p.grad for p in fan_out.ops[slot].parameters()]
        if PRIMITIVES[column] == "sep_conv_3x3":
            assert grads and all(g is not None for g in grads)
        elif PRIMITIVES[column] not in CHOICES:
            assert all(g is None for g in grads), PRIMITIVES[column]  # chosen by no edge: never run


def test_a_fan_out_whose_edges_all_choose_none_outputs_zeros_of_the_right_shape():
    fan_out, _, x = _fan_out_and_hard_weights(2)
    hard = torch.zeros(len(CHOICES), len(PRIMITIVES))
    hard[:, PRIMITIVES.index("none")] = 1.0
    out = fan_out(x, hard, chosen=hard != 0)
    assert out.shape == fan_out(x, hard).shape and not out.any()


@pytest.mark.parametrize("space", ["trellis", "cells"])
def test_a_single_path_supernet_pinned_to_an_architecture_computes_the_same_output(space):
    torch.manual_seed(1)
    net = (TrellisSearchNetwork(3, layers=3, levels=3, blocks=2, filter_multiplier=2, aspp_channels=8)
           if space == "trellis" else DartsSearchNetwork(10, init_channels=4, layers=3, num_blocks=2, multiplier=2))
    net.eval()
    arch = net.sample_architecture(np.random.default_rng(3))
    x = torch.randn(2, 3, 32, 32)
    with net.fixed_choices({name: (w, None) for name, w in net.architecture_weights(arch).items()}):
        every_op = net(x)
        net.single_path = True
        torch.testing.assert_close(net(x), every_op, rtol=0, atol=0)


def test_gdas_is_single_path_by_default_and_random_ws_on_request():
    net = TrellisSearchNetwork(3, layers=2, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8)
    schedule = SearchSchedule(4, 0, seed=0)
    assert build_method("gdas", {}, net, schedule).single_path and net.single_path
    build_method("gdas", {"single_path": False}, net, schedule)
    assert not net.single_path
    build_method("random_ws", {"single_path": True}, net, schedule)
    assert net.single_path
    build_method("darts", {}, net, schedule)
    assert not net.single_path


def test_a_gdas_step_reaches_every_alpha_and_runs_fewer_ops():
    torch.manual_seed(2)
    net = TrellisSearchNetwork(3, layers=2, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8)
    build_method("gdas", {}, net, SearchSchedule(4, 0, seed=0))
    net.train()
    net(torch.randn(2, 3, 16, 16)).square().mean().backward()
    assert bool((net.alphas.grad != 0).all())  # the coarse gradient reaches the ops not sampled
    assert bool(net.betas.grad.any())  # and the moves (sampled per source node, only their cells run)
    unrun = [p for p in net.weight_parameters() if p.grad is None]
    assert unrun  # the parameters of the ops no edge sampled got no gradient: they were not run


def _middle_node_and_inputs() -> tuple[TrellisNode, dict, torch.Tensor, torch.Tensor, torch.Size]:
    """Node (layer 2, level 1) of a 3-level trellis: transitions from levels 0, 1 and 2."""
    torch.manual_seed(4)
    f, blocks = 2, 2
    channels = {level: blocks * f * 2 ** level for level in range(3)}
    node = TrellisNode(1, [0, 1, 2], channels, channels[1], f, blocks, PRIMITIVES)
    prev = {level: torch.randn(2, channels[level], 16 // 2 ** level, 16 // 2 ** level) for level in range(3)}
    cell_weights = torch.softmax(torch.randn(num_edges(blocks), len(PRIMITIVES)), dim=-1)
    return node, prev, torch.randn(2, channels[1], 8, 8), cell_weights, torch.Size((8, 8))


@pytest.mark.parametrize("sampled", [[0], [2], [0, 2], []], ids=["down", "up", "two", "none"])
def test_a_single_path_node_runs_its_sampled_transitions_only_with_the_coarse_gradient_for_the_others(sampled):
    # a move is sampled per source node, so a node receives any number of them, none included
    node, prev, prev_prev, cell_weights, size = _middle_node_and_inputs()
    hard = torch.zeros(3)
    hard[sampled] = 1.0
    full_weights, single_weights = hard.clone().requires_grad_(), hard.clone().requires_grad_()
    full = node(prev, prev_prev, full_weights, cell_weights, size)
    single = node(prev, prev_prev, single_weights, cell_weights, size, chosen=(hard != 0).tolist())
    torch.testing.assert_close(single, full)  # the cell's batch norms run on 1 group instead of 3: rounding
    if not sampled:
        assert not single.any()
    upstream = torch.randn_like(full)
    (full * upstream).sum().backward()
    node.zero_grad(set_to_none=True)
    (single * upstream).sum().backward()
    expected = torch.full((3,), upstream.sum().item())  # a transition left out: the sum of the node's gradient
    expected[sampled] = full_weights.grad[sampled]
    torch.testing.assert_close(single_weights.grad, expected)
    for source in range(3):
        ran = [p.grad is not None for p in node.inputs[str(source)].parameters()]
        assert all(ran) if source in sampled else not any(ran), source


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_a_pinned_single_path_trellis_runs_the_cells_of_its_path_only(training):
    torch.manual_seed(5)
    net = TrellisSearchNetwork(3, layers=4, levels=3, blocks=2, filter_multiplier=2, aspp_channels=8)
    net.train(training)
    arch = net.sample_architecture(np.random.default_rng(6))
    x = torch.randn(2, 3, 32, 32)
    with net.fixed_choices({name: (w, None) for name, w in net.architecture_weights(arch).items()}):
        every_op = net(x)
        net.single_path = True
        single = net(x)
    torch.testing.assert_close(single, every_op)
    single.square().mean().backward()
    run = {key for key, node in net.nodes.items() if any(p.grad is not None for p in node.cell.parameters())}
    assert run == {net.node_key(layer, level) for layer, level in enumerate(arch.path)}


@pytest.mark.parametrize("option", ["checkpoint_cells", "selective_checkpoint"])
def test_a_single_path_gdas_step_recomputed_in_backward_equals_the_plain_step(option):
    steps = []
    for recompute in (False, True):
        torch.manual_seed(0)
        net = TrellisSearchNetwork(3, layers=3, levels=3, blocks=2, filter_multiplier=2, aspp_channels=8)
        setattr(net, option, recompute)
        build_method("gdas", {}, net, SearchSchedule(4, 0, seed=0))
        net.train()
        torch.manual_seed(1)  # the same Gumbel samples
        out = net(torch.randn(2, 3, 16, 16))
        out.square().mean().backward()
        steps.append((out.detach(), {name: p.grad for name, p in net.named_parameters()}))
    (plain, plain_grads), (recomputed, recomputed_grads) = steps
    assert torch.equal(plain, recomputed)
    for name, grad in plain_grads.items():  # the same parameters unrun (None), the others bit for bit
        assert (grad is None) == (recomputed_grads[name] is None), name
        assert grad is None or torch.equal(grad, recomputed_grads[name]), name
