"""tools/retrain.py: dry-run counts, short trainings whose loss goes down, resume, best model."""
import json

import pytest
import torch
from conftest import assert_same, write_config, write_tiny_retrain_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from fakes import write_fake_cifar10

from autoseg.engine.checkpoint import load_checkpoint
from autoseg.engine.trained import load_trained_model
from autoseg.utils.errors import UserError


def _dry_run(tool, capsys, *args) -> dict:
    tool("retrain")([*args, "--dry-run"])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_dry_run_counts_darts_v2_like_the_reference_code(tool, capsys):
    summary = _dry_run(tool, capsys, "--dataset", "cifar10")
    assert (summary["params"], summary["aux_params"]) == (3_349_342, 476_426)  # paper: 3.3 M


@pytest.mark.parametrize("arch,millions", [("autodeeplab-s", "10.15"), ("autodeeplab-m", "21.62"),
                                           ("autodeeplab-l", "44.42")])
def test_dry_run_counts_auto_deeplab_like_the_paper(tool, capsys, arch, millions):
    summary = _dry_run(tool, capsys, "--dataset", "cityscapes", "--arch", arch)
    assert f"{summary['params'] / 1e6:.2f}" == millions and summary["num_classes"] == 19


def _tiny_retrain_config(tmp_path, **train):
    return write_tiny_retrain_config(tmp_path / "tiny_retrain.yaml", **train)


def _searched_arch(tmp_path, path):
    arch = {"path": path, "cell": {"blocks": [[["sep_conv_3x3", 1], ["skip_connect", 0]],
                                              [["dil_conv_3x3", 2], ["max_pool_3x3", 1]]], "concat": [2, 3]},
            "filter_multiplier": 8, "blocks": 2}
    file = tmp_path / f"arch_{''.join(map(str, path))}.json"
    file.write_text(json.dumps(arch))
    return file


@pytest.mark.parametrize("path", [[0, 1, 2, 1], [1, 1, 0], [0, 1, 2, 3, 2, 1, 0]])
def test_models_from_searched_arch_json_run_at_odd_sizes(tool, capsys, tmp_path, path):
    from autoseg.models.spec import build_model, model_spec
    file = _searched_arch(tmp_path, path)
    model = build_model(model_spec(str(file), filter_multiplier=2, bn_momentum=0.1), 6).eval()  # 6 synthetic classes
    with torch.no_grad():
        assert model(torch.randn(1, 3, 41, 57)).shape == (1, 6, 41, 57)
    summary = _dry_run(tool, capsys, "--dataset", "synthetic", "--arch", str(file), "--filter-multiplier", "2")
    assert summary["model"] == "autodeeplab-arch" and summary["params"] == sum(p.numel() for p in model.parameters())


def test_retrain_from_a_fresh_search_lowers_the_loss_and_keeps_the_best(tool, tiny_synthetic_config, tmp_path):
    tool("search")(["--config", str(tiny_synthetic_config), "--out", str(tmp_path / "search"), "--epochs", "1",
                    "--warmup-epochs", "0"])
    arch = tmp_path / "search" / "arch.json"
    run = tmp_path / "retrain"
    tool("retrain")(["--config", str(_tiny_retrain_config(tmp_path)), "--arch", str(arch), "--out", str(run)])
    state = load_checkpoint(run / "checkpoint.pt")
    losses = [h["train"]["loss"] for h in state["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    best = max(state["history"], key=lambda h: h["valid"]["miou"])
    assert state["best"]["value"] == best["valid"]["miou"] and state["best"]["epoch"] == best["epoch"]
    model, meta, best_state = load_trained_model(run)
    assert best_state["epoch"] == best["epoch"] and meta.task == "segmentation" and len(meta.palette) == 6
    assert meta.model_spec["kwargs"]["arch"]["path"] == json.loads(arch.read_text())["path"]
    assert not model.training


def test_retrain_resume_reproduces_the_uninterrupted_run(tool, tmp_path):
    config = _tiny_retrain_config(tmp_path, epochs=2)
    retrain = tool("retrain")
    retrain(["--config", str(config), "--out", str(tmp_path / "full")])
    retrain(["--config", str(config), "--out", str(tmp_path / "cut"), "--max-steps", "3"])
    stopped = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert (stopped["global_step"], stopped["history"], stopped["best"]["value"]) == (3, [], None)
    assert stopped["stop_record"]["global_step"] == 3 and "miou" in stopped["stop_record"]["valid"]
    assert not (tmp_path / "cut" / "best.pt").exists()  # a stop mid-epoch is never the best model
    retrain(["--resume", str(tmp_path / "cut"), "--max-steps", "4"])  # a stop right after the epoch's record
    retrain(["--resume", str(tmp_path / "cut")])
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    resumed = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert full["global_step"] == resumed["global_step"] == 8
    assert [h["epoch"] for h in full["history"]] == [1, 2]
    assert_same(full, resumed)  # weights, optimiser, schedule, RNG, best, history
    assert_same(load_checkpoint(tmp_path / "full" / "best.pt"), load_checkpoint(tmp_path / "cut" / "best.pt"))
    logged = EventAccumulator(str(tmp_path / "cut" / "tensorboard")).Reload().Scalars("valid/miou")
    assert [(event.step, event.value) for event in logged] == [(h["global_step"], pytest.approx(h["valid"]["miou"]))
                                                               for h in full["history"]]  # each record once


def test_darts_cifar_retrain_with_auxiliary_head_and_drop_path(tool, tmp_path):
    write_fake_cifar10(tmp_path / "cifar", num_train=16, num_test=8)
    config = write_config(tmp_path / "tiny_cifar.yaml", "retrain/cifar10_darts",
                          data={"root": str(tmp_path / "cifar"), "batch_size": 8, "num_workers": 0,
                                "eval_batch_size": 8},
                          model={"init_channels": 4, "layers": 3}, train={"epochs": 2})
    record = tool("retrain")(["--config", str(config), "--out", str(tmp_path / "run")])
    assert 0.0 <= record["valid"]["acc"] <= 100.0
    model, meta, _ = load_trained_model(tmp_path / "run")
    assert meta.task == "classification" and model.auxiliary
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert [h["train"]["drop_path_prob"] for h in state["history"]] == [0.0, pytest.approx(0.1)]  # 0.2 * e / E
    # stopped in the middle of the drop-path epoch and resumed: the same masks, the same run
    tool("retrain")(["--config", str(config), "--out", str(tmp_path / "cut"), "--max-steps", "3"])
    tool("retrain")(["--resume", str(tmp_path / "cut")])
    assert_same(state, load_checkpoint(tmp_path / "cut" / "checkpoint.pt"))


def test_unknown_arch_and_mismatched_settings_are_user_errors(tool, tmp_path):
    with pytest.raises(UserError, match="unknown model"):
        tool("retrain")(["--dataset", "synthetic", "--arch", "resnet9000", "--dry-run"])
    with pytest.raises(UserError, match="does not take"):
        tool("retrain")(["--dataset", "cifar10", "--arch", "DARTS_V2", "--filter-multiplier", "8", "--dry-run"])
    with pytest.raises(UserError, match="does not exist"):
        tool("retrain")(["--dataset", "synthetic", "--arch", str(tmp_path / "missing.json"), "--dry-run"])
