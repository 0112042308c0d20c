"""Bilevel updates: first order and second order against exact autograd computations."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from autoseg.search.architect import Architect
from autoseg.search.darts_network import DartsSearchNetwork


def _setup(unrolled: bool, fd_epsilon: float = 0.01, scaler: torch.amp.GradScaler | None = None):
    torch.manual_seed(0)
    model = DartsSearchNetwork(num_classes=3, init_channels=4, layers=3, num_blocks=2, multiplier=2).double()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    train = (torch.randn(3, 3, 5, 5, dtype=torch.float64), torch.randint(0, 3, (3,)))
    valid = (torch.randn(3, 3, 5, 5, dtype=torch.float64), torch.randint(0, 3, (3,)))
    F.cross_entropy(model(train[0]), train[1]).backward()  # one real step: momentum buffers exist
    w_opt.step()
    w_opt.zero_grad()
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    return model, Architect(model, F.cross_entropy, a_opt, w_opt, unrolled, fd_epsilon, scaler), train, valid, w_opt


def _loss(model, params, inputs, target):
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return F.cross_entropy(functional_call(model, (params, buffers), (inputs,)), target)


def test_second_order_gradient_matches_autograd_double_backward():
    model, architect, train, valid, w_opt = _setup(unrolled=True, fd_epsilon=1e-5)
    xi = 0.1
    _, finite_difference = architect.unrolled_gradient(train, valid, xi)
    # exact: d/d alpha L_val(w'(alpha), alpha), w' = w - xi (m * buf + grad_w L_train + wd w)
    names, weights = architect.weight_names, architect.weight_params
    grads = torch.autograd.grad(_loss(model, dict(zip(names, weights)), *train), weights, create_graph=True)
    unrolled = [w - xi * (g + 3e-4 * w + 0.9 * w_opt.state[w]["momentum_buffer"]) for w, g in zip(weights, grads)]
    exact = torch.autograd.grad(_loss(model, dict(zip(names, unrolled)), *valid), model.arch_parameters())
    for fd, ex in zip(finite_difference, exact):
        assert torch.allclose(fd, ex, rtol=1e-5, atol=1e-7 * ex.abs().max().item())
    # the Hessian term matters: dropping it changes the gradient by far more than the tolerance
    first = torch.autograd.grad(_loss(model, dict(zip(names, [u.detach() for u in unrolled])), *valid),
                                model.arch_parameters())
    assert max((f - e).abs().max() for f, e in zip(first, exact)) > 1e-3 * max(e.abs().max() for e in exact)


def test_first_order_gradient_is_the_validation_loss_gradient():
    model, architect, _, valid, _ = _setup(unrolled=False)
    _, grads = architect.first_order_gradient(valid)
    expected = torch.autograd.grad(F.cross_entropy(model(valid[0]), valid[1]), model.arch_parameters())
    for g, e in zip(grads, expected):
        assert torch.allclose(g, e)


@pytest.mark.parametrize("unrolled", [False, True])
def test_step_updates_alpha_only(unrolled):
    model, architect, train, valid, _ = _setup(unrolled)
    weights = [w.detach().clone() for w in model.weight_parameters()]
    alphas = [a.detach().clone() for a in model.arch_parameters()]
    architect.step(train, valid, xi=0.1)
    assert all(torch.equal(w, v) for w, v in zip(weights, model.weight_parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(alphas, model.arch_parameters()))


@pytest.mark.parametrize("unrolled", [False, True])
def test_a_scaled_step_makes_the_unscaled_update(unrolled):
    """fp16's gradient scaling: the scaled gradients, unscaled by the scaler, give the same update."""
    plain, plain_architect, train, valid, _ = _setup(unrolled)
    scaled, scaled_architect, _, _, _ = _setup(unrolled, scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 12))
    plain_architect.step(train, valid, xi=0.1)
    scaled_architect.step(train, valid, xi=0.1)
    assert scaled_architect.scaler.get_scale() == 2.0 ** 12  # a step was taken, no overflow
    for a, b in zip(plain.arch_parameters(), scaled.arch_parameters()):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    assert all(not torch.equal(a, b) for a, b in zip(plain.arch_parameters(), _setup(unrolled)[0].arch_parameters()))
    for a, b in zip(plain.weight_parameters(), scaled.weight_parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("unrolled", [False, True])
def test_a_scaled_step_that_overflows_is_skipped_and_the_scale_backs_off(unrolled):
    model, architect, train, valid, _ = _setup(unrolled, scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 12))
    alphas = [a.detach().clone() for a in model.arch_parameters()]
    broken = valid[0].clone()
    broken[0, 0, 0, 0] = float("inf")
    architect.step(train, (broken, valid[1]), xi=0.1)
    assert all(torch.equal(a, b) for a, b in zip(alphas, model.arch_parameters()))
    assert architect.scaler.get_scale() == 2.0 ** 11


def test_the_finite_difference_hessian_product_runs_in_float32_under_autocast():
    """Half precision cannot resolve the weights moved by eps v: the two passes run in float32."""
    model, architect, train, _, _ = _setup(unrolled=True)
    model.float()
    batch = (train[0].float(), train[1])
    vector = [torch.randn_like(w) for w in architect.weight_params]
    exact = architect.hessian_vector_product(vector, batch)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            assert all(torch.equal(a, b) for a, b in zip(exact, architect.hessian_vector_product(vector, batch)))
