"""The search cells' batch norm: per-group statistics, and the affine-free norm that keeps its output."""
import copy

import pytest
import torch
from torch import nn

from autoseg.search.grouped_batchnorm import AffineFreeBatchNorm, GroupedBatchNorm2d, batch_groups


def _affine_free(x: torch.Tensor) -> torch.Tensor:
    channels = x.shape[1]
    y, invstd = AffineFreeBatchNorm.apply(x, torch.zeros(channels, dtype=x.dtype), torch.ones(channels, dtype=x.dtype),
                                          1e-5)
    return y + 0.1 * invstd.view(1, -1, 1, 1)  # use invstd too, so that its gradient path is checked


def test_affine_free_batch_norm_gradients_against_finite_differences():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_affine_free, (x,))
    assert torch.autograd.gradgradcheck(_affine_free, (x,))


def test_affine_free_batch_norm_keeps_its_output_not_its_input():
    x = torch.randn(4, 3, 6, 6, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = GroupedBatchNorm2d(3, affine=False)(x)
    pointers = {t.untyped_storage().data_ptr() for t in saved}
    assert out.untyped_storage().data_ptr() in pointers
    assert x.untyped_storage().data_ptr() not in pointers


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_grouped_batch_norm_equals_one_plain_batch_norm_per_group(affine, momentum):
    torch.manual_seed(0)
    groups, n, c = 3, 2, 4
    plain = nn.BatchNorm2d(c, affine=affine, momentum=momentum)
    if affine:
        nn.init.normal_(plain.weight), nn.init.normal_(plain.bias)
    grouped = GroupedBatchNorm2d(c, affine=affine, momentum=momentum)
    grouped.load_state_dict(plain.state_dict())
    parts = [torch.randn(n, c, 5, 5, requires_grad=True) for _ in range(groups)]
    stacked = torch.stack(parts, dim=1).flatten(0, 1)  # sample-major, as a trellis node stacks them
    with batch_groups(groups):
        out = grouped(stacked)
    expected = torch.stack([plain(p) for p in parts], dim=1).flatten(0, 1)
    assert torch.allclose(out, expected, atol=1e-5)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, parts, upstream)
    expected_grads = torch.autograd.grad(expected, parts, upstream)
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, atol=1e-5)
    for name, buffer in plain.named_buffers():
        assert torch.allclose(grouped.get_buffer(name).float(), buffer.float(), atol=1e-6), name
    grouped.eval(), plain.eval()
    with batch_groups(groups), torch.no_grad():
        assert torch.allclose(grouped(stacked), torch.stack([plain(p) for p in parts], 1).flatten(0, 1), atol=1e-5)


def test_affine_free_batch_norm_alone_equals_torch():
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(5, affine=False)
    ours = copy.deepcopy(plain)
    ours.__class__ = GroupedBatchNorm2d
    x = torch.randn(4, 5, 7, 3, requires_grad=True)
    out, expected = ours(x), plain(x)
    assert torch.allclose(out, expected, atol=1e-6)
    upstream = torch.randn_like(out)
    assert torch.allclose(torch.autograd.grad(out, x, upstream)[0], torch.autograd.grad(expected, x, upstream)[0],
                          atol=1e-5)
    for name, buffer in plain.named_buffers():
        assert torch.allclose(ours.get_buffer(name).float(), buffer.float(), atol=1e-7), name


def test_affine_free_batch_norm_in_bfloat16():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 6, 6)
    exact = x.clone().requires_grad_()
    low = x.to(torch.bfloat16).requires_grad_()
    bn = GroupedBatchNorm2d(3, affine=False)
    upstream = torch.randn_like(x)
    expected = torch.autograd.grad(bn(exact), exact, upstream)[0]
    out = bn(low)
    assert out.dtype == torch.bfloat16
    grad = torch.autograd.grad(out, low, upstream.to(torch.bfloat16))[0]
    assert grad.dtype == torch.bfloat16
    assert torch.allclose(grad.float(), expected, atol=0.05, rtol=0.05)
