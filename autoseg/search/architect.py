"""Bilevel architecture updates: first-order and second-order DARTS (docs/DESIGN.md §2).

The architect owns the architecture optimiser (Adam on alpha, and beta for the trellis). A
step computes grad_alpha of the validation loss and applies it:

- first order: grad_alpha L_val(w, alpha);
- second order (``unrolled=True``): with the virtual step w' = w - xi (m + grad_w L_train(w) + wd w)
  that mimics the weight optimiser (SGD with momentum buffer m and weight decay wd),
  grad_alpha L_val(w', alpha) - xi * H v, where v = grad_w' L_val(w', alpha) and the
  Hessian-vector product H v = grad^2_{alpha,w} L_train(w, alpha) v is approximated by central
  finite differences with eps = 0.01 / ||v||.

An optional ``regularizer`` (a function of the architecture parameters only, such as the cost
term of :mod:`autoseg.analysis.expected_cost`) is added to the validation loss in both cases; since it
does not depend on the weights, the second-order update gets its gradient once, exactly.

The unrolled model is evaluated with :func:`torch.func.functional_call` on the same module,
so no copy of the network is built; batch-norm running statistics are left untouched by the
virtual forward passes. In a run of several processes every gradient the update is built from
(the architecture gradient, and for second order the training gradient of the virtual step and
the vector v) is averaged across processes, so the update is the one of the whole batch.

Mixed precision (docs/DESIGN.md §6): the forward passes run in the caller's autocast region and
the gradients go through the architect's own gradient scaler (a pass-through unless the run is
fp16). Every gradient is of the scaled loss; the virtual step's weight gradient is unscaled, v is
not (the finite difference is linear in v), so the update comes out scaled as a whole and the
scaler's ``step`` unscales it, or skips it when it overflowed. The two finite-difference passes
run in float32: half precision cannot resolve the weights moved by eps v.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from autoseg.utils.process import average_

Batch = Sequence[torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Architect:
    """Updates the architecture parameters of ``model`` on validation batches.

    ``model`` exposes ``arch_parameters()`` and ``weight_parameters()``; ``criterion`` maps
    (output, target) to a scalar loss; ``w_optimizer`` is the weight optimiser (its momentum
    and weight decay shape the virtual step); ``scaler`` scales the gradients of an fp16 run
    (default: none); ``regularizer()``, when given, is added to the validation loss; ``forward``
    runs ``model`` at its own weights (default: ``model`` itself; a compiled ``model``), for the
    first-order loss and the virtual step's training loss; the passes at other weights (w', w +- eps
    v) call ``model`` functionally, uncompiled.
    """

    def __init__(self, model: nn.Module, criterion: LossFn, arch_optimizer: torch.optim.Optimizer,
                 w_optimizer: torch.optim.Optimizer, unrolled: bool = False, fd_epsilon: float = 0.01,
                 scaler: torch.amp.GradScaler | None = None, regularizer: Callable[[], torch.Tensor] | None = None,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.model = model
        self.regularizer = regularizer
        self.forward = forward if forward is not None else model
        self.scaler = scaler or torch.amp.GradScaler(enabled=False)
        self.criterion = criterion
        self.optimizer = arch_optimizer
        self.w_optimizer = w_optimizer
        self.unrolled = unrolled
        self.fd_epsilon = fd_epsilon
        names = {id(p): n for n, p in model.named_parameters()}
        self.arch_params = list(model.arch_parameters())
        self.weight_params = list(model.weight_parameters())
        self.weight_names = [names[id(p)] for p in self.weight_params]

    def step(self, train_batch: Batch, valid_batch: Batch, xi: float) -> torch.Tensor:
        """One architecture update on ``valid_batch``; ``train_batch`` and the current weight
        learning rate ``xi`` are used only by the second-order update. Returns the validation loss
        (with the regularizer, when there is one)."""
        loss, grads = self.gradient(train_batch, valid_batch, xi)
        self.apply(grads)
        return loss

    def gradient(self, train_batch: Batch, valid_batch: Batch, xi: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The validation loss (detached) and the architecture gradient of :meth:`step` (times the
        scaler's factor), both averaged over the processes, without updating anything (:meth:`apply`
        does)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.unrolled:
            loss, grads = self.unrolled_gradient(train_batch, valid_batch, xi)
        else:
            loss, grads = self.first_order_gradient(valid_batch)
        average_(grads)
        loss = loss.detach()
        average_([loss])
        return loss, grads

    def apply(self, grads: Sequence[torch.Tensor]) -> None:
        """The optimiser step of the architecture parameters along ``grads`` (through the scaler,
        which unscales them, or skips the step when they overflowed)."""
        for p, g in zip(self.arch_params, grads):
            p.grad = g
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _loss(self, batch: Batch, weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        inputs, target = batch
        if weights is None:
            return self.criterion(self.forward(inputs), target)
        state = {n: w for n, w in zip(self.weight_names, weights)}
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        return self.criterion(functional_call(self.model, (state, buffers), (inputs,)), target)

    def _validation_loss(self, batch: Batch, weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        loss = self._loss(batch, weights)
        return loss if self.regularizer is None else loss + self.regularizer()

    def first_order_gradient(self, valid_batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """grad_alpha L_val(w, alpha) (times the scaler's factor) and the loss."""
        loss = self._validation_loss(valid_batch)
        return loss, list(torch.autograd.grad(self.scaler.scale(loss), self.arch_params))

    def virtual_step(self, train_batch: Batch, xi: float) -> list[torch.Tensor]:
        """w' = w - xi * (momentum * m + grad_w L_train + wd * w), as the weight optimiser would step."""
        loss = self._loss(train_batch)
        grads = torch.autograd.grad(self.scaler.scale(loss), self.weight_params)
        if self.scaler.is_enabled():
            factor = 1.0 / self.scaler.get_scale()
            grads = [g * factor for g in grads]
        average_(grads)
        group = self.w_optimizer.param_groups[0]
        momentum, weight_decay = group.get("momentum", 0.0), group.get("weight_decay", 0.0)
        unrolled = []
        with torch.no_grad():
            for w, g in zip(self.weight_params, grads):
                step = g + weight_decay * w
                buffer = self.w_optimizer.state.get(w, {}).get("momentum_buffer")
                if buffer is not None and momentum:
                    step = step + momentum * buffer
                unrolled.append(w - xi * step)
        return unrolled

    def unrolled_gradient(self, train_batch: Batch, valid_batch: Batch,
                          xi: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The second-order gradient grad_alpha L_val(w', alpha) - xi * H v (times the scaler's factor)
        and the loss at w'."""
        unrolled = [w.requires_grad_() for w in self.virtual_step(train_batch, xi)]
        loss = self._validation_loss(valid_batch, unrolled)
        grads = torch.autograd.grad(self.scaler.scale(loss), self.arch_params + unrolled)
        d_alpha, v = grads[:len(self.arch_params)], grads[len(self.arch_params):]
        average_(v)
        implicit = self.hessian_vector_product(v, train_batch)
        return loss, [g - xi * h for g, h in zip(d_alpha, implicit)]

    def hessian_vector_product(self, vector: Sequence[torch.Tensor], train_batch: Batch) -> list[torch.Tensor]:
        """Central finite difference of grad_alpha L_train along ``vector`` in weight space, in float32
        (autocast off: the difference is below half precision's resolution)."""
        norm = torch.sqrt(sum((v.float() ** 2).sum() for v in vector))
        eps = self.fd_epsilon / norm.clamp_min(1e-12)
        plus = [w.detach() + eps * v for w, v in zip(self.weight_params, vector)]
        minus = [w.detach() - eps * v for w, v in zip(self.weight_params, vector)]
        with torch.autocast(norm.device.type, enabled=False):
            g_plus = torch.autograd.grad(self._loss(train_batch, plus), self.arch_params)
            g_minus = torch.autograd.grad(self._loss(train_batch, minus), self.arch_params)
        return [(gp - gm) / (2 * eps) for gp, gm in zip(g_plus, g_minus)]
