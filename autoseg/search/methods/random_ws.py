"""Random search with weight sharing (Li & Talwalkar, "Random Search and Reproducibility for
Neural Architecture Search", UAI 2019): the weight-sharing baseline a differentiable method must
beat.

No architecture parameter is learnt. Every weight step trains the supernet's weights at one
architecture drawn uniformly from the space (:mod:`autoseg.space.sampling`: a random cell, and in the
Auto-DeepLab space a uniform path), so the shared weights learn to serve the whole space. After
every epoch the method draws ``candidates`` architectures (the same draws every epoch), scores
each with the shared weights on ``eval_batches`` batches of half B (the task metric, supernet in
eval mode) and selects the best; the first candidate wins a tie.

The draw of step ``s`` depends only on the search's seed and ``s``, so a resumed search and every
process of a multi-process search train the same architectures. The supernet's own validation
figure (the held-out evaluation of every epoch) is of the softmax mixture of untrained
architecture parameters; the selected architecture's one-shot score is ``selection_score`` in the
method's checkpoint state and on the console.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, ContextManager

import numpy as np
from tqdm import tqdm

from autoseg.space.architecture import Architecture, architecture_from_dict
from autoseg.config import Bounds
from autoseg.search.methods.base import Evaluator, SearchMethod

SELECTION_STREAM = 1
"""Which of the seed's random streams draws the candidates (stream 0 draws the training steps')."""


@dataclass
class RandomWeightSharingSettings:
    """``candidates``: architectures scored with the shared weights when selecting;
    ``eval_batches``: batches of half B each is scored on (null: all of half B). Both defaults
    are autoseg's, sized for short searches, not taken from the paper. ``single_path``: run only
    the drawn architecture, its ops and, in the trellis, the cells of its path (same outputs; the
    parameters it leaves out get no gradient, so weight decay and momentum do not move them in
    that step, where off they get a zero gradient that SGD still applies them to, and the batch
    norms of the cells it leaves out do not update their running statistics); off by default, so
    that earlier searches repeat."""

    candidates: int = 100
    eval_batches: int | None = 10
    single_path: bool = False

    BOUNDS: ClassVar[dict[str, Bounds]] = {"candidates": Bounds(1), "eval_batches": Bounds(1)}


class RandomWeightSharing(SearchMethod):
    """Random search with weight sharing; see the module docstring."""

    name = "random_ws"
    reference = "Li & Talwalkar, Random Search and Reproducibility for Neural Architecture Search, UAI 2019"
    Settings = RandomWeightSharingSettings

    selected: dict[str, Any] | None = None
    selection_score: float | None = None

    def updates_architecture(self, epoch: int) -> bool:
        """Never: no architecture parameter is learnt."""
        return False

    def draw(self, stream: int, index: int) -> Architecture:
        """Architecture ``index`` of random stream ``stream`` of this search's seed."""
        return self.network.sample_architecture(np.random.default_rng([self.schedule.seed, stream, index]))

    def pinned(self, arch: Architecture) -> ContextManager[Any]:
        """The supernet computing ``arch`` within the block."""
        return self.network.fixed_choices({name: (weights, None)
                                           for name, weights in self.network.architecture_weights(arch).items()})

    def weight_step(self, step: int) -> ContextManager[Any]:
        """Train the weights at the architecture drawn for step ``step``."""
        return self.pinned(self.draw(0, step))

    def select(self, evaluate: Evaluator | None) -> Architecture:
        """The best of the candidates by their one-shot score; without ``evaluate``, the last
        selection (or the first candidate before any)."""
        if evaluate is None:
            return architecture_from_dict(self.selected) if self.selected else self.draw(SELECTION_STREAM, 0)
        best, best_score = None, -float("inf")
        for index in range(self.settings.candidates):
            arch = self.draw(SELECTION_STREAM, index)
            with self.pinned(arch):
                score = evaluate(self.settings.eval_batches)
            if score > best_score:
                best, best_score = arch, score
        self.selected, self.selection_score = best.to_dict(), best_score
        tqdm.write(f"random_ws: selected the best of {self.settings.candidates} candidates, one-shot score "
                   f"{best_score:.2f}")
        return best

    def state_dict(self) -> dict[str, Any]:
        """The last selection and its one-shot score."""
        return {"selected": self.selected, "selection_score": self.selection_score}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.selected, self.selection_score = state.get("selected"), state.get("selection_score")
