"""Batch norm that keeps independent statistics for groups stacked along the batch.

A trellis node runs its one cell on up to three inputs (one per incoming transition). Stacking
those inputs into one batch of ``N * G`` samples runs every op once instead of ``G`` times,
but a plain batch norm would then mix the groups' statistics. Inside :func:`batch_groups`,
:class:`GroupedBatchNorm2d` normalises each group with its own batch statistics and updates
the running statistics once per group, in group order — exactly what ``G`` separate runs do.
The stacked batch is sample-major (sample ``n`` of group ``g`` at index ``n * G + g``), so a
free view turns it into ``N`` samples of ``G * C`` channels, which ``F.batch_norm`` handles
in one call.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_GROUPS: contextvars.ContextVar[int] = contextvars.ContextVar("autoseg_batch_groups", default=1)


@contextlib.contextmanager
def batch_groups(groups: int) -> Iterator[None]:
    """Within this block, grouped batch norms treat their batch as ``groups`` stacked groups."""
    token = _GROUPS.set(groups)
    try:
        yield
    finally:
        _GROUPS.reset(token)


class GroupedBatchNorm2d(nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` that honours :func:`batch_groups` (same parameters and state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = _GROUPS.get()
        if groups == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        grouped = x.reshape(n // groups, groups * c, h, w)
        weight = self.weight.repeat(groups) if self.affine else None
        bias = self.bias.repeat(groups) if self.affine else None
        if not self.training and self.track_running_stats:
            out = F.batch_norm(grouped, self.running_mean.repeat(groups), self.running_var.repeat(groups),
                               weight, bias, False, 0.0, self.eps)
            return out.reshape(n, c, h, w)
        batch_mean = torch.zeros(groups * c, device=x.device, dtype=self.running_mean.dtype)
        batch_var = torch.ones(groups * c, device=x.device, dtype=self.running_var.dtype)
        out = F.batch_norm(grouped, batch_mean, batch_var, weight, bias, True, 1.0, self.eps)
        if self.track_running_stats:
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
