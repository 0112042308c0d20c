"""Candidate ops, the mixed op and the search cell."""
import pytest
import torch
from torch import nn

from autoseg.ops import PRIMITIVES, build_op, list_ops, register_op
from autoseg.search.mixed_op import MixedCell, MixedOp


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

    assert list_ops("test-family") == ["conv_1x1_test"]
    assert build_op("conv_1x1_test", 3, 2, family="test-family")(torch.randn(1, 3, 8, 8)).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="unknown op"):
        build_op("conv_9x9", 3)


def test_mixed_op_equals_hand_weighted_sum():
    torch.manual_seed(0)
    mixed = MixedOp(4, 1, PRIMITIVES)
    x = torch.randn(2, 4, 7, 7)
    weights = torch.softmax(torch.randn(len(PRIMITIVES)), 0)
    expected = sum(w * op(x) for w, op in zip(weights, mixed.ops))
    assert torch.allclose(mixed(x, weights), expected, atol=1e-6)
    # pools carry an affine-free BN in the search network
    pool = mixed.ops[PRIMITIVES.index("max_pool_3x3")]
    assert isinstance(pool[1], nn.BatchNorm2d) and not pool[1].affine


def test_mixed_op_with_one_hot_weights_is_that_op():
    mixed = MixedOp(4, 2, PRIMITIVES)
    x = torch.randn(2, 4, 8, 8)
    i = PRIMITIVES.index("sep_conv_3x3")
    assert torch.allclose(mixed(x, torch.eye(len(PRIMITIVES))[i]), mixed.ops[i](x))


def test_mixed_cell_blocks_and_output():
    cell = MixedCell(4, num_blocks=3, multiplier=2, primitives=PRIMITIVES, reduction=True)
    assert len(cell.edges) == 2 + 3 + 4
    s = torch.randn(2, 4, 10, 10)
    out = cell(s, s, torch.softmax(torch.randn(9, 8), -1))
    assert out.shape == (2, 8, 5, 5)
    strides = [e.ops[PRIMITIVES.index("max_pool_3x3")][0].stride for e in cell.edges]
    assert strides == [2, 2, 2, 2, 1, 2, 2, 1, 1]
