"""autoseg retrain --init-from: fine-tuning a retrained model on data with another class count."""
import json
import math

import pytest
import torch
import yaml
from fakes import write_fake_folder, write_retrain_checkpoint

from autoseg.engine.checkpoint import load_checkpoint, seed_everything
from autoseg.engine.fine_tune import init_from_checkpoint
from autoseg.engine.retrain_loop import RetrainRun
from autoseg.utils.errors import UserError
from autoseg.models.spec import build_model, model_spec

SOURCE_CLASSES, TARGET_CLASSES = 6, 3
TINY_CELL = {"blocks": [[["sep_conv_3x3", 1], ["skip_connect", 0]], [["dil_conv_3x3", 2], ["max_pool_3x3", 1]]],
             "concat": [2, 3]}


class _Stopped(Exception):
    """Raised in place of training, once the run's starting state is recorded."""


def _arch_json(tmp_path):
    file = tmp_path / "arch.json"
    file.write_text(json.dumps({"path": [0, 1, 2, 1], "cell": TINY_CELL, "filter_multiplier": 8}))
    return file


MODELS = {  # --arch -> the factory settings of the test (small where the model takes them)
    "searched": lambda tmp_path: (str(_arch_json(tmp_path)), {"filter_multiplier": 2, "bn_momentum": 0.1}),
    "published": lambda tmp_path: ("autodeeplab-s", {"bn_momentum": 0.1}),
    "smp": lambda tmp_path: ("smp:Unet:resnet18", {}),
}


def _source(tmp_path, arch, settings):
    """A 6-class retrain run directory holding a checkpoint of a model initialised from another seed."""
    torch.manual_seed(1234)
    write_retrain_checkpoint(tmp_path / "source" / "best.pt", arch, SOURCE_CLASSES, "segmentation", "synthetic",
                             [f"class {i}" for i in range(SOURCE_CLASSES)], [[i, i, i] for i in range(SOURCE_CLASSES)],
                             {"dataset": "synthetic"}, **settings)
    return tmp_path / "source"


def _folder_config(tmp_path, arch, settings, **train):
    """A retrain on a 3-class folder dataset, the model settings given by the config."""
    write_fake_folder(tmp_path / "folder", num_classes=TARGET_CLASSES)
    config = tmp_path / "folder.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "folder", "root": str(tmp_path / "folder"), "num_classes": TARGET_CLASSES,
                 "crop_size": 16, "batch_size": 2, "eval_batch_size": 1, "scale_range": [1.0, 1.0]},
        "model": {"arch": arch, **settings}, "train": {"iterations": 2, "device": "cpu", **train}}))
    return config


@pytest.mark.parametrize("kind", MODELS)
def test_fine_tuning_starts_from_the_source_weights_with_a_fresh_classifier(tool, tmp_path, monkeypatch, capsys, kind):
    arch, settings = MODELS[kind](tmp_path)
    source = _source(tmp_path, arch, settings)
    started = {}

    def record_start(run):
        started.update(model={k: v.clone() for k, v in run.model.state_dict().items()},
                       optimizer=run.optimizer.state_dict(), step=run.global_step, scaler=run.scaler.state_dict())
        raise _Stopped

    monkeypatch.setattr(RetrainRun, "run", record_start)
    config = _folder_config(tmp_path, arch, settings)
    with pytest.raises(_Stopped):
        tool("retrain")(["--config", str(config), "--out", str(tmp_path / "run"), "--init-from", str(source)])
    weights = load_checkpoint(source / "best.pt")["model"]
    seed_everything(0)  # the seed of the retrain config: the fine-tuned model as freshly built
    fresh = build_model(model_spec(arch, **settings), TARGET_CLASSES).state_dict()
    resized = [name for name, value in fresh.items() if value.shape != weights[name].shape]
    assert resized and all(fresh[name].shape[0] == TARGET_CLASSES for name in resized)  # the classifier
    for name, value in started["model"].items():
        assert torch.equal(value, fresh[name] if name in resized else weights[name]), name
    assert any(not torch.equal(value, weights[name]) for name, value in fresh.items() if name not in resized)
    assert started["step"] == 0 and started["optimizer"]["state"] == {}
    lines = capsys.readouterr().out.splitlines()
    report = [line for line in lines if line.startswith("re-initialised")]
    assert len(report) == 1 and all(name in report[0] for name in resized)
    assert f"initialised {len(fresh) - len(resized)} of the model's {len(fresh)} tensors from " in "\n".join(lines)


def test_a_fine_tuned_smp_model_trains_and_records_its_source(tool, tmp_path):
    arch, settings = MODELS["smp"](tmp_path)
    source = _source(tmp_path, arch, settings)
    config = _folder_config(tmp_path, arch, settings)
    record = tool("retrain")(["--config", str(config), "--out", str(tmp_path / "run"), "--init-from", str(source)])
    assert math.isfinite(record["train"]["loss"])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert saved["model"]["init_from"] == state["config"]["model"]["init_from"] == str(source / "best.pt")
    assert state["global_step"] == 2 and state["meta"]["num_classes"] == TARGET_CLASSES


def test_init_from_a_checkpoint_file_reports_missing_and_unexpected_tensors(tmp_path):
    arch, settings = MODELS["searched"](tmp_path)
    write_retrain_checkpoint(tmp_path / "other.pt", arch, SOURCE_CLASSES, "segmentation", "synthetic",
                             ["c"] * SOURCE_CLASSES, [[0, 0, 0]] * SOURCE_CLASSES, {"dataset": "synthetic"}, **settings)
    state = torch.load(tmp_path / "other.pt", weights_only=True)
    state["model"]["extra.weight"] = torch.zeros(2)
    dropped = next(name for name in state["model"] if name.endswith("running_var"))
    del state["model"][dropped]
    torch.save(state, tmp_path / "other.pt")
    model = build_model(model_spec(arch, **settings), SOURCE_CLASSES)
    report = init_from_checkpoint(model, tmp_path / "other.pt")
    assert report.source == str(tmp_path / "other.pt") and report.source_model == "autodeeplab-arch"
    assert (report.reinitialised, report.missing, report.unexpected) == ([], [dropped], ["extra.weight"])
    lines = report.lines()
    assert lines[1] == f"not in the source (kept as built): {dropped}"
    assert lines[2] == "only in the source (ignored): extra.weight"


def test_init_from_errors(tool, tmp_path):
    arch, settings = MODELS["smp"](tmp_path)
    source = _source(tmp_path, arch, settings)
    with pytest.raises(UserError, match="--init-from starts a new run.*--resume"):
        tool("retrain")(["--resume", str(tmp_path / "anything"), "--init-from", str(source)])
    with pytest.raises(UserError, match="no weight of .* fits the model"):
        tool("retrain")(["--dataset", "synthetic", "--arch", "autodeeplab-paper", "--init-from", str(source),
                         "--dry-run"])
    with pytest.raises(UserError, match="no checkpoint at"):
        tool("retrain")(["--dataset", "synthetic", "--init-from", str(tmp_path / "missing"), "--dry-run"])
