"""DrNAS (Chen, Wang, Cheng, Tang & Hsieh, "DrNAS: Dirichlet Neural Architecture Search",
ICLR 2021): the weights of every row (the ops of an edge, the moves out of a trellis node) are a
sample of a Dirichlet distribution whose concentration is ``elu(logits) + 1``, drawn anew in every
forward pass in training; the architecture gradient flows through the sample by the pathwise
derivative of the Dirichlet (``torch.distributions.Dirichlet.rsample``). Updates are first order,
as DrNAS's code runs by default; decoding reads the softmax of the logits, as DrNAS's code
decodes, so the selection is DARTS's (top-2 edges per block; the Viterbi path).

Regularisation (DrNAS's ``reg_type``): ``l2`` (DrNAS's default) pulls the logits towards
0, i.e. every concentration towards 1, the uniform Dirichlet, by the weight decay of the
architecture optimiser (DrNAS: ``reg_scale`` 1e-3, the ``arch_optimizer.weight_decay`` of
autoseg's configs); ``kl`` instead adds ``kl_scale`` times the sum over rows of
KL(Dir(elu(logits) + 1) || Dir(1, ..., 1)) to the architecture loss and sets the architecture
optimiser's weight decay to 0, as DrNAS's code does.

What autoseg adds or leaves out: in eval mode (the supernet's validation, one-shot scores) the
weights are the Dirichlet's mean, not a sample, so that an evaluation is deterministic; the
trellis's transitions (beta, not part of DrNAS's spaces) are sampled the same way, each node
over its valid moves only; DrNAS's progressive learning (partial channels, pruning the op set
between stages), a memory saving for large search spaces, is not implemented.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch.distributions import Dirichlet, kl_divergence

from autoseg.config import Bounds
from autoseg.search.methods.base import GradientMethod, UpdateTools
from autoseg.search.relaxation import Relaxation

REGULARIZERS = ("l2", "kl")
"""DrNAS's regularisers of the concentration (``reg_type``)."""


def dirichlet_concentration(logits: torch.Tensor) -> torch.Tensor:
    """DrNAS's concentration ``elu(logits) + 1`` (positive), 0 at the entries of ``logits`` that
    are ``-inf`` (invalid choices)."""
    valid = torch.isfinite(logits)
    return (F.elu(logits.masked_fill(~valid, 0.0)) + 1.0).masked_fill(~valid, 0.0)


class DirichletRelaxation(Relaxation):
    """DrNAS's relaxation: a Dirichlet sample per row in training, the Dirichlet's mean in eval;
    decoding reads the softmax (:meth:`Relaxation.probabilities`)."""

    def weights(self, logits: torch.Tensor, training: bool) -> torch.Tensor:
        """Rows on the simplex over each row's finite entries (0 at ``-inf``): in training a
        sample of Dir(:func:`dirichlet_concentration`), differentiable by the pathwise derivative;
        in eval the mean, the concentration normalised. A row with invalid entries is sampled as a
        Dirichlet over its valid ones (the valid entries of a full-row sample, renormalised, are
        distributed so)."""
        concentration = dirichlet_concentration(logits)
        if training:
            valid = torch.isfinite(logits)
            full_row = torch.where(valid, concentration, torch.ones_like(concentration))
            concentration = Dirichlet(full_row).rsample().masked_fill(~valid, 0.0)
        return concentration / concentration.sum(-1, keepdim=True)


DIRICHLET = DirichletRelaxation()


def dirichlet_kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """The sum over the rows of ``logits`` of KL(Dir(a) || Dir(1, ..., 1)) by
    ``torch.distributions.kl_divergence``, ``a`` the row's :func:`dirichlet_concentration` over its
    finite entries (rows grouped by which entries are finite); a row without one counts 0."""
    rows = logits.reshape(-1, logits.shape[-1])
    valid = torch.isfinite(rows)
    total = rows.new_zeros(())
    for pattern in torch.unique(valid, dim=0):
        if pattern.any():
            concentration = dirichlet_concentration(rows[(valid == pattern).all(-1)][:, pattern])
            total = total + kl_divergence(Dirichlet(concentration), Dirichlet(torch.ones_like(concentration))).sum()
    return total


@dataclass
class DrnasSettings:
    """``regularizer``: ``l2`` (DrNAS's default: the architecture optimiser's weight decay pulls
    the concentrations towards 1) or ``kl`` (``kl_scale`` times the KL divergence to the uniform
    Dirichlet added to the architecture loss, the optimiser's weight decay set to 0); see the
    module docstring."""

    regularizer: str = "l2"
    kl_scale: float = 1e-3

    BOUNDS: ClassVar[dict[str, Bounds]] = {"kl_scale": Bounds(0)}


class Drnas(GradientMethod):
    """DrNAS; see the module docstring."""

    name = "drnas"
    reference = "Chen, Wang, Cheng, Tang & Hsieh, DrNAS: Dirichlet Neural Architecture Search, ICLR 2021"
    Settings = DrnasSettings
    relaxation = DIRICHLET

    def check(self) -> str | None:
        """The regulariser must be one of DrNAS's."""
        if self.settings.regularizer not in REGULARIZERS:
            return (f"regularizer {self.settings.regularizer!r} is not one of DrNAS's: "
                    f"{', '.join(REGULARIZERS)}")
        return None

    def kl_regularizer(self) -> torch.Tensor:
        """``kl_scale`` times the KL divergence of every row the relaxation weights
        (:meth:`~autoseg.search.network.SearchNetwork.choice_logits`) to the uniform Dirichlet."""
        return self.settings.kl_scale * sum(dirichlet_kl_to_uniform(logits)
                                            for logits in self.network.choice_logits().values())

    def prepare(self, tools: UpdateTools) -> None:
        """Build the architect; with the ``kl`` regulariser, its term added to the architecture
        loss (beside the search's own, if any) and the architecture optimiser's weight decay 0."""
        if self.settings.regularizer == "kl":
            for group in tools.arch_optimizer.param_groups:
                group["weight_decay"] = 0.0
            tools = dataclasses.replace(tools, regularizer=_plus(tools.regularizer, self.kl_regularizer))
        super().prepare(tools)


def _plus(first: Callable[[], torch.Tensor] | None, second: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``second``, plus ``first`` when there is one."""
    return second if first is None else (lambda: first() + second())
