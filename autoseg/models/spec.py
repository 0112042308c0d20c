"""Model specs: the JSON-ready recipe a checkpoint stores to rebuild its model.

A spec is ``{"name": <registered model or smp:...>, "kwargs": {...}}``. :func:`model_spec`
turns what a user passes as ``--arch`` (a registered name, an ``arch.json`` of a hierarchical
search, a ``genotype.json`` of a DARTS search, ``smp:<Arch>:<encoder>``, or
``smp:<Arch>:<arch.json>`` for an smp decoder on a searched backbone) into one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from autoseg.errors import UserError
from autoseg.genotype import GENOTYPES
from autoseg.models.registry import create_model
from autoseg.models.smp_baseline import ARCH_ENCODER, SMP_PREFIX


def read_arch_json(path: Path) -> dict[str, Any]:
    """The content of a search's ``arch.json`` or ``genotype.json``; raises UserError if unreadable."""
    if not path.is_file():
        raise UserError(f"architecture file {path} does not exist; pass a search's arch.json or genotype.json")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc})") from exc


def model_spec(arch: str, **kwargs: Any) -> dict[str, Any]:
    """The spec of ``arch`` with extra factory keyword arguments (``None`` values are dropped)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if arch in GENOTYPES:
        return {"name": "darts-cifar", "kwargs": {"genotype": arch, **kwargs}}
    if arch.endswith(".json"):
        smp_decoder = arch.startswith(SMP_PREFIX)  # smp:<Arch>:<arch.json>: an smp decoder on the searched backbone
        decoder, _, file = arch.removeprefix(SMP_PREFIX).partition(":") if smp_decoder else ("", "", arch)
        path = Path(file)
        data = read_arch_json(path)
        if "path" in data and "cell" in data:
            arch_fields = {key: data[key] for key in ("path", "cell", "filter_multiplier") if key in data}
            name = f"{SMP_PREFIX}{decoder}:{ARCH_ENCODER}" if decoder else "autodeeplab-arch"
            return {"name": name, "kwargs": {"arch": arch_fields, **kwargs}}
        if decoder:
            raise UserError(f"{path} is not an arch.json (keys path, cell): smp decoders take the backbone of a "
                            "hierarchical search")
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
