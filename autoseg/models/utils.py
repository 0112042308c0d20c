"""Small pure helpers over built models: parameter counting and batch-norm settings."""
from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module, exclude: str | None = None) -> int:
    """Number of parameter entries of ``model``, leaving out parameters whose name contains ``exclude``.

    ``count_parameters(net, exclude="auxiliary")`` is the count the DARTS reference code reports
    (its auxiliary head is not part of the evaluated network).
    """
    return sum(p.numel() for name, p in model.named_parameters() if exclude is None or exclude not in name)


def set_batchnorm(module: nn.Module, momentum: float, eps: float) -> None:
    """Set ``momentum`` and ``eps`` of every batch-norm layer inside ``module`` (in place).

    PyTorch's ``momentum`` is ``1 - decay`` of TensorFlow's moving averages (decay 0.9997 ->
    momentum 3e-4).
    """
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.momentum = momentum
            layer.eps = eps
