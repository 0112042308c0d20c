"""The contract of a search method, so that the search loop never asks which method it runs.

A search method (NASLib's optimiser, NNI's strategy) owns everything that differs between
differentiable NAS methods on one supernet:

- the relaxation: how architecture parameters weight the choices in the forward pass
  (:class:`~autoseg.search.relaxation.Relaxation`; it gives the supernet its own);
- the architecture update, if any (:meth:`SearchMethod.architecture_gradient` and
  :meth:`SearchMethod.apply`), with anything it adds to the architecture loss;
- what it does around the steps and epochs (a temperature schedule, an architecture sampled per
  weight step, edges decided during the search);
- the selection rule: how the final architecture is chosen (:meth:`SearchMethod.select`).

Its settings are a dataclass (``Settings``) read from the config's ``method_options`` section,
with ranges in its ``BOUNDS``; a method is registered with
:func:`autoseg.search.methods.register_method`.
"""
from __future__ import annotations

import abc
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, ContextManager, Sequence

import torch

from autoseg.space.architecture import Architecture
from autoseg.config import Bounds
from autoseg.search.architect import Architect, Batch, LossFn
from autoseg.search.network import SearchNetwork
from autoseg.search.relaxation import SOFTMAX, Relaxation

Evaluator = Callable[[int | None], float]
"""``evaluate(batches)``: the task metric (higher is better) of the supernet as it is weighted
now, on the first ``batches`` batches of half B of the training data (the architecture's half;
None: all of it), in eval mode; the same batches on every call within an epoch."""


@dataclass(frozen=True)
class SearchSchedule:
    """The length of the search a method runs in: ``epochs`` in all, of which the first
    ``warmup_epochs`` update the weights only; ``seed`` is the search's seed."""

    epochs: int
    warmup_epochs: int
    seed: int


@dataclass
class UpdateTools:
    """What an architecture update works with, built by the search loop: the training loss, the
    architecture optimiser (Adam on the architecture parameters) and the weight optimiser (its
    momentum and weight decay shape DARTS's virtual step), the architecture's gradient scaler, an
    optional term added to the architecture loss (the cost-aware search's) and the forward pass
    at the network's own weights (the compiled one under ``--compile``)."""

    criterion: LossFn
    arch_optimizer: torch.optim.Optimizer
    w_optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    regularizer: Callable[[], torch.Tensor] | None
    forward: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class NoSettings:
    """A method without settings."""

    BOUNDS: ClassVar[dict[str, Bounds]] = {}


class SearchMethod(abc.ABC):
    """Base class of the search methods; the defaults are DARTS's (softmax relaxation, the
    supernet's magnitude decoding, nothing around the steps)."""

    name: ClassVar[str]
    """The method's registry name (``train.method``)."""

    reference: ClassVar[str]
    """The paper the method comes from."""

    Settings: ClassVar[type] = NoSettings
    """The dataclass of the method's settings (``method_options``), with their paper defaults."""

    relaxation: Relaxation = SOFTMAX

    def __init__(self, settings: Any, network: SearchNetwork, schedule: SearchSchedule):
        self.settings = settings
        self.network = network
        self.schedule = schedule
        network.relaxation = self.relaxation
        network.single_path = self.single_path

    @property
    def single_path(self) -> bool:
        """Whether the supernet runs only the ops its one-hot choice weights choose
        (:attr:`~autoseg.search.network.SearchNetwork.single_path`): a method's ``single_path``
        setting where it has one, else False."""
        return bool(getattr(self.settings, "single_path", False))

    def check(self) -> str | None:
        """What is wrong with the settings for this search (its schedule, its supernet), or None;
        checked before a search starts."""
        return None

    def prepare(self, tools: UpdateTools) -> None:
        """Called once by the search loop before training, with what an update works with (a
        method without an architecture update needs none of it)."""

    def updates_architecture(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based, past the warm-up) updates the architecture, i.e.
        needs the batches of half B and calls :meth:`architecture_gradient` every step."""
        return True

    def start_epoch(self, epoch: int, evaluate: Evaluator) -> None:
        """Called at the start (or the resumption) of every epoch, before its first step."""

    def weight_step(self, step: int) -> ContextManager[Any]:
        """A context the weight step ``step`` (the global step number) runs in, forward and
        backward (default: none)."""
        return nullcontext()

    def architecture_gradient(self, train_batch: Batch, valid_batch: Batch,
                              xi: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The architecture loss and gradient of one update on ``valid_batch`` (``train_batch``
        and the weights' learning rate ``xi`` for a second-order update), averaged over the
        processes, without applying it."""
        raise NotImplementedError(f"the {self.name} method does not update the architecture by gradient")

    def apply(self, grads: Sequence[torch.Tensor]) -> None:
        """Apply an update of :meth:`architecture_gradient`."""
        raise NotImplementedError(f"the {self.name} method does not update the architecture by gradient")

    def select(self, evaluate: Evaluator) -> Architecture:
        """The architecture the search has found now (called after every epoch's evaluation)."""
        return self.network.decode()

    def state_dict(self) -> dict[str, Any]:
        """What the method must keep in a checkpoint to resume bit for bit (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class GradientMethod(SearchMethod):
    """A method that updates the architecture by gradient with DARTS's architect
    (:class:`~autoseg.search.architect.Architect`, first order unless ``second_order``, whose
    finite difference steps by ``fd_epsilon / ||v||``)."""

    second_order = False
    fd_epsilon = 0.01

    def prepare(self, tools: UpdateTools) -> None:
        """Build the architect."""
        self.architect = Architect(self.network, tools.criterion, tools.arch_optimizer, tools.w_optimizer,
                                   unrolled=self.second_order, fd_epsilon=self.fd_epsilon, scaler=tools.scaler,
                                   regularizer=tools.regularizer, forward=tools.forward)

    def architecture_gradient(self, train_batch: Batch, valid_batch: Batch,
                              xi: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The architect's loss and gradient."""
        return self.architect.gradient(train_batch, valid_batch, xi)

    def apply(self, grads: Sequence[torch.Tensor]) -> None:
        """The architect's Adam step."""
        self.architect.apply(grads)
