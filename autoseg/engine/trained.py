"""Load what ``tools/retrain.py`` trained: the model and the facts stored beside it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoseg.engine.checkpoint import load_checkpoint
from autoseg.errors import UserError
from autoseg.models.spec import build_model


def load_trained_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a retrain checkpoint (a run directory, ``best.pt`` or
    ``checkpoint.pt``) in eval mode on ``device``, and the checkpoint dict.

    The checkpoint carries ``task`` ("segmentation" or "classification"), ``dataset``,
    ``num_classes``, ``class_names``, ``palette`` (segmentation), ``model_spec`` and ``config``.
    A run directory loads its ``best.pt`` when there is one.
    """
    path = Path(path)
    if path.is_dir() and (path / "best.pt").is_file():
        path = path / "best.pt"
    state = load_checkpoint(path)
    if state.get("kind") != "retrain":
        raise UserError(f"{path} is not a checkpoint of tools/retrain.py (search checkpoints hold a supernet: "
                        "decode it with tools/decode.py and retrain the result)")
    model = build_model(state["model_spec"], state["num_classes"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
