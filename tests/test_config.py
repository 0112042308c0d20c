"""Config validation: every numeric setting and flag checked up front, with a one-line error."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, load_tool

from autoseg.config import (BOUNDS, DartsSearchModelConfig, RetrainConfig, SearchConfig, TrellisModelConfig,
                            config_problems, load_config, override, validate_config)
from autoseg.cli import run_tool
from autoseg.utils.errors import UserError


def hierarchical() -> SearchConfig:
    return SearchConfig(mode="hierarchical", model=TrellisModelConfig())


BAD_SETTINGS = [
    # (config, {key: value}, what the message must say besides the key)
    (hierarchical, {"train.epochs": 0}, "at least 1, got 0"),
    (hierarchical, {"train.epochs": -1}, "at least 1, got -1"),
    (hierarchical, {"train.warmup_epochs": -1}, "at least 0"),
    (hierarchical, {"train.epochs": 20, "train.warmup_epochs": 20}, "must be below train.epochs (20)"),
    (hierarchical, {"train.max_steps": 0}, "at least 1"),
    (hierarchical, {"train.log_every": 0}, "at least 1"),
    (hierarchical, {"train.seed": -1}, "in [0, 4294967295]"),
    (hierarchical, {"train.device": "gpu"}, "auto, cpu, cuda"),
    (hierarchical, {"data.batch_size": 0}, "at least 1"),
    (hierarchical, {"data.eval_batch_size": 0}, "at least 1"),
    (hierarchical, {"data.num_workers": -1}, "at least 0"),
    (hierarchical, {"data.crop_size": 0}, "at least 1"),
    (hierarchical, {"data.image_size": 64, "data.crop_size": 65}, "larger than data.image_size (64)"),
    (hierarchical, {"data.scale": 0.0}, "in (0, 1]"),
    (hierarchical, {"data.scale": 1.5}, "in (0, 1]"),
    (hierarchical, {"data.scale_range": (2.0, 0.5)}, "low <= high"),
    (hierarchical, {"data.scale_range": (0.0, 2.0)}, "above 0"),
    (hierarchical, {"data.num_classes": 0}, "at least 1"),
    (hierarchical, {"data.max_eval_batches": 0}, "at least 1"),
    (hierarchical, {"model.filter_multiplier": 0}, "at least 1"),
    (hierarchical, {"model.layers": 0}, "at least 1"),
    (hierarchical, {"model.levels": 0}, "at least 1"),
    (hierarchical, {"model.blocks": 0}, "at least 1"),
    (hierarchical, {"model.primitives": ["none"]}, "no op other than 'none'"),
    (hierarchical, {"model.primitives": ["sep_conv_3x3", "conv_7x7"]}, "unknown ops ['conv_7x7']"),
    (hierarchical, {"model.primitives": ["sep_conv_3x3", "sep_conv_3x3"]}, "lists an op twice"),
    (hierarchical, {"optimizer.lr": 0.0}, "above 0"),
    (hierarchical, {"optimizer.lr": -0.1}, "above 0"),
    (hierarchical, {"optimizer.lr_min": 0.1}, "is above optimizer.lr (0.025)"),
    (hierarchical, {"optimizer.momentum": 1.0}, "in [0, 1)"),
    (hierarchical, {"optimizer.weight_decay": -1e-4}, "at least 0"),
    (hierarchical, {"optimizer.grad_clip": 0.0}, "above 0"),
    (hierarchical, {"arch_optimizer.lr": 0.0}, "above 0"),
    (hierarchical, {"arch_optimizer.betas": (0.9, 1.0)}, "in [0, 1)"),
    (hierarchical, {"arch_optimizer.betas": (-0.1, 0.999)}, "in [0, 1)"),
    (SearchConfig, {"model.multiplier": 5}, "is above model.blocks (4)"),
    (SearchConfig, {"model.init_channels": 0}, "at least 1"),
    (RetrainConfig, {"train.iterations": 0}, "at least 1"),
    (RetrainConfig, {"train.eval_every": 0}, "at least 1"),
    (RetrainConfig, {"optimizer.schedule": "step"}, "poly, cosine"),
    (RetrainConfig, {"optimizer.poly_power": 0.0}, "above 0"),
    (RetrainConfig, {"model.drop_path_prob": 1.0}, "in [0, 1)"),
    (RetrainConfig, {"model.bn_momentum": 0.0}, "in (0, 1]"),
    (RetrainConfig, {"model.filter_multiplier": 0}, "at least 1"),
]


@pytest.mark.parametrize("make,settings,message", BAD_SETTINGS,
                         ids=[f"{'-'.join(map(str, s.items()))}" for _, s, _ in BAD_SETTINGS])
def test_bad_setting_is_one_line_naming_the_key(make, settings: dict[str, Any], message: str) -> None:
    config = make()
    for key, value in settings.items():
        override(config, key, value)
    with pytest.raises(UserError) as raised:
        validate_config(config)
    text = str(raised.value)
    assert list(settings)[-1] in text and message in text and "\n" not in text
    assert text.endswith("(fix the config file or the matching command-line flag)")


def test_values_at_the_edges_are_accepted() -> None:
    config = hierarchical()
    for key, value in {"train.epochs": 1, "train.warmup_epochs": 0, "optimizer.momentum": 0.0,
                       "optimizer.grad_clip": None, "optimizer.lr_min": 0.025, "data.scale": 1.0,
                       "data.num_workers": 0, "arch_optimizer.betas": (0.0, 0.0), "train.seed": 2**32 - 1,
                       "data.scale_range": (1.0, 1.0), "model.primitives": ["none", "skip_connect"]}.items():
        override(config, key, value)
    assert config_problems(config) == []
    validate_config(config)


def test_every_problem_is_listed_at_once() -> None:
    config = hierarchical()
    override(config, "train.epochs", 0)
    override(config, "data.batch_size", 0)
    override(config, "optimizer.lr", 0.0)
    with pytest.raises(UserError) as raised:
        validate_config(config)
    assert all(key in str(raised.value) for key in ("train.epochs", "data.batch_size", "optimizer.lr"))


def _numeric(hint: Any) -> bool:
    """Whether a config annotation holds a number (possibly optional, or a tuple of numbers)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return all(_numeric(a) for a in args)
    if args:
        return any(_numeric(a) for a in args if a is not type(None))
    return hint in (int, float)


def _sections(cls: type) -> list[type]:
    sections = [cls]
    for hint in typing.get_type_hints(cls).values():
        for option in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(option):
                sections += _sections(option)
    return sections


def test_every_numeric_setting_has_bounds() -> None:
    """A new numeric key must declare its range in BOUNDS, or this fails."""
    sections = {*_sections(SearchConfig), *_sections(RetrainConfig), DartsSearchModelConfig}
    missing = [f"{cls.__name__}.{name}" for cls in sections for name, hint in typing.get_type_hints(cls).items()
               if _numeric(hint) and name not in BOUNDS.get(cls, {})]
    assert not missing


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_are_valid(path: Path) -> None:
    config = load_config(path, SearchConfig if path.parent.name == "search" else RetrainConfig)
    assert config_problems(config) == []


def test_load_config_rejects_a_bad_file_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("mode: hierarchical\ntrain:\n  epochs: 10\n  warmup_epochs: 10\n")
    with pytest.raises(UserError, match=r"bad\.yaml\.train\.warmup_epochs \(10\) must be below"):
        load_config(tmp_path / "bad.yaml", SearchConfig)


@pytest.mark.parametrize("name,args,key", [
    ("search", ["--epochs", "0"], "train.epochs"),
    ("search", ["--epochs", "3", "--warmup-epochs", "3"], "train.warmup_epochs"),
    ("search", ["--batch-size", "0"], "data.batch_size"),
    ("search", ["--crop-size", "96"], "data.crop_size"),
    ("search", ["--filter-multiplier", "0"], "model.filter_multiplier"),
    ("search", ["--workers", "-1"], "data.num_workers"),
    ("search", ["--max-steps", "0"], "train.max_steps"),
    ("retrain", ["--iterations", "0"], "train.iterations"),
    ("retrain", ["--lr", "-0.01"], "optimizer.lr"),
    ("retrain", ["--epochs", "-1"], "train.epochs"),
])
def test_bad_flags_fail_before_anything_is_written(tool, tmp_path: Path, name: str, args: list[str],
                                                   key: str) -> None:
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        tool(name)([*args, "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_search_with_negative_epochs_exits_2_and_writes_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # where the default run directory runs/search/... would go
    search = load_tool("search")
    with pytest.raises(SystemExit) as exited:
        run_tool(search.main, ["--epochs", "-1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train.epochs must be at least 1, got -1") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
