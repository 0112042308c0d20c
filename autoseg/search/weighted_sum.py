"""The weighted sum of a mixed op's candidate outputs in a few kernels.

A mixed op adds up ``sum_o w[:, o] * y_o`` over its candidate ops. Written term by term, autograd
runs a multiplication and an addition per op forward and, backward, two multiplications, a
reduction, a scatter into the weight matrix and an accumulation per op: some forty small
kernels per fan-out of a cell. :func:`weighted_sum` stacks the terms and multiplies them by
their weights in one op; backward, every term's gradient comes from one multiplication and the
weights' gradient from one multiplication and one reduction.

Exactness: the forward products are the term-by-term products, and they are added one by one
in op order, so the output is bitwise the term-by-term one on every device (a one-call
reduction over the stack would add them in another order on some shapes). The terms'
gradients are the products autograd computes (``grad * w``; for a term shared by every edge,
its sum over the edges). The weights' gradient reduces the same products ``grad * y`` in one
call for all ops instead of one call per op, which may round differently (float32 rounding,
about 1e-7 relative).

Only what autograd would keep anyway is saved for backward: the terms themselves (op outputs
that their batch norm or pool already saves) and the weights; the stack is rebuilt in backward.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch


class _WeightedSum(torch.autograd.Function):
    """``sum_o weights[:, o] * terms[o]`` over terms of shape ``(N, k, ...)`` or ``(N, 1, ...)``."""

    @staticmethod
    def forward(ctx: Any, weights: torch.Tensor, *terms: torch.Tensor) -> torch.Tensor:
        stacked = _stack(terms)
        products = stacked * _per_term(weights, stacked.dtype, stacked.dim() - 1)
        ctx.save_for_backward(weights, *terms)
        if len(terms) == 1:
            return products[0]
        out = products[0] + products[1]
        for product in products[2:]:  # in op order, as term by term: the same rounding
            out += product
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weights, *terms = ctx.saved_tensors
        grad_weights = None
        if ctx.needs_input_grad[0]:
            stacked = _stack(terms)
            dims = [d for d in range(1, stacked.dim()) if d != 2]  # all but the term and the edge
            grad_weights = (stacked * grad.unsqueeze(0)).sum(dims).t().to(weights.dtype)
        grad_terms: list[torch.Tensor | None] = [None] * len(terms)
        if any(ctx.needs_input_grad[1:]):
            per_term = grad.unsqueeze(0) * _per_term(weights, grad.dtype, grad.dim())
            grad_terms = list(per_term.unbind(0))
            shared = [o for o, term in enumerate(terms) if term.shape[1] < grad.shape[1]]
            if shared:  # a term shared by every edge gets the sum over the edges, one reduction for all
                for o, summed in zip(shared, per_term[compact_index(shared)].sum(2, keepdim=True)):
                    grad_terms[o] = summed
        return grad_weights, *(g if needed else None for g, needed in zip(grad_terms, ctx.needs_input_grad[1:]))


def compact_index(indices: Sequence[int]) -> slice | list[int]:
    """``indices`` as a slice (indexing with it is a view) when they are consecutive, else as a list."""
    if list(indices) == list(range(indices[0], indices[0] + len(indices))):
        return slice(indices[0], indices[0] + len(indices))
    return list(indices)


def _stack(terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(num_terms, N, k, ...)``: the terms, those shared by every edge expanded to ``k`` edges."""
    edges = max(term.shape[1] for term in terms)
    return torch.stack([term.expand(-1, edges, *term.shape[2:]) for term in terms])


def _per_term(weights: torch.Tensor, dtype: torch.dtype, term_dims: int) -> torch.Tensor:
    """``weights`` (k, num_terms) in ``dtype``, shaped ``(num_terms, 1, k, 1, ...)`` to multiply a stack of
    terms of ``term_dims`` dimensions; contiguous, so that products with it are laid out term by term
    (a transposed view would make them edge-major, and every term's gradient a strided slice)."""
    return weights.t().to(dtype).reshape(weights.shape[1], 1, weights.shape[0], *[1] * (term_dims - 2)).contiguous()


def weighted_sum(weights: torch.Tensor, terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_o weights[:, o].view(1, k, 1, ...) * terms[o]``: ``weights`` is ``(k, num_terms)``, each
    term ``(N, k, ...)``, or ``(N, 1, ...)`` for an output shared by every edge; returns ``(N, k, ...)``."""
    if weights.shape[1] != len(terms):
        raise ValueError(f"{weights.shape[1]} weight columns for {len(terms)} terms")
    return _WeightedSum.apply(weights, *terms)
