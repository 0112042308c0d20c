"""One registry of named segmentation and classification models (timm style).

``@register_model(name)`` registers a small factory ``factory(num_classes, **kwargs)``;
:func:`create_model` is the one public entry and :func:`list_models` lets users discover the
names. Names of the form ``smp:<Arch>:<encoder>`` are not registered one by one: they build a
segmentation_models_pytorch baseline (see :mod:`autoseg.models.smp_baseline`).
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, TypeVar

from torch import nn

from autoseg.utils.errors import UserError
from autoseg.models.smp_baseline import SMP_PREFIX, create_smp_model

ModelFactory = TypeVar("ModelFactory", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory(num_classes: int, **kwargs) -> nn.Module`` as model ``name``."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        if name.startswith(SMP_PREFIX):
            raise ValueError(f"model names starting with {SMP_PREFIX!r} are reserved for smp baselines")
        _MODELS[name] = factory
        return factory

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching the shell-style ``pattern``."""
    return sorted(fnmatch.filter(_MODELS, pattern))


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build model ``name`` for ``num_classes`` classes; ``kwargs`` go to its factory."""
    if name.startswith(SMP_PREFIX):
        return create_smp_model(name, num_classes, **kwargs)
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(list_models())}, "
                        f"or {SMP_PREFIX}<Arch>:<encoder> (e.g. {SMP_PREFIX}DeepLabV3Plus:resnet50)")
    return _MODELS[name](num_classes, **kwargs)
