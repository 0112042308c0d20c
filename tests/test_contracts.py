"""The seams between the pieces: the search-network interface, typed architectures, tasks,
checkpoint metadata, the layering of the package and the ``autoseg`` command."""
from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from fakes import write_retrain_checkpoint

from autoseg.cli import main as cli_main
from autoseg.space.architecture import NetworkArch, read_architecture
from autoseg.data import dataset_eval_split, dataset_task, list_datasets
from autoseg.engine.task import TASKS, Task
from autoseg.engine.trained import TrainedModelMeta, load_trained_model
from autoseg.utils.errors import UserError
from autoseg.space.genotype import AUTODEEPLAB_CELL, AUTODEEPLAB_PATH, GENOTYPES, Genotype
from autoseg.search.darts_network import DartsSearchNetwork
from autoseg.search.network import SearchNetwork
from autoseg.search.trellis_network import TrellisSearchNetwork

SUPERNETS = {
    "darts": lambda: DartsSearchNetwork(10, init_channels=4, layers=3, num_blocks=2, multiplier=2),
    "trellis": lambda: TrellisSearchNetwork(3, layers=3, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8),
}

# an arch.json as autoseg wrote it before NetworkArch existed (dict built key by key)
LEGACY_ARCH = {
    "path": [0, 1, 1], "cell": {"blocks": [[["sep_conv_3x3", 1], ["skip_connect", 0]],
                                           [["dil_conv_3x3", 2], ["sep_conv_5x5", 0]]], "concat": [2, 3]},
    "filter_multiplier": 8, "blocks": 2, "layers": 3, "levels": 4,
    "primitives": ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                   "dil_conv_3x3", "dil_conv_5x5"],
    "free_first_step": True, "step_probabilities": [0.5, 0.33, 0.34],
    "cell_weights": [[0.125] * 8] * 5, "transitions": [[[0.5, 0.5, 0, 0]] * 4] * 3,
}


@pytest.mark.parametrize("name", SUPERNETS)
def test_both_supernets_honour_the_search_network_interface(name):
    torch.manual_seed(0)
    net = SUPERNETS[name]()
    assert isinstance(net, SearchNetwork)
    arch_ids = {id(p) for p in net.arch_parameters()}
    weight_ids = {id(p) for p in net.weight_parameters()}
    assert arch_ids and weight_ids and not arch_ids & weight_ids
    assert arch_ids | weight_ids == {id(p) for p in net.parameters()}
    arch = net.decode()
    assert isinstance(arch, Genotype if name == "darts" else NetworkArch)
    weights = net.arch_weights()
    assert net.cell_types and all(weights[cell].shape[1] == len(net.primitives) for cell in net.cell_types)
    figures = net.figures(arch)
    assert figures and all(image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
                           for image in figures.values())
    summary = net.summary()
    assert summary["params"] == sum(p.numel() for p in net.weight_parameters())
    assert summary["arch_params"] == sum(p.numel() for p in net.arch_parameters())


def test_network_arch_round_trips_through_json(tmp_path):
    torch.manual_seed(3)
    net = TrellisSearchNetwork(3, layers=4, levels=3, blocks=2, filter_multiplier=2)
    with torch.no_grad():
        net.betas.normal_()
    arch = net.decode()
    arch.to_json(tmp_path / "arch.json")
    again = NetworkArch.from_json(tmp_path / "arch.json")
    assert again == arch and again.to_dict() == arch.to_dict()
    assert again.transitions == arch.transitions and again.step_probabilities == arch.step_probabilities
    assert read_architecture(tmp_path / "arch.json") == arch


def test_earlier_and_minimal_arch_files_still_load(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps(LEGACY_ARCH))
    arch = read_architecture(tmp_path / "old.json")
    assert isinstance(arch, NetworkArch)
    assert arch.to_dict() == LEGACY_ARCH  # what was written is what is written back
    assert arch.strides == [4, 8, 8] and arch.layers == 3 and arch.blocks == 2
    minimal = NetworkArch.from_dict({"path": list(AUTODEEPLAB_PATH), "cell": AUTODEEPLAB_CELL.to_dict()})
    assert minimal.filter_multiplier is None and minimal.cell == AUTODEEPLAB_CELL
    GENOTYPES["DARTS_V2"].to_json(tmp_path / "genotype.json")
    assert read_architecture(tmp_path / "genotype.json") == GENOTYPES["DARTS_V2"]


@pytest.mark.parametrize("change,message", [
    ({"path": [0, 2]}, "at most one per layer"),
    ({"path": [2]}, "start at 0 or 1"),
    ({"path": [1, 1, 1], "free_first_step": False}, "free_first_step"),
    ({"path": [0, 1, 2], "levels": 2}, "levels 0..1"),
    ({"layers": 5}, "layers=5"),
    ({"primitives": ["none", "sep_conv_3x3"]}, "does not contain"),
    ({"filter_multiplier": 0}, "positive"),
    ({"cell": {"blocks": [[["sep_conv_3x3", 7]]]}}, "not a cell genotype"),
])
def test_one_validation_rejects_bad_architectures(change, message):
    with pytest.raises(UserError, match=message):
        NetworkArch.from_dict({**LEGACY_ARCH, **change})


def test_a_file_of_neither_kind_is_a_user_error(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"layers": 3}))
    with pytest.raises(UserError, match="neither an arch.json"):
        read_architecture(tmp_path / "x.json")


def test_every_dataset_declares_its_task_and_evaluation_split():
    for name in list_datasets():
        assert dataset_task(name) in TASKS
        assert dataset_eval_split(name) in ("val", "test")
    assert (dataset_task("cifar10"), dataset_eval_split("cifar10")) == ("classification", "test")
    assert (dataset_task("cityscapes"), dataset_eval_split("cityscapes")) == ("segmentation", "val")


def test_evaluation_loss_is_summed_over_pixels_and_divided_once():
    """Two batches with different numbers of labelled pixels: the loss is the mean over all
    labelled pixels, not a mean of batch means (so it does not depend on how data is split)."""
    torch.manual_seed(0)
    images = torch.randn(3, 3, 4, 5)
    masks = torch.randint(0, 3, (3, 4, 5))
    masks[0, :, 1:] = 255  # the first image is almost all unlabelled
    model = torch.nn.Conv2d(3, 3, 1)
    task = Task("segmentation", 3)
    split = task.evaluate(model, [(images[:1], masks[:1]), (images[1:], masks[1:])], torch.device("cpu"))
    whole = torch.nn.functional.cross_entropy(model(images), masks, ignore_index=255).item()
    assert split["loss"] == pytest.approx(whole, rel=1e-6)
    assert not model.training  # evaluation leaves the model in eval mode; loops switch back explicitly


def test_retrain_checkpoints_carry_one_metadata_record_and_old_ones_still_load(tmp_path):
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    NetworkArch((0, 1), AUTODEEPLAB_CELL, filter_multiplier=2).to_json(tmp_path / "arch.json")
    write_retrain_checkpoint(tmp_path / "new.pt", str(tmp_path / "arch.json"), 3, "segmentation", "folder",
                             ["a", "b", "c"], palette, {"dataset": "folder", "num_classes": 3})
    model, meta, state = load_trained_model(tmp_path / "new.pt")
    assert isinstance(meta, TrainedModelMeta) and state["meta"] == meta.to_dict()
    assert (meta.task, meta.dataset, meta.num_classes, meta.class_names) == ("segmentation", "folder", 3,
                                                                             ["a", "b", "c"])
    legacy = {key: value for key, value in state.items() if key != "meta"}
    legacy.update(meta.to_dict())  # the layout before the record had its own key
    torch.save(legacy, tmp_path / "old.pt")
    old_model, old_meta, _ = load_trained_model(tmp_path / "old.pt")
    assert old_meta == meta
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(old_model(x), model(x))


LAYERS = {"utils": 0, "layers": 0, "space": 0, "evaluation": 0, "analysis": 0, "config": 0,
          "search": 1, "models": 2, "data": 3, "losses": 3, "analysis.expected_cost": 3, "engine": 4, "cli": 5,
          "tools": 6}
"""The package's layers, bottom to top (docs/DESIGN.md §7): a sub-package's layer, or a module's where it
differs from its package's."""


def _layer(module: str) -> int:
    parts = module.split(".")[1:]
    for depth in range(len(parts), 0, -1):
        if ".".join(parts[:depth]) in LAYERS:
            return LAYERS[".".join(parts[:depth])]
    raise KeyError(f"{module} is in no layer of LAYERS: add its sub-package")


def test_every_package_module_is_in_a_layer():
    modules = [".".join(path.relative_to(ROOT).with_suffix("").parts) for path in (ROOT / "autoseg").rglob("*.py")]
    unplaced = []
    for module in modules:
        if module == "autoseg.__init__":
            continue
        try:
            _layer(module)
        except KeyError as missing:
            unplaced.append(str(missing))
    assert not unplaced, unplaced


def test_the_package_top_level_holds_only_subpackages_and_its_entry_modules():
    top_modules = sorted(path.stem for path in (ROOT / "autoseg").glob("*.py"))
    assert top_modules == ["__init__", "cli", "config", "losses"]


def test_no_module_imports_a_layer_above_it():
    offenders = []
    for path in sorted((ROOT / "autoseg").rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        module = ".".join(relative.parts)
        if module.endswith("__init__") and len(relative.parts) == 2:
            continue  # the package's own lazy re-exports
        own = _layer(module.replace(".__init__", ""))
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                if name.startswith("autoseg.") and _layer(name) > own:
                    offenders.append(f"{module} imports {name}")
    assert not offenders, offenders


def test_importing_a_search_network_registers_no_retrain_model():
    code = ("import sys, autoseg.search.trellis_network, autoseg.search.darts_network; "
            "print(sorted(m for m in sys.modules if m.startswith(('autoseg.models', 'autoseg.engine'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_autoseg_command_runs_from_any_directory(tmp_path, capsys):
    done = subprocess.run([sys.executable, "-m", "autoseg.cli", "retrain", "--dataset", "cifar10", "--dry-run"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["params"] == 3349342  # found its config from elsewhere
    with pytest.raises(SystemExit) as listed:
        cli_main(["--help"])
    listing = capsys.readouterr().out
    assert listed.value.code == 0 and "search" in listing and "retrain" in listing
    with pytest.raises(SystemExit) as unknown:
        cli_main(["serch"])
    assert unknown.value.code == 2 and "unknown tool 'serch'" in capsys.readouterr().err
