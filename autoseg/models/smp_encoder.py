"""The decoded Auto-DeepLab backbone as a segmentation_models_pytorch encoder, so that any smp
decoder (Unet, FPN, DeepLabV3Plus, ...) can run on a searched or published network.

Importing this module registers the published backbones in smp's encoder table:
``autodeeplab-s`` / ``-m`` / ``-l`` (the paper's path and cell, F = 20 / 32 / 48) and
``autodeeplab-paper`` (the same with F = 20). A searched ``arch.json`` is registered with
:func:`register_autodeeplab_encoder`, which returns its encoder name::

    import segmentation_models_pytorch as smp
    from autoseg.models.smp_encoder import register_autodeeplab_encoder

    smp.create_model("Unet", encoder_name="autodeeplab-s", encoder_weights=None, classes=19)
    name = register_autodeeplab_encoder("runs/search/<run>/arch.json")
    smp.create_model("FPN", encoder_name=name, encoder_weights=None, classes=19)

There are no pretrained weights (``encoder_weights`` must be ``None``). In autoseg's own
model names, ``smp:<Arch>:autodeeplab-s`` and ``smp:<Arch>:<path/to/arch.json>`` build the
same (see :mod:`autoseg.models.smp_baseline`).

Features, for an input of ``H x W`` (smp's contract: one tensor per stride 1, 2, ..., 2**depth):

- stride 1: the input itself; stride 2: the stem's stride-2 features (64 channels);
- stride ``4 * 2**s``: the output of the **last** cell of the path at level ``s`` (the cells of a
  level refine one resolution, and the last one has seen the most); stride 4 is the stem's
  output (128 channels) when the path never visits level 0;
- every feature but the input goes through a ReLU (the backbone's own output does too);
- strides deeper than the path ever goes: the deepest of these features, average-pooled to
  that stride's size (no parameters).

Sizes are ``ceil(H / stride)``, as the stride-2 steps of the network round up. ``depth``
(smp's ``encoder_depth``, 1 to 5) must reach the stride of the path's last cell, so that every
cell's output reaches the decoder. DeepLab decoders ask for ``encoder_output_stride`` 8 or 16
(smp then calls :meth:`AutoDeepLabEncoder.make_dilated`): a searched path fixes where the
network downsamples, so nothing is dilated; instead every feature deeper than the output
stride is replaced by the network's final output (the ReLU of the last cell, what
Auto-DeepLab's own ASPP takes) resized to the output stride's size: bilinear upsampling from
a deeper stride, average pooling from a shallower one. The published network ends at stride
8, so ``DeepLabV3Plus(encoder_output_stride=8)`` on it is Auto-DeepLab's own head layout.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from segmentation_models_pytorch.encoders import encoders
from segmentation_models_pytorch.encoders._base import EncoderMixin

from autoseg.space.architecture import DEFAULT_FILTER_MULTIPLIER, NetworkArch
from autoseg.utils.errors import UserError
from autoseg.space.genotype import AUTODEEPLAB_CELL, AUTODEEPLAB_PATH, CellGenotype
from autoseg.models.autodeeplab import (BN_EPS, BN_MOMENTUM, PUBLISHED_FILTER_MULTIPLIERS, STEM_CHANNELS,
                                       AutoDeepLabBackbone, resize)
from autoseg.models.smp_baseline import ARCH_ENCODER

PUBLISHED = PUBLISHED_FILTER_MULTIPLIERS
"""Encoder name -> filter multiplier of the published Auto-DeepLab backbones."""

MAX_DEPTH = 5


class AutoDeepLabEncoder(nn.Module, EncoderMixin):
    """An :class:`AutoDeepLabBackbone` (``self.backbone``) with smp's encoder interface (see the
    module docstring): ``forward(x)`` returns ``depth + 1`` feature maps, at strides 1, 2, ...,
    ``2**depth``."""

    _is_torch_scriptable = False  # the forward pass iterates a generator

    def __init__(self, path: Sequence[int], cell: Mapping[str, Any] | CellGenotype, filter_multiplier: int,
                 depth: int = MAX_DEPTH, output_stride: int = 32, bn_momentum: float = BN_MOMENTUM,
                 bn_eps: float = BN_EPS):
        super().__init__()
        cell = cell if isinstance(cell, CellGenotype) else CellGenotype.from_dict(dict(cell))
        self.backbone = AutoDeepLabBackbone(path, cell, filter_multiplier, bn_momentum, bn_eps)
        final_stride = 4 * 2 ** self.backbone.path[-1]
        if not 1 <= depth <= MAX_DEPTH or 2 ** depth < final_stride:
            raise UserError(f"encoder_depth must be between {int(math.log2(final_stride))} and {MAX_DEPTH} for this "
                            f"path: its last cell is at stride {final_stride}, and a shallower encoder would leave the "
                            f"last cells out of the decoder (got encoder_depth={depth})")
        channels = dict(zip((2, 4), STEM_CHANNELS))
        for level, cell_module in zip(self.backbone.path, self.backbone.cells):
            channels[4 * 2 ** level] = cell_module.out_channels
        self._deepest_stride = max(channels)
        self._in_channels = 3
        self._depth = depth
        self._output_stride = 32
        self._out_channels = [3] + [channels[min(2 ** k, self._deepest_stride)] for k in range(1, MAX_DEPTH + 1)]
        if output_stride != 32:
            self.make_dilated(output_stride)

    def make_dilated(self, output_stride: int) -> None:
        """Give every feature deeper than ``output_stride`` (8 or 16) that stride's size; see the module docstring."""
        if output_stride not in (8, 16):
            raise ValueError(f"Output stride should be 16 or 8, got {output_stride}.")
        final_channels = self.backbone.out_channels
        self._out_channels = [channels if 2 ** k <= output_stride else final_channels
                              for k, channels in enumerate(self._out_channels)]
        self._output_stride = output_stride

    def get_stages(self) -> dict[int, Sequence[torch.nn.Module]]:
        """No stage is dilated (see :meth:`make_dilated`)."""
        return {}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at strides 1, 2, ..., ``2**depth`` (see the module docstring)."""
        last: dict[int, torch.Tensor] = {}
        for stride, features in self.backbone.stages(x):
            last[stride] = features
        final = features
        height, width = x.shape[-2:]
        outputs = [x]
        for k in range(1, self._depth + 1):
            stride = min(2 ** k, self._output_stride)
            source = final if 2 ** k > self._output_stride else last[min(2 ** k, self._deepest_stride)]
            outputs.append(_to_size(F.relu(source), (math.ceil(height / stride), math.ceil(width / stride))))
        return outputs


def _to_size(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``features`` at spatial ``size``: unchanged, average-pooled down or bilinearly resized up."""
    if tuple(features.shape[-2:]) == size:
        return features
    if features.shape[-2] >= size[0] and features.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(features, size)
    return resize(features, size)


def _register(name: str, params: dict[str, Any]) -> str:
    """Put ``name`` with the encoder ``params`` into smp's encoder table (again is fine; other params are not)."""
    entry = {"encoder": AutoDeepLabEncoder, "pretrained_settings": {}, "params": params}
    if name in encoders and encoders[name] != entry:
        raise UserError(f"smp encoder {name!r} is already registered with other settings: choose another name")
    encoders[name] = entry
    return name


def _arch_fields(arch: NetworkArch | Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """The path, cell and filter multiplier of a :class:`NetworkArch`, its dict or an arch.json file."""
    if isinstance(arch, (str, Path)):
        arch = NetworkArch.from_json(arch)
    elif not isinstance(arch, NetworkArch):
        arch = NetworkArch.from_dict(dict(arch))
    return {"path": list(arch.path), "cell": arch.cell.to_dict(),
            "filter_multiplier": arch.filter_multiplier or DEFAULT_FILTER_MULTIPLIER}


def register_autodeeplab_encoder(arch: NetworkArch | Mapping[str, Any] | str | Path, name: str | None = None,
                                 filter_multiplier: int | None = None, bn_momentum: float | None = None) -> str:
    """Register the backbone of ``arch`` (a search's arch.json or its dict: ``path``, ``cell``,
    optionally ``filter_multiplier``, default 20) as an smp encoder; returns its name.

    ``filter_multiplier`` overrides the arch's, ``bn_momentum`` the official 3e-4. The name
    defaults to ``autodeeplab-arch-<hash of the settings>``, the same for the same settings.
    """
    params = _arch_fields(arch)
    if filter_multiplier is not None:
        params["filter_multiplier"] = int(filter_multiplier)
    if bn_momentum is not None:
        params["bn_momentum"] = float(bn_momentum)
    if name is None:
        digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
        name = f"{ARCH_ENCODER}-{digest}"
    return _register(name, params)


def autodeeplab_encoder_name(encoder: str, arch: Mapping[str, Any] | None = None,
                             filter_multiplier: int | None = None, bn_momentum: float | None = None) -> str:
    """The registered smp encoder for an autoseg model name's encoder part: a published name
    (with an optional ``bn_momentum``; ``filter_multiplier`` only for ``autodeeplab-paper``) or
    ``autodeeplab-arch`` with the searched ``arch``."""
    if encoder == ARCH_ENCODER:
        if arch is None:
            raise UserError(f"{ARCH_ENCODER} needs the searched architecture: use smp:<Arch>:<path/to/arch.json>")
        return register_autodeeplab_encoder(arch, filter_multiplier=filter_multiplier, bn_momentum=bn_momentum)
    if encoder not in PUBLISHED:
        raise UserError(f"unknown Auto-DeepLab encoder {encoder!r}: use one of {', '.join(PUBLISHED)} or an arch.json")
    if filter_multiplier is not None and encoder != "autodeeplab-paper":
        raise UserError(f"{encoder} has a fixed filter multiplier ({PUBLISHED[encoder]}): use autodeeplab-paper "
                        "to choose one")
    if filter_multiplier is None and bn_momentum is None:
        return encoder
    published = {"path": list(AUTODEEPLAB_PATH), "cell": AUTODEEPLAB_CELL, "filter_multiplier": PUBLISHED[encoder]}
    return register_autodeeplab_encoder(published, filter_multiplier=filter_multiplier, bn_momentum=bn_momentum)


for _name, _filters in PUBLISHED.items():
    _register(_name, _arch_fields({"path": AUTODEEPLAB_PATH, "cell": AUTODEEPLAB_CELL, "filter_multiplier": _filters}))
