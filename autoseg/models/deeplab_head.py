"""DeepLabv3+ segmentation head: ASPP on the deep features, then a decoder with low-level features.

Layout of the official DeepLab code (and of the parameter counts the Auto-DeepLab paper
reports): ASPP with a 1x1 branch, three 3x3 atrous branches, image pooling and a 1x1
projection, all 256 channels; decoder: 48-channel 1x1 projection of the stride-4 features,
concatenation with the upsampled ASPP output, two 3x3 convs of 256 channels and a 1x1
classifier. Every conv is followed by an affine BN and a ReLU and has no bias, except the
classifier, which has a bias and nothing after it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.layers.aspp import ASPP, conv_bn_relu


def aspp_rates(output_stride: int) -> tuple[int, ...]:
    """The DeepLab ASPP rates at ``output_stride``: (6, 12, 18) * 16 / output_stride, e.g.
    12/24/36 at output stride 8 and 3/6/9 at 32."""
    if output_stride < 1 or 96 % output_stride:
        raise ValueError(f"output stride must divide 96 (4, 8, 16, 32, ...), got {output_stride}")
    return tuple(k * 96 // output_stride for k in (1, 2, 3))


class DeepLabV3PlusHead(nn.Module):
    """ASPP + DeepLabv3+ decoder + classifier.

    ``forward(low_level, features)`` takes the stride-4 features and the deep features (at
    ``output_stride``) and returns logits at the resolution of ``low_level``.
    """

    def __init__(self, in_channels: int, low_level_channels: int, num_classes: int, output_stride: int,
                 aspp_channels: int = 256, low_level_projection: int = 48, decoder_channels: int = 256,
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5):
        super().__init__()
        norm = dict(bn_momentum=bn_momentum, bn_eps=bn_eps)
        self.aspp = ASPP(in_channels, aspp_channels, aspp_rates(output_stride), **norm)
        self.low_level = conv_bn_relu(low_level_channels, low_level_projection, 1, **norm)
        self.decoder = nn.Sequential(
            conv_bn_relu(aspp_channels + low_level_projection, decoder_channels, 3, **norm),
            conv_bn_relu(decoder_channels, decoder_channels, 3, **norm),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, low_level: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        context = F.interpolate(self.aspp(features), size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.decoder(torch.cat([context, self.low_level(low_level)], dim=1)))
