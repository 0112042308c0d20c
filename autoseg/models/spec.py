"""Model specs: the JSON-ready recipe a checkpoint stores to rebuild its model.

A spec is ``{"name": <registered model or smp:...>, "kwargs": {...}}``. :func:`model_spec`
turns what a user passes as ``--arch`` (a registered name, an ``arch.json`` of a hierarchical
search, a ``genotype.json`` of a DARTS search, or ``smp:<Arch>:<encoder>``) into one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from autoseg.errors import UserError
from autoseg.genotype import GENOTYPES
from autoseg.models.registry import create_model


def model_spec(arch: str, **kwargs: Any) -> dict[str, Any]:
    """The spec of ``arch`` with extra factory keyword arguments (``None`` values are dropped)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if arch in GENOTYPES:
        return {"name": "darts-cifar", "kwargs": {"genotype": arch, **kwargs}}
    if arch.endswith(".json"):
        path = Path(arch)
        if not path.is_file():
            raise UserError(f"architecture file {path} does not exist; pass a search's arch.json or genotype.json")
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise UserError(f"{path} is not valid JSON ({exc})") from exc
        if "path" in data and "cell" in data:
            arch_fields = {key: data[key] for key in ("path", "cell", "filter_multiplier") if key in data}
            return {"name": "autodeeplab-arch", "kwargs": {"arch": arch_fields, **kwargs}}
        if "normal" in data and "reduce" in data:
            return {"name": "darts-cifar", "kwargs": {"genotype": data, **kwargs}}
        raise UserError(f"{path} is neither an arch.json (keys path, cell) nor a genotype.json (keys normal, reduce)")
    return {"name": arch, "kwargs": kwargs}


def build_model(spec: dict[str, Any], num_classes: int) -> nn.Module:
    """Build the model a spec describes."""
    try:
        return create_model(spec["name"], num_classes, **spec["kwargs"])
    except TypeError as exc:
        raise UserError(f"model {spec['name']!r} does not take these settings: {exc}") from exc
