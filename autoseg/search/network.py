"""The contract every search supernet honours, so that the search loop, the architect and the
tools never ask which supernet they hold.

A supernet is an ``nn.Module`` whose parameters split into architecture parameters (alpha,
and beta for the trellis; updated by the architect on half B) and weights (updated by SGD on
half A). It decodes its current architecture parameters into a typed discrete architecture
(:class:`~autoseg.genotype.Genotype` or :class:`~autoseg.architecture.NetworkArch`), draws
them for TensorBoard, and summarises itself for ``--dry-run``.
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np
from torch import nn

from autoseg.architecture import Architecture
from autoseg.search.stage_recomputation import set_recomputation


class SearchNetwork(nn.Module, abc.ABC):
    """Base class of the search supernets (DARTS cells, the Auto-DeepLab trellis)."""

    primitives: tuple[str, ...]
    """The candidate ops of every mixed op, in the order of alpha's columns."""

    cell_types: tuple[str, ...]
    """The cell types, each with its own alpha: the keys of :meth:`arch_weights` that hold a
    softmax(alpha) (num_edges x num_ops)."""

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
