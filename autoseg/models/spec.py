"""Model specs: the JSON-ready recipe a checkpoint stores to rebuild its model.

A spec is ``{"name": <registered model or smp:...>, "kwargs": {...}}``. :func:`model_spec`
turns what a user passes as ``--arch`` (a registered name, an ``arch.json`` of a hierarchical
search, a ``genotype.json`` of a DARTS search, or ``smp:<Arch>:<encoder>``) into one.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from autoseg.architecture import NetworkArch, read_architecture
from autoseg.errors import UserError
from autoseg.genotype import GENOTYPES
from autoseg.models.registry import create_model


def model_spec(arch: str, **kwargs: Any) -> dict[str, Any]:
    """The spec of ``arch`` with extra factory keyword arguments (``None`` values are dropped)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if arch in GENOTYPES:
        return {"name": "darts-cifar", "kwargs": {"genotype": arch, **kwargs}}
    if arch.endswith(".json"):
        found = read_architecture(arch)
        if isinstance(found, NetworkArch):
            fields = {"path": list(found.path), "cell": found.cell.to_dict()}
            if found.filter_multiplier is not None:
                fields["filter_multiplier"] = found.filter_multiplier
            return {"name": "autodeeplab-arch", "kwargs": {"arch": fields, **kwargs}}
        return {"name": "darts-cifar", "kwargs": {"genotype": found.to_dict(), **kwargs}}
    return {"name": arch, "kwargs": kwargs}


def build_model(spec: dict[str, Any], num_classes: int) -> nn.Module:
    """Build the model a spec describes."""
    try:
        return create_model(spec["name"], num_classes, **spec["kwargs"])
    except TypeError as exc:
        raise UserError(f"model {spec['name']!r} does not take these settings: {exc}") from exc
