"""Shared fixtures: the tools' ``main`` functions, loaded in-process, and tiny experiment configs."""
from __future__ import annotations

import importlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `fakes`

from fakes import write_fake_cifar10  # noqa: E402  (found through the line above)

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one worker process per core (pyproject addopts): no oversubscription
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # nor in the processes the tests start (tools, torchrun)


ONE_WORKER_FILES: dict[str, str] = {
    "test_arch_history.py": "a module-scoped search",
    "test_compilation.py": "the Inductor graphs its tests share (two workers would generate each one twice)",
    "test_distributed.py": "a module-scoped two-process search",
    "test_docs.py": "the site, built once",
    "test_expected_cost.py": "the module-scoped cost model and DARTS_V2 cost report",
    "test_fault_tolerance.py": "its forkserver, which imports the tools once",
    "test_inference_tools.py": "a module-scoped retrained run",
    "test_search_methods.py": "the module-scoped full searches",
}
"""Test files whose tests share an expensive module-level setup (a file whose module-scoped fixture is
cheap, such as a few fake images, is left out): ``--dist loadgroup`` (pyproject addopts)
runs each of them in one worker; every other test goes to whichever worker is free."""


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of :data:`ONE_WORKER_FILES` share one xdist group per file; tests marked ``cuda`` skip, with
    their reason, where no CUDA device is visible."""
    for item in items:
        if item.path.name in ONE_WORKER_FILES:
            item.add_marker(pytest.mark.xdist_group(item.path.name))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none is visible); run on a GPU with python -m pytest -m cuda")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def load_tool(name: str) -> Any:
    """The module of tool ``name`` (``autoseg.tools.<name>``, what ``autoseg <name>`` runs)."""
    return importlib.import_module(f"autoseg.tools.{name}")


@pytest.fixture
def tool() -> Callable[[str], Any]:
    """``tool("search").main([...])`` runs a tool in this process."""
    return lambda name: load_tool(name).main


TINY_TRELLIS = {"layers": 3, "levels": 2, "blocks": 2, "filter_multiplier": 2, "aspp_channels": 8}


def write_config(path: Path, base: str, **sections: dict) -> Path:
    """Write ``configs/<base>.yaml`` with the given sections updated (a tiny variant of it); a
    section given as None is removed."""
    config = yaml.safe_load((ROOT / "configs" / f"{base}.yaml").read_text())
    for section, values in sections.items():
        if values is None:
            config.pop(section, None)
        elif isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    path.write_text(yaml.safe_dump(config))
    return path


def write_search_config(path: Path, **sections: Any) -> Path:
    """``configs/search/synthetic.yaml`` with the given sections updated (:func:`write_config`),
    searching with the ``darts`` method and its defaults (the papers' search, whatever method the
    quick start uses) unless ``train`` or ``method_options`` say otherwise."""
    train = {"method": "darts", **(sections.pop("train", None) or {})}
    return write_config(path, "search/synthetic", train=train,
                        method_options=sections.pop("method_options", None), **sections)


def write_tiny_search_config(path: Path, **train: Any) -> Path:
    """A hierarchical search on 32x32 synthetic scenes that runs in seconds: 2 epochs of 4 steps,
    the first a warm-up, with the ``darts`` method; ``train`` settings override."""
    return write_search_config(path, data={"image_size": 32, "crop_size": 32, "train_length": 16, "val_length": 4,
                                           "batch_size": 2, "eval_batch_size": 4},
                               model=TINY_TRELLIS, train={"epochs": 2, "warmup_epochs": 1, **train})


def write_tiny_cifar_search_config(root: Path, **model: Any) -> Path:
    """A DARTS cell search on fake CIFAR-10 (32 training images, written to ``root/cifar``) that
    runs in seconds: 2 epochs of 4 steps, a supernet of 3 cells of 2 blocks; ``model`` settings
    override. Returns ``root/tiny_cifar.yaml``."""
    write_fake_cifar10(root / "cifar", num_train=32, num_test=8)
    return write_config(root / "tiny_cifar.yaml", "search/cifar10",
                        data={"root": str(root / "cifar"), "batch_size": 4, "num_workers": 0, "eval_batch_size": 8},
                        model={"init_channels": 4, "layers": 3, "blocks": 2, "multiplier": 2, **model},
                        train={"epochs": 2})


def write_tiny_retrain_config(path: Path, **train: Any) -> Path:
    """A retraining of a small Auto-DeepLab network on 32x32 synthetic scenes: 3 epochs of 4 steps
    (batches of 4), evaluated every epoch; ``train`` settings override."""
    return write_config(path, "retrain/synthetic",
                        data={"image_size": 32, "crop_size": 32, "train_length": 16, "val_length": 4,
                              "batch_size": 4, "eval_batch_size": 4, "scale_range": [0.75, 1.25]},
                        model={"filter_multiplier": 2},
                        optimizer={"lr": 0.02},
                        train={"epochs": 3, "eval_every": 1, **train})


@pytest.fixture
def tiny_synthetic_config(tmp_path: Path) -> Path:
    """:func:`write_tiny_search_config` as it is."""
    return write_tiny_search_config(tmp_path / "tiny_synthetic.yaml")


def without_timings(history: list[dict]) -> list[dict]:
    """A run's history without the wall-clock seconds of each record (the only figure that differs
    between two runs doing the same work)."""
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


def assert_same(expected: Any, actual: Any, where: str = "state") -> None:
    """Assert two checkpoint states are identical: tensors equal element for element (same dtype),
    numbers equal (NaN matching NaN), containers equal entry by entry; ``history`` records are
    compared without their timings."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and expected.keys() == actual.keys(), f"{where}: keys differ"
        for key in expected:
            if key == "history":
                assert_same(without_timings(expected[key]), without_timings(actual[key]), f"{where}.history")
            else:
                assert_same(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected), f"{where}: lengths differ"
        for index, (a, b) in enumerate(zip(expected, actual)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and expected.dtype == actual.dtype, f"{where}: dtypes differ"
        assert torch.equal(expected, actual), f"{where}: tensors differ"
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(actual, float) and math.isnan(actual), f"{where}: {actual} is not NaN"
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"
