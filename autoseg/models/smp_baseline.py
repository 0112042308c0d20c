"""Baselines from segmentation_models_pytorch, named ``smp:<Arch>:<encoder>``.

``smp:DeepLabV3Plus:resnet50`` is ``segmentation_models_pytorch.create_model("DeepLabV3Plus",
encoder_name="resnet50", encoder_weights=None, classes=num_classes)``, wrapped so that any
input size works: the input is zero-padded on the right and bottom to the next multiple of
the encoder's output stride and the logits are cropped back. Nothing is downloaded: encoder
weights (``encoder_weights="imagenet"``) must already be in the local Hugging Face hub cache,
where smp keeps them.

Encoders named ``autodeeplab-...`` are Auto-DeepLab backbones (:mod:`autoseg.models.smp_encoder`):
``smp:Unet:autodeeplab-s`` puts a U-Net decoder on the published backbone, and
``smp:FPN:<arch.json>`` (stored in a spec as ``smp:FPN:autodeeplab-arch`` with the arch in its
keyword ``arch``) on a searched one; ``filter_multiplier`` and ``bn_momentum`` size them.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.utils.errors import UserError

SMP_PREFIX = "smp:"
"""Model names starting with this prefix are smp baselines."""

AUTODEEPLAB_ENCODER_PREFIX = "autodeeplab"
"""smp encoder names starting with this prefix are Auto-DeepLab backbones."""

ARCH_ENCODER = "autodeeplab-arch"
"""The encoder name in a model spec whose ``arch`` keyword holds a searched arch.json."""


class PadToMultiple(nn.Module):
    """Run ``model`` on the input zero-padded (right, bottom) to a multiple of ``multiple``,
    and crop its output back to the input size."""

    def __init__(self, model: nn.Module, multiple: int):
        super().__init__()
        self.model = model
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = F.pad(x, (0, -width % self.multiple, 0, -height % self.multiple))
        return self.model(padded)[..., :height, :width]


def _check_weights_cached(encoder: str, weights: str) -> None:
    """Raise UserError unless smp's ``weights`` for ``encoder`` are in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders[encoder]["pretrained_settings"]
    if weights not in settings:
        raise UserError(f"encoder {encoder!r} has no {weights!r} weights; available: {', '.join(settings)}")
    repo, revision = settings[weights]["repo_id"], settings[weights]["revision"]
    for filename in ("config.json", "model.safetensors"):
        if not isinstance(try_to_load_from_cache(repo, filename, revision=revision), str):
            raise UserError(f"{weights!r} weights of encoder {encoder!r} are not in the local Hugging Face cache "
                            f"({repo}/{filename}) and cannot be downloaded here; use encoder_weights=None "
                            f"or copy them into the cache first")


def create_smp_model(name: str, num_classes: int, encoder_weights: str | None = None, **kwargs: Any) -> nn.Module:
    """Build the smp baseline ``smp:<Arch>:<encoder>``; ``kwargs`` go to smp's ``create_model``.

    segmentation_models_pytorch is imported here, not at module level, because importing it
    takes seconds and only these baselines need it.
    """
    import segmentation_models_pytorch as smp
    from segmentation_models_pytorch.encoders import encoders

    arch, _, encoder = name.removeprefix(SMP_PREFIX).partition(":")
    if not encoder:
        raise UserError(f"smp model name {name!r} must look like {SMP_PREFIX}<Arch>:<encoder>, "
                        f"e.g. {SMP_PREFIX}DeepLabV3Plus:resnet50")
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise UserError(f"unknown smp architecture {arch!r}; known: {', '.join(smp.MODEL_ARCHITECTURES_MAPPING)}")
    if encoder.startswith(AUTODEEPLAB_ENCODER_PREFIX):
        from autoseg.models.smp_encoder import autodeeplab_encoder_name

        encoder = autodeeplab_encoder_name(encoder, kwargs.pop("arch", None), kwargs.pop("filter_multiplier", None),
                                           kwargs.pop("bn_momentum", None))
    if encoder not in encoders and not encoder.startswith("tu-"):
        raise UserError(f"unknown smp encoder {encoder!r}; "
                        "see segmentation_models_pytorch.encoders.get_encoder_names()")
    if encoder_weights is not None and encoder in encoders:
        _check_weights_cached(encoder, encoder_weights)
    try:
        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=encoder_weights, classes=num_classes,
                                 **kwargs)
    except OSError as exc:  # a timm ("tu-") encoder whose pretrained weights could not be fetched
        raise UserError(f"could not load the weights of encoder {encoder!r} ({exc}); use encoder_weights=None") from exc
    return PadToMultiple(model, model.encoder.output_stride)
