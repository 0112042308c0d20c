"""Starting a retraining from the weights of an earlier one (``autoseg retrain --init-from``).

Every tensor of the earlier model whose name and shape match one of the new model is copied
into it; the others keep the new model's fresh initialisation (a classifier for another number
of classes, a head the earlier model lacked), and what was left out is reported. Nothing else of
the earlier run is taken: no optimiser state, schedule or step count, so the new run starts at
step 0 as a run from scratch would, from other weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from autoseg.engine.trained import TrainedModelMeta, load_trained_checkpoint
from autoseg.utils.errors import UserError

SHOWN_NAMES = 8
"""How many tensor names a line of the report lists before it only counts the rest."""


@dataclass(frozen=True)
class InitReport:
    """What :func:`init_from_checkpoint` did: the checkpoint file it read (``source``), the source
    model's name, how many tensors it copied, and the tensors it did not: ``reinitialised``
    (in both models with other shapes, as ``name (source shape -> model shape)``), ``missing``
    (in the model only: kept as built) and ``unexpected`` (in the source only: ignored)."""

    source: str
    source_model: str
    loaded: int
    reinitialised: list[str]
    missing: list[str]
    unexpected: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON)."""
        return asdict(self)

    def lines(self) -> list[str]:
        """The report for the console: a line for what was copied, one per kind of left-out tensor."""
        total = self.loaded + len(self.reinitialised) + len(self.missing)
        lines = [f"initialised {self.loaded} of the model's {total} tensors from {self.source} ({self.source_model})"]
        for names, what in ((self.reinitialised, "re-initialised (shape differs from the source's)"),
                            (self.missing, "not in the source (kept as built)"),
                            (self.unexpected, "only in the source (ignored)")):
            if names:
                rest = len(names) - SHOWN_NAMES
                lines.append(f"{what}: {', '.join(names[:SHOWN_NAMES])}" + (f" and {rest} more" if rest > 0 else ""))
        return lines


def _shape(size: Any) -> str:
    return "x".join(map(str, size)) or "scalar"


def init_from_checkpoint(model: nn.Module, path: str | Path) -> InitReport:
    """Copy into ``model`` every tensor (parameter or buffer) of the model of retrain checkpoint
    ``path`` (a run directory, whose ``best.pt`` is read, or a ``.pt`` file) that has the same
    name and shape; the rest of ``model`` is left as it is. Raises a UserError when no tensor fits."""
    file, state = load_trained_checkpoint(path)
    source_model = TrainedModelMeta.from_checkpoint(state).model_spec["name"]
    source, target = state["model"], model.state_dict()
    matching = {name: tensor for name, tensor in source.items()
                if name in target and target[name].shape == tensor.shape}
    if not matching:
        raise UserError(f"no weight of {file} ({source_model}) fits the model being trained: --init-from needs a "
                        "checkpoint of the same architecture (with the same --arch and --filter-multiplier)")
    model.load_state_dict(matching, strict=False)
    reinitialised = [f"{name} ({_shape(source[name].shape)} -> {_shape(target[name].shape)})"
                     for name in target if name in source and name not in matching]
    return InitReport(str(file), source_model, len(matching), reinitialised,
                      missing=[name for name in target if name not in source],
                      unexpected=[name for name in source if name not in target])
