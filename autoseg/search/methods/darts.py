"""DARTS (Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019): softmax
relaxation, alternating first- or second-order (``unrolled``) architecture updates, magnitude
decoding (top-2 edges per block; the Viterbi path in the Auto-DeepLab space). The papers'
search, and the default method."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from autoseg.config import Bounds
from autoseg.search.methods.base import GradientMethod


@dataclass
class DartsSettings:
    """``unrolled``: the second-order architecture gradient (DARTS §2.3; false: first order, as
    Auto-DeepLab searches); ``fd_epsilon``: the finite difference's step ``0.01 / ||v||`` (DARTS
    eq. 8)."""

    unrolled: bool = False
    fd_epsilon: float = 0.01

    BOUNDS: ClassVar[dict[str, Bounds]] = {"fd_epsilon": Bounds(0, low_open=True)}


class Darts(GradientMethod):
    """DARTS; see the module docstring."""

    name = "darts"
    reference = "Liu, Simonyan & Yang, DARTS: Differentiable Architecture Search, ICLR 2019"
    Settings = DartsSettings

    @property
    def second_order(self) -> bool:
        """Whether the update is the unrolled one."""
        return self.settings.unrolled

    @property
    def fd_epsilon(self) -> float:
        """The finite difference's epsilon (times 1 / ||v||)."""
        return self.settings.fd_epsilon
