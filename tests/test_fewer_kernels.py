"""Fewer kernels per search step, the same computation: each rearrangement against the plain one.

- the mixed op's weighted sum in a few ops (:mod:`autoseg.search.weighted_sum`) against the sum
  written term by term;
- the batch-norm running statistics queued and applied in a few ``_foreach_lerp_`` calls
  (:func:`autoseg.search.grouped_batchnorm.deferred_running_statistics`) against one update
  per group and norm;
- the per-edge 1x1 convs as one grouped conv against a matmul per edge;
- a whole trellis weight step against the step with all of them undone.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from test_collapse_guards import plain_mixed_cell

from autoseg.analysis.profiling import kernel_ops
from autoseg.search import stage_recomputation, wide_ops
from autoseg.search.grouped_batchnorm import GroupedBatchNorm2d, batch_groups, deferred_running_statistics
from autoseg.search.mixed_op import MixedCell, MixedEdges
from autoseg.search.trellis_network import TrellisSearchNetwork
from autoseg.search.weighted_sum import compact_index, weighted_sum
from autoseg.search.wide_ops import EdgeInput


def _term_by_term(weights, terms):
    out = None
    for o, y in enumerate(terms):
        term = weights[:, o].view(1, -1, *[1] * (y.dim() - 2)) * y
        out = term if out is None else out + term
    return out


def _terms(n=2, k=3, shape=(4, 5, 5), wide=4, shared=3, dtype=torch.float32):
    return ([torch.randn(n, k, *shape, dtype=dtype, requires_grad=True) for _ in range(wide)]
            + [torch.randn(n, 1, *shape, dtype=dtype, requires_grad=True) for _ in range(shared)])


@pytest.mark.parametrize("k, order", [(3, "shared last"), (5, "shared first"), (1, "one edge")])
def test_weighted_sum_is_bitwise_the_term_by_term_sum_and_has_its_gradients(k, order):
    torch.manual_seed(0)
    terms = _terms(k=k)
    if order == "shared first":
        terms = terms[4:] + terms[:4]
    weights = torch.softmax(torch.randn(k, len(terms)), -1).requires_grad_()
    out, expected = weighted_sum(weights, terms), _term_by_term(weights, terms)
    assert torch.equal(out, expected)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, [weights, *terms], upstream)
    expected_grads = torch.autograd.grad(expected, [weights, *terms], upstream)
    for g, e, t in zip(grads[1:], expected_grads[1:], terms):
        assert g.shape == t.shape
        if t.shape[1] == k:  # the same product as autograd's
            assert torch.equal(g, e)
        else:  # summed over the edges
            assert torch.allclose(g, e, rtol=1e-6, atol=1e-7)
    assert torch.allclose(grads[0], expected_grads[0], rtol=1e-5, atol=1e-7)


def test_weighted_sum_gradients_against_finite_differences():
    torch.manual_seed(0)
    terms = _terms(k=2, shape=(2, 3, 3), wide=2, shared=1, dtype=torch.float64)
    weights = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, *t: weighted_sum(w, t), (weights, *terms))
    assert torch.autograd.gradgradcheck(lambda w, *t: weighted_sum(w, t), (weights, *terms))


def test_weighted_sum_checks_its_weights_and_compact_index():
    with pytest.raises(ValueError, match="3 weight columns for 2 terms"):
        weighted_sum(torch.ones(2, 3), _terms(k=2, wide=1, shared=1))
    assert compact_index([1, 2, 3]) == slice(1, 4)
    assert compact_index([0, 2]) == [0, 2]


def test_mixed_edges_equal_the_term_by_term_sum_with_none_in_the_middle():
    torch.manual_seed(0)
    primitives = ["max_pool_3x3", "none", "skip_connect", "sep_conv_3x3"]
    mixed = MixedEdges(4, 3, 1, primitives)
    assert mixed.columns == [0, 2, 3]
    x = torch.randn(2, 4, 6, 6)
    weights = torch.softmax(torch.randn(3, 4), -1)
    reference = copy.deepcopy(mixed)
    inputs = EdgeInput(x)
    expected = _term_by_term(weights[:, [0, 2, 3]], [op(inputs) for op in reference.ops])
    assert torch.equal(mixed(x, weights), expected)


def _updated_running_statistics(deferred: bool, momentum: float | None):
    torch.manual_seed(0)
    norms = [GroupedBatchNorm2d(4, affine=False, momentum=momentum), GroupedBatchNorm2d(4, momentum=momentum)]
    calls = [(0, 3), (1, 2), (0, 1), (0, 2), (1, 1)]  # (norm, groups): norms run more than once, groups vary
    inputs = [torch.randn(2 * groups, 4, 5, 5) for _, groups in calls]
    with deferred_running_statistics() if deferred else torch.enable_grad():
        for (i, groups), x in zip(calls, inputs):
            with batch_groups(groups):
                norms[i](x)
    return [b for norm in norms for b in norm.buffers()]


@pytest.mark.parametrize("momentum", [0.1, None])
def test_deferred_running_statistics_are_bitwise_the_updates_one_by_one(momentum):
    for deferred, immediate in zip(_updated_running_statistics(True, momentum),
                                   _updated_running_statistics(False, momentum)):
        assert torch.equal(deferred, immediate)


def test_deferred_running_statistics_take_one_foreach_call_per_round():
    norms = [GroupedBatchNorm2d(4, affine=False) for _ in range(5)]
    x = torch.randn(6, 4, 5, 5)

    def run():
        with deferred_running_statistics(), deferred_running_statistics():  # the inner block joins the outer one
            for norm in norms:
                with batch_groups(3):
                    norm(x)

    counts = kernel_ops(run)
    # three groups: three rounds of one lerp (means and variances of all norms) and one count increment
    assert counts["aten._foreach_lerp_"] == 3 and counts["aten._foreach_add_"] == 3 and "aten.lerp_" not in counts
    assert counts["aten.zeros"] == 1  # the batch statistics of all norms share one zeroed block
    assert all(norm.num_batches_tracked.item() == 3 for norm in norms)


def test_affine_free_batch_norm_backward_is_one_fused_kernel():
    norm = GroupedBatchNorm2d(4, affine=False)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    upstream = torch.randn(2, 4, 5, 5)
    for _ in range(2):  # the first backward also makes the constant zero means and unit deviations it reuses
        out = norm(x)
        counts = kernel_ops(lambda: torch.autograd.grad(out, x, upstream))
    assert counts == {"aten.native_batch_norm_backward": 1}


def _pointwise_matmul(y, weight):
    """The per-edge 1x1 convs as one matmul per edge."""
    n, k, _, h, w = y.shape
    return torch.stack([torch.matmul(weight[i], y[:, i].reshape(n, -1, h * w)) for i in range(k)],
                       1).view(n, k, -1, h, w)


def test_pointwise_grouped_conv_equals_a_matmul_per_edge():
    torch.manual_seed(0)
    y = torch.randn(3, 4, 6, 5, 7, requires_grad=True)
    weight = torch.randn(4, 8, 6, requires_grad=True)
    out, expected = stage_recomputation.pointwise(y, weight), _pointwise_matmul(y, weight)
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-6)
    upstream = torch.randn_like(out)
    for g, e in zip(torch.autograd.grad(out, [y, weight], upstream),
                    torch.autograd.grad(expected, [y, weight], upstream)):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-5)


def _mixed_edges_term_by_term(self, x, weights, edge_weights=None):
    inputs = EdgeInput(x)
    return _term_by_term(weights[:, self.active], [op(inputs) for op in self.ops])


def test_a_trellis_weight_step_equals_the_step_without_the_rearrangements(monkeypatch):
    torch.manual_seed(0)
    net = TrellisSearchNetwork(3, layers=3, levels=3, blocks=3, filter_multiplier=2, aspp_channels=8)
    plain = copy.deepcopy(net)
    x, target = torch.randn(2, 3, 24, 24), torch.randint(0, 3, (2, 24, 24))
    results = []
    for model, rearranged in ((net, True), (plain, False)):
        if not rearranged:  # weighted sums term by term, edges by select, statistics one by one, a matmul per edge
            monkeypatch.setattr(MixedEdges, "forward", _mixed_edges_term_by_term)
            monkeypatch.setattr(MixedCell, "forward", plain_mixed_cell)  # edges by select
            monkeypatch.setattr(TrellisSearchNetwork, "forward", TrellisSearchNetwork.forward.__wrapped__)
            monkeypatch.setattr(wide_ops, "pointwise", _pointwise_matmul)
        optimizer = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4,
                                    foreach=rearranged)
        out = model(x)
        F.cross_entropy(out, target).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        optimizer.step()
        results.append((out, grads, model.state_dict()))
    (out, grads, state), (plain_out, plain_grads, plain_state) = results
    assert torch.allclose(out, plain_out, rtol=1e-5, atol=1e-6)
    assert grads.keys() == plain_grads.keys() and {"alphas", "betas"} <= grads.keys()
    for name, grad in grads.items():  # weights, alpha and beta
        assert torch.allclose(grad, plain_grads[name], rtol=1e-4, atol=1e-6), name
    for name, value in state.items():  # weights after the step, running statistics
        assert torch.allclose(value.float(), plain_state[name].float(), rtol=1e-5, atol=1e-6), name
    assert any(b.is_floating_point() and b.abs().sum() > 0 for b in net.buffers())


def test_a_trellis_weight_step_updates_every_running_statistic_in_a_few_calls():
    torch.manual_seed(0)
    net = TrellisSearchNetwork(3, layers=3, levels=3, blocks=3, filter_multiplier=2, aspp_channels=8)
    x = torch.randn(2, 3, 24, 24)
    norms = [m for m in net.modules() if isinstance(m, GroupedBatchNorm2d) and not m.affine]
    counts = kernel_ops(lambda: net(x).sum().backward())
    # a node stacks up to three transitions: three rounds of updates, whatever the number of norms
    assert counts["aten._foreach_lerp_"] == 3 and "aten.lerp_" not in counts and len(norms) > 100
    # every norm: one kernel forward, one backward
    assert counts["aten.native_batch_norm_backward"] == counts["aten.native_batch_norm"] > len(norms)
