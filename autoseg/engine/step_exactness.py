"""How far a search step on a device departs from its reference computation: mixed precision against
float32, a compiled step against the eager one, the recomputation options against the plain supernet.

Each check builds the same small hierarchical supernet twice, runs one training step (forward, loss,
backward; batch norms in training mode) on the same batch with each, and compares the loss, every
gradient (weights, alpha, beta) and every batch-norm running statistic, group by group (the loss,
the weight gradients, the architecture gradients, the statistics). The error of a group is
``||other - reference|| / ||reference||`` over all its entries; a check reports the largest error
over the groups, the group it occurs in, its tolerance and whether it is within it. The float32
references run without TF32 (on a GPU cuDNN would otherwise round convolution inputs to 10 bits).
``autoseg gpu_check`` runs these on the GPU; the ``cuda`` tests assert them.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.utils.compilation import compiled
from autoseg.utils.precision import autocast, grad_scaler
from autoseg.search.trellis_network import TrellisSearchNetwork

SUPERNET = {"layers": 3, "levels": 2, "blocks": 2, "filter_multiplier": 4, "aspp_channels": 8}
"""The supernet every check steps: 3 layers over 2 levels (both transitions, up and down), 2 blocks."""
CLASSES, SIZE, BATCH = 3, 64, 2  # 64x64: the coarser level's batch norms see 2 x 8 x 8 values

AMP_TOLERANCE = {
    "bf16": {"loss": 5e-3, "weight gradients": 0.5, "architecture gradients": 0.5, "batch-norm statistics": 5e-3},
    "fp16": {"loss": 1e-3, "weight gradients": 0.2, "architecture gradients": 0.2, "batch-norm statistics": 1e-3},
}
"""Largest error of each group of a mixed-precision step against float32. Autocast rounds the inputs
of each op to 8 (bfloat16) or 11 (float16) significant bits. The forward pass keeps that precision
(measured on a CPU: loss 4e-4 and statistics 2e-4 in bfloat16, 3e-5 in float16), the backward pass
through the batch norms of a freshly initialised supernet amplifies it (weight gradients 0.24,
architecture gradients 0.15 in bfloat16; 0.06 and 0.05 in float16): each bound is 2 to 40 times the
CPU figure, and a broken path (a wrong dtype, a gradient left scaled) is off by 1 or more."""
COMPILE_TOLERANCE = 1e-4
"""Largest error of each group of a compiled float32 step against the eager one (fused and reordered
float32 sums)."""
REORDERED_TOLERANCE = 1e-5
"""Largest error of a recomputing step against the plain one where the device ran an op without a
deterministic implementation (whose sums come out in another order each run); otherwise the two
must be equal bit for bit."""


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Float32 matrix products and convolutions without TF32 inside the block (a GPU's default uses it
    for convolutions); restores the settings after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def supernet_pair(device: torch.device, **options: Any) -> tuple[nn.Module, nn.Module]:
    """Two identical :data:`SUPERNET` supernets on ``device``, the second with ``options`` set
    (attributes such as ``selective_checkpoint``, which change how it computes, not what)."""
    torch.manual_seed(0)
    reference = TrellisSearchNetwork(CLASSES, **SUPERNET).to(device)
    other = copy.deepcopy(reference)
    for name, value in options.items():
        setattr(other, name, value)
    return reference, other


def training_step(model: nn.Module, device: torch.device, amp: str | None = None,
                  forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """What one training forward and backward pass of ``model`` (through ``forward``, default the
    model itself) on a fixed batch leaves, by group (the loss, the gradients of the weights and of alpha
    and beta, the running means and variances of the batch norms), each flattened into one float32
    vector on the CPU. With ``amp="fp16"`` the backward pass runs through a gradient scaler and the
    gradients are divided back."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, SIZE, SIZE, generator=generator).to(device)
    target = torch.randint(0, CLASSES, (BATCH, SIZE, SIZE), generator=generator).to(device)
    model.train()
    model.zero_grad(set_to_none=True)
    with autocast(device, amp):
        loss = F.cross_entropy((forward or model)(images).float(), target)
    scaler = grad_scaler(device, amp)  # fp16: backward through the scaled loss, as the search steps do
    scaler.scale(loss).backward()
    if scaler.is_enabled():
        for p in model.parameters():
            if p.grad is not None:
                p.grad /= scaler.get_scale()
    architecture = {id(p) for p in model.arch_parameters()}
    groups = {"loss": [loss],
              "weight gradients": [p.grad for p in model.parameters() if id(p) not in architecture],
              "architecture gradients": [p.grad for p in model.arch_parameters()],
              "batch-norm statistics": [b for b in model.buffers() if b.is_floating_point()]}
    return {name: torch.cat([t.detach().float().flatten().cpu() for t in tensors if t is not None])
            for name, tensors in groups.items()}


def group_errors(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, float]:
    """The relative error ``||other - reference|| / ||reference||`` (2-norms) of each group of
    :func:`training_step` (0 where both are zero)."""
    return {name: ((other[name] - expected).norm() / expected.norm().clamp_min(1e-30)).item()
            for name, expected in reference.items()}


def _record(check: str, reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor],
            tolerances: dict[str, float] | float, **extra: Any) -> dict[str, Any]:
    """The JSON record of a check: the error of each group, its tolerance, the worst group, whether
    every group is within its tolerance."""
    errors = group_errors(reference, other)
    bounds = tolerances if isinstance(tolerances, dict) else dict.fromkeys(errors, tolerances)
    return {"check": check, "errors": errors, "tolerances": bounds, "worst_group": max(errors, key=errors.get),
            "passed": all(errors[name] <= bounds[name] for name in errors), **extra}


def amp_against_float32(device: torch.device, amp: str) -> dict[str, Any]:
    """One ``amp`` (bf16 or fp16) autocast step against the float32 step, within :data:`AMP_TOLERANCE`."""
    float32, mixed = supernet_pair(device)
    with exact_float32():
        reference = training_step(float32, device)
        result = training_step(mixed, device, amp)
    return _record(f"amp {amp} against float32", reference, result, AMP_TOLERANCE[amp])


def compiled_against_eager(device: torch.device, mode: bool | str = True) -> dict[str, Any]:
    """One float32 step of the supernet compiled in ``mode`` against the eager step, within
    :data:`COMPILE_TOLERANCE`."""
    eager, twin = supernet_pair(device)
    with exact_float32():
        reference = training_step(eager, device)
        result = training_step(twin, device, forward=compiled(twin, mode))
    return _record(f"compile {mode if isinstance(mode, str) else 'default'} against eager", reference, result,
                   COMPILE_TOLERANCE)


def recomputation_against_plain(device: torch.device, option: str) -> dict[str, Any]:
    """One step with ``option`` (``checkpoint_cells`` or ``selective_checkpoint``) against the plain
    step: equal bit for bit, or within :data:`REORDERED_TOLERANCE` where an op without a deterministic
    implementation ran (listed in ``nondeterministic_ops``)."""
    plain, recomputing = supernet_pair(device, **{option: True})
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reference, result = (training_step(model, device) for model in (plain, recomputing))
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
    nondeterministic = sorted({str(w.message).split(" does not have")[0] for w in caught
                               if "deterministic" in str(w.message)})
    bitwise = all(torch.equal(reference[name], result[name]) for name in reference)
    return _record(f"{option} against plain", reference, result, REORDERED_TOLERANCE if nondeterministic else 0.0,
                   bitwise=bitwise, nondeterministic_ops=nondeterministic)
