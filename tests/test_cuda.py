"""The CUDA paths: device placement, mixed precision with its gradient scalers, recomputation, torch.compile
with Triton, NCCL under torchrun and the CUDA branch of profile_model. Every test here is marked ``cuda``
and skips, with its reason, where no CUDA device is visible; on a GPU machine run them with

    python -m pytest -m cuda

(``autoseg gpu_check`` measures the same paths at the papers' sizes and writes the figures.)"""
import copy
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, write_tiny_retrain_config, write_tiny_search_config

from autoseg.engine import step_exactness
from autoseg.engine.checkpoint import load_checkpoint
from autoseg.search.wide_ops import EdgeInput, WideDilConv

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
FRESH_SCALER = {"scale": 65536.0, "_growth_tracker": 0}


def test_search_retrain_and_evaluate_run_on_the_gpu(tool, tmp_path):
    tool("search")(["--config", str(write_tiny_search_config(tmp_path / "search.yaml")), "--device", "cuda",
                    "--out", str(tmp_path / "search")])
    tool("retrain")(["--config", str(write_tiny_retrain_config(tmp_path / "retrain.yaml")), "--device", "cuda",
                     "--arch", str(tmp_path / "search" / "arch.json"), "--out", str(tmp_path / "retrain")])
    result = tool("evaluate")([str(tmp_path / "retrain"), "--device", "cuda", "--json", "--scales", "0.75", "1.0",
                               "--flip"])
    assert 0 <= result["miou"] <= 100
    state = load_checkpoint(tmp_path / "search")
    assert state["global_step"] == 8 and state["config"]["train"]["device"] == "cuda"


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_a_mixed_precision_step_stays_within_its_tolerance_of_float32(amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip(f"{torch.cuda.get_device_name()} has no native bfloat16")
    check = step_exactness.amp_against_float32(CUDA, amp)
    assert check["passed"], check


def test_fp16_search_on_the_gpu_scales_both_steps(tool, tmp_path):
    config = write_tiny_search_config(tmp_path / "search.yaml")
    tool("search")(["--config", str(config), "--device", "cuda", "--amp", "fp16", "--out", str(tmp_path / "run")])
    state = load_checkpoint(tmp_path / "run")
    for key in ("w_scaler", "a_scaler"):
        assert {k: state[key][k] for k in FRESH_SCALER} != FRESH_SCALER, key  # the scaler took part
    assert all(torch.isfinite(value).all() for value in state["model"].values() if value.is_floating_point())


@pytest.mark.parametrize("option", ["selective_checkpoint", "checkpoint_cells"])
def test_recomputation_on_the_gpu_equals_the_plain_step(option):
    check = step_exactness.recomputation_against_plain(CUDA, option)
    assert check["passed"], check


@pytest.mark.parametrize("kernel,stride,dilation", [(3, 1, 1), (5, 1, 2), (3, 2, 1)])
def test_a_recomputed_stage_on_the_gpu_equals_the_plain_stage_bit_for_bit(kernel, stride, dilation, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    torch.manual_seed(0)
    plain = WideDilConv(4, 3, kernel, stride, dilation, shared_input=True).to(CUDA)
    recomputing = copy.deepcopy(plain)
    recomputing.recompute_activations = True
    x = torch.randn(2, 4, 11, 11, device=CUDA)
    results = []
    for stage in (plain, recomputing):
        inputs = x.clone().requires_grad_()
        out = stage(EdgeInput(inputs, stage.recompute_activations))
        out.square().sum().backward()
        results.append([out.detach(), inputs.grad, stage.depthwise.grad, stage.pointwise.grad])
    for expected, got in zip(*results):
        assert torch.equal(expected, got)


@pytest.mark.parametrize("mode", [True, "reduce-overhead"])
def test_a_compiled_step_with_triton_stays_within_its_tolerance_of_eager(mode):
    from autoseg.utils.compilation import check_compile
    check_compile(mode, CUDA)  # Triton is there
    check = step_exactness.compiled_against_eager(CUDA, mode)
    assert check["passed"], check


@pytest.mark.parametrize("tool_name", ["search", "retrain"])
def test_a_one_process_torchrun_uses_nccl(tool_name, tmp_path):
    config = (write_tiny_search_config if tool_name == "search" else write_tiny_retrain_config)(
        tmp_path / "config.yaml", device="cuda")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                           "-m", "autoseg.cli", tool_name, "--config", str(config), "--out", str(tmp_path / "run"),
                           "--max-steps", "4"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "NCCL_DEBUG": "INFO"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "NCCL INFO" in done.stdout + done.stderr and "x 1 process(es)" in done.stdout
    assert load_checkpoint(tmp_path / "run")["global_step"] == 4


def test_profile_model_measures_latency_and_peak_memory_on_the_gpu(tool):
    report = tool("profile_model")(["autodeeplab-s", "--device", "cuda", "--size", "256", "512", "--warmup", "1",
                                    "--repeats", "3", "--json"])
    assert report["latency_s"] > 0 and report["peak_memory_bytes"] > 0 and report["memory"] == "cuda_max_allocated"
