"""Test-time inference as segmentation papers evaluate: several scales, mirrored inputs and
sliding windows, combined into one set of logits at the input size.

DeepLabv3 (Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation",
arXiv:1706.05587) evaluates with multi-scale inputs (scales 0.5, 0.75, 1.0, 1.25, 1.5,
1.75) and left-right flipped inputs; the DeepLab reference code (``predict_labels_multi_scale``)
resizes the input bilinearly by each scale, runs the model on it and on its mirror image,
resizes every output back bilinearly to the input size, and averages the softmax
probabilities of all these views. :func:`predict_logits` does the same and returns logits
whose softmax is that average (the log of the averaged probabilities); with a single view
(scale 1, no flip, the default) it returns the model's logits untouched, which is exactly the
single-scale inference the tools have always done.

Inputs larger than the training crop can also be cut into overlapping windows (``window``,
``stride``): each window is run on its own and the logits of pixels covered by several windows
are averaged (mmsegmentation's ``slide`` inference). Windows start every ``stride`` pixels and
the last one lies flush with the border, so no padding is needed; along a side shorter than
the window a tile spans the whole side. The window applies to the model's input, i.e. to the
image after it was resized by a scale.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.utils.errors import UserError

DEEPLAB_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
"""The multi-scale inputs DeepLabv3 evaluates Cityscapes and PASCAL VOC with."""
MAX_WINDOWS = 1000
"""The most windows one view of an image may be cut into (a Cityscapes image takes 18 windows of
513x513); more means a window far smaller than the training crop, and hours of inference."""


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``value`` as a (height, width) pair of positive ints; one int stands for both."""
    pair = (value,) if isinstance(value, int) else tuple(value)
    pair = pair * 2 if len(pair) == 1 else pair
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise UserError(f"{name} must be one or two positive integers (height, width), got {value!r}")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True)
class InferenceProtocol:
    """How a batch becomes logits: ``scales`` (each resizes the model's input, 1.0 = as is),
    ``flip`` (add the left-right mirrored input of every scale), and ``window``/``stride``
    (sliding-window inference of each input larger than ``window``; ``stride`` defaults to two
    thirds of the window, a third of overlap as mmsegmentation's Cityscapes configs use).

    The default is one view at scale 1 without flip or window: plain inference.
    """

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        scales = tuple(float(scale) for scale in self.scales)
        if not scales or any(not math.isfinite(scale) or scale <= 0 for scale in scales):
            raise UserError(f"scales must be one or more positive numbers, e.g. 0.5 0.75 1.0, got {list(self.scales)}")
        object.__setattr__(self, "scales", scales)
        if self.window is None:
            if self.stride is not None:
                raise UserError("a stride needs a window: give --window H W as well, or leave out --stride")
            return
        window = _pair(self.window, "window")
        stride = (_pair(self.stride, "stride") if self.stride is not None
                  else tuple(math.ceil(2 * side / 3) for side in window))
        if any(s > w for s, w in zip(stride, window)):
            raise UserError(f"stride {list(stride)} is larger than window {list(window)}, which would leave pixels "
                            "out: use a stride of at most the window")
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "stride", stride)

    @property
    def views(self) -> int:
        """How many times the model runs on (a resized or mirrored copy of) each image, windows aside."""
        return len(self.scales) * (2 if self.flip else 1)

    def at_scale(self, factor: float) -> InferenceProtocol:
        """This protocol with every scale multiplied by ``factor`` (e.g. a model searched at half resolution)."""
        if factor == 1.0:
            return self
        return InferenceProtocol(tuple(scale * factor for scale in self.scales), self.flip, self.window, self.stride)

    def check_image_size(self, height: int, width: int, name: str = "the image") -> None:
        """Raise a UserError if a scale turns a ``height`` x ``width`` image into an empty one, or
        the window cuts a view into more than :data:`MAX_WINDOWS` windows."""
        for scale in self.scales:
            scaled = (math.floor(height * scale), math.floor(width * scale))
            if min(scaled) < 1:
                raise UserError(f"scale {scale:g} turns {name} of {height}x{width} pixels into "
                                f"{scaled[0]}x{scaled[1]}: use scales of at least {1 / min(height, width):.3g}")
            if self.window is not None:
                count = len(tile_starts(scaled[0], self.window[0], self.stride[0])) * len(
                    tile_starts(scaled[1], self.window[1], self.stride[1]))
                if count > MAX_WINDOWS:
                    raise UserError(f"window {list(self.window)} with stride {list(self.stride)} cuts {name} "
                                    f"({scaled[0]}x{scaled[1]} at scale {scale:g}) into {count:,} windows, more than "
                                    f"{MAX_WINDOWS}: use a window near the training crop (e.g. 513 513)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: scales, flip, window and stride (``None`` without a window)."""
        return {"scales": list(self.scales), "flip": self.flip,
                "window": None if self.window is None else list(self.window),
                "stride": None if self.stride is None else list(self.stride)}

    def logits(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Float32 ``(N, C, H, W)`` logits of ``images`` ``(N, 3, H, W)``: those of the single view,
        or the log of the views' averaged softmax probabilities. ``model`` must be in eval mode; inputs that
        a scale empties or a window cuts too fine are refused (:meth:`check_image_size`)."""
        size = images.shape[-2:]
        self.check_image_size(*size, name="an input")
        combined: torch.Tensor | None = None
        for scale in self.scales:
            scaled = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode="bilinear",
                                                               align_corners=False)
            for mirrored in (False, True) if self.flip else (False,):
                view = self._windowed(model, scaled.flip(-1) if mirrored else scaled)
                if mirrored:
                    view = view.flip(-1)
                if scale != 1.0:
                    view = F.interpolate(view, size=size, mode="bilinear", align_corners=False)
                if self.views == 1:
                    return view
                log_probs = view.log_softmax(dim=1)
                combined = log_probs if combined is None else torch.logaddexp(combined, log_probs)
        assert combined is not None
        return combined - math.log(self.views)

    def _windowed(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The model's float32 logits of ``images``, window by window when they exceed the window."""
        height, width = images.shape[-2:]
        if self.window is None or (height <= self.window[0] and width <= self.window[1]):
            return _main_output(model(images)).float()
        rows = tile_starts(height, self.window[0], self.stride[0])
        columns = tile_starts(width, self.window[1], self.stride[1])
        total: torch.Tensor | None = None
        count = images.new_zeros((height, width))
        for top in rows:
            for left in columns:
                bottom, right = top + min(self.window[0], height), left + min(self.window[1], width)
                tile = _main_output(model(images[..., top:bottom, left:right])).float()
                if total is None:
                    total = tile.new_zeros((*tile.shape[:2], height, width))
                total[..., top:bottom, left:right] += tile
                count[top:bottom, left:right] += 1
        assert total is not None
        return total / count


def tile_starts(length: int, window: int, stride: int) -> list[int]:
    """Offsets of the windows along a side of ``length`` pixels: every ``stride`` pixels, the
    last one flush with the end; a single 0 when the side fits in one window."""
    if length <= window:
        return [0]
    return [*range(0, length - window, stride), length - window]


def _main_output(output: torch.Tensor | tuple) -> torch.Tensor:
    """The main logits of a model output (models with an auxiliary head return a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def predict_logits(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False,
                   window: int | Sequence[int] | None = None,
                   stride: int | Sequence[int] | None = None) -> torch.Tensor:
    """Logits of ``images`` ``(N, 3, H, W)`` at the input size under the given protocol (see
    :class:`InferenceProtocol` and the module docstring); ``model`` must be in eval mode.

    ``predict_logits(model, x)`` is ``model(x).float()``; ``scales=DEEPLAB_SCALES, flip=True`` is
    DeepLab's multi-scale, flipped evaluation.
    """
    return InferenceProtocol(tuple(scales), flip, window, stride).logits(model, images)  # type: ignore[arg-type]


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line flags of an :class:`InferenceProtocol`: --scales, --flip, --window, --stride."""
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0], metavar="S",
                        help="input scales whose softmax probabilities are averaged (DeepLab: 0.5 0.75 1.0 1.25 1.5 "
                             "1.75; default 1.0)")
    parser.add_argument("--flip", action="store_true", help="also average the left-right mirrored input of each scale")
    parser.add_argument("--window", type=int, nargs=2, metavar=("H", "W"),
                        help="sliding-window inference: run inputs larger than HxW window by window")
    parser.add_argument("--stride", type=int, nargs="+", metavar="S",
                        help="window step, one value or H W (default: two thirds of the window)")


def protocol_from_args(args: argparse.Namespace) -> InferenceProtocol:
    """The :class:`InferenceProtocol` the flags of :func:`add_protocol_arguments` describe."""
    return InferenceProtocol(tuple(args.scales), args.flip, args.window,
                             None if args.stride is None else tuple(args.stride))
