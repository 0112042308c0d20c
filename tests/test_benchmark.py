"""The benchmark tool and the saved-activation measurement behind its memory figures."""
import pytest
import torch

from autoseg.models.spec import build_model, model_spec
from autoseg.profiling import saved_activation_bytes
from autoseg.search.trellis_network import TrellisSearchNetwork


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
    assert result["train_step_s"] > 0 and result["first_train_step_s"] == pytest.approx(result["train_step_s"], abs=1e-3)
    model = build_model(model_spec("autodeeplab-paper", filter_multiplier=2), 3)
    assert result["params"] == sum(p.numel() for p in model.parameters())  # the network asked for
