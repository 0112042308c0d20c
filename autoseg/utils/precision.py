"""Mixed precision: the ``amp`` setting (``None`` = float32, ``bf16``, ``fp16``) made into autocast
regions and gradient scalers.

bfloat16 has float32's exponent range, so its gradients need no scaling; float16 does not, so
every optimiser step of an fp16 run goes through its own :class:`torch.amp.GradScaler`, which
multiplies the loss before backward, divides the gradients back before the step, skips a step
whose gradients overflowed and adapts the factor (Micikevicius et al., *Mixed Precision
Training*, ICLR 2018, §3.2). With ``amp`` off, the autocast region is disabled and the scaler
passes everything through unchanged: the computation is exactly the float32 one.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable

import torch
from torch import nn

from autoseg.utils.errors import UserError

AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The values of the ``amp`` setting and the dtype each runs the autocast region in."""


def autocast_dtype(amp: str | None) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting, None when it is off."""
    if amp is None:
        return None
    if amp not in AUTOCAST_DTYPES:
        raise UserError(f"amp must be one of {', '.join(AUTOCAST_DTYPES)} or off (null), got {amp!r}")
    return AUTOCAST_DTYPES[amp]


def autocast(device: torch.device, amp: str | None) -> torch.autocast:
    """The autocast region of ``amp`` on ``device`` (disabled when ``amp`` is None)."""
    dtype = autocast_dtype(amp)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def grad_scaler(device: torch.device, amp: str | None) -> torch.amp.GradScaler:
    """A gradient scaler for one optimiser: active for ``fp16``, a pass-through otherwise."""
    autocast_dtype(amp)
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def check_amp(amp: str | None, device: torch.device) -> None:
    """Raise a UserError unless ``amp`` runs on ``device``: bfloat16 on a GPU needs native support
    (compute capability 8.0: A100, H100, RTX 30xx and later); V100, T4 and RTX 20xx take fp16."""
    dtype = autocast_dtype(amp)
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported(
            including_emulation=False):
        major, minor = torch.cuda.get_device_capability(device)
        raise UserError(f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has no native "
                        "bfloat16, which needs 8.0 or more: use --amp fp16 (amp: fp16 in the config)")


def gradient_norm(parameters: Iterable[nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """The total 2-norm of the parameters' gradients, after clipping them to ``max_norm`` when
    given (``torch.nn.utils.clip_grad_norm_``, which returns the norm before clipping)."""
    parameters = [p for p in parameters if p.grad is not None]
    if max_norm:
        return nn.utils.clip_grad_norm_(parameters, max_norm)
    return nn.utils.get_total_norm([p.grad for p in parameters])


def scaled_backward(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    parameters: Iterable[nn.Parameter], grad_clip: float | None) -> torch.Tensor:
    """``loss.backward()`` through ``scaler``, the gradients unscaled and their norm clipped to
    ``grad_clip`` (when set); returns their norm before clipping (inf or NaN when an fp16 backward
    overflowed). :func:`scaled_update` then steps."""
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    return gradient_norm(parameters, grad_clip)


def scaled_update(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, apply: bool = True) -> None:
    """The optimiser step after :func:`scaled_backward` (skipped by ``scaler`` when the gradients
    overflowed, or left out when not ``apply``), and the scaler's update."""
    if apply:
        scaler.step(optimizer)
    scaler.update()


def step_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Step a per-iteration schedule after :func:`scaled_update`. The schedule follows the
    iterations whether or not the scaler applied their step, so torch's warning that the schedule
    stepped before the optimiser (raised when an fp16 scaler skips the very first step) is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        scheduler.step()


def scaled_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                parameters: Iterable[nn.Parameter], grad_clip: float | None) -> None:
    """``loss.backward()``, the gradients' norm clipped to ``grad_clip`` (when set) and one
    optimiser step, through ``scaler``: the gradients are unscaled before clipping, and a step
    whose gradients overflowed is skipped."""
    scaled_backward(loss, optimizer, scaler, parameters, grad_clip)
    scaled_update(optimizer, scaler)


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict[str, Any] | None) -> None:
    """Restore a saved ``scaler.state_dict()``; the empty state of an inactive scaler (and the
    absent one of a checkpoint written before scalers were saved) leaves ``scaler`` as it is."""
    if state:
        scaler.load_state_dict(state)
