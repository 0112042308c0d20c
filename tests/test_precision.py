"""Mixed precision: --amp {bf16,fp16}, the gradient scalers of fp16 in the search (both steps, both
orders) and the retraining, their checkpointed state, and configs of earlier runs. The
architect's scaling is tested in test_architect.py."""
import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import write_search_config, load_tool, write_config

from autoseg.config import RetrainConfig, SearchConfig, load_config, override
from autoseg.engine.checkpoint import load_checkpoint
from autoseg.utils.errors import UserError
from autoseg.utils.precision import autocast, check_amp, grad_scaler, scaled_step, step_schedule

CPU = torch.device("cpu")
FRESH_SCALER = {"scale": 65536.0, "_growth_tracker": 0}  # torch's initial scale, no step taken


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize("name,positional", [("search", []), ("retrain", []), ("evaluate", ["RUN"]),
                                             ("benchmark", [])])
def test_amp_alone_is_bfloat16_and_fp16_is_asked_for(name, positional):
    parse = load_tool(name).parse_args
    assert parse([*positional, "--amp"]).amp == "bf16"
    assert parse([*positional, "--amp", "fp16"]).amp == "fp16"
    assert parse([*positional, "--amp", "bf16"]).amp == "bf16"
    assert parse(positional).amp is None
    with pytest.raises(SystemExit):
        parse([*positional, "--amp", "fp32"])


@pytest.mark.parametrize("written,loaded", [(True, "bf16"), (False, None), ("fp16", "fp16"), (None, None)])
def test_amp_of_earlier_configs_loads_true_as_bfloat16(tmp_path, written, loaded):
    for base, cls in (("search/synthetic", SearchConfig), ("retrain/synthetic", RetrainConfig)):
        path = write_config(tmp_path / "config.yaml", base, train={"amp": written})
        assert load_config(path, cls).train.amp == loaded
    config = RetrainConfig()
    override(config, "train.amp", written)
    assert config.train.amp == loaded


def test_an_unknown_amp_is_a_user_error(tmp_path):
    path = write_search_config(tmp_path / "config.yaml", train={"amp": "fp8"})
    with pytest.raises(UserError, match="train.amp must be one of bf16, fp16 or null"):
        load_config(path, SearchConfig)
    with pytest.raises(UserError, match="amp must be one of bf16, fp16"):
        autocast(CPU, "float16")


def test_bfloat16_on_a_gpu_without_it_asks_for_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    with pytest.raises(UserError, match=r"Tesla V100.*compute capability 7\.0.*--amp fp16"):
        check_amp("bf16", torch.device("cuda"))
    check_amp("fp16", torch.device("cuda"))
    for amp in (None, "bf16", "fp16"):  # the CPU runs both (torch >= 2.5)
        check_amp(amp, CPU)


# ----------------------------------------------------------------------------- the steps


def test_amp_off_is_exactly_the_float32_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 5, 1))
    twin = copy.deepcopy(model)
    inputs, target = torch.randn(2, 3, 8, 8), torch.randint(0, 5, (2, 6, 6))
    plain, stepped = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, twin))
    for _ in range(2):  # what the loops did before mixed precision had options
        plain.zero_grad()
        F.cross_entropy(model(inputs), target).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        plain.step()
        stepped.zero_grad()
        with autocast(CPU, None):
            loss = F.cross_entropy(twin(inputs), target)
        scaled_step(loss, stepped, grad_scaler(CPU, None), twin.parameters(), 0.5)
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- the tools


def _assert_scaled(state, *keys):
    for key in keys:
        assert {k: state[key][k] for k in FRESH_SCALER} != FRESH_SCALER, key  # the scaler took part
    assert all(math.isfinite(h[split]["loss"]) for h in state["history"] for split in ("train", "valid"))


@pytest.mark.parametrize("unrolled", [False, True])
def test_fp16_search_scales_both_steps_and_resumes_their_scalers(tool, tiny_synthetic_config, tmp_path, unrolled):
    search = tool("search")
    flags = ["--config", str(tiny_synthetic_config), "--amp", "fp16", "--epochs", "1", "--warmup-epochs", "0",
             *(["--unrolled"] if unrolled else [])]
    search([*flags, "--out", str(tmp_path / "full")])  # 4 steps
    search([*flags, "--out", str(tmp_path / "cut"), "--max-steps", "2"])
    _assert_scaled(load_checkpoint(tmp_path / "cut"), "w_scaler", "a_scaler")
    search(["--resume", str(tmp_path / "cut")])
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    _assert_scaled(full, "w_scaler", "a_scaler")
    assert full["config"]["train"]["amp"] == "fp16" and resumed["global_step"] == full["global_step"] == 4
    assert (resumed["w_scaler"], resumed["a_scaler"]) == (full["w_scaler"], full["a_scaler"])
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def _tiny_retrain_config(tmp_path, **train):
    return write_config(tmp_path / "tiny_retrain.yaml", "retrain/synthetic",
                        data={"image_size": 32, "crop_size": 32, "train_length": 8, "val_length": 2,
                              "batch_size": 2, "eval_batch_size": 2, "scale_range": [0.75, 1.25]},
                        model={"filter_multiplier": 2}, train={"epochs": 1, **train})


def test_fp16_retrain_scales_its_steps_and_resumes_its_scaler(tool, tmp_path):
    config = _tiny_retrain_config(tmp_path)
    retrain = tool("retrain")
    retrain(["--config", str(config), "--out", str(tmp_path / "full"), "--amp", "fp16"])  # 4 steps
    retrain(["--config", str(config), "--out", str(tmp_path / "cut"), "--amp", "fp16", "--max-steps", "2"])
    retrain(["--resume", str(tmp_path / "cut")])
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    _assert_scaled(full, "scaler")
    assert resumed["global_step"] == full["global_step"] == 4 and resumed["scaler"] == full["scaler"]
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_a_run_saved_with_amp_true_resumes_in_bfloat16(tool, tmp_path):
    config = _tiny_retrain_config(tmp_path)
    retrain = tool("retrain")
    retrain(["--config", str(config), "--out", str(tmp_path / "old"), "--max-steps", "2"])
    saved = yaml.safe_load((tmp_path / "old" / "config.yaml").read_text())
    saved["train"]["amp"] = True  # as runs were saved before fp16
    (tmp_path / "old" / "config.yaml").write_text(yaml.safe_dump(saved))
    state = load_checkpoint(tmp_path / "old")
    del state["scaler"]  # nor did their checkpoints hold a scaler
    torch.save(state, tmp_path / "old" / "checkpoint.pt")
    record = retrain(["--resume", str(tmp_path / "old")])
    resumed = load_checkpoint(tmp_path / "old")
    assert resumed["global_step"] == 4 and resumed["config"]["train"]["amp"] == "bf16"
    assert resumed["scaler"] == {} and math.isfinite(record["train"]["loss"])  # bfloat16 needs no scaler


def test_a_schedule_stepped_after_a_skipped_first_step_advances_without_a_warning():
    def schedule():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)

    optimizer, scheduler = schedule()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the scaler skipped the optimiser's first step: no step() was called
        step_schedule(scheduler)
    assert optimizer.param_groups[0]["lr"] == 0.5  # the schedule follows the iteration all the same
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        schedule()[1].step()  # what torch says without it
