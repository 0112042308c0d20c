"""The contract every search supernet honours, so that the search loop, the architect and the
tools never ask which supernet they hold.

A supernet is an ``nn.Module`` whose parameters split into architecture parameters (alpha,
and beta for the trellis; updated by the architect on half B) and weights (updated by SGD on
half A). It decodes its current architecture parameters into a typed discrete architecture
(:class:`~autoseg.space.genotype.Genotype` or :class:`~autoseg.space.architecture.NetworkArch`), draws
them for TensorBoard, and summarises itself for ``--dry-run``.

How the architecture parameters weight the choices in the forward pass is the search method's
:class:`~autoseg.search.relaxation.Relaxation` (:attr:`SearchNetwork.relaxation`, DARTS's softmax
until a method sets its own). Any choice can also be pinned to given weights
(:meth:`SearchNetwork.fixed_choices`), which runs the supernet at one discrete architecture
(:meth:`SearchNetwork.architecture_weights`) or with some edges decided.
"""
from __future__ import annotations

import abc
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from autoseg.space.architecture import Architecture
from autoseg.search.mixed_op import MixedCell
from autoseg.search.relaxation import SOFTMAX, Relaxation
from autoseg.search.stage_recomputation import set_recomputation

FixedChoice = tuple[torch.Tensor, "torch.Tensor | None"]
"""Weights pinning a choice, and the boolean mask of the rows they pin (None: every row)."""


class SearchNetwork(nn.Module, abc.ABC):
    """Base class of the search supernets (DARTS cells, the Auto-DeepLab trellis)."""

    primitives: tuple[str, ...]
    """The candidate ops of every mixed op, in the order of alpha's columns."""

    cell_types: tuple[str, ...]
    """The cell types, each with its own alpha: the keys of :meth:`arch_weights` that hold a
    softmax(alpha) (num_edges x num_ops)."""

    relaxation: Relaxation = SOFTMAX
    """How the architecture parameters weight the choices (set by the search method)."""

    single_path: bool = False
    """Run only the ops the one-hot choice weights choose (set by the search method; see
    :meth:`route_choices`); False: every op of every edge, weighted."""

    _fixed: dict[str, FixedChoice] = {}

    @abc.abstractmethod
    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters, in a fixed order."""

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an architecture parameter."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    _selective_checkpoint = False

    @property
    def selective_checkpoint(self) -> bool:
        """Whether the cells' conv stages recompute their ReLUs and depthwise convs in backward
        instead of keeping their outputs (:mod:`autoseg.search.stage_recomputation`; exact)."""
        return self._selective_checkpoint

    @selective_checkpoint.setter
    def selective_checkpoint(self, on: bool) -> None:
        self._selective_checkpoint = on
        set_recomputation(self, on)

    def set_search_progress(self, fraction: float) -> None:
        """Called by the search at the start of every epoch with the fraction (0..1) of the
        search done, for what decays over a search (the collapse guards); no-op by default."""

    @abc.abstractmethod
    def cell_logits(self) -> dict[str, torch.Tensor]:
        """The alpha of each cell type (:attr:`cell_types`), ``(num_edges, num_ops)``."""

    def choice_logits(self) -> dict[str, torch.Tensor]:
        """Every row of logits the relaxation weights, by choice name, invalid entries at
        ``-inf``: the alpha of each cell type (:meth:`cell_logits`), and whatever else a supernet
        adds."""
        return self.cell_logits()

    @abc.abstractmethod
    def architecture_weights(self, arch: Architecture) -> dict[str, torch.Tensor]:
        """The choice weights that run this supernet at ``arch`` (one-hot rows), by choice name,
        for :meth:`fixed_choices`."""

    @abc.abstractmethod
    def sample_architecture(self, rng: np.random.Generator) -> Architecture:
        """An architecture of this supernet's space drawn uniformly (:mod:`autoseg.space.sampling`)."""

    def choice_weights(self, name: str, weights: torch.Tensor) -> torch.Tensor:
        """``weights`` of choice ``name`` from the relaxation, with the rows pinned by
        :meth:`fixed_choices` replaced."""
        fixed = self._fixed.get(name)
        if fixed is None:
            return weights
        values, rows = fixed
        values = values.to(device=weights.device, dtype=weights.dtype)
        return values if rows is None else torch.where(rows.to(weights.device).unsqueeze(-1), values, weights)

    @abc.abstractmethod
    def choice_cells(self, name: str) -> list[MixedCell]:
        """The mixed cells whose edges the rows of cell choice ``name`` weight."""

    def route_choices(self, name: str, weights: torch.Tensor) -> None:
        """Tell the mixed cells of choice ``name`` which ops the rows of ``weights`` (the forward
        pass's) choose, where :attr:`single_path` is on: the ops of nonzero weight (one per row for a
        hard sample or a pinned architecture), the others are not run; off, every op runs. One
        copy of the mask to the host per forward pass."""
        chosen = (weights.detach() != 0).cpu() if self.single_path else None
        for cell in self.choice_cells(name):
            cell.chosen = chosen

    def pin_choices(self, fixed: dict[str, FixedChoice]) -> None:
        """From now on, weight choice ``name`` by ``fixed[name]`` (see :meth:`fixed_choices`);
        an empty mapping unpins every choice."""
        self._fixed = dict(fixed)

    @contextmanager
    def fixed_choices(self, fixed: dict[str, FixedChoice]) -> Iterator[None]:
        """Within this block, choice ``name`` is weighted by ``fixed[name]`` (weights and the rows
        they pin, None for all) instead of the relaxation, e.g. with
        ``{name: (w, None) for name, w in self.architecture_weights(arch).items()}`` the supernet
        computes the network ``arch``."""
        before = self._fixed
        self._fixed = {**before, **fixed}
        try:
            yield
        finally:
            self._fixed = before

    @abc.abstractmethod
    def decode(self) -> Architecture:
        """The discrete architecture the current architecture parameters encode."""

    @abc.abstractmethod
    def arch_weights(self) -> dict[str, np.ndarray]:
        """The normalised architecture parameters (softmax of alpha, and so on) as arrays."""

    @abc.abstractmethod
    def figures(self, arch: Architecture) -> dict[str, np.ndarray]:
        """Pictures (``H x W x 3`` uint8, by TensorBoard tag) of the architecture parameters and
        of ``arch``, the result of :meth:`decode` (passed in so that an epoch decodes once)."""

    def summary(self) -> dict[str, Any]:
        """The dry-run summary: model name, weight and architecture parameter counts."""
        return {"model": type(self).__name__,
                "params": sum(p.numel() for p in self.weight_parameters()),
                "arch_params": sum(p.numel() for p in self.arch_parameters())}
