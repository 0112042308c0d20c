"""The benchmark tool and the saved-activation measurement behind its memory figures."""
from dataclasses import replace

import pytest
import torch

from autoseg.config import DartsSearchModelConfig, TrellisModelConfig
from autoseg.models.spec import build_model, model_spec
from autoseg.analysis.profiling import saved_activation_bytes
from autoseg.search.methods import SearchSchedule, build_method, list_methods
from autoseg.search.trellis_network import TrellisSearchNetwork
from autoseg.tools.benchmark import paper_search_hours


def test_saved_activation_bytes_counts_each_storage_once():
    x = torch.randn(4, 4, requires_grad=True)  # 64 bytes
    # exp keeps its output e; the product keeps e (again) and x: two storages
    assert saved_activation_bytes(lambda: (x.exp() * x).sum()) == 2 * 64
    with torch.no_grad():
        assert saved_activation_bytes(lambda: (x.exp() * x).sum()) == 0


def test_cell_checkpointing_saves_fewer_activations():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    saved = {}
    for checkpointed in (False, True):
        net = TrellisSearchNetwork(3, layers=3, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8,
                                   checkpoint_cells=checkpointed)
        saved[checkpointed] = saved_activation_bytes(lambda: net(x))
    assert saved[True] < 0.6 * saved[False]


@pytest.mark.parametrize("args", [
    ["--mode", "hierarchical", "--layers", "2", "--levels", "2", "--blocks", "2", "--filter-multiplier", "2",
     "--crop-size", "16", "--num-classes", "3"],
    ["--mode", "cifar", "--layers", "3", "--blocks", "2", "--init-channels", "4", "--batch-size", "2"],
])
def test_benchmark_prints_one_json_line_with_the_figures(tool, capsys, args):
    result = tool("benchmark")([*args, "--steps", "1", "--warmup", "0", "--device", "cpu"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("{")
    assert result["weight_step_s"] > 0 and result["arch_step_s"] > 0
    assert result["peak_memory_mb"] > 0 and result["saved_activations_mb"] > 0 and result["params"] > 0
    assert result["kernel_ops"] > 0 and "kernel_ops_top" not in result
    assert result["paper_search_hours"] is None  # not a paper's setting: no projection


@pytest.mark.parametrize("method", list_methods())
def test_benchmark_times_every_search_methods_steps(tool, method):
    result = tool("benchmark")(["--mode", "hierarchical", "--layers", "2", "--levels", "2", "--blocks", "2",
                                "--filter-multiplier", "2", "--crop-size", "16", "--num-classes", "3", "--steps", "1",
                                "--warmup", "0", "--device", "cpu", "--method", method])
    assert result["method"] == method and result["weight_step_s"] > 0 and result["saved_activations_mb"] > 0
    net = TrellisSearchNetwork(3, layers=2, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8)
    learns = build_method(method, {}, net, SearchSchedule(10**6, 0, 0)).updates_architecture(0)
    assert ("arch_step_s" in result) == learns  # a method that learns no architecture has no architecture step


def test_a_single_path_step_saves_fewer_activations_and_runs_fewer_kernels(tool):
    base = ["--mode", "hierarchical", "--layers", "3", "--levels", "2", "--blocks", "3", "--filter-multiplier", "4",
            "--crop-size", "32", "--num-classes", "3", "--steps", "1", "--warmup", "0", "--device", "cpu",
            "--method", "random_ws"]
    every_op = tool("benchmark")(base)
    single = tool("benchmark")([*base, "--method-option", "single_path=true"])
    assert single["method_options"] == {"single_path": True}
    # measured 2.3 against 4.0 MB and 1,175 against 2,318 kernels
    assert single["saved_activations_mb"] < 0.7 * every_op["saved_activations_mb"]
    assert single["kernel_ops"] < 0.7 * every_op["kernel_ops"]


def test_a_method_option_without_a_value_is_a_usage_error(tool, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool("benchmark")(["--method", "gdas", "--method-option", "single_path"])
    assert exit_info.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err


def test_paper_search_hours_project_the_papers_searches():
    paper = TrellisModelConfig(layers=12, levels=4, blocks=5, filter_multiplier=8)
    # Auto-DeepLab: 2975 Cityscapes images, half A 1488 = 744 batches of 2; 40 epochs of weight steps, of which
    # the last 20 also have an architecture step each
    hours = (744 * (40 * 10.0 + 20 * 5.0)) / 3600
    assert paper_search_hours("hierarchical", paper, 321, 2, 10.0, 5.0) == pytest.approx(hours, abs=0.005)
    # the memory options change nothing the search computes, so the same projection
    assert paper_search_hours("hierarchical", replace(paper, selective_checkpoint=True), 321, 2, 10.0, 5.0) == \
        pytest.approx(hours, abs=0.005)
    # DARTS: 50,000 CIFAR-10 images, half A 25,000 = 390 full batches of 64, 50 epochs of both steps
    cifar = DartsSearchModelConfig(init_channels=16, layers=8, blocks=4, multiplier=4)
    assert paper_search_hours("cifar", cifar, 32, 64, 2.0, 1.0) == pytest.approx(390 * 50 * 3.0 / 3600, abs=0.005)
    # anything else is not the papers' search
    assert paper_search_hours("hierarchical", paper, 65, 2, 10.0, 5.0) is None
    assert paper_search_hours("hierarchical", replace(paper, filter_multiplier=4), 321, 2, 10.0, 5.0) is None
    assert paper_search_hours("hierarchical", paper, 321, 2, 10.0, None) is None


def test_benchmark_lists_the_most_frequent_ops(tool):
    result = tool("benchmark")(["--layers", "2", "--levels", "2", "--blocks", "2", "--filter-multiplier", "2",
                                "--crop-size", "16", "--num-classes", "3", "--steps", "1", "--warmup", "0",
                                "--device", "cpu", "--kernel-ops-top", "3"])
    top = list(result["kernel_ops_top"].values())
    assert len(top) == 3 and top == sorted(top, reverse=True) and sum(top) <= result["kernel_ops"]


def test_benchmark_memory_only(tool):
    result = tool("benchmark")(["--layers", "2", "--levels", "2", "--blocks", "2", "--filter-multiplier", "2",
                                "--crop-size", "16", "--steps", "0", "--warmup", "0", "--device", "cpu"])
    assert result["weight_step_s"] is None and result["peak_memory_mb"] is None and result["kernel_ops"] is None
    assert result["saved_activations_mb"] > 0


def test_benchmark_times_a_retrain_step(tool, capsys):
    result = tool("benchmark")(["--mode", "retrain", "--arch", "autodeeplab-paper", "--filter-multiplier", "2",
                                "--crop-size", "16", "--batch-size", "2", "--num-classes", "3", "--steps", "1",
                                "--warmup", "0", "--device", "cpu"])
    assert capsys.readouterr().out.strip().startswith("{")
    assert result["train_step_s"] > 0
    assert result["first_train_step_s"] == pytest.approx(result["train_step_s"], abs=1e-3)
    model = build_model(model_spec("autodeeplab-paper", filter_multiplier=2), 3)
    assert result["params"] == sum(p.numel() for p in model.parameters())  # the network asked for
