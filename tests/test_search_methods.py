"""Search methods as plug-ins (autoseg.search.methods): the darts method reproduces the search as
it was before methods were plug-ins, every registered method honours the contract, and settings
are checked."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_same, load_tool, write_tiny_cifar_search_config, write_tiny_search_config
from darts_reference import REFERENCE_FILE, SEARCHES, run_reference_search

from autoseg.config import SearchConfig, from_dict
from autoseg.engine.checkpoint import load_checkpoint
from autoseg.utils.errors import UserError
from autoseg.search.darts_network import DartsSearchNetwork
from autoseg.search.methods import SEARCH_METHODS, SearchSchedule, build_method, list_methods, method_settings
from autoseg.search.methods import UpdateTools
from autoseg.search.methods.drnas import DIRICHLET, dirichlet_kl_to_uniform
from autoseg.search.methods.gdas import Gdas, GdasSettings, GumbelRelaxation
from autoseg.search.trellis_network import TrellisSearchNetwork
from autoseg.space.trellis import transition_mask

REFERENCE = torch.load(REFERENCE_FILE, weights_only=False)


def _same_or_close(expected: torch.Tensor, actual: torch.Tensor, exact: bool) -> bool:
    return torch.equal(expected, actual) if exact else torch.allclose(expected, actual, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", SEARCHES)
def test_darts_method_reproduces_the_search_before_methods_were_plug_ins(name, tmp_path):
    """Weights, alpha, beta, Adam's state and the architecture file of a short search equal those
    recorded with the code before the plug-ins (bit for bit on a CPU with the same kernels)."""
    reference = REFERENCE[name]
    now = run_reference_search(name, tmp_path)
    exact = reference["cpu"] == now["cpu"]  # another CPU's kernels may round differently
    assert now["model"].keys() == reference["model"].keys()
    differing = [key for key, value in reference["model"].items()
                 if not _same_or_close(value, now["model"][key], exact)]
    assert not differing, differing
    for expected, actual in zip(reference["a_optimizer"]["state"].values(), now["a_optimizer"]["state"].values()):
        assert all(_same_or_close(expected[k], actual[k], exact) for k in ("exp_avg", "exp_avg_sq"))
    if exact:
        assert now["arch_file"] == reference["arch_file"]


def test_train_unrolled_of_earlier_configs_is_the_darts_methods_setting(tmp_path):
    config = yaml.safe_load(write_tiny_search_config(tmp_path / "a.yaml").read_text())
    config["train"]["unrolled"] = True
    loaded = from_dict(SearchConfig, config)
    assert loaded.train.method == "darts" and loaded.method_options == {"unrolled": True}
    assert method_settings("darts", loaded.method_options).unrolled is True
    config["train"]["unrolled"] = False
    assert from_dict(SearchConfig, config).method_options == {}
    config["train"].update(unrolled=True, method="gdas")
    with pytest.raises(UserError, match="train.unrolled is a setting of the darts method"):
        from_dict(SearchConfig, config)


@pytest.mark.parametrize("options,message", [
    ({"unroled": True}, "unknown key"),
    ({"unrolled": "yes"}, "must be true or false"),
    ({"fd_epsilon": 0}, "fd_epsilon must be above 0"),
])
def test_bad_method_options_are_one_user_error_naming_the_key(options, message):
    with pytest.raises(UserError, match=message):
        method_settings("darts", options)


def test_an_unknown_method_lists_the_registered_ones(tool, tmp_path):
    config = write_tiny_search_config(tmp_path / "a.yaml", method="dartz")
    with pytest.raises(UserError, match="unknown search method 'dartz'; registered methods: darts"):
        tool("search")(["--config", str(config), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_search_help_lists_every_registered_method(capsys, tool):
    with pytest.raises(SystemExit):
        tool("search")(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in list_methods())


def test_method_options_on_the_command_line_are_checked_before_a_run_starts(tool, tmp_path):
    config = write_tiny_search_config(tmp_path / "a.yaml")
    search = load_tool("search")
    args = search.parse_args(["--config", str(config), "--method", "random_ws", "--method-option", "candidates=3",
                              "--method-option", "eval_batches=1"])
    assert search.resolve_config(args).method_options == {"candidates": 3, "eval_batches": 1}
    with pytest.raises(UserError, match="unknown key.*candidate.*random_ws"):
        tool("search")(["--config", str(config), "--method", "random_ws", "--method-option", "candidate=3",
                        "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_a_resumed_search_refuses_new_method_settings(tool, tmp_path):
    run = tmp_path / "run"
    tool("search")(["--config", str(write_tiny_search_config(tmp_path / "a.yaml")), "--out", str(run),
                    "--device", "cpu", "--max-steps", "1"])
    for flags in (["--method-option", "unrolled=true"], ["--unrolled"]):
        with pytest.raises(UserError, match="keeps the method settings of its config.yaml"):
            tool("search")(["--resume", str(run), *flags])


# -- every registered method, in every search space ---------------------------------------------

CONTRACT_OPTIONS = {"darts_pt": {"interval": 0.125, "eval_batches": 1},
                    "random_ws": {"candidates": 3, "eval_batches": 1}}
"""Settings that fit a method into the contract test's 2 epochs of 4 steps (none: its defaults)."""


def _method_config(tmp_path: Path, method: str, space: str) -> Path:
    """A tiny search of ``space`` (2 epochs of 4 steps, no warm-up) with ``method``."""
    path = (write_tiny_search_config(tmp_path / "tiny.yaml") if space == "hierarchical"
            else write_tiny_cifar_search_config(tmp_path))
    config = yaml.safe_load(path.read_text())
    config["train"].update(epochs=2, warmup_epochs=0, method=method)
    config["method_options"] = CONTRACT_OPTIONS.get(method, {})
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def full_searches(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], tuple[Path, dict]]:
    """``full_searches(method, space)``: the run directory of the uninterrupted contract search
    (:func:`_method_config`) and the architecture the search returned, searched once for the module
    (the decode test and the resume test both read it)."""
    runs: dict[tuple[str, str], tuple[Path, dict]] = {}

    def run(method: str, space: str) -> tuple[Path, dict]:
        if (method, space) not in runs:
            tmp = tmp_path_factory.mktemp(f"{method}-{space}")
            config = _method_config(tmp, method, space)
            written = load_tool("search").main(["--config", str(config), "--out", str(tmp / "full"), "--device", "cpu"])
            runs[method, space] = tmp / "full", written
        return runs[method, space]
    return run


@pytest.mark.parametrize("space", ["hierarchical", "cifar"])
@pytest.mark.parametrize("method", list_methods())
def test_every_method_searches_and_decodes_in_every_space(method, space, full_searches, tool, tmp_path):
    """A short search writes its architecture, and `autoseg decode` of the checkpoint gives the same."""
    run, written = full_searches(method, space)
    name = "arch.json" if space == "hierarchical" else "genotype.json"
    assert json.loads((run / name).read_text()) == written
    assert tool("decode")([str(run), "--out", str(tmp_path / "decoded")]) == written


@pytest.mark.parametrize("method", list_methods())
def test_every_method_resumes_a_stopped_search_bit_for_bit(method, full_searches, tool, tmp_path):
    config = _method_config(tmp_path, method, "hierarchical")
    full, _ = full_searches(method, "hierarchical")
    search = tool("search")
    search(["--config", str(config), "--out", str(tmp_path / "cut"), "--device", "cpu", "--max-steps", "6"])
    search(["--resume", str(tmp_path / "cut")])
    assert_same(load_checkpoint(full), load_checkpoint(tmp_path / "cut"))
    assert (tmp_path / "cut" / "arch.json").read_text() == (full / "arch.json").read_text()


@pytest.mark.parametrize("method", list_methods())
def test_every_method_documents_its_paper_and_default_settings(method):
    cls = SEARCH_METHODS[method]
    assert cls.name == method and cls.reference and cls.__doc__ and cls.Settings.__doc__
    method_settings(method, {})  # the defaults are within their own ranges


# -- the relaxations and selection rules on constructed inputs ----------------------------------

def test_gumbel_relaxation_is_one_hot_forward_with_the_softmax_gradient():
    """GDAS: the forward weights are a one-hot sample; the gradient is that of the Gumbel-softmax
    with the same noise (straight-through), computed here by autograd on the soft weights."""
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(6, 5, dtype=torch.float64)
    relaxation = GumbelRelaxation(tau=0.7)
    torch.manual_seed(3)
    weights = relaxation.weights(logits, training=True)
    assert torch.allclose(weights.detach(), torch.nn.functional.one_hot(weights.detach().argmax(-1), 5).double())
    (grad,) = torch.autograd.grad((weights * probe).sum(), logits)
    torch.manual_seed(3)
    gumbels = -torch.empty_like(logits).exponential_().log()
    soft = torch.softmax((torch.log_softmax(logits, -1) + gumbels) / 0.7, -1)
    assert torch.equal(weights.detach().argmax(-1), soft.argmax(-1))  # the sample is the Gumbel-max one
    (expected,) = torch.autograd.grad((soft * probe).sum(), logits)
    assert torch.allclose(grad, expected)
    eval_weights = relaxation.weights(logits, training=False)
    assert torch.equal(eval_weights.argmax(-1), logits.argmax(-1)) and eval_weights.sum() == 6


def test_gumbel_samples_follow_the_softmax_distribution():
    """The Gumbel-max trick draws choice k with probability softmax(logits)[k]."""
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0]]).expand(20000, 4)
    torch.manual_seed(0)
    counts = GumbelRelaxation(tau=5.0).weights(logits, training=True).detach().sum(0)
    expected = torch.softmax(logits[0], -1) * 20000
    assert torch.all((counts - expected).abs() < 4 * expected.sqrt())  # within 4 standard deviations


def test_gdas_temperature_decays_linearly_from_tau_max_to_tau_min():
    net = TrellisSearchNetwork(3, layers=2, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8)
    gdas = Gdas(GdasSettings(), net, SearchSchedule(epochs=5, warmup_epochs=0, seed=0))
    assert net.relaxation is gdas.relaxation
    assert [gdas.temperature(e) for e in range(5)] == pytest.approx([10.0, 7.525, 5.05, 2.575, 0.1])
    with pytest.raises(UserError, match="tau_min .* is above tau_max"):
        build_method("gdas", {"tau_min": 20.0}, net, SearchSchedule(5, 0, 0))



def test_dirichlet_relaxation_is_a_dirichlet_sample_with_its_pathwise_gradient():
    """DrNAS: in training the weights are a sample of Dir(elu(logits) + 1), and the gradient is that
    of torch's reparameterised sample with the same draw; in eval the Dirichlet's mean; decoding
    reads the softmax."""
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(6, 5, dtype=torch.float64)
    torch.manual_seed(3)
    weights = DIRICHLET.weights(logits, training=True)
    (grad,) = torch.autograd.grad((weights * probe).sum(), logits)
    torch.manual_seed(3)
    expected = torch.distributions.Dirichlet(torch.nn.functional.elu(logits) + 1).rsample()
    (expected_grad,) = torch.autograd.grad((expected * probe).sum(), logits)
    assert torch.allclose(weights, expected) and torch.allclose(grad, expected_grad)
    concentration = torch.nn.functional.elu(logits.detach()) + 1
    mean = concentration / concentration.sum(-1, keepdim=True)
    assert torch.allclose(DIRICHLET.weights(logits, training=False), mean)
    assert torch.equal(DIRICHLET.probabilities(logits), torch.softmax(logits, -1))


def test_dirichlet_samples_a_row_with_invalid_moves_over_its_valid_ones():
    """A trellis node's row with invalid moves (-inf) is a Dirichlet over its valid moves: zero at
    the invalid ones, and the valid ones average to their concentrations normalised."""
    logits = torch.tensor([[0.5, float("-inf"), -0.7], [float("-inf"), 1.5, float("-inf")]]).repeat(20000, 1)
    torch.manual_seed(0)
    weights = DIRICHLET.weights(logits, training=True)
    assert torch.all(weights[::2, 1] == 0) and torch.all(weights[1::2] == torch.tensor([0.0, 1.0, 0.0]))
    first = weights[::2]
    concentration = torch.nn.functional.elu(torch.tensor([0.5, -0.7])) + 1
    mean = concentration / concentration.sum()
    std = (mean * (1 - mean) / (concentration.sum() + 1)).sqrt()  # of one draw of a Dirichlet entry
    assert torch.allclose(first.sum(-1), torch.ones(20000))
    assert torch.all((first[:, [0, 2]].mean(0) - mean).abs() < 4 * std / 20000 ** 0.5)  # within 4 standard errors


def test_dirichlet_kl_to_the_uniform_dirichlet_matches_torch_distributions():
    """The KL term of DrNAS's kl regulariser, row by row over the valid entries, against
    torch.distributions.kl_divergence on each row's valid entries; a row without one counts 0."""
    torch.manual_seed(0)
    logits = torch.randn(5, 4, dtype=torch.float64)
    logits[0, 1] = logits[3, 0] = logits[3, 3] = float("-inf")
    logits[2] = float("-inf")
    expected = 0.0
    for row in logits:
        valid = row[torch.isfinite(row)]
        if len(valid):
            concentration = torch.nn.functional.elu(valid) + 1
            expected += float(torch.distributions.kl_divergence(torch.distributions.Dirichlet(concentration),
                                                                torch.distributions.Dirichlet(torch.ones_like(valid))))
    assert float(dirichlet_kl_to_uniform(logits)) == pytest.approx(expected, rel=1e-12)
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(dirichlet_kl_to_uniform(logits), logits)
    assert torch.all(torch.isfinite(grad)) and torch.all(grad[~torch.isfinite(logits.detach())] == 0)


def test_drnas_kl_regularizer_enters_the_architecture_loss_in_place_of_weight_decay():
    """With ``regularizer: kl`` the architecture gradient is that of the validation loss plus
    kl_scale times the KL of alpha's and beta's rows (over the valid moves) to the uniform Dirichlet,
    and the architecture optimiser's weight decay is 0, as in DrNAS's code."""
    net = TrellisSearchNetwork(3, layers=2, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn_like(p))
    method = build_method("drnas", {"regularizer": "kl", "kl_scale": 0.5}, net, SearchSchedule(2, 0, seed=0))
    criterion = torch.nn.CrossEntropyLoss()
    arch_optimizer = torch.optim.Adam(net.arch_parameters(), lr=3e-3, weight_decay=1e-3)
    method.prepare(UpdateTools(criterion, arch_optimizer, torch.optim.SGD(net.weight_parameters(), lr=0.1),
                               torch.amp.GradScaler(enabled=False), None, net))
    assert arch_optimizer.param_groups[0]["weight_decay"] == 0.0
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    net.train()
    torch.manual_seed(1)
    _, grads = method.architecture_gradient((x, y), (x, y), 0.0)
    mask = transition_mask(2, 2, net.free_first_step)
    kl = 0.0
    for logits, valid in ((net.alphas, torch.ones_like(net.alphas, dtype=torch.bool)), (net.betas, mask)):
        for row, row_valid in zip(logits.reshape(-1, logits.shape[-1]), valid.reshape(-1, logits.shape[-1])):
            if row_valid.any():
                concentration = torch.nn.functional.elu(row[row_valid]) + 1
                kl = kl + torch.distributions.kl_divergence(torch.distributions.Dirichlet(concentration),
                                                            torch.distributions.Dirichlet(torch.ones_like(concentration)))
    torch.manual_seed(1)
    expected = torch.autograd.grad(criterion(net(x), y) + 0.5 * kl, [net.alphas, net.betas])
    assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(grads, expected))
    with pytest.raises(UserError, match="regularizer 'l1' is not one of DrNAS's: l2, kl"):
        build_method("drnas", {"regularizer": "l1"}, net, SearchSchedule(2, 0, seed=0))

@pytest.mark.parametrize("seed", range(3))
def test_architecture_weights_run_the_supernet_at_the_architecture_they_encode(seed):
    """Pinned to a sampled architecture, the supernet decodes to that architecture, and its output
    does not depend on the architecture parameters any more."""
    torch.manual_seed(seed)
    for net in (TrellisSearchNetwork(3, layers=3, levels=3, blocks=2, filter_multiplier=2, aspp_channels=8),
                DartsSearchNetwork(10, init_channels=4, layers=3, num_blocks=2, multiplier=2)):
        arch = net.sample_architecture(np.random.default_rng(seed))
        net.eval()
        x = torch.randn(2, 3, 32, 32)
        with net.fixed_choices({name: (w, None) for name, w in net.architecture_weights(arch).items()}):
            decoded = net.decode()
            before = net(x)
            with torch.no_grad():
                for p in net.arch_parameters():
                    p.add_(torch.randn_like(p))
            assert torch.equal(before, net(x))
        assert (decoded.path, decoded.cell) == (arch.path, arch.cell) if hasattr(arch, "path") else decoded == arch


def test_random_ws_trains_a_fresh_architecture_per_step_and_selects_the_best_candidate():
    net = TrellisSearchNetwork(3, layers=3, levels=3, blocks=2, filter_multiplier=2, aspp_channels=8)
    method = build_method("random_ws", {"candidates": 6, "eval_batches": 1}, net, SearchSchedule(2, 0, seed=4))
    assert not method.updates_architecture(0)
    with method.weight_step(0):
        first = net.decode()
    with method.weight_step(1):
        second = net.decode()
    with method.weight_step(0):
        assert net.decode() == first  # the draw of a step depends on the seed and the step only
    assert first != second
    # a constructed score: the number of cell edges that are sep_conv_3x3 plus the last level reached
    sep = net.primitives.index("sep_conv_3x3")

    def score(batches):
        weights = net.arch_weights()
        return float(weights["cell"][:, sep].sum() + weights["transitions"][-1].sum(0).argmax())

    candidates = [method.draw(1, i) for i in range(6)]
    best = max(candidates, key=lambda a: sum(op == "sep_conv_3x3" for b in a.cell.blocks for op, _ in b) + a.path[-1])
    assert method.select(score) == best
    assert method.select(None) == best and method.state_dict()["selected"] == best.to_dict()


def test_darts_pt_keeps_the_op_whose_removal_hurts_most_not_the_largest_alpha():
    """A constructed supernet score: each op of each edge contributes weight * value. Masking op o
    of edge e loses w[e, o] * v[e, o], so DARTS-PT keeps argmax_o w * v, where the magnitude rule
    keeps argmax_o w; topology projection keeps the two edges of a block with the largest sum."""
    torch.manual_seed(0)
    net = DartsSearchNetwork(10, init_channels=4, layers=3, num_blocks=2, multiplier=2)
    with torch.no_grad():
        net.alphas_normal.copy_(torch.randn_like(net.alphas_normal))
        net.alphas_reduce.copy_(torch.randn_like(net.alphas_reduce))
    values = {name: torch.rand(5, 8) for name in net.cell_types}
    values["normal"][:, 0] = 0  # none contributes nothing

    def score(batches):
        weights = net.arch_weights()
        return float(sum((torch.as_tensor(weights[name]) * values[name]).sum() for name in net.cell_types))

    method = build_method("darts_pt", {"interval": 1.0}, net, SearchSchedule(epochs=10, warmup_epochs=0, seed=0))
    assert method.first_projection_epoch == 3 and not method.updates_architecture(3) and method.updates_architecture(2)
    probabilities = {name: torch.softmax(alpha.detach(), -1) for name, alpha in net.cell_logits().items()}
    method.start_epoch(3 + method.edges - 1, score)  # every op projection is due
    assert method.steps_done == method.edges
    for name in net.cell_types:
        contribution = probabilities[name] * values[name]
        contribution[:, 0] = -1  # never none
        assert method.ops[name] == contribution.argmax(-1).tolist()
    method.start_epoch(9, score)  # the topology projections
    genotype = net.decode()
    for name in net.cell_types:
        kept = torch.tensor([values[name][e, op] for e, op in enumerate(method.ops[name])])  # one-hot rows now
        expected = [sorted(sorted(range(2 + b), key=lambda j: -kept[b * (b + 3) // 2 + j])[:2]) for b in range(2)]
        assert [sorted(state for _, state in block) for block in getattr(genotype, name).blocks] == expected
    with pytest.raises(UserError, match="use at least 37 epochs"):
        build_method("darts_pt", {}, net, SearchSchedule(epochs=10, warmup_epochs=1, seed=0))
