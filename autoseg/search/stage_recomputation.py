"""Selective recomputation of the search cells' conv stages (``selective_checkpoint``).

Most of what a supernet's forward pass keeps for backward belongs to the conv stages of its
candidate ops, ReLU - depthwise conv - pointwise conv - batch norm (:class:`~autoseg.search.wide_ops.WideDilConv`;
a separable conv is two of them). Autograd keeps, per stage, the ReLU's output (the depthwise
conv's input), the depthwise conv's output (the pointwise conv's input) and the batch norm's
output. Selective activation checkpointing (Korthikanti et al., "Reducing Activation
Recomputation in Large Transformer Models", MLSys 2023: keep what is expensive to recompute,
recompute what is cheap) keeps only the last, which the mixed op's weighted sum needs anyway,
and the stage's input, which is kept anyway (the state is kept by the pools and the identity;
a separable conv's middle is the first stage's batch-norm output). In backward the stage
recomputes its ReLU and its depthwise conv, the cheapest of its ops (a ``k x k`` filter per
channel against the pointwise conv's ``C`` channels), from that input; the pointwise conv and
the batch norm are never recomputed.

Exactness: the backward pass calls the same ATen ops as autograd's own (``threshold_backward``
for the ReLU, ``convolution_backward`` for the convs, the same reshapes in between) on the
same values: the recomputed ReLU and depthwise conv are the forward pass's ops on the same
inputs. Under autocast the stage casts as autocast does (to the autocast dtype before each conv)
and casts the gradients back. Outputs and gradients are bitwise those of the plain computation
(``tests/test_stage_recomputation.py``), provided the depthwise conv's forward kernel is
deterministic, which it is on the CPU and, on a GPU, with ``torch.backends.cudnn.deterministic``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

_convolution_backward = torch.ops.aten.convolution_backward.default
_threshold_backward = torch.ops.aten.threshold_backward.default


def _active_autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast runs convolutions in on ``device``, or None where autocast is off."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``tensor`` as autocast hands it to a convolution (floating tensors other than float64 cast)."""
    if dtype is None or not tensor.is_floating_point() or tensor.dtype == torch.float64:
        return tensor
    return tensor.to(dtype)


class _RecomputedRelu(torch.autograd.Function):
    """ReLU that keeps its input for backward instead of its output."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.relu(x)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, = ctx.saved_tensors
        return _threshold_backward(grad, torch.relu(x), 0)


def recomputed_relu(x: torch.Tensor) -> torch.Tensor:
    """``torch.relu(x)``, whose backward recomputes the output from ``x`` instead of keeping it
    (the output is then kept only as long as its consumers keep it)."""
    return _RecomputedRelu.apply(x)


class RecomputableModule(nn.Module):
    """A module that can recompute part of its activations in backward (``recompute_activations``,
    off by default; switched for a whole network by :func:`set_recomputation`)."""

    recompute_activations = False


def set_recomputation(network: nn.Module, on: bool) -> None:
    """Switch the selective recomputation of every :class:`RecomputableModule` in ``network`` on or off."""
    for module in network.modules():
        if isinstance(module, RecomputableModule):
            module.recompute_activations = on


@dataclass(frozen=True)
class StageShape:
    """The depthwise conv of a wide conv stage on ``edges`` edges of ``channels`` channels.

    The conv (``stride``, ``padding``, ``dilation``, ``groups``) gives ``channels * edges`` output
    channels, channel-major (``c * edges + i``) when one input is shared by every edge
    (``shared_input``), edge-major (``i * channels + c``) when each edge has its own.
    """

    channels: int
    edges: int
    stride: int
    padding: int
    dilation: int
    groups: int
    shared_input: bool

    def depthwise(self, r: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The depthwise conv of ``r`` (the ReLU's output) as ``(N, edges, channels, H', W')``."""
        out = F.conv2d(r, weight, None, self.stride, self.padding, self.dilation, self.groups)
        if self.shared_input:
            return out.unflatten(1, (self.channels, self.edges)).transpose(1, 2)
        return out.unflatten(1, (self.edges, self.channels))

    def depthwise_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        """The gradient of :meth:`depthwise`'s output, given as ``(N, edges * channels, H', W')``, in the
        conv's own channel order (the reshapes autograd does for :meth:`depthwise`)."""
        if not self.shared_input:
            return grad
        n, _, h, w = grad.shape
        return grad.view(n, self.edges, self.channels, h, w).transpose(1, 2).reshape(n, -1, h, w)


def pointwise(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-edge 1x1 convs as one grouped conv: ``y`` (N, k, C_in, H, W), ``weight`` (k, C_out, C_in)."""
    return _grouped_pointwise(y, weight.reshape(-1, weight.shape[2], 1, 1))


def _grouped_pointwise(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """:func:`pointwise` with the weight as the conv takes it, ``(k * C_out, C_in, 1, 1)``."""
    n, k, _, h, w = y.shape
    return F.conv2d(y.reshape(n, -1, h, w), weight, groups=k).view(n, k, -1, h, w)


def _wanted(ctx: Any, index: int) -> bool:
    """Whether this backward pass wants the gradient of input ``index``: it requires grad and leads
    to a tensor the pass computes a gradient for (an ``autograd.grad`` for alpha wants none for the
    weights). Autograd's own nodes skip unwanted gradients the same way, so the recomputed stage
    calls ``convolution_backward`` with the same output mask as the plain computation. Unknown
    for an input that is a leaf, which is then taken as wanted."""
    if not ctx.needs_input_grad[index]:
        return False
    node = ctx.next_functions[ctx.edges[index]][0]
    if node is None or isinstance(node, torch._C._functions.AccumulateGrad):
        return True
    return torch._C._will_engine_execute_node(node)


class _RecomputedStage(torch.autograd.Function):
    """Depthwise conv then pointwise conv, keeping only the ReLU's input for backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, relu: torch.Tensor | None, depthwise: torch.Tensor,
                pointwise_weight: torch.Tensor, shape: StageShape) -> torch.Tensor:
        dtype = _active_autocast_dtype(x.device)
        r = torch.relu(x) if relu is None else relu
        out = _grouped_pointwise(shape.depthwise(_cast(r, dtype), _cast(depthwise, dtype)),
                                 _cast(pointwise_weight, dtype))
        ctx.save_for_backward(x, depthwise, pointwise_weight)
        ctx.shape, ctx.dtype, ctx.relu_inside = shape, dtype, relu is None
        # the graph edge of each input (``next_functions`` has one per tensor input, none for ``relu=None``)
        ctx.edges = (0, 1, 2, 3) if relu is not None else (0, None, 1, 2)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, depthwise, pointwise_weight = ctx.saved_tensors
        shape, dtype = ctx.shape, ctx.dtype
        needs_input = _wanted(ctx, 0) or _wanted(ctx, 1)
        needs_depthwise, needs_pointwise = _wanted(ctx, 2), _wanted(ctx, 3)
        r = torch.relu(x)
        r_cast, depthwise_cast = _cast(r, dtype), _cast(depthwise, dtype)
        pointwise_cast = _cast(pointwise_weight, dtype)
        n, k, _, h, w = grad.shape
        if needs_pointwise:
            y = shape.depthwise(r_cast, depthwise_cast).reshape(n, -1, h, w)  # the recomputation
        else:  # only the input gradient, which does not read the conv's input: its shape stands in for it
            y = r_cast.new_zeros(()).expand(n, k * pointwise_weight.shape[1], h, w)
        grad_y, grad_pointwise, _ = _convolution_backward(
            grad.reshape(n, -1, h, w), y, pointwise_cast, None, [1, 1], [0, 0], [1, 1], False,
            [0, 0], k, [needs_input or needs_depthwise, needs_pointwise, False])
        grad_r = grad_depthwise = None
        if needs_input or needs_depthwise:
            grad_r, grad_depthwise, _ = _convolution_backward(
                shape.depthwise_gradient(grad_y), r_cast, depthwise_cast, None, [shape.stride] * 2,
                [shape.padding] * 2, [shape.dilation] * 2, False, [0, 0], shape.groups,
                [needs_input, needs_depthwise, False])
        if grad_r is not None:
            grad_r = grad_r.to(r.dtype)
        grad_x = _threshold_backward(grad_r, r, 0) if grad_r is not None and ctx.relu_inside else None
        return (grad_x, None if ctx.relu_inside else grad_r,
                grad_depthwise.to(depthwise.dtype) if grad_depthwise is not None else None,
                grad_pointwise.to(pointwise_weight.dtype) if grad_pointwise is not None else None, None)


def recomputed_stage(x: torch.Tensor, depthwise: torch.Tensor, pointwise_weight: torch.Tensor, shape: StageShape,
                     relu: torch.Tensor | None = None) -> torch.Tensor:
    """``pointwise(shape.depthwise(relu(x)))``, ``(N, edges, C_out, H', W')``, keeping only ``x`` (and
    the weights) for backward, where it recomputes the ReLU and the depthwise conv.

    ``depthwise`` and ``pointwise_weight`` are the weights as :func:`torch.nn.functional.conv2d` takes
    them (the latter ``(edges * C_out, C_in, 1, 1)``, a view of :func:`pointwise`'s weight). ``relu``, when given,
    is :func:`recomputed_relu` of ``x`` shared with other stages: the stage reads it and its gradient
    goes there; otherwise the stage applies the ReLU itself and the gradient goes to ``x``.
    """
    return _RecomputedStage.apply(x, relu, depthwise, pointwise_weight, shape)
