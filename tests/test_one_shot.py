"""One-shot scores of architectures with the weights a search's supernet learnt."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autoseg.engine.checkpoint import load_checkpoint
from autoseg.engine.one_shot import one_shot_scores
from autoseg.utils.errors import UserError
from autoseg.space.sampling import sample_network_arch


def test_one_shot_scores_depend_on_the_architecture_and_the_weights_only(tool, tiny_synthetic_config, tmp_path):
    run = tmp_path / "run"
    tool("search")(["--config", str(tiny_synthetic_config), "--out", str(run), "--device", "cpu"])
    archs = [sample_network_arch(3, 2, 2, load_checkpoint(run)["arch"]["primitives"], np.random.default_rng(i), 2)
             for i in range(4)]
    scores = one_shot_scores(run, archs, torch.device("cpu"))
    assert len(scores) == 4 and all(0 <= s <= 100 for s in scores)
    assert len(set(scores)) > 1  # the supernet tells these architectures apart
    state = load_checkpoint(run)
    state["model"]["alphas"] = torch.randn_like(state["model"]["alphas"])  # the relaxation's parameters
    state["model"]["betas"] = torch.randn_like(state["model"]["betas"])
    torch.save(state, run / "checkpoint.pt")
    assert one_shot_scores(run, archs, torch.device("cpu")) == scores
    deeper = sample_network_arch(4, 2, 2, archs[0].primitives, 0, 2)
    with pytest.raises(UserError, match="architecture 0 is not in the search space"):
        one_shot_scores(run, [deeper], torch.device("cpu"))
