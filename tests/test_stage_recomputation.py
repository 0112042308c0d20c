"""Selective recomputation of the conv stages (``selective_checkpoint``): the same outputs and
gradients, bit for bit, as autograd's plain computation, with less kept for backward."""
import copy

import pytest
import torch
import torch.nn.functional as F

from autoseg.analysis.profiling import saved_activation_bytes
from autoseg.search.darts_network import DartsSearchNetwork
from autoseg.search.mixed_op import MixedEdges
from autoseg.search.stage_recomputation import recomputed_relu, set_recomputation
from autoseg.search.wide_ops import EdgeInput, WideDilConv, WideSepConv

# (kernel, stride, dilation): the stages of sep_conv_3x3 / 5x5 and dil_conv_3x3 / 5x5, and a reduction edge
STAGES = [(3, 1, 1), (5, 1, 1), (3, 1, 2), (5, 1, 2), (3, 2, 1), (5, 2, 2)]


def _stage_run(stage, x, shared, upstream):
    inputs = x.detach().requires_grad_()
    if shared:
        out = stage(EdgeInput(inputs, stage.recompute_activations))
    else:
        out = stage(inputs)
    grads = torch.autograd.grad(out, [inputs, stage.depthwise, stage.pointwise], upstream)
    return out.detach(), grads


@pytest.mark.parametrize("shared", [True, False], ids=["shared input", "input per edge"])
@pytest.mark.parametrize("edges", [1, 3])
@pytest.mark.parametrize("kernel,stride,dilation", STAGES)
def test_a_recomputed_stage_equals_the_plain_stage_bit_for_bit(kernel, stride, dilation, edges, shared):
    torch.manual_seed(0)
    plain = WideDilConv(4, edges, kernel, stride if shared else 1, dilation, shared_input=shared)
    recomputing = copy.deepcopy(plain)
    recomputing.recompute_activations = True
    x = torch.randn(2, 4, 11, 11) if shared else torch.randn(2, edges, 4, 11, 11)
    out = plain(EdgeInput(x) if shared else x)
    upstream = torch.randn_like(out)
    (plain_out, plain_grads), (out, grads) = (_stage_run(stage, x, shared, upstream)
                                              for stage in (plain, recomputing))
    assert torch.equal(plain_out, out)
    for expected, got in zip(plain_grads, grads):  # the input's, the depthwise and the pointwise weights'
        assert torch.equal(expected, got)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_recomputed_stage_under_autocast_casts_as_autocast_does(dtype):
    torch.manual_seed(0)
    plain = WideSepConv(4, 2, 3, 1)
    recomputing = copy.deepcopy(plain)
    set_recomputation(recomputing, True)
    x = torch.randn(2, 4, 9, 9)
    results = []
    for stage in (plain, recomputing):
        inputs = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=dtype):
            out = stage(EdgeInput(inputs, stage[0].recompute_activations))
        assert out.dtype == dtype
        out.float().square().sum().backward()
        results.append((out, inputs.grad, [p.grad for p in stage.parameters()]))
    (plain_out, plain_grad, plain_weights), (out, grad, weights) = results
    assert torch.equal(plain_out, out) and torch.equal(plain_grad, grad)
    for expected, got in zip(plain_weights, weights):
        assert expected.dtype == got.dtype == torch.float32 and torch.equal(expected, got)


def test_recomputed_relu_keeps_its_input_and_gives_relus_gradient():
    x = torch.randn(3, 5, requires_grad=True)
    upstream = torch.randn(3, 5)
    assert torch.equal(recomputed_relu(x), torch.relu(x))
    assert torch.equal(torch.autograd.grad(recomputed_relu(x), x, upstream)[0],
                       torch.autograd.grad(torch.relu(x), x, upstream)[0])
    y = x * 2  # made in the forward pass: 60 bytes
    assert saved_activation_bytes(lambda: recomputed_relu(y).exp()) == 2 * 60  # y and the exp's output
    assert saved_activation_bytes(lambda: torch.relu(y).exp()) == 2 * 60  # the relu's output and the exp's


def test_a_recomputed_separable_conv_keeps_neither_relu_nor_depthwise_outputs():
    # plain, a separable conv keeps per stage the ReLU's output and the depthwise conv's output (the
    # pointwise conv's input) besides its batch-norm output; recomputing, it keeps the state instead of
    # its ReLU (the state is kept anyway, by the pools and the identity) and neither depthwise output
    torch.manual_seed(0)
    n, c, k, size = 2, 4, 3, 8
    plain = WideSepConv(c, k, 3, 1)
    recomputing = copy.deepcopy(plain)
    set_recomputation(recomputing, True)
    x = torch.randn(n, c, size, size)
    kept = {stage: saved_activation_bytes(lambda: stage(EdgeInput(x, stage[0].recompute_activations)))
            for stage in (plain, recomputing)}
    edge_tensor = n * k * c * size * size * 4  # (N, k, C, H, W) float32
    # the first stage's ReLU (state-sized, replaced by the state), its depthwise output, the second
    # stage's ReLU and its depthwise output
    assert kept[plain] - kept[recomputing] == 3 * edge_tensor


def test_selective_checkpoint_switches_every_stage_of_the_cifar_supernet_and_changes_nothing():
    # the trellis supernet's equality, guards and second-order gradients included, is in test_node_recomputation
    torch.manual_seed(0)
    plain = DartsSearchNetwork(3, init_channels=4, layers=3, num_blocks=2, multiplier=2)  # a reduction cell too
    net = DartsSearchNetwork(3, init_channels=4, layers=3, num_blocks=2, multiplier=2, selective_checkpoint=True)
    net.load_state_dict(plain.state_dict())
    switched = [m for m in net.modules() if isinstance(m, (WideDilConv, MixedEdges))]
    assert switched and all(m.recompute_activations for m in switched) and net.selective_checkpoint
    assert not any(m.recompute_activations for m in plain.modules() if isinstance(m, (WideDilConv, MixedEdges)))
    x = torch.randn(2, 3, 16, 16)
    x_saved = [saved_activation_bytes(lambda: model(x)) for model in (plain, net)]
    assert x_saved[1] < 0.75 * x_saved[0]
    for model in (plain, net):
        torch.manual_seed(1)
        F.cross_entropy(model(x), torch.tensor([0, 2])).backward()
    for (name, p), q in zip(plain.named_parameters(), net.parameters()):
        assert torch.equal(p.grad, q.grad), name


@pytest.mark.parametrize("shared", [True, False], ids=["shared input", "input per edge"])
def test_a_gradient_for_the_input_alone_equals_the_plain_one(shared):
    # as in the architecture step, where only alpha's gradient is wanted: the stage then skips the
    # weights' gradients and the depthwise recomputation, as autograd skips the weights' gradients
    torch.manual_seed(0)
    plain = WideDilConv(4, 3, 5, 1, 2, shared_input=shared)
    recomputing = copy.deepcopy(plain)
    recomputing.recompute_activations = True
    x = (torch.randn(2, 4, 9, 9) if shared else torch.randn(2, 3, 4, 9, 9)) * 2  # not a leaf
    grads = []
    for stage in (plain, recomputing):
        leaf = x.detach().requires_grad_()
        inputs = leaf * 1
        out = stage(EdgeInput(inputs, stage.recompute_activations) if shared else inputs)
        grads.append(torch.autograd.grad(out.square().sum(), leaf)[0])
    assert torch.equal(*grads)
