"""The cost report: Multi-Adds against hand counts, the breakdowns, measurements, and tools/profile_model.py."""
import json

import pytest
import torch
from torch import nn

from autoseg.space.genotype import AUTODEEPLAB_CELL
from autoseg.analysis.profiling import count_madds, kernel_ops, module_madds, profile_model


def _conv_linear(height: int, width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * height * width, 10))


def test_madds_of_a_conv_and_a_linear_layer_are_the_hand_count():
    model = _conv_linear(5, 7)
    conv = 5 * 7 * 8 * (3 * 3 * 3)  # one multiply-add per output pixel, output channel and kernel tap
    linear = 8 * 5 * 7 * 10
    report = profile_model(model, (5, 7))
    assert report.madds == conv + linear  # biases, BN and ReLU are not Multi-Adds
    assert report.params == sum(p.numel() for p in model.parameters()) == 3 * 8 * 9 + 8 + 2 * 8 + 8 * 35 * 10 + 10
    assert report.madds_by_layer == {"3x3 conv": conv, "linear": linear}
    assert report.madds_by_module == {"0": conv, "4": linear}
    assert report.latency_s is None and report.peak_memory_bytes is None and report.device == "meta"


def test_depthwise_strided_and_dilated_convs_are_counted_by_their_outputs():
    model = nn.Sequential(nn.Conv2d(4, 4, 5, stride=2, padding=4, dilation=2, groups=4), nn.Conv2d(4, 6, 1))
    # 9x9 input, stride 2 -> 5x5 outputs; depthwise: 25 taps per output of each channel, then 1x1 4 -> 6
    assert module_madds(model, torch.empty(1, 4, 9, 9)) == {"0": 5 * 5 * 4 * 25, "1": 5 * 5 * 6 * 4}
    assert profile_model(model, (9, 9), in_channels=4).madds_by_layer == {"5x5 depthwise conv, dilated": 2500,
                                                                           "1x1 conv": 600}


def test_ops_called_outside_submodules_belong_to_the_module_that_calls_them():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 3, bias=False)

        def forward(self, x):
            return self.proj(x.flatten(1) @ torch.ones(12, 4, device=x.device))

    assert module_madds(Functional(), torch.empty(2, 3, 2, 2)) == {"": 2 * 12 * 4, "proj": 2 * 4 * 3}


def test_counting_leaves_a_real_model_untouched():
    model = _conv_linear(4, 4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_madds(model, torch.randn(1, 3, 4, 4))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) and v.device.type == "cpu" for k, v in model.state_dict().items())


def test_the_published_network_is_counted_at_paper_size_on_meta():
    import autoseg
    model = autoseg.create_model("autodeeplab-paper", num_classes=19, filter_multiplier=8)
    report = autoseg.profile_model(model, (1024, 2048))
    assert report.params == sum(p.numel() for p in model.parameters())
    assert sum(report.madds_by_layer.values()) == sum(report.madds_by_module.values()) == report.madds
    assert {"backbone.stem", "backbone.cells", "head.aspp", "head.decoder"} <= set(report.madds_by_module)
    # the stem alone, by hand: 3 -> 64 s2, 64 -> 64, 64 -> 128 s2, all 3x3
    stem = 512 * 1024 * 64 * 27 + 512 * 1024 * 64 * 576 + 256 * 512 * 128 * 576
    assert report.madds_by_module["backbone.stem"] == stem


def test_cpu_profile_measures_latency_and_memory():
    report = profile_model(_conv_linear(8, 8), (8, 8), device="cpu", warmup=1, repeats=3)
    assert report.latency_s > 0 and report.device == "cpu"
    assert report.memory == "cpu_peak_rss_delta" and report.peak_memory_bytes >= 0
    assert json.loads(json.dumps(report.to_dict()))["input_size"] == [1, 3, 8, 8]


def test_profile_tool_on_names_arch_files_and_genotypes(tool, tmp_path, capsys):
    profile = tool("profile_model")
    result = profile(["autodeeplab-paper", "--filter-multiplier", "4", "--size", "65", "97", "--num-classes", "6",
                      "--json"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == result and line["task"] == "segmentation" and line["input_size"] == [1, 3, 65, 97]
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"path": [0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1], "cell": AUTODEEPLAB_CELL.to_dict(),
                                "filter_multiplier": 4}))
    assert profile([str(arch), "--size", "65", "97", "--num-classes", "6"])["madds"] == result["madds"]
    assert profile([str(tmp_path), "--size", "65", "97", "--num-classes", "6"])["madds"] == result["madds"]
    cifar = profile(["DARTS_V2"])
    assert (cifar["task"], cifar["num_classes"], cifar["input_size"]) == ("classification", 10, [1, 3, 32, 32])
    assert "G Multi-Adds" in capsys.readouterr().out


def test_profile_tool_on_a_retrain_checkpoint(tool, tmp_path):
    from fakes import write_retrain_checkpoint
    model = write_retrain_checkpoint(tmp_path / "run" / "best.pt", "autodeeplab-paper", 6, "segmentation",
                                     "synthetic", [str(i) for i in range(6)], [[0, 0, 0]] * 6, {},
                                     filter_multiplier=4)
    result = tool("profile_model")([str(tmp_path / "run"), "--size", "33", "33"])
    assert result["num_classes"] == 6 and result["params"] == sum(p.numel() for p in model.parameters())
    assert result["madds"] == profile_model(model, (33, 33)).madds


@pytest.mark.parametrize("args,message", [
    (["no-such-model"], "unknown model"),
    (["autodeeplab-s", "--size", "0", "64"], "positive"),
])
def test_profile_tool_bad_input(tool, args, message):
    from autoseg.utils.errors import UserError
    with pytest.raises(UserError, match=message):
        tool("profile_model")(args)


def test_kernel_ops_of_a_linear_training_step_are_the_hand_count():
    torch.manual_seed(0)
    layer, x = nn.Linear(3, 2), torch.randn(4, 3)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, foreach=True)

    def step():
        optimizer.zero_grad(set_to_none=True)
        layer(x).sum().backward()
        optimizer.step()

    counts = kernel_ops(step)
    # forward: x @ W.t() + b (the transpose is a view), the sum; backward: the seed gradient, W's
    # gradient (a matmul) and b's (a sum over the batch; the expand of the sum's gradient is a view);
    # the step: one foreach update of both parameters
    assert counts == {"aten.addmm": 1, "aten.sum": 2, "aten.ones_like": 1, "aten.mm": 1, "aten._foreach_add_": 1}


def test_kernel_ops_leave_out_views_and_allocations_and_count_in_place_ops():
    x = torch.randn(2, 3)

    def run():
        y = (x * 2).view(-1).t().expand(2, 6).transpose(0, 1)  # one mul; the rest are views
        torch.empty(5).add_(1)  # the allocation is free, the in-place add is a kernel
        y.detach().split(2)

    assert kernel_ops(run) == {"aten.mul": 1, "aten.add_": 1}
