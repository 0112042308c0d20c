"""Candidate operations of the cell search space, in one registry.

The eight DARTS candidates are defined as in the reference DARTS code (see docs/DESIGN.md
§1). Ops are grouped in *families*: ``"darts"`` (:data:`BASE_FAMILY`) holds the reference
definitions used by both search spaces and by the DARTS evaluation network; another family (for
example the official Auto-DeepLab retrain ops, registered by :mod:`autoseg.models.autodeeplab`)
overrides some of them with other definitions and takes every other op from the base family. A
new op is one :func:`register_op` entry in the base family: it is then searched, decoded and
retrained in every family.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

OpFactory = Callable[[int, int, bool], nn.Module]
"""Builds an op from ``(channels, stride, affine)``; the op keeps the channel count."""

_OPS: dict[str, dict[str, OpFactory]] = {}

BASE_FAMILY = "darts"
"""The family every other family falls back to for the ops it does not define itself."""

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
"""The eight candidate ops of DARTS and Auto-DeepLab, in the reference order."""


def register_op(name: str, family: str = "darts") -> Callable[[OpFactory], OpFactory]:
    """Decorator registering ``factory(channels, stride, affine)`` as op ``name`` of ``family``."""

    def decorator(factory: OpFactory) -> OpFactory:
        ops = _OPS.setdefault(family, {})
        if name in ops:
            raise ValueError(f"op {name!r} is already registered in family {family!r}")
        ops[name] = factory
        return factory

    return decorator


def _family_ops(family: str) -> dict[str, OpFactory]:
    """The ops of ``family``: the base family's, overridden by the family's own."""
    return {**_OPS.get(BASE_FAMILY, {}), **_OPS.get(family, {})}


def list_op_families() -> list[str]:
    """Names of the op families with ops registered, the base family first."""
    return sorted(_OPS, key=lambda family: (family != BASE_FAMILY, family))


def list_ops(family: str = BASE_FAMILY) -> list[str]:
    """Names of the ops ``family`` can build (the base family's and its own)."""
    return list(_family_ops(family))


def build_op(name: str, channels: int, stride: int = 1, affine: bool = True, family: str = BASE_FAMILY) -> nn.Module:
    """Instantiate op ``name`` of ``family`` (its own definition, else the base family's) on
    ``channels`` channels with the given stride."""
    ops = _family_ops(family)
    if name not in ops:
        raise ValueError(f"unknown op {name!r} in family {family!r}; known ops: {', '.join(ops)}")
    return ops[name](channels, stride, affine)


def check_primitives(primitives: tuple[str, ...] | list[str], family: str = BASE_FAMILY) -> None:
    """Raise ValueError unless every name in ``primitives`` is an op ``family`` can build."""
    unknown = [p for p in primitives if p not in _family_ops(family)]
    if unknown:
        raise ValueError(f"unknown ops {unknown} in family {family!r}; known ops: {', '.join(list_ops(family))}")
    if len(set(primitives)) != len(primitives):
        raise ValueError(f"the op set lists an op twice: {list(primitives)}")


class ReLUConvBN(nn.Sequential):
    """ReLU - conv (no bias) - BN: the 1x1 preprocessing of cell inputs."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU - depthwise kxk conv (dilated) - pointwise 1x1 conv - BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=c_in,
                      bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two undilated DilConv blocks; only the first carries the stride (reference definition)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel_size, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel_size, 1, padding, 1, affine),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape (strided when stride is 2)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs on pixel grids offset by one, concatenated.

    On even sizes this is exactly the reference op. On odd sizes (frequent in segmentation,
    e.g. 81x81) the reference op fails because its shifted branch is one pixel smaller; here the
    shifted input is zero-padded on the right/bottom so both branches have ``ceil(size / 2)``.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


@register_op("none")
def _zero(channels: int, stride: int, affine: bool) -> nn.Module:
    return Zero(stride)


@register_op("max_pool_3x3")
def _max_pool(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.MaxPool2d(3, stride=stride, padding=1)


@register_op("avg_pool_3x3")
def _avg_pool(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


@register_op("skip_connect")
def _skip(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)


@register_op("sep_conv_3x3")
def _sep3(channels: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(channels, channels, 3, stride, 1, affine)


@register_op("sep_conv_5x5")
def _sep5(channels: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(channels, channels, 5, stride, 2, affine)


@register_op("dil_conv_3x3")
def _dil3(channels: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(channels, channels, 3, stride, 2, 2, affine)


@register_op("dil_conv_5x5")
def _dil5(channels: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(channels, channels, 5, stride, 4, 2, affine)
