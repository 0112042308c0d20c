"""What a retrained model's checkpoint says about it, and loading the model back.

The retrain loop writes one :class:`TrainedModelMeta` into every checkpoint (key ``meta``);
``autoseg evaluate``, ``predict``, ``export``, ``profile_model`` and ``benchmark_search`` read it back
with :func:`load_trained_model`, so the facts a model needs at inference time are defined once.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoseg.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from autoseg.utils.errors import UserError
from autoseg.models.spec import build_model

BEST_NAME = "best.pt"
"""The checkpoint of the best validation metric in a retrain run directory."""


@dataclass(frozen=True)
class TrainedModelMeta:
    """The facts stored beside a retrained model's weights.

    ``task`` is ``segmentation`` or ``classification``; ``dataset`` and ``num_classes`` the
    data it was trained on; ``class_names`` and ``palette`` (``(num_classes, 3)`` RGB, empty
    for classification) name and colour its outputs; ``model_spec`` rebuilds it (see
    :mod:`autoseg.models.spec`).
    """

    task: str
    dataset: str
    num_classes: int
    model_spec: dict[str, Any]
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as stored in the checkpoint."""
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> TrainedModelMeta:
        """The record of a retrain checkpoint (also of those written before the record had its
        own key, which kept the same fields at the top level)."""
        data = state.get("meta", state)
        try:
            return cls(**{name: data[name] for name in ("task", "dataset", "num_classes", "model_spec",
                                                        "class_names", "palette")})
        except KeyError as exc:
            raise UserError(f"the checkpoint lacks the model's {exc.args[0]!r}; it was not written by "
                            "tools/retrain.py") from None


def load_trained_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The file and the contents of a retrain checkpoint (a run directory, ``best.pt`` or
    ``checkpoint.pt``); a run directory gives its ``best.pt`` when there is one, else its partial
    ``checkpoint.pt``, which a note on stderr names."""
    path = Path(path)
    partial = path.is_dir() and not (path / BEST_NAME).is_file()
    if path.is_dir() and not partial:
        path = path / BEST_NAME
    state = load_checkpoint(path)
    if partial and state.get("kind") == "retrain":
        print(f"note: {path} has no {BEST_NAME} (no evaluation of the run finished): using its partial "
              f"{CHECKPOINT_NAME} of step {state.get('global_step')}", file=sys.stderr)
    if state.get("kind") != "retrain":
        raise UserError(f"{path} is not a checkpoint of tools/retrain.py (search checkpoints hold a supernet: "
                        "decode it with tools/decode.py and retrain the result)")
    return path if path.is_file() else path / CHECKPOINT_NAME, state


def load_trained_model(path: str | Path, device: str | torch.device = "cpu"
                       ) -> tuple[nn.Module, TrainedModelMeta, dict[str, Any]]:
    """The trained model of a retrain checkpoint (a run directory, ``best.pt`` or
    ``checkpoint.pt``) in eval mode on ``device``, its :class:`TrainedModelMeta` and the whole
    checkpoint. A run directory loads its ``best.pt`` when there is one."""
    _, state = load_trained_checkpoint(path)
    meta = TrainedModelMeta.from_checkpoint(state)
    model = build_model(meta.model_spec, meta.num_classes)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), meta, state
