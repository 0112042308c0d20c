"""Checkpoints load safely: tensors and plain data only, a pickle that would run code is refused."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from autoseg.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from autoseg.utils.errors import UserError


class MakesADirectory:
    """Unpickling this calls ``os.mkdir(path)``: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.path),)


def test_a_pickle_that_runs_code_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    torch.save({"model": {"weight": torch.zeros(2)}, "payload": MakesADirectory(marker)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match=r"refused to load .*foreign\.pt: it needs \S*mkdir.*arbitrary code") as raised:
        load_checkpoint(tmp_path / "foreign.pt")
    assert "\n" not in str(raised.value)
    assert not marker.exists()
    torch.load(tmp_path / "foreign.pt", weights_only=False)  # what the unsafe load would have done
    assert marker.is_dir()


def test_rng_state_survives_the_safe_loader_and_reproduces_every_generator(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leave a cached Gaussian in numpy's legacy state
    save_checkpoint({"rng": rng_state()}, tmp_path / "checkpoint.pt")
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    set_rng_state(load_checkpoint(tmp_path)["rng"])
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected


def test_a_damaged_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    save_checkpoint({"model": {"weight": torch.ones(1000)}}, tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("not a checkpoint at all")
    for name in ("cut.pt", "text.pt"):
        with pytest.raises(UserError, match=f"{name} is not a readable autoseg checkpoint") as raised:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(raised.value)
