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

Inside :func:`deferred_running_statistics` (the search networks' forward passes), the running
statistics updates are queued and applied when the block ends, a few ``torch._foreach_lerp_``
calls for every batch norm of the pass instead of two ``lerp_`` per group and norm: round ``r``
applies the ``r``-th queued update of every norm, so each norm sees the same updates in the
same order, with the same arithmetic, as when they are applied at once. Nothing in a
training-mode forward pass reads the running statistics, so the result is the same.
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
        self.pending: _PendingStatistics | None = None  # inside deferred_running_statistics


_SETTING = _Setting()


class _PendingStatistics:
    """The running-statistics updates queued inside :func:`deferred_running_statistics`, and the
    zeroed storage their batch statistics are written into (slices of large blocks: one
    allocation for many batch norms)."""

    BLOCK = 1 << 16
    """Elements of one block of zeroed storage."""

    def __init__(self) -> None:
        self.updates: list[tuple[GroupedBatchNorm2d, torch.Tensor, torch.Tensor]] = []
        self._block: torch.Tensor | None = None
        self._used = 0

    def zeros(self, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``size`` zeros: a slice of the current block (a new block when it is full or of another kind)."""
        block = self._block
        if block is None or block.dtype != dtype or block.device != device or self._used + size > block.numel():
            self._block = block = torch.zeros(max(size, self.BLOCK), dtype=dtype, device=device)
            self._used = 0
        self._used += size
        return block[self._used - size:self._used]

    @torch.no_grad()
    def apply(self) -> None:
        """Apply the queued ``(norm, mean, variance)`` updates: round ``r`` is the ``r``-th update of every norm."""
        queues: dict[int, list[tuple[GroupedBatchNorm2d, torch.Tensor, torch.Tensor]]] = {}
        for update in self.updates:
            queues.setdefault(id(update[0]), []).append(update)
        for r in range(max((len(queue) for queue in queues.values()), default=0)):
            norms, means, variances = zip(*(queue[r] for queue in queues.values() if len(queue) > r))
            torch._foreach_add_([norm.num_batches_tracked for norm in norms], 1)
            torch._foreach_lerp_([norm.running_mean for norm in norms] + [norm.running_var for norm in norms],
                                 list(means) + list(variances), [norm.momentum for norm in norms] * 2)


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


@contextlib.contextmanager
def deferred_running_statistics() -> Iterator[None]:
    """Within this block, grouped batch norms queue their running-statistics updates and apply them,
    in order, when the block ends (see the module docstring); a nested block joins the outer one.
    Also a decorator. Under ``torch.compile`` (``--compile``) the norms update immediately instead:
    the same updates in the same order, which the compiler fuses itself."""
    if _SETTING.pending is not None or torch.compiler.is_compiling():
        yield
        return
    pending = _SETTING.pending = _PendingStatistics()
    try:
        yield
    finally:
        _SETTING.pending = None
        pending.apply()


_UNIT_STATISTICS: dict[tuple[int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
"""Zero means and unit inverse deviations by (channels, dtype, device), read-only, for
:meth:`AffineFreeBatchNorm.backward`; created once rather than in every backward pass."""


def _unit_statistics(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    key = (like.numel(), like.dtype, like.device)
    if key not in _UNIT_STATISTICS:
        _UNIT_STATISTICS[key] = (torch.zeros_like(like), torch.ones_like(like))
    return _UNIT_STATISTICS[key]


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
        ctx.set_materialize_grads(False)  # an unused invstd gets no gradient, so the fused backward below runs
        return y, invstd

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor | None,
                 grad_invstd: torch.Tensor | None) -> tuple[torch.Tensor | None, None, None, None]:
        y, invstd = ctx.saved_tensors
        if grad_y is None:
            grad_y = torch.zeros_like(y)
        if not torch.is_grad_enabled() and grad_invstd is None:
            # one fused kernel: batch-norm backward of "input" y with mean 0 and invstd 1, scaled by invstd
            zeros, ones = _unit_statistics(invstd)
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
        # overwritten with the batch statistics (momentum 1); zero so that 1 * new + 0 * old is exact
        pending = _SETTING.pending
        # queued: the affine-free norms of the search cells (an affine one without groups updates in its kernel)
        queued = (pending is not None and not self.affine and self.track_running_stats and not frozen
                  and self.momentum is not None)
        stats = (pending.zeros(2 * groups * c, dtype, x.device) if queued
                 else torch.zeros(2 * groups * c, device=x.device, dtype=dtype))
        batch_mean, batch_var = stats.view(2, groups * c)
        if self.affine:
            out = F.batch_norm(grouped, batch_mean, batch_var, self.weight.repeat(groups), self.bias.repeat(groups),
                               True, 1.0, self.eps)
        else:
            out, _ = AffineFreeBatchNorm.apply(grouped, batch_mean, batch_var, self.eps)
        if queued:
            pending.updates.extend(zip([self] * groups, batch_mean.view(groups, c), batch_var.view(groups, c)))
        elif self.track_running_stats and not frozen:
            self._update_running_stats(batch_mean.view(groups, c), batch_var.view(groups, c))
        return out.reshape(n, c, h, w)

    @torch.no_grad()
    def _update_running_stats(self, means: torch.Tensor, variances: torch.Tensor) -> None:
        """Apply one running-statistics update per group, in group order (outside
        :func:`deferred_running_statistics`, and for the cumulative average of momentum None)."""
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
