"""Batch norm that keeps independent statistics for groups stacked along the batch.

A trellis node runs its one cell on up to three inputs (one per incoming transition). Stacking
those inputs into one batch of ``N * G`` samples runs every op once instead of ``G`` times,
but a plain batch norm would then mix the groups' statistics. Inside :func:`batch_groups`,
:class:`GroupedBatchNorm2d` normalises each group with its own batch statistics and updates
the running statistics once per group, in group order — exactly what ``G`` separate runs do.
The stacked batch is sample-major (sample ``n`` of group ``g`` at index ``n * G + g``), so a
free view turns it into ``N`` samples of ``G * C`` channels, which ``F.batch_norm`` handles
in one call.

The search cells' batch norms are affine-free (docs/DESIGN.md §1). In training mode they
run through :class:`AffineFreeBatchNorm`, which keeps the normalised output for the backward
pass instead of the input: the output is kept anyway by whatever follows (the mixed op's
weighted sum needs it for the alpha gradient), so this saves one activation per batch norm
at no cost in exactness.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

class _Setting:
    """What the grouped batch norms are told by the context managers below."""

    def __init__(self) -> None:
        self.groups = 1
        self.frozen = False


_SETTING = _Setting()


@contextlib.contextmanager
def _set(name: str, value: Any) -> Iterator[None]:
    previous = getattr(_SETTING, name)
    setattr(_SETTING, name, value)
    try:
        yield
    finally:
        setattr(_SETTING, name, previous)


def batch_groups(groups: int) -> contextlib.AbstractContextManager:
    """Within this block, grouped batch norms treat their batch as ``groups`` stacked groups."""
    return _set("groups", groups)


def frozen_running_statistics() -> contextlib.AbstractContextManager:
    """Within this block, grouped batch norms in training mode normalise with batch statistics
    but leave their running statistics alone (for the recomputed forward pass of activation
    checkpointing, which would otherwise count every batch twice)."""
    return _set("frozen", True)


class AffineFreeBatchNorm(torch.autograd.Function):
    """Training-mode batch norm without affine parameters that saves its output, not its input.

    With ``y = (x - mean) * invstd`` per channel, the input gradient is
    ``invstd * (g - mean(g) - y * mean(g * y))``: a function of the output alone. ``forward``
    returns ``(y, invstd)``; ``invstd`` is an output too so that higher-order gradients (double
    backward) see its dependence on ``x``. The batch mean and unbiased variance are written into
    ``batch_mean`` and ``batch_var`` for the running statistics.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, batch_mean: torch.Tensor, batch_var: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        y, _, invstd = torch.native_batch_norm(x, None, None, batch_mean, batch_var, True, 1.0, eps)
        ctx.save_for_backward(y, invstd)
        ctx.eps = eps
        return y, invstd

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor | None,
                 grad_invstd: torch.Tensor | None) -> tuple[torch.Tensor | None, None, None, None]:
        y, invstd = ctx.saved_tensors
        if grad_y is None:
            grad_y = torch.zeros_like(y)
        if not torch.is_grad_enabled() and grad_invstd is None:
            # one fused kernel: batch-norm backward of "input" y with mean 0 and invstd 1, scaled by invstd
            ones, zeros = torch.ones_like(invstd), torch.zeros_like(invstd)
            grad_x = torch.ops.aten.native_batch_norm_backward(grad_y, y, invstd, None, None, zeros, ones, True,
                                                               ctx.eps, [True, False, False])[0]
            return grad_x, None, None, None
        dims = [0, *range(2, y.dim())]
        scale = invstd.view(1, -1, *[1] * (y.dim() - 2))
        grad_x = scale * (grad_y - grad_y.mean(dims, keepdim=True) - y * (grad_y * y).mean(dims, keepdim=True))
        if grad_invstd is not None:  # d invstd / dx = -invstd^2 * y / M per channel
            count = y.numel() // y.shape[1]
            grad_x = grad_x - (grad_invstd.view_as(scale) * scale.square() / count) * y
        return grad_x, None, None, None


class GroupedBatchNorm2d(nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` that honours :func:`batch_groups` (same parameters and state dict)
    and, when affine-free, saves its output for backward (:class:`AffineFreeBatchNorm`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups, frozen = _SETTING.groups, _SETTING.frozen
        batch_statistics = self.training or not self.track_running_stats
        if groups == 1 and (not batch_statistics or (self.affine and not frozen)):
            return super().forward(x)
        n, c, h, w = x.shape
        grouped = x.reshape(n // groups, groups * c, h, w)
        if not batch_statistics:
            out = F.batch_norm(grouped, self.running_mean.repeat(groups), self.running_var.repeat(groups),
                               self.weight.repeat(groups) if self.affine else None,
                               self.bias.repeat(groups) if self.affine else None, False, 0.0, self.eps)
            return out.reshape(n, c, h, w)
        dtype = self.running_mean.dtype if self.track_running_stats else torch.promote_types(x.dtype, torch.float32)
        batch_mean = torch.zeros(groups * c, device=x.device, dtype=dtype)
        batch_var = torch.ones(groups * c, device=x.device, dtype=dtype)
        if self.affine:
            out = F.batch_norm(grouped, batch_mean, batch_var, self.weight.repeat(groups), self.bias.repeat(groups),
                               True, 1.0, self.eps)
        else:
            out, _ = AffineFreeBatchNorm.apply(grouped, batch_mean, batch_var, self.eps)
        if self.track_running_stats and not frozen:
            self._update_running_stats(batch_mean.view(groups, c), batch_var.view(groups, c))
        return out.reshape(n, c, h, w)

    @torch.no_grad()
    def _update_running_stats(self, means: torch.Tensor, variances: torch.Tensor) -> None:
        """Apply one running-statistics update per group, in group order."""
        for mean, var in zip(means, variances):
            self.num_batches_tracked.add_(1)
            # momentum None is the cumulative average, whose factor needs the count before every update
            factor = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
            self.running_mean.lerp_(mean, factor)
            self.running_var.lerp_(var, factor)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Turn every plain ``BatchNorm2d`` inside ``module`` into a :class:`GroupedBatchNorm2d`
    (in place; parameters and buffers are kept). Returns ``module``."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            grouped = GroupedBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                         child.track_running_stats)
            grouped.load_state_dict(child.state_dict())
            setattr(module, name, grouped)
        else:
            convert_batchnorm(child)
    return module
