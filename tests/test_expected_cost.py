"""The cost-aware hierarchical search: the expected Multi-Adds against exact counts of decoded and
sampled networks, its gradients, the penalty, the architect hook, and the cost the tools report."""
import copy
import json
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, assert_same, write_tiny_search_config
from fakes import write_retrain_checkpoint
from torch.utils.flop_counter import FlopCounterMode

from autoseg.space.architecture import NetworkArch
from autoseg.config import CostConfig, SearchConfig, TrellisModelConfig, config_problems, load_config
from autoseg.data.synthetic import CLASS_NAMES, PALETTE
from autoseg.engine.checkpoint import load_checkpoint, seed_everything
from autoseg.engine.search_setup import build_search_network
from autoseg.utils.errors import UserError
from autoseg.analysis.expected_cost import CostPenalty, TrellisCost, build_trellis_cost
from autoseg.space.genotype import GENOTYPES, CellGenotype, num_edges
from autoseg.models.autodeeplab import AutoDeepLab, autodeeplab_from_arch
from autoseg.models.spec import build_model, model_spec
from autoseg.analysis.profiling import profile_model
from autoseg.search.arch_decoding import decode_hierarchical
from autoseg.search.architect import Architect
from autoseg.search.trellis_network import TrellisSearchNetwork
from autoseg.tools.decode import evaluation_network_cost
from autoseg.space.trellis import transition_probabilities

PRIMITIVES = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_5x5")
LAYERS, LEVELS, BLOCKS, F_MULT, CLASSES, SIZE = 4, 3, 3, 4, 5, (17, 23)
LARGE = 40.0


@pytest.fixture(scope="module")
def cost() -> TrellisCost:
    return TrellisCost(LAYERS, LEVELS, BLOCKS, PRIMITIVES, F_MULT, CLASSES, SIZE)


@pytest.fixture(scope="module")
def darts_v2_report():
    """The cost report of the DARTS evaluation network of DARTS_V2 (10 classes) at 32x32."""
    return profile_model(build_model(model_spec("DARTS_V2"), 10), (32, 32))


def _random_path(rng: random.Random) -> list[int]:
    path, level = [], 0
    for _ in range(LAYERS):
        level = rng.choice([lv for lv in (level - 1, level, level + 1) if 0 <= lv < LEVELS])
        path.append(level)
    return path


def _one_hot(path: list[int], rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """Large logits on the moves of ``path`` (other rows random) and, per block, on an op of
    two random edges and on ``none`` of the others."""
    betas = torch.randn(LAYERS, LEVELS, 3, dtype=torch.float64)
    for layer, (source, target) in enumerate(zip([0] + path[:-1], path)):
        betas[layer, source] = -LARGE
        betas[layer, source, target - source + 1] = LARGE
    alphas = torch.full((num_edges(BLOCKS), len(PRIMITIVES)), -LARGE, dtype=torch.float64)
    for block in range(BLOCKS):
        kept = rng.sample(range(block + 2), 2)
        for state in range(block + 2):
            alphas[num_edges(block) + state, rng.randrange(1, len(PRIMITIVES)) if state in kept else 0] = LARGE
    return alphas, betas


@pytest.mark.parametrize("seed", range(4))
def test_expected_cost_of_one_hot_alpha_and_beta_is_the_exact_cost_of_the_decoded_network(cost, seed):
    rng = random.Random(seed)
    path = [1, 2, 1, 1] if seed == 0 else _random_path(rng)  # seed 0: never at level 0, the stem feeds the decoder
    alphas, betas = _one_hot(path, rng)
    arch = decode_hierarchical(F.softmax(alphas, dim=-1).numpy(), transition_probabilities(betas).numpy(), PRIMITIVES,
                               F_MULT)
    assert list(arch.path) == path
    exact = profile_model(autodeeplab_from_arch(arch, CLASSES), SIZE)
    assert cost.expected_madds(alphas, betas).item() == pytest.approx(exact.madds, rel=1e-10)
    assert cost.network_cost(arch) == {"madds": exact.madds, "params": exact.params, "input_size": list(SIZE),
                                       "filter_multiplier": F_MULT, "num_classes": CLASSES}


def _sampled_network_madds(path: list[int], ops: list[int], blocks: int, filter_multiplier: int) -> int:
    """Exact Multi-Adds of the network with every edge of the cell (each with its sampled op,
    ``none`` included), counted independently of the cost model: real tensors, FlopCounterMode."""
    cell = [[(PRIMITIVES[ops[num_edges(block) + state]], state) for state in range(block + 2)]
            for block in range(blocks)]
    with torch.device("meta"):
        model = AutoDeepLab(path, CellGenotype.from_blocks(cell), filter_multiplier, CLASSES)
    model = model.to_empty(device="cpu").eval()  # the values do not matter, only the shapes
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, *SIZE))
    return counter.get_total_flops() // 2


def test_expected_cost_is_the_mean_cost_of_sampled_architectures():
    layers, levels, blocks, filter_multiplier = 3, 2, 2, 48  # wide cells: their ops weigh against the head
    cost = TrellisCost(layers, levels, blocks, PRIMITIVES, filter_multiplier, CLASSES, SIZE)
    generator = torch.Generator().manual_seed(0)
    alphas = 1.5 * torch.randn(num_edges(blocks), len(PRIMITIVES), generator=generator, dtype=torch.float64)
    betas = 1.5 * torch.randn(layers, levels, 3, generator=generator, dtype=torch.float64)
    probs, transitions = F.softmax(alphas, dim=-1), transition_probabilities(betas)
    samples = []
    for _ in range(100):
        ops = torch.multinomial(probs, 1, generator=generator).flatten().tolist()
        path, level = [], 0
        for layer in range(layers):
            level = int(torch.multinomial(transitions[layer, level], 1, generator=generator))
            path.append(level)
        samples.append(_sampled_network_madds(path, ops, blocks, filter_multiplier))
    samples = torch.tensor(samples, dtype=torch.float64)
    standard_error = samples.std() / len(samples) ** 0.5
    assert samples.std() > 0.05 * samples.mean()  # the architectures differ in cost
    assert abs(samples.mean() - cost.expected_madds(alphas, betas)) < 3 * standard_error


def test_expected_cost_gradient_reaches_alpha_and_beta_and_matches_finite_differences(cost):
    generator = torch.Generator().manual_seed(1)
    alphas = torch.randn(num_edges(BLOCKS), len(PRIMITIVES), generator=generator, dtype=torch.float64)
    betas = torch.randn(LAYERS, LEVELS, 3, generator=generator, dtype=torch.float64)
    alphas.requires_grad_(), betas.requires_grad_()
    d_alpha, d_beta = torch.autograd.grad(cost.expected_madds(alphas, betas), (alphas, betas))
    assert (d_alpha != 0).all()  # every op of every edge has a cost or takes probability from one that has
    assert (d_beta[0, 0, 1:] != 0).all() and (d_beta[LAYERS - 1, :, 1] != 0).all()
    with torch.no_grad():
        for tensor, grad, index in ((alphas, d_alpha, (3, 4)), (alphas, d_alpha, (0, 0)), (betas, d_beta, (0, 0, 2)),
                                    (betas, d_beta, (2, 1, 0)), (betas, d_beta, (LAYERS - 1, 2, 1))):
            step = 1e-5
            tensor[index] += step
            plus = cost.expected_madds(alphas, betas)
            tensor[index] -= 2 * step
            minus = cost.expected_madds(alphas, betas)
            tensor[index] += step
            assert (plus - minus) / (2 * step) == pytest.approx(grad[index].item(), rel=1e-5)


def test_building_the_cost_model_draws_no_random_numbers():
    state = torch.random.get_rng_state()
    TrellisCost(2, 2, 2, PRIMITIVES, 2, 3, (16, 16))
    assert torch.equal(state, torch.random.get_rng_state())


def test_penalty_is_a_hinge_on_the_log_ratio_to_the_target(cost):
    network = TrellisSearchNetwork(CLASSES, LAYERS, LEVELS, BLOCKS, F_MULT, PRIMITIVES).double()
    with torch.no_grad():
        network.alphas.zero_(), network.betas.zero_()
    expected = cost.expected_madds(network.alphas, network.betas).item()
    above = CostPenalty(cost, network, CostConfig(target_madds=expected / 2, weight=3.0))
    assert above().item() == pytest.approx(3.0 * torch.log(torch.tensor(2.0)).item(), rel=1e-6)
    below = CostPenalty(cost, network, CostConfig(target_madds=expected * 2))
    penalty = below()
    assert penalty.item() == 0.0
    assert all((g == 0).all() for g in torch.autograd.grad(penalty, (network.alphas, network.betas)))


def _tiny_trellis() -> tuple[TrellisSearchNetwork, tuple, tuple]:
    torch.manual_seed(0)
    model = TrellisSearchNetwork(num_classes=3, layers=2, levels=2, blocks=2, filter_multiplier=2,
                                 aspp_channels=4).double()
    batches = [(torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.randint(0, 3, (2, 16, 16)))
               for _ in range(2)]
    return model, batches[0], batches[1]


def _architect(model, unrolled, regularizer=None):
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-3, weight_decay=1e-3)
    return Architect(model, F.cross_entropy, a_opt, w_opt, unrolled, regularizer=regularizer), a_opt


def test_cost_off_architect_step_is_the_plain_validation_loss_step():
    model, train, valid = _tiny_trellis()
    reference = copy.deepcopy(model)
    architect, _ = _architect(model, unrolled=False)
    assert architect.regularizer is None
    architect.step(train, valid, xi=0.1)
    _, a_opt = _architect(reference, unrolled=False)
    grads = torch.autograd.grad(F.cross_entropy(reference(valid[0]), valid[1]), reference.arch_parameters())
    for p, g in zip(reference.arch_parameters(), grads):
        p.grad = g
    a_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.arch_parameters(), reference.arch_parameters()))


@pytest.mark.parametrize("unrolled", [False, True])
def test_regularizer_gradient_is_added_once_to_both_architecture_gradients(unrolled):
    model, train, valid = _tiny_trellis()
    cost = TrellisCost(2, 2, 2, model.primitives, 2, 3, (16, 16))
    penalty = CostPenalty(cost, model, CostConfig(target_madds=1.0))
    plain, _ = _architect(copy.deepcopy(model), unrolled)
    with_cost, _ = _architect(model, unrolled, regularizer=penalty)
    gradient = (lambda a: a.unrolled_gradient(train, valid, 0.1)) if unrolled else (
        lambda a: a.first_order_gradient(valid))
    (loss, grads), (plain_loss, plain_grads) = gradient(with_cost), gradient(plain)
    extra = torch.autograd.grad(penalty(), model.arch_parameters())
    assert loss.item() == pytest.approx(plain_loss.item() + penalty().item())
    for g, p, e in zip(grads, plain_grads, extra):
        assert e.abs().max() > 0
        assert torch.allclose(g, p + e, rtol=1e-9, atol=1e-12)


def test_cost_is_off_by_default_and_for_the_hierarchical_search_only(tool):
    assert CostConfig().target_madds is None
    assert all(load_config(path, SearchConfig).cost.target_madds is None
               for path in (ROOT / "configs" / "search").glob("*.yaml"))
    cifar = SearchConfig(mode="cifar", cost=CostConfig(target_madds=1e6))
    assert any("hierarchical search only" in problem for problem in config_problems(cifar))
    with pytest.raises(UserError, match="hierarchical search only"):
        tool("search")(["--dataset", "cifar10", "--target-madds", "1e6", "--dry-run"])
    assert config_problems(SearchConfig(mode="hierarchical", model=TrellisModelConfig(),
                                        cost=CostConfig(target_madds=1e6))) == []
    assert any("cost.weight" in p for p in config_problems(SearchConfig(cost=CostConfig(weight=0.0))))


def test_search_dry_run_reports_the_expected_and_decoded_cost(tool, tiny_synthetic_config, capsys):
    summary = tool("search")(["--config", str(tiny_synthetic_config), "--dry-run"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    cfg = load_config(tiny_synthetic_config, SearchConfig)
    seed_everything(cfg.train.seed)
    network = build_search_network(cfg, 6)
    with torch.no_grad():
        expected = build_trellis_cost(cfg, 6).supernet_madds(network).item()
    assert summary["expected_madds"] == round(expected)
    assert summary["decoded_madds"] == profile_model(autodeeplab_from_arch(network.decode(), 6), (32, 32)).madds


def test_cost_aware_search_reports_the_decoded_cost_and_decode_reproduces_it(tool, tiny_synthetic_config, tmp_path,
                                                                           capsys):
    run = tmp_path / "run"
    arch = tool("search")(["--config", str(tiny_synthetic_config), "--target-madds", "1e6", "--out", str(run)])
    assert json.loads((run / "arch.json").read_text()) == arch
    exact = profile_model(autodeeplab_from_arch(arch, 6), (32, 32))
    assert arch["cost"] == {"madds": exact.madds, "params": exact.params, "input_size": [32, 32],
                            "filter_multiplier": 2, "num_classes": 6}
    history = load_checkpoint(run)["history"]
    assert all(record["train"]["expected_madds"] > 1e6 for record in history[1:])  # the architecture epochs
    out = capsys.readouterr().out
    assert f"{exact.params:,} parameters, {exact.madds / 1e6:,.1f} M Multi-Adds" in out
    (run / "arch.json").unlink()
    assert tool("decode")([str(run)]) == arch
    assert f"{exact.params:,} parameters" in capsys.readouterr().out


def test_a_target_the_search_never_exceeds_changes_nothing(tool, tmp_path):
    """The hinge is zero below the target, so the search is the one without a target, bit for bit."""
    runs = {}
    for name, extra in (("off", []), ("far", ["--target-madds", "1e15"])):
        config = write_tiny_search_config(tmp_path / f"{name}.yaml")
        tool("search")(["--config", str(config), "--out", str(tmp_path / name), *extra])
        runs[name] = load_checkpoint(tmp_path / name)
    for key in ("model", "a_optimizer", "w_optimizer", "arch"):
        assert_same(runs["off"][key], runs["far"][key], key)
    assert (tmp_path / "off" / "arch.json").read_bytes() == (tmp_path / "far" / "arch.json").read_bytes()


def test_a_trellis_deeper_than_the_retrain_network_has_no_cost_report_and_refuses_a_target():
    cfg = SearchConfig(mode="hierarchical", model=TrellisModelConfig(layers=4, levels=5, blocks=1,
                                                                      filter_multiplier=2))
    cfg.data.crop_size = 64  # level 4 (output stride 64) is reachable at the last layer: no DeepLab head for it
    assert build_trellis_cost(cfg, 6) is None
    cfg.cost.target_madds = 1e6
    with pytest.raises(UserError, match="at most 4 levels"):
        build_trellis_cost(cfg, 6)


def test_cost_counts_the_network_of_cost_filter_multiplier_at_cost_input_size():
    cfg = SearchConfig(mode="hierarchical", model=TrellisModelConfig(layers=2, levels=2, blocks=2,
                                                                      filter_multiplier=2),
                       cost=CostConfig(filter_multiplier=5, input_size=(40, 24)))
    cfg.data.crop_size = 32
    cost = build_trellis_cost(cfg, 4)
    arch = NetworkArch(path=(0, 1), cell=CellGenotype.from_blocks([[("sep_conv_3x3", 0), ("skip_connect", 1)],
                                                                   [("dil_conv_3x3", 2), ("max_pool_3x3", 0)]]),
                       filter_multiplier=2)
    exact = profile_model(autodeeplab_from_arch(arch, 4, filter_multiplier=5), (40, 24))
    assert cost.network_cost(arch)["madds"] == exact.madds and cost.network_cost(arch)["params"] == exact.params
    # one cost model per process for each space, F, classes and input size; any of them changed, another
    assert build_trellis_cost(copy.deepcopy(cfg), 4) is cost and build_trellis_cost(cfg, 6) is not cost
    cfg.cost.input_size = (24, 40)
    other = build_trellis_cost(cfg, 4)
    assert other is not cost and other.network_cost(arch)["madds"] == profile_model(
        autodeeplab_from_arch(arch, 4, filter_multiplier=5), (24, 40)).madds


def test_arch_cost_round_trips_and_a_bad_one_is_refused(tmp_path):
    arch = NetworkArch(path=(0, 1), cell=CellGenotype.from_blocks([[("sep_conv_3x3", 0), ("skip_connect", 1)]]),
                       cost={"madds": 10, "params": 3, "input_size": [8, 8], "filter_multiplier": 2, "num_classes": 4})
    arch.to_json(tmp_path / "arch.json")
    again = NetworkArch.from_json(tmp_path / "arch.json")
    assert again.cost == arch.cost and again.to_dict() == arch.to_dict()
    assert "3 parameters, 0.0 M Multi-Adds" in again.describe()
    with pytest.raises(UserError, match="cost must be an object"):
        NetworkArch.from_dict({**arch.to_dict(), "cost": {"madds": 10}})


def test_retrain_dry_run_and_evaluate_report_params_and_madds(tool, tmp_path, capsys, darts_v2_report):
    summary = tool("retrain")(["--dataset", "cifar10", "--dry-run"])
    assert summary["params"] == 3349342 and summary["madds_input_size"] == [32, 32]
    assert summary["madds"] == darts_v2_report.madds
    run = tmp_path / "run"
    model = write_retrain_checkpoint(run / "best.pt", "autodeeplab-paper", len(CLASS_NAMES), "segmentation",
                                     "synthetic", CLASS_NAMES, PALETTE.tolist(),
                                     {"image_size": 24, "val_length": 2, "eval_batch_size": 2}, filter_multiplier=2)
    capsys.readouterr()
    result = tool("evaluate")([str(run), "--device", "cpu"])
    exact = profile_model(model, (24, 24))
    assert (result["params"], result["madds"], result["madds_input_size"]) == (exact.params, exact.madds, [24, 24])
    expected = f"{exact.params:,} parameters, {exact.madds / 1e9:.3f} G Multi-Adds per 24x24 image"
    assert expected in capsys.readouterr().out


def test_decode_of_a_cifar_search_prints_the_evaluation_network_cost(tmp_path, darts_v2_report):
    GENOTYPES["DARTS_V2"].to_json(tmp_path / "genotype.json")
    report = darts_v2_report
    line = evaluation_network_cost(tmp_path / "genotype.json", 10)
    assert f"{report.params:,} parameters, {report.madds / 1e6:,.1f} M Multi-Adds" in line
