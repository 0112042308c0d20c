"""The decoded Auto-DeepLab network: official stem, one fixed cell per layer of a path, DeepLabv3+ head.

Follows the official retrain code (tensorflow/models research/deeplab, ``hnasnet``;
docs/DESIGN.md §4):

- Stem: conv3x3/2 (64) - BN - ReLU - conv3x3 (64) - BN - ReLU - conv3x3/2 (128) - BN. The
  output of the second BN (stride 2) is the H^{l-2} input of the first cell; the stem output
  (stride 4, level 0) is its H^{l-1}.
- Cell ``l`` at level ``s`` has ``F * 2**s`` channels per block and outputs the concatenation
  of its blocks (``B * F * 2**s`` channels for the usual concat of all B blocks). H^{l-1}
  always goes through ReLU - 1x1 conv - BN; H^{l-2} (the output two cells back) is bilinearly
  resized to the size of H^{l-1} and goes through ReLU - 1x1 conv - BN only when its channel
  count differs. A step down (level + 1) is done inside the cell: ops on the two cell inputs
  get stride 2. A step up (level - 1) bilinearly resizes H^{l-1} to that level's size first.
- Cell ops (family ``"autodeeplab"`` of :mod:`autoseg.layers.ops`): ``sep_conv_kxk`` = (ReLU,
  depthwise kxk, pointwise 1x1, BN) twice; ``dil_conv_kxk`` = ReLU - FULL kxk conv with
  dilation 2 - BN, and with stride 2 the input is bilinearly halved and the conv is undilated;
  ``skip_connect`` with stride 2 is ReLU - 1x1 conv/2 - BN (the official identity op); pools
  and ``none`` are the DARTS ones.
- The last cell's output goes through a ReLU into a :class:`DeepLabV3PlusHead` (ASPP rates
  from the output stride of the last cell) whose decoder takes the output of the last level-0
  cell along the path; a path without a level-0 cell uses the stem output (stride 4, 128
  channels) instead. Logits are bilinearly upsampled to the input size.

Sizes: level ``s`` has the size of the stem output halved (rounding up) ``s`` times, so any
input size works (97x129 in, 97x129 logits out). Resizing is bilinear with
``align_corners=False`` everywhere (the official code resizes with ``align_corners=True`` to
``(n - 1) * k + 1`` sizes). Convs use PyTorch's default init, which is the official
``variance_scaling(1/3, FAN_IN, uniform)``. BN: eps 1e-3 and momentum 3e-4 (the official
decay 0.9997) by default.

Parameter counts (19 classes, published path and cell, ``sum(p.numel())``): F = 20 / 32 / 48
give 10,147,427 / 21,622,451 / 44,424,691, the paper's 10.15 M / 21.62 M / 44.42 M (backbone
7,030,832 / 17,612,096 / 39,222,656; head 3,116,595 / 4,010,355 / 5,202,035). They come out
this way with: no bias in any conv except the classifier's; affine BNs; H^{l-2} projected
when its channel count differs (along the published path it always does); full, not
depthwise, atrous convs (depthwise ones give 5,559,007 for F=20, as the common PyTorch
re-implementation); an ASPP of a 1x1 branch, three 3x3 atrous branches and image pooling
(1x1 conv - BN - ReLU), concatenated and projected by 1x1 conv - BN - ReLU (without image
pooling F=20 gives 10.03 M); plain, not separable, 3x3 convs in ASPP and decoder.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.space.architecture import DEFAULT_FILTER_MULTIPLIER, NetworkArch, check_path
from autoseg.space.genotype import AUTODEEPLAB_CELL, AUTODEEPLAB_PATH, CellGenotype
from autoseg.models.deeplab_head import DeepLabV3PlusHead
from autoseg.models.fixed_cell import FixedCell
from autoseg.models.registry import register_model
from autoseg.models.utils import set_batchnorm
from autoseg.layers.ops import ReLUConvBN, SepConv, register_op

FAMILY = "autodeeplab"
"""Op family of the official Auto-DeepLab retrain ops in :mod:`autoseg.layers.ops`."""

BN_MOMENTUM = 3e-4
"""PyTorch BN momentum of the official moving-average decay 0.9997."""

BN_EPS = 1e-3
"""Official BN epsilon."""

STEM_CHANNELS = (64, 128)
"""Output channels of the stem at stride 2 (H^{l-2} of the first cell) and stride 4."""


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinearly resize ``x`` to spatial ``size`` (``align_corners=False``)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def halve(size: Sequence[int]) -> tuple[int, ...]:
    """A spatial size after a stride-2 step: each side halved, rounding up (as 'same' padding)."""
    return tuple((s + 1) // 2 for s in size)


class AtrousConv(nn.Module):
    """Official atrous op: ReLU - full kxk conv with dilation 2 - BN. With stride 2 the input
    is bilinearly halved first and the conv is undilated."""

    def __init__(self, channels: int, kernel_size: int, stride: int, affine: bool = True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"atrous conv supports stride 1 or 2, got {stride}")
        self.stride = stride
        dilation = 2 if stride == 1 else 1
        self.relu = nn.ReLU(inplace=False)
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=dilation * (kernel_size // 2),
                              dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        if self.stride == 2:
            x = resize(x, halve(x.shape[-2:]))
        return self.bn(self.conv(x))


@register_op("sep_conv_3x3", FAMILY)
def _sep3(channels: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(channels, channels, 3, stride, 1, affine)


@register_op("sep_conv_5x5", FAMILY)
def _sep5(channels: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(channels, channels, 5, stride, 2, affine)


@register_op("dil_conv_3x3", FAMILY)
def _atrous3(channels: int, stride: int, affine: bool) -> nn.Module:
    return AtrousConv(channels, 3, stride, affine)


@register_op("dil_conv_5x5", FAMILY)
def _atrous5(channels: int, stride: int, affine: bool) -> nn.Module:
    return AtrousConv(channels, 5, stride, affine)


@register_op("skip_connect", FAMILY)
def _skip(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else ReLUConvBN(channels, channels, 1, stride, 0, affine)


class AutoDeepLabStem(nn.Module):
    """Official three-conv stem; returns the stride-2 (64 channels) and stride-4 (128) features."""

    def __init__(self):
        super().__init__()
        mid, out = STEM_CHANNELS
        self.conv0 = nn.Sequential(nn.Conv2d(3, mid, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(mid),
                                   nn.ReLU(inplace=True))
        self.conv1 = nn.Sequential(nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid))
        self.conv2 = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(mid, out, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stride2 = self.conv1(self.conv0(x))
        return stride2, self.conv2(stride2)


class AutoDeepLabCell(nn.Module):
    """One retrain cell: resize and (if needed) project H^{l-2}, project H^{l-1}, run the blocks."""

    def __init__(self, genotype: CellGenotype, c_prev_prev: int, c_prev: int, channels: int, stride: int):
        super().__init__()
        self.preprocess0 = (nn.Identity() if c_prev_prev == channels
                            else ReLUConvBN(c_prev_prev, channels, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)
        self.blocks = FixedCell(genotype, channels, stride, FAMILY)
        self.out_channels = self.blocks.out_channels

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        if s0.shape[-2:] != s1.shape[-2:]:
            s0 = resize(s0, s1.shape[-2:])
        return self.blocks(self.preprocess0(s0), self.preprocess1(s1))


class AutoDeepLabBackbone(nn.Module):
    """Stem and one cell per layer of ``path``.

    ``forward(x)`` returns ``(low_level, features)``: the stride-4 features for the decoder
    (output of the last level-0 cell, or of the stem if the path never visits level 0) and
    the ReLU of the last cell's output, at stride :attr:`output_stride`.
    """

    def __init__(self, path: Sequence[int], cell: CellGenotype, filter_multiplier: int,
                 bn_momentum: float = BN_MOMENTUM, bn_eps: float = BN_EPS):
        super().__init__()
        self.path = check_path(path)
        self.stem = AutoDeepLabStem()
        c_prev_prev, c_prev = STEM_CHANNELS
        self.cells = nn.ModuleList()
        self.low_level_channels = c_prev
        for level, prev_level in zip(self.path, (0,) + self.path):
            self.cells.append(AutoDeepLabCell(cell, c_prev_prev, c_prev, filter_multiplier * 2 ** level,
                                              stride=2 if level > prev_level else 1))
            c_prev_prev, c_prev = c_prev, self.cells[-1].out_channels
            if level == 0:
                self.low_level_channels = c_prev
        self.out_channels = c_prev
        self.output_stride = 4 * 2 ** self.path[-1]
        set_batchnorm(self, bn_momentum, bn_eps)

    def stages(self, x: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """The features computed along the path, in order, as ``(stride, tensor)``: the stem's
        stride-2 (64 channels) and stride-4 (128) outputs, then the output of each cell at the
        stride of its level, ``4 * 2**level``."""
        s0, s1 = self.stem(x)
        yield 2, s0
        yield 4, s1
        sizes = [tuple(s1.shape[-2:])]
        while len(sizes) <= max(self.path):
            sizes.append(halve(sizes[-1]))
        for cell, level, prev_level in zip(self.cells, self.path, (0,) + self.path):
            s_in = resize(s1, sizes[level]) if level < prev_level else s1
            s0, s1 = s1, cell(s0, s_in)
            yield 4 * 2 ** level, s1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for stride, features in self.stages(x):
            if stride == 4:
                low_level = features
        return low_level, F.relu(features)


class AutoDeepLab(nn.Module):
    """Auto-DeepLab segmentation network: :class:`AutoDeepLabBackbone` + :class:`DeepLabV3PlusHead`.

    ``forward(x)`` returns logits of shape ``(N, num_classes, H, W)`` for any input size ``H x W``.
    """

    def __init__(self, path: Sequence[int], cell: CellGenotype, filter_multiplier: int, num_classes: int,
                 bn_momentum: float = BN_MOMENTUM, bn_eps: float = BN_EPS):
        super().__init__()
        self.backbone = AutoDeepLabBackbone(path, cell, filter_multiplier, bn_momentum, bn_eps)
        self.head = DeepLabV3PlusHead(self.backbone.out_channels, self.backbone.low_level_channels, num_classes,
                                      self.backbone.output_stride, bn_momentum=bn_momentum, bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_level, features = self.backbone(x)
        logits = self.head(low_level, features)
        return resize(logits, x.shape[-2:])


PUBLISHED_FILTER_MULTIPLIERS = {"autodeeplab-paper": 20, "autodeeplab-s": 20, "autodeeplab-m": 32, "autodeeplab-l": 48}
"""Name -> filter multiplier of the published Auto-DeepLab networks (``autodeeplab-paper``'s is its default)."""


@register_model("autodeeplab-paper")
def autodeeplab_paper(num_classes: int, filter_multiplier: int = 20, **kwargs: Any) -> AutoDeepLab:
    """The published Auto-DeepLab network (path and cell of the paper), F=20 unless given."""
    return AutoDeepLab(AUTODEEPLAB_PATH, AUTODEEPLAB_CELL, filter_multiplier, num_classes, **kwargs)


@register_model("autodeeplab-s")
def autodeeplab_s(num_classes: int, **kwargs: Any) -> AutoDeepLab:
    """Auto-DeepLab-S: the published network with F=20 (10.15 M parameters for 19 classes)."""
    return autodeeplab_paper(num_classes, filter_multiplier=PUBLISHED_FILTER_MULTIPLIERS["autodeeplab-s"], **kwargs)


@register_model("autodeeplab-m")
def autodeeplab_m(num_classes: int, **kwargs: Any) -> AutoDeepLab:
    """Auto-DeepLab-M: the published network with F=32 (21.62 M parameters for 19 classes)."""
    return autodeeplab_paper(num_classes, filter_multiplier=PUBLISHED_FILTER_MULTIPLIERS["autodeeplab-m"], **kwargs)


@register_model("autodeeplab-l")
def autodeeplab_l(num_classes: int, **kwargs: Any) -> AutoDeepLab:
    """Auto-DeepLab-L: the published network with F=48 (44.42 M parameters for 19 classes)."""
    return autodeeplab_paper(num_classes, filter_multiplier=PUBLISHED_FILTER_MULTIPLIERS["autodeeplab-l"], **kwargs)


def autodeeplab_from_arch(arch: NetworkArch | Mapping[str, Any], num_classes: int, **kwargs: Any) -> AutoDeepLab:
    """Build the network a search found, from its :class:`~autoseg.space.architecture.NetworkArch`
    (or the ``arch.json`` form of one); a ``filter_multiplier`` keyword overrides the
    architecture's F, which defaults to 20 when the architecture records none."""
    if not isinstance(arch, NetworkArch):
        arch = NetworkArch.from_dict(dict(arch))
    filter_multiplier = kwargs.pop("filter_multiplier", None) or arch.filter_multiplier or DEFAULT_FILTER_MULTIPLIER
    return AutoDeepLab(arch.path, arch.cell, int(filter_multiplier), num_classes, **kwargs)


@register_model("autodeeplab-arch")
def autodeeplab_arch(num_classes: int, arch: NetworkArch | Mapping[str, Any], **kwargs: Any) -> AutoDeepLab:
    """The network of a search's ``arch.json`` (passed as ``arch=``); see :func:`autodeeplab_from_arch`."""
    return autodeeplab_from_arch(arch, num_classes, **kwargs)
