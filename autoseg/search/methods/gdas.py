"""GDAS (Dong & Yang, "Searching for A Robust Neural Architecture in Four GPU Hours", CVPR 2019):
every forward pass in training samples one choice per row (one op per edge, one move per trellis
node) with the Gumbel-max trick, and the architecture gradient flows through the Gumbel-softmax
at temperature tau (straight-through: one-hot in the forward pass, the softmax's gradient in the
backward pass); tau decays linearly from ``tau_max`` to ``tau_min`` over the search (the paper:
10 to 0.1). Updates are first order, decoding by magnitude as in DARTS.

``single_path`` (on by default, as GDAS's code computes it): every edge runs its sampled op only
(a wide op runs once for all the edges of a fan-out that sample it), and the weight of an op it
did not sample gets the sum of the edge's output gradient, the coarse gradient of GDAS's code
(:meth:`autoseg.search.mixed_op.MixedEdges.single_path_sum`); the ops no edge samples are not run
and their parameters get no gradient in that step. The trellis's transitions are sampled the same
way (one move per node of layer l-1) and treated the same way: a node's cell runs on the
transitions it receives only (none: the node is zero), and the weight of a transition not
sampled gets the sum of the node's output gradient
(:meth:`autoseg.search.trellis_network.TrellisNode.forward`). Off, every candidate op and every
transition is computed and each gets the straight-through gradient of its own output (the
estimator of Jang et al., "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017), at
DARTS's cost. In eval mode the supernet uses the most probable choice of every row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from autoseg.config import Bounds
from autoseg.search.methods.base import Evaluator, GradientMethod, SearchSchedule
from autoseg.search.network import SearchNetwork
from autoseg.search.relaxation import Relaxation


class GumbelRelaxation(Relaxation):
    """Hard Gumbel-softmax samples at temperature :attr:`tau` in training, the argmax in eval."""

    def __init__(self, tau: float):
        self.tau = tau

    def weights(self, logits: torch.Tensor, training: bool) -> torch.Tensor:
        """A one-hot row per row of ``logits`` (a Gumbel-max sample in training, the argmax in
        eval) carrying the gradient of the Gumbel-softmax at :attr:`tau` (training)."""
        if not training:
            return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        gumbels = -torch.empty_like(logits).exponential_().log()
        soft = F.softmax((F.log_softmax(logits, dim=-1) + gumbels) / self.tau, dim=-1)
        hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
        return hard - soft.detach() + soft


@dataclass
class GdasSettings:
    """``tau_max`` and ``tau_min``: the Gumbel-softmax temperature of the first and of the last
    epoch, decayed linearly in between (GDAS: 10 and 0.1); ``single_path``: run the sampled op of
    every edge and the sampled transitions of the trellis only, with the coarse gradient of
    GDAS's code for the others (see the module docstring)."""

    tau_max: float = 10.0
    tau_min: float = 0.1
    single_path: bool = True

    BOUNDS: ClassVar[dict[str, Bounds]] = {"tau_max": Bounds(0, low_open=True), "tau_min": Bounds(0, low_open=True)}


class Gdas(GradientMethod):
    """GDAS; see the module docstring."""

    name = "gdas"
    reference = "Dong & Yang, Searching for A Robust Neural Architecture in Four GPU Hours, CVPR 2019"
    Settings = GdasSettings

    def __init__(self, settings: GdasSettings, network: SearchNetwork, schedule: SearchSchedule):
        self.relaxation = GumbelRelaxation(settings.tau_max)
        super().__init__(settings, network, schedule)

    def check(self) -> str | None:
        """tau must not grow over the search."""
        if self.settings.tau_min > self.settings.tau_max:
            return (f"tau_min ({self.settings.tau_min:g}) is above tau_max ({self.settings.tau_max:g}): the "
                    "temperature decays from tau_max to tau_min, swap them")
        return None

    def temperature(self, epoch: int) -> float:
        """tau of epoch ``epoch``: ``tau_max`` at the first epoch, ``tau_min`` at the last."""
        s = self.settings
        return s.tau_max - (s.tau_max - s.tau_min) * epoch / max(self.schedule.epochs - 1, 1)

    def start_epoch(self, epoch: int, evaluate: Evaluator) -> None:
        """Set this epoch's temperature."""
        self.relaxation.tau = self.temperature(epoch)
