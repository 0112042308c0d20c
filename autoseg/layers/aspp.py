"""Atrous Spatial Pyramid Pooling, shared by the search supernet's heads and DeepLabv3+."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(c_in: int, c_out: int, kernel_size: int = 1, dilation: int = 1,
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> nn.Sequential:
    """Conv (no bias, 'same' padding) - BN (affine) - ReLU."""
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out, momentum=bn_momentum, eps=bn_eps),
        nn.ReLU(inplace=True),
    )


class ImagePooling(nn.Module):
    """Global average pool - 1x1 conv - BN - ReLU, broadcast back to the input size."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float = 0.1, bn_eps: float = 1e-5):
        super().__init__()
        self.project = conv_bn_relu(c_in, c_out, 1, bn_momentum=bn_momentum, bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.project(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """ASPP: a 1x1 branch, one 3x3 atrous branch per rate, image pooling; concatenated and
    projected by 1x1 conv - BN - ReLU to ``out_channels``.

    DeepLabv3+ uses three rates (e.g. 12/24/36 at output stride 8); the Auto-DeepLab search
    heads use the simplified form with the single rate 96/s.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int],
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5):
        super().__init__()
        norm = dict(bn_momentum=bn_momentum, bn_eps=bn_eps)
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, out_channels, 1, **norm)]
            + [conv_bn_relu(in_channels, out_channels, 3, dilation=int(r), **norm) for r in rates]
            + [ImagePooling(in_channels, out_channels, **norm)]
        )
        self.project = conv_bn_relu(out_channels * len(self.branches), out_channels, 1, **norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
