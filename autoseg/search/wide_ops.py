"""The candidate ops of every edge leaving one state of a search cell, run as one wide op each.

In a search cell, state ``j`` feeds one mixed op per later block; each of those ``k`` edges
applies every candidate op to the same input with its own weights. Running the ``k`` copies of
an op one by one launches ``k`` times as many small kernels as needed. The *wide* ops here hold
the weights of all ``k`` edges and compute all of them in one go:

- a depthwise conv of all edges is one grouped conv (channel multiplier ``k`` on a shared
  input, or ``groups = k * C`` on per-edge inputs), a pointwise conv of all edges one grouped
  1x1 conv (``groups = k``), a batch norm of all edges one batch norm over ``k * C`` channels;
- parameter-free ops give the same output on every edge, so they run once: the pools (with
  their affine-free batch norm, whose statistics are then the same on every edge too) and
  the identity;
- the ReLU that starts the conv ops is computed once per state (:class:`EdgeInput`).

This is exactly the reference computation of ``k`` separate edges (docs/DESIGN.md §1):
same parameters, same outputs and gradients (checked against the per-edge ops of
:mod:`autoseg.layers.ops` in the tests). A wide op returns ``(N, k, C, H', W')``, or
``(N, 1, C, H', W')`` when every edge gets the same output.

Ops without a wide form (for example ones a user registers with :func:`autoseg.layers.ops.register_op`)
run per edge through :class:`EdgeStack`; a wide form is one :func:`register_wide_op` entry.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.layers.ops import build_op
from autoseg.search.grouped_batchnorm import GroupedBatchNorm2d, convert_batchnorm
from autoseg.search.stage_recomputation import (RecomputableModule, StageShape, pointwise, recomputed_relu,
                                               recomputed_stage)

WideOpFactory = Callable[[int, int, int], nn.Module]
"""Builds a wide op from ``(channels, num_edges, stride)``."""

_WIDE_OPS: dict[str, WideOpFactory] = {}


def register_wide_op(name: str) -> Callable[[WideOpFactory], WideOpFactory]:
    """Decorator registering ``factory(channels, num_edges, stride)`` as the wide form of op ``name``."""

    def decorator(factory: WideOpFactory) -> WideOpFactory:
        if name in _WIDE_OPS:
            raise ValueError(f"a wide form of op {name!r} is already registered")
        _WIDE_OPS[name] = factory
        return factory

    return decorator


class EdgeInput:
    """The state that every edge of a fan-out reads, and its ReLU, computed at most once
    (with ``recompute``, a :func:`~autoseg.search.stage_recomputation.recomputed_relu`)."""

    def __init__(self, x: torch.Tensor, recompute: bool = False):
        self.x = x
        self.recompute = recompute
        self._relu: torch.Tensor | None = None

    @property
    def relu(self) -> torch.Tensor:
        """ReLU of the state (the first layer of the conv ops and of FactorizedReduce)."""
        # not functools.cached_property: on Python 3.11 it takes a lock, which torch.compile cannot trace
        if self._relu is None:
            self._relu = recomputed_relu(self.x) if self.recompute else F.relu(self.x)
        return self._relu


def _conv_init_(weight: torch.Tensor, fan_in: int) -> None:
    """PyTorch's default conv initialisation (kaiming uniform, a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)


class WideBatchNorm(GroupedBatchNorm2d):
    """Affine-free batch norm of ``k`` edges of ``C`` channels: one norm over ``k * C`` channels."""

    def __init__(self, channels: int, num_edges: int):
        super().__init__(channels * num_edges, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, k, C, H, W)
        return super().forward(x.flatten(1, 2)).view(x.shape)


class WideDilConv(RecomputableModule):
    """ReLU - depthwise kxk conv - pointwise 1x1 conv - BN (:class:`autoseg.layers.ops.DilConv`) on ``k`` edges.

    With ``shared_input`` the edges read one state (``EdgeInput``, ReLU shared); otherwise each
    edge reads its own ``(N, k, C, H, W)`` slice (the second half of a separable conv). With
    ``recompute_activations`` (``selective_checkpoint``) the ReLU and the depthwise conv are
    recomputed in backward (:mod:`autoseg.search.stage_recomputation`).
    """

    def __init__(self, channels: int, num_edges: int, kernel_size: int, stride: int, dilation: int,
                 shared_input: bool = True):
        super().__init__()
        # shared input: groups=C with k filters per group, output channel c * k + i is edge i on channel c
        self.shape = StageShape(channels, num_edges, stride, dilation * (kernel_size - 1) // 2, dilation,
                                channels if shared_input else channels * num_edges, shared_input)
        self.depthwise = nn.Parameter(torch.empty(num_edges, channels, 1, kernel_size, kernel_size))
        self.pointwise = nn.Parameter(torch.empty(num_edges, channels, channels))
        _conv_init_(self.depthwise, kernel_size * kernel_size)
        _conv_init_(self.pointwise, channels)
        self.bn = WideBatchNorm(channels, num_edges)

    def forward(self, x: EdgeInput | torch.Tensor) -> torch.Tensor:
        shared = self.shape.shared_input
        # channel-major for a shared input (one edge needs no transpose, whose gradient would carry
        # odd strides into DDP's buckets)
        by_channel = self.depthwise.transpose(0, 1) if shared and self.shape.edges > 1 else self.depthwise
        weight = by_channel.reshape(-1, 1, *self.depthwise.shape[-2:])
        if self.recompute_activations:
            pointwise_weight = self.pointwise.reshape(-1, self.shape.channels, 1, 1)
            out = (recomputed_stage(x.x, weight, pointwise_weight, self.shape, relu=x.relu) if shared
                   else recomputed_stage(x.flatten(1, 2), weight, pointwise_weight, self.shape))
        else:
            out = pointwise(self.shape.depthwise(x.relu if shared else F.relu(x.flatten(1, 2)), weight),
                            self.pointwise)
        return self.bn(out)


class WideSepConv(nn.Sequential):
    """Two :class:`WideDilConv` stages without dilation, the first with the stride
    (:class:`autoseg.layers.ops.SepConv`)."""

    def __init__(self, channels: int, num_edges: int, kernel_size: int, stride: int):
        super().__init__(WideDilConv(channels, num_edges, kernel_size, stride, 1, shared_input=True),
                         WideDilConv(channels, num_edges, kernel_size, 1, 1, shared_input=False))


class WideFactorizedReduce(nn.Module):
    """:class:`autoseg.layers.ops.FactorizedReduce` (affine-free) on ``k`` edges: ReLU, two 1x1 stride-2
    convs on pixel grids offset by one (the shifted one zero-padded on odd sizes), concatenated, BN."""

    def __init__(self, channels: int, num_edges: int):
        super().__init__()
        if channels % 2:
            raise ValueError(f"FactorizedReduce needs an even number of channels, got {channels}")
        self.conv_1 = nn.Parameter(torch.empty(num_edges, channels // 2, channels))
        self.conv_2 = nn.Parameter(torch.empty(num_edges, channels // 2, channels))
        for weight in (self.conv_1, self.conv_2):
            _conv_init_(weight, channels)
        self.bn = WideBatchNorm(channels, num_edges)

    def forward(self, x: EdgeInput) -> torch.Tensor:
        relu = x.relu
        grids = (relu[:, :, ::2, ::2], F.pad(relu, (0, 1, 0, 1))[:, :, 1::2, 1::2])
        halves = []
        for grid, weight in zip(grids, (self.conv_1, self.conv_2)):
            n, _, h, w = grid.shape  # one matmul for all edges: (k * C/2, C) @ (N, C, H*W)
            out = torch.matmul(weight.flatten(0, 1), grid.reshape(n, -1, h * w))
            halves.append(out.view(n, *weight.shape[:2], h, w))
        return self.bn(torch.cat(halves, dim=2))


class SharedPool(nn.Module):
    """A 3x3 pool and the affine-free BN the search network puts after it: the same on every
    edge, so computed once (returns ``(N, 1, C, H', W')``)."""

    def __init__(self, pool: nn.Module, channels: int):
        super().__init__()
        self.pool = pool
        self.bn = GroupedBatchNorm2d(channels, affine=False)

    def forward(self, x: EdgeInput) -> torch.Tensor:
        return self.bn(self.pool(x.x)).unsqueeze(1)


class SharedIdentity(nn.Module):
    """``skip_connect`` with stride 1: the input itself on every edge."""

    def forward(self, x: EdgeInput) -> torch.Tensor:
        return x.x.unsqueeze(1)


class EdgeStack(nn.Module):
    """Fallback for ops without a wide form: ``k`` registry ops run one by one and stacked."""

    def __init__(self, name: str, channels: int, num_edges: int, stride: int):
        super().__init__()
        self.ops = nn.ModuleList(build_op(name, channels, stride, affine=False) for _ in range(num_edges))
        convert_batchnorm(self)

    def forward(self, x: EdgeInput) -> torch.Tensor:
        return torch.stack([op(x.x) for op in self.ops], dim=1)


def build_wide_op(name: str, channels: int, num_edges: int, stride: int) -> nn.Module:
    """Op ``name`` of the ``"darts"`` family on ``num_edges`` edges that share one input state."""
    if name in _WIDE_OPS:
        return _WIDE_OPS[name](channels, num_edges, stride)
    return EdgeStack(name, channels, num_edges, stride)


@register_wide_op("max_pool_3x3")
def _max_pool(channels: int, num_edges: int, stride: int) -> nn.Module:
    return SharedPool(nn.MaxPool2d(3, stride=stride, padding=1), channels)


@register_wide_op("avg_pool_3x3")
def _avg_pool(channels: int, num_edges: int, stride: int) -> nn.Module:
    return SharedPool(nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False), channels)


@register_wide_op("skip_connect")
def _skip(channels: int, num_edges: int, stride: int) -> nn.Module:
    return SharedIdentity() if stride == 1 else WideFactorizedReduce(channels, num_edges)


@register_wide_op("sep_conv_3x3")
def _sep3(channels: int, num_edges: int, stride: int) -> nn.Module:
    return WideSepConv(channels, num_edges, 3, stride)


@register_wide_op("sep_conv_5x5")
def _sep5(channels: int, num_edges: int, stride: int) -> nn.Module:
    return WideSepConv(channels, num_edges, 5, stride)


@register_wide_op("dil_conv_3x3")
def _dil3(channels: int, num_edges: int, stride: int) -> nn.Module:
    return WideDilConv(channels, num_edges, 3, stride, 2)


@register_wide_op("dil_conv_5x5")
def _dil5(channels: int, num_edges: int, stride: int) -> nn.Module:
    return WideDilConv(channels, num_edges, 5, stride, 2)
