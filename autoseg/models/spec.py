"""Model specs: the JSON-ready recipe a checkpoint stores to rebuild its model.

A spec is ``{"name": <registered model or smp:...>, "kwargs": {...}}``. :func:`model_spec`
turns what a user passes as ``--arch`` (a registered name, an ``arch.json`` of a hierarchical
search, a ``genotype.json`` of a DARTS search, ``smp:<Arch>:<encoder>``, or
``smp:<Arch>:<arch.json>`` for an smp decoder on a searched backbone) into one.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from autoseg.space.architecture import NetworkArch, read_architecture
from autoseg.utils.errors import UserError
from autoseg.space.genotype import GENOTYPES
from autoseg.models.registry import create_model
from autoseg.models.smp_baseline import ARCH_ENCODER, SMP_PREFIX
from autoseg.models.autodeeplab import PUBLISHED_FILTER_MULTIPLIERS

CLASSIFICATION_MODELS = ("darts-cifar",)
"""The models (spec names) that classify whole images; every other model segments."""


def model_spec(arch: str, **kwargs: Any) -> dict[str, Any]:
    """The spec of ``arch`` with extra factory keyword arguments (``None`` values are dropped)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if arch in GENOTYPES:
        return {"name": "darts-cifar", "kwargs": {"genotype": arch, **kwargs}}
    if arch.endswith(".json"):
        smp_decoder = arch.startswith(SMP_PREFIX)  # smp:<Arch>:<arch.json>: an smp decoder on the searched backbone
        decoder, _, file = arch.removeprefix(SMP_PREFIX).partition(":") if smp_decoder else ("", "", arch)
        found = read_architecture(file)
        if isinstance(found, NetworkArch):
            fields = {"path": list(found.path), "cell": found.cell.to_dict()}
            if found.filter_multiplier is not None:
                fields["filter_multiplier"] = found.filter_multiplier
            name = f"{SMP_PREFIX}{decoder}:{ARCH_ENCODER}" if decoder else "autodeeplab-arch"
            return {"name": name, "kwargs": {"arch": fields, **kwargs}}
        if decoder:
            raise UserError(f"{file} is not an arch.json (keys path, cell): smp decoders take the backbone of a "
                            "hierarchical search")
        return {"name": "darts-cifar", "kwargs": {"genotype": found.to_dict(), **kwargs}}
    return {"name": arch, "kwargs": kwargs}


def build_model(spec: dict[str, Any], num_classes: int) -> nn.Module:
    """Build the model a spec describes."""
    try:
        return create_model(spec["name"], num_classes, **spec["kwargs"])
    except TypeError as exc:
        raise UserError(f"model {spec['name']!r} does not take these settings: {exc}") from exc


def model_task(spec: dict[str, Any]) -> str:
    """What the model of ``spec`` does: ``classification`` or ``segmentation``."""
    return "classification" if spec["name"] in CLASSIFICATION_MODELS else "segmentation"


def fixed_filter_multiplier(arch: str) -> int | None:
    """The filter multiplier F that a named published network fixes (``autodeeplab-s/m/l``, also as
    the encoder of ``smp:<Arch>:...``), or None when ``arch`` lets F be chosen."""
    name = arch.rpartition(":")[2] if arch.startswith(SMP_PREFIX) else arch
    return PUBLISHED_FILTER_MULTIPLIERS.get(name) if name != "autodeeplab-paper" else None
