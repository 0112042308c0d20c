"""Candidate ops, the mixed ops and the search cell, against the reference computation edge by edge."""
import copy

import pytest
import torch
from torch import nn

from autoseg.space.genotype import num_edges
from autoseg.layers import ops as op_registry
from autoseg.space.genotype import Genotype
from autoseg.models import create_model
from autoseg.layers.ops import PRIMITIVES, build_op, list_op_families, list_ops, register_op
from autoseg.search.trellis_network import TrellisSearchNetwork
from autoseg.analysis.profiling import saved_activation_bytes
from autoseg.search import wide_ops
from autoseg.search.mixed_op import MixedCell, MixedEdges


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 9])
def test_op_output_shape_and_stride(name, stride, size):
    op = build_op(name, 6, stride, affine=False)
    out = op(torch.randn(2, 6, size, size))
    expected = size if stride == 1 else (size + 1) // 2
    assert out.shape == (2, 6, expected, expected)


def test_none_is_zero_and_skip_is_identity():
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(build_op("none", 4, 1)(x), torch.zeros_like(x))
    assert torch.equal(build_op("skip_connect", 4, 1)(x), x)


def test_reference_definitions_parameter_counts():
    c = 8
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # affine=False: only conv weights. sep_conv = (dw kxk + pw 1x1) twice; dil_conv once.
    assert count(build_op("sep_conv_3x3", c, 1, affine=False)) == 2 * (9 * c + c * c)
    assert count(build_op("sep_conv_5x5", c, 1, affine=False)) == 2 * (25 * c + c * c)
    assert count(build_op("dil_conv_3x3", c, 1, affine=False)) == 9 * c + c * c
    assert count(build_op("dil_conv_5x5", c, 1, affine=False)) == 25 * c + c * c
    assert count(build_op("skip_connect", c, 2, affine=False)) == c * c  # FactorizedReduce: two 1x1 c -> c/2
    assert count(build_op("max_pool_3x3", c, 1)) == 0
    # the avg pool excludes padding from the average
    ones = torch.ones(1, 1, 4, 4)
    assert torch.allclose(build_op("avg_pool_3x3", 1, 1)(ones), ones)


def test_dilated_op_uses_dilation_two():
    conv = [m for m in build_op("dil_conv_5x5", 4, 1).modules() if isinstance(m, nn.Conv2d)][0]
    assert conv.dilation == (2, 2) and conv.kernel_size == (5, 5) and conv.groups == 4


def test_registry_takes_a_new_op_in_one_entry():
    @register_op("conv_1x1_test", family="test-family")
    def _conv(channels, stride, affine):
        return nn.Conv2d(channels, channels, 1, stride=stride)

    assert list_ops("test-family") == [*PRIMITIVES, "conv_1x1_test"]  # the base family's, then its own
    assert build_op("conv_1x1_test", 3, 2, family="test-family")(torch.randn(1, 3, 8, 8)).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="unknown op"):
        build_op("conv_9x9", 3)
    with pytest.raises(ValueError, match="unknown op"):
        build_op("conv_1x1_test", 3)  # the base family does not take a family's own op


@pytest.fixture
def registered_op(monkeypatch):
    """A new op, ``conv_3x3_test``, registered once in the base family for the test's duration."""
    monkeypatch.setattr(op_registry, "_OPS", {family: dict(table) for family, table in op_registry._OPS.items()})

    @register_op("conv_3x3_test")
    def _conv(channels, stride, affine):
        return nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, stride, 1, bias=False),
                             nn.BatchNorm2d(channels, affine=affine))

    return "conv_3x3_test"


def test_an_op_registered_once_searches_decodes_and_retrains(registered_op):
    primitives = ["none", "skip_connect", registered_op]
    net = TrellisSearchNetwork(3, layers=2, levels=2, blocks=2, filter_multiplier=4, primitives=primitives,
                               aspp_channels=8)
    with torch.no_grad():
        net.alphas[:, 2] = 5.0  # the new op wins every edge
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 3, 32, 32)
    arch = net.decode()
    assert {op for block in arch.cell.blocks for op, _ in block} == {registered_op}
    model = create_model("autodeeplab-arch", 3, arch=arch, filter_multiplier=4).eval()
    assert model(x).shape == (2, 3, 32, 32)
    darts = create_model("darts-cifar", 10, genotype=Genotype(arch.cell, arch.cell), C=4, layers=3).eval()
    assert darts(x).shape == (2, 10)


@pytest.mark.parametrize("family,name", [(family, name) for family in list_op_families() for name in list_ops(family)])
@pytest.mark.parametrize("stride", [1, 2])
def test_every_registered_op_keeps_the_channels_and_applies_the_stride(name, family, stride):
    """The ops registry's contract test: every op of every family, as registered when the tests
    are collected."""
    out = build_op(name, 4, stride, family=family)(torch.randn(2, 4, 9, 9))
    assert out.shape == (2, 4, 9 if stride == 1 else 5, 9 if stride == 1 else 5)


def _load_bn(edge_bn: nn.BatchNorm2d, wide_bn: nn.BatchNorm2d, edge: int, num_edges: int) -> None:
    edge_bn.running_mean.copy_(wide_bn.running_mean.view(num_edges, -1)[edge])
    edge_bn.running_var.copy_(wide_bn.running_var.view(num_edges, -1)[edge])
    edge_bn.num_batches_tracked.copy_(wide_bn.num_batches_tracked)


def _load_dil_conv(edge_op: nn.Sequential, wide: wide_ops.WideDilConv, edge: int) -> None:
    edge_op[1].weight.data.copy_(wide.depthwise[edge])
    edge_op[2].weight.data.copy_(wide.pointwise[edge][..., None, None])
    _load_bn(edge_op[3], wide.bn, edge, wide.shape.edges)


def edge_op(wide: nn.Module, name: str, edge: int, channels: int, stride: int) -> nn.Module:
    """Op ``name`` of one edge as the reference search network builds it (registry op, pools
    followed by an affine-free BN), holding edge ``edge``'s weights and statistics of ``wide``."""
    op = build_op(name, channels, stride, affine=False)
    if isinstance(wide, wide_ops.SharedPool):
        bn = nn.BatchNorm2d(channels, affine=False)
        bn.load_state_dict(wide.bn.state_dict())
        return nn.Sequential(op, bn)
    if isinstance(wide, wide_ops.WideSepConv):
        _load_dil_conv(op[0], wide[0], edge)
        _load_dil_conv(op[1], wide[1], edge)
    elif isinstance(wide, wide_ops.WideDilConv):
        _load_dil_conv(op, wide, edge)
    elif isinstance(wide, wide_ops.WideFactorizedReduce):
        op.conv_1.weight.data.copy_(wide.conv_1[edge][..., None, None])
        op.conv_2.weight.data.copy_(wide.conv_2[edge][..., None, None])
        _load_bn(op.bn, wide.bn, edge, wide.conv_1.shape[0])
    elif isinstance(wide, wide_ops.EdgeStack):
        op = copy.deepcopy(wide.ops[edge])
    return op


def reference_edges(cell: MixedCell, channels: int, reduction: bool) -> dict[int, list[tuple[int, nn.Module]]]:
    """alpha row -> [(op index, edge op)] for every edge of ``cell``, one module per op and edge."""
    edges = {}
    for state, (fan_out, targets) in enumerate(zip(cell.fan_outs, cell.targets)):
        stride = 2 if reduction and state < 2 else 1
        for slot, block in enumerate(targets):
            edges[num_edges(block) + state] = [
                (i, edge_op(wide, PRIMITIVES[i], slot, channels, stride))
                for i, wide in zip(fan_out.active, fan_out.ops)]
    return edges


def reference_cell(edges, num_blocks: int, multiplier: int, s0, s1, weights):
    """docs/DESIGN.md §1 written out: block i = sum over states j of sum_o w[(i, j), o] * op_o(state j)."""
    states = [s0, s1]
    for block in range(num_blocks):
        states.append(sum(weights[num_edges(block) + j, i] * op(h)
                          for j, h in enumerate(states) for i, op in edges[num_edges(block) + j]))
    return torch.cat(states[-multiplier:], dim=1)


def _buffers(edges) -> list[torch.Tensor]:
    return [b for ops in edges.values() for _, op in ops for b in op.buffers()]


@pytest.mark.parametrize("reduction", [False, True])
@pytest.mark.parametrize("size", [8, 9])
def test_mixed_cell_equals_the_edge_by_edge_reference(reduction, size):
    torch.manual_seed(0)
    channels, blocks, multiplier = 4, 3, 2
    cell = MixedCell(channels, blocks, multiplier, PRIMITIVES, reduction)
    edges = reference_edges(cell, channels, reduction)
    assert sum(len(ops) for ops in edges.values()) == num_edges(blocks) * (len(PRIMITIVES) - 1)
    s0, s1 = (torch.randn(2, channels, size, size, requires_grad=True) for _ in range(2))
    alpha = torch.randn(num_edges(blocks), len(PRIMITIVES), requires_grad=True)
    out = cell(s0, s1, alpha.softmax(-1))
    expected = reference_cell(edges, blocks, multiplier, s0, s1, alpha.softmax(-1))
    reduced = (size + 1) // 2 if reduction else size
    assert out.shape == expected.shape == (2, multiplier * channels, reduced, reduced)
    assert torch.allclose(out, expected, atol=1e-5)
    # gradients of the inputs, of alpha and of every weight
    upstream = torch.randn_like(out)
    out.backward(upstream)
    grads = [t.grad.clone() for t in (s0, s1, alpha)]
    for t in (s0, s1, alpha):
        t.grad = None
    expected.backward(upstream)
    for g, t in zip(grads, (s0, s1, alpha)):
        assert torch.allclose(g, t.grad, atol=1e-5, rtol=1e-4)
    grad_cell = copy.deepcopy(cell)  # a cell whose weights are the gradients, cut into edges like the weights
    for p, weight in zip(grad_cell.parameters(), cell.parameters()):
        p.data = weight.grad
    grad_edges = reference_edges(grad_cell, channels, reduction)
    for row, ops in edges.items():
        for (_, op), (_, grad_op) in zip(ops, grad_edges[row]):
            for p, g in zip(op.parameters(), grad_op.parameters()):
                assert torch.allclose(p.grad, g, atol=1e-5, rtol=1e-4)
    # the running statistics the training pass left behind, then evaluation mode
    for b, expected_b in zip(_buffers(reference_edges(cell, channels, reduction)), _buffers(edges)):
        assert torch.allclose(b.float(), expected_b.float(), atol=1e-6)
    cell.eval()
    for ops in edges.values():
        for _, op in ops:
            op.eval()
    with torch.no_grad():
        assert torch.allclose(cell(s0, s1, alpha.softmax(-1)),
                              reference_cell(edges, blocks, multiplier, s0, s1, alpha.softmax(-1)), atol=1e-5)


def test_mixed_edges_with_one_hot_weights_is_that_op_on_each_edge():
    torch.manual_seed(0)
    mixed = MixedEdges(4, 3, 2, PRIMITIVES)
    x = torch.randn(2, 4, 8, 8)
    i = PRIMITIVES.index("dil_conv_5x5")
    one_hot = torch.eye(len(PRIMITIVES))[i].expand(3, -1)
    out = mixed(x, one_hot)
    wide = mixed.ops[mixed.active.index(i)]
    for edge in range(3):
        assert torch.allclose(out[:, edge], edge_op(wide, "dil_conv_5x5", edge, 4, 2)(x), atol=1e-5)
    # pools carry an affine-free BN in the search network, computed once for all edges
    pool = mixed.ops[mixed.active.index(PRIMITIVES.index("max_pool_3x3"))]
    assert isinstance(pool, wide_ops.SharedPool) and not pool.bn.affine and pool.pool.stride == 2


def test_an_op_without_a_wide_form_runs_edge_by_edge():
    @register_op("test_conv_3x3_no_wide_form")
    def _conv(channels, stride, affine):
        return nn.Sequential(nn.Conv2d(channels, channels, 3, stride, 1, bias=False),
                             nn.BatchNorm2d(channels, affine=affine))

    torch.manual_seed(0)
    primitives = ["none", "test_conv_3x3_no_wide_form", "skip_connect"]
    cell = MixedCell(4, 2, 2, primitives, reduction=False)
    fan_out = cell.fan_outs[0]
    assert isinstance(fan_out.ops[0], wide_ops.EdgeStack) and len(fan_out.ops[0].ops) == 2
    x = torch.randn(2, 4, 6, 6)
    weights = torch.softmax(torch.randn(2, 3), -1)
    expected = torch.stack([weights[e, 1] * fan_out.ops[0].ops[e](x) + weights[e, 2] * x for e in range(2)], 1)
    assert torch.allclose(fan_out(x, weights), expected, atol=1e-6)


def test_mixed_cell_blocks_and_strides():
    cell = MixedCell(4, num_blocks=3, multiplier=2, primitives=PRIMITIVES, reduction=True)
    assert cell.targets == [[0, 1, 2], [0, 1, 2], [1, 2], [2]]  # state j feeds blocks max(j - 1, 0) ..
    pool = PRIMITIVES.index("max_pool_3x3")
    strides = [f.ops[f.active.index(pool)].pool.stride for f in cell.fan_outs]
    assert strides == [2, 2, 1, 1]
    s = torch.randn(2, 4, 10, 10)
    assert cell(s, s, torch.softmax(torch.randn(9, 8), -1)).shape == (2, 8, 5, 5)
    with pytest.raises(ValueError, match="multiplier"):
        MixedCell(4, num_blocks=3, multiplier=4, primitives=PRIMITIVES)
    with pytest.raises(ValueError, match="other than 'none'"):
        MixedEdges(4, 2, 1, ["none"])


def test_mixed_cell_saves_fewer_activations_than_the_edge_by_edge_reference():
    torch.manual_seed(0)
    cell = MixedCell(8, 4, 4, PRIMITIVES)
    edges = reference_edges(cell, 8, reduction=False)
    s0, s1 = (torch.randn(2, 8, 16, 16, requires_grad=True) for _ in range(2))
    weights = torch.softmax(torch.randn(num_edges(4), len(PRIMITIVES), requires_grad=True), -1)
    wide = saved_activation_bytes(lambda: cell(s0, s1, weights))
    reference = saved_activation_bytes(lambda: reference_cell(edges, 4, 4, s0, s1, weights))
    assert wide < 0.75 * reference
