"""Contract tests parametrized over every registry, so that a new entry is tested without writing a
test: every dataset (built tiny, from files written in its real layout where it reads files), every
loss, every model and every search space. The ops registry's contract test is in test_ops.py, the
search methods' in test_search_methods.py."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from conftest import ROOT
from fakes import write_fake_ade20k, write_fake_cifar10, write_fake_cityscapes, write_fake_folder, write_fake_voc

from autoseg.config import LossConfig, RetrainConfig, SearchConfig, load_config
from autoseg.data import (CONFIG_KINDS, build_dataset, dataset_default_config, dataset_eval_split,
                          dataset_num_classes, dataset_task, list_datasets)
from autoseg.data.transforms import IGNORE_INDEX
from autoseg.engine.task import TASKS
from autoseg.utils.errors import UserError
from autoseg.space.genotype import AUTODEEPLAB_CELL
from autoseg.losses import LOSSES, build_loss, list_losses, loss_options
from autoseg.models import create_model, list_models
from autoseg.models.spec import CLASSIFICATION_MODELS
from autoseg.search.network import SearchNetwork
from autoseg.search.spaces import SEARCH_SPACES

# -- datasets ----------------------------------------------------------------------------------

FOLDER_CLASSES = 3

WRITERS: dict[str, Callable[[Path], tuple[Path, dict[str, Any]]]] = {
    "cifar10": lambda root: (write_fake_cifar10(root, num_train=4, num_test=2) and root, {}),
    "cityscapes": lambda root: (write_fake_cityscapes(root, cities=("aachen",), images_per_city=1) and root, {}),
    "folder": lambda root: (write_fake_folder(root, FOLDER_CLASSES, sizes=((20, 30),)) and root,
                            {"num_classes": FOLDER_CLASSES, "crop_size": 16}),
    "voc": lambda root: (write_fake_voc(root) and root, {}),
    "voc_aug": lambda root: (write_fake_voc(root, train_aug=["2007_000032"]) and root, {}),
    "ade20k": lambda root: (write_fake_ade20k(root, counts={"training": 1, "validation": 1}) and root, {}),
}
"""How each dataset that reads files gets a tiny copy in its real on-disk layout: ``writer(root)``
-> (the data root, the options it is built with). A dataset not listed here is built without a
root (a generated one); one that needs files fails, asking for its writer here."""

GENERATED_OPTIONS = {"image_size": 32, "length": 2}
"""What the generated datasets are built with, so that they stay tiny."""


def _tiny_dataset(name: str, split: str, root: Path, augment: bool) -> torch.utils.data.Dataset:
    """Dataset ``name`` built small for ``split``, from files written under ``root`` when it reads any."""
    if name in WRITERS:
        data_root, options = WRITERS[name](root)
        return build_dataset(name, str(data_root), split, augment=augment, **options)
    try:
        return build_dataset(name, None, split, augment=augment, crop_size=32, **GENERATED_OPTIONS)
    except UserError as error:
        pytest.fail(f"dataset {name!r} cannot be built tiny without files ({error}): give it a writer in WRITERS")


@pytest.mark.parametrize("augment", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_builds_tiny_and_keeps_the_sample_contract(name: str, augment: bool, tmp_path: Path) -> None:
    split = "train" if augment else dataset_eval_split(name)
    dataset = _tiny_dataset(name, split, tmp_path, augment)
    num_classes = dataset_num_classes(name, FOLDER_CLASSES if name == "folder" else None)
    assert len(dataset) > 0 and dataset.num_classes == num_classes
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
    if dataset_task(name) == "classification":
        assert 0 <= int(target) < num_classes
        return
    assert target.dtype == torch.int64 and target.shape == image.shape[1:]
    assert set(target.unique().tolist()) <= set(range(num_classes)) | {IGNORE_INDEX}
    assert dataset.ignore_index == IGNORE_INDEX and len(dataset.class_names) == num_classes
    assert dataset.palette.dtype == np.uint8 and dataset.palette.shape == (num_classes, 3)
    assert np.array_equal(dataset.load_mask(0), dataset.load(0)[1])


@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_declares_default_configs_that_load_and_fit_it(name: str) -> None:
    assert dataset_task(name) in TASKS
    for kind, config_class in zip(CONFIG_KINDS, (SearchConfig, RetrainConfig)):
        config_name = dataset_default_config(name, kind)
        if config_name is None:
            continue
        config = load_config(ROOT / "configs" / kind / f"{config_name}.yaml", config_class)
        assert dataset_task(config.data.dataset) == dataset_task(name)
        if kind == "search":
            assert SEARCH_SPACES[config.mode].task == dataset_task(name)


# -- losses ------------------------------------------------------------------------------------

CLASSES = 4
WEIGHTS = [0.5, 2.0, 1.0, 1.5]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (2, 4, 6, 7) and targets with every class and about a quarter of pixels ignored."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, CLASSES, 6, 7, generator=generator) * 2
    target = torch.randint(0, CLASSES, (2, 6, 7), generator=generator)
    target[torch.rand(2, 6, 7, generator=generator) < 0.25] = IGNORE_INDEX
    target[0, 0, :CLASSES] = torch.arange(CLASSES)
    return logits, target


def _value_and_gradient(loss: torch.nn.Module, logits: torch.Tensor,
                        target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.clone().requires_grad_(True)
    value = loss(logits, target)
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("name", list_losses())
def test_every_loss_is_finite_differentiable_and_ignores_pixels_labelled_255(name: str, weights: list | None) -> None:
    loss = LOSSES[name]
    assert loss.name == name and loss.__doc__ and dataclasses.is_dataclass(loss.Options)
    config = LossConfig(name=name)
    assert loss_options(config) == loss.Options()  # the defaults are within their own ranges
    if weights is not None and not loss.takes_class_weights:
        with pytest.raises(UserError, match=f"the {name} loss takes no class weights"):
            build_loss(config, CLASSES, class_weights=weights)
        return
    module = build_loss(config, CLASSES, class_weights=weights)
    logits, target = _batch()
    ignored = (target == IGNORE_INDEX).unsqueeze(1).expand_as(logits)
    changed = torch.where(ignored, torch.randn_like(logits) * 50, logits)
    value, gradient = _value_and_gradient(module, logits, target)
    changed_value, changed_gradient = _value_and_gradient(module, changed, target)
    assert value.shape == () and torch.isfinite(value) and value > 0
    assert torch.isfinite(gradient).all()
    assert torch.allclose(value, changed_value, rtol=1e-6, atol=0)
    assert torch.allclose(gradient, changed_gradient, rtol=1e-5, atol=1e-9)
    assert gradient[ignored].abs().max() == 0 and gradient[~ignored].abs().max() > 0


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_refuses_unknown_options(name: str) -> None:
    with pytest.raises(UserError, match="unknown key.*no_such_option in loss.options"):
        loss_options(LossConfig(name=name, options={"no_such_option": 1}))


# -- models ------------------------------------------------------------------------------------

TINY_MODELS: dict[str, dict[str, Any]] = {
    "autodeeplab-paper": {"filter_multiplier": 2},
    "autodeeplab-arch": {"arch": {"path": [0, 1, 1], "cell": AUTODEEPLAB_CELL.to_dict()}, "filter_multiplier": 2},
    "darts-cifar": {"C": 4, "layers": 3},
}
"""Small settings for the models whose factory takes them; the others are built as registered
(the published autodeeplab-s/m/l fix their own width)."""


@pytest.mark.parametrize("name", list_models())
def test_every_model_maps_a_small_input_to_class_scores(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 3, **TINY_MODELS.get(name, {})).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    expected = (1, 3) if name in CLASSIFICATION_MODELS else (1, 3, 32, 32)
    assert out.shape == expected and torch.isfinite(out).all()


# -- search spaces -----------------------------------------------------------------------------

TINY_SUPERNET = {"layers": 3, "levels": 2, "blocks": 2, "multiplier": 2, "filter_multiplier": 2,
                 "init_channels": 4, "aspp_channels": 8}
"""Small values for the supernet settings a search space's ``model`` section has."""


@pytest.mark.parametrize("name", list(SEARCH_SPACES))
def test_every_search_space_builds_a_supernet_that_runs_and_decodes(name: str) -> None:
    space = SEARCH_SPACES[name]
    assert space.task in TASKS and SearchConfig.MODEL_TYPES[name] is space.model_config
    fields = {item.name for item in dataclasses.fields(space.model_config)}
    assert set(space.architecture_keys) <= fields
    model = space.model_config(**{key: value for key, value in TINY_SUPERNET.items() if key in fields})
    config = SearchConfig(mode=name, model=model)
    torch.manual_seed(0)
    network = space.build_network(config, 3)
    assert isinstance(network, SearchNetwork)
    out = network(torch.randn(2, 3, 32, 32))
    assert out.shape == ((2, 3) if space.task == "classification" else (2, 3, 32, 32))
    assert isinstance(network.decode(), space.architecture)
