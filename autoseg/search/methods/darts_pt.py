"""DARTS-PT (Wang, Cheng, Chen, Tang & Hsieh, "Rethinking Architecture Selection in Differentiable
NAS", ICLR 2021): train the supernet as DARTS does, then select the architecture by perturbation
instead of by the magnitude of alpha, which is shown not to measure an op's strength.

The search's last epochs are the projection phase, in which the architecture is no longer
updated and the weights are tuned between projections:

1. Operation projection, one edge per step (in random order, every cell type at once): for each
   op of the edge other than ``none``, the op is masked (its weight set to 0, the others kept)
   and the supernet is scored on half B (the task metric); the op whose masking lowers the score
   most is kept: the edge's weights become one-hot on it.
2. Topology projection, one block per step: each edge into the block is removed in turn (its row
   set to 0) and scored; the two edges whose removal lowers the score most stay, the others are
   removed.

Step ``k`` runs at the start of epoch ``first + floor(k * interval)`` (several at one epoch start
when ``interval`` is below 1), where the projection phase takes the last ``ceil(steps *
interval)`` epochs of the search and ``steps`` is the number of edges plus the number of blocks
of a cell. The Auto-DeepLab network path is still the Viterbi path of beta,
learnt before the projection (DARTS-PT selects cells only). Decided edges stay decided: they are
part of the checkpoint and of ``autoseg decode``'s architecture.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from autoseg.config import Bounds
from autoseg.space.genotype import num_edges
from autoseg.search.methods.base import Evaluator, GradientMethod, SearchSchedule
from autoseg.search.network import SearchNetwork


@dataclass
class DartsPtSettings:
    """``interval``: epochs of weight tuning between two projection steps (fractions allowed;
    the default is autoseg's, not taken from the paper); ``eval_batches``: batches of half B
    every perturbation is scored on (null: all of half B, the whole validation data as in the
    paper)."""

    interval: float = 5.0
    eval_batches: int | None = None

    BOUNDS: ClassVar[dict[str, Bounds]] = {"interval": Bounds(0, low_open=True), "eval_batches": Bounds(1)}


class DartsPt(GradientMethod):
    """DARTS-PT; see the module docstring. ``decisions[cell_type]`` holds, per edge, the op
    index kept (or None while undecided) and, per edge, whether topology projection removed it."""

    name = "darts_pt"
    reference = "Wang et al., Rethinking Architecture Selection in Differentiable NAS, ICLR 2021"
    Settings = DartsPtSettings

    def __init__(self, settings: DartsPtSettings, network: SearchNetwork, schedule: SearchSchedule):
        super().__init__(settings, network, schedule)
        self.blocks = network.num_blocks
        self.edges = num_edges(self.blocks)
        self.steps_done = 0
        self.ops: dict[str, list[int | None]] = {name: [None] * self.edges for name in network.cell_types}
        self.removed: dict[str, list[bool]] = {name: [False] * self.edges for name in network.cell_types}

    @property
    def steps(self) -> int:
        """Projection steps: one per edge, then one per block."""
        return self.edges + self.blocks

    @property
    def first_projection_epoch(self) -> int:
        """The epoch whose start projects the first edge."""
        return self.schedule.epochs - math.ceil(self.steps * self.settings.interval)

    def check(self) -> str | None:
        """The projection phase must leave at least one epoch that updates the architecture."""
        if self.first_projection_epoch <= self.schedule.warmup_epochs:
            needed = self.schedule.warmup_epochs + 1 + math.ceil(self.steps * self.settings.interval)
            return (f"the projection of {self.steps} steps every {self.settings.interval:g} epoch(s) takes the last "
                    f"{math.ceil(self.steps * self.settings.interval)} epochs, leaving none to train the "
                    f"architecture after {self.schedule.warmup_epochs} warm-up epoch(s): use at least {needed} "
                    "epochs or a smaller method_options.interval")
        return None

    def updates_architecture(self, epoch: int) -> bool:
        """Before the projection phase only."""
        return epoch < self.first_projection_epoch

    def due_steps(self, epoch: int) -> int:
        """How many projection steps are done once epoch ``epoch`` has started: step ``k`` runs at
        the start of epoch ``first_projection_epoch + floor(k * interval)``."""
        if epoch < self.first_projection_epoch:
            return 0
        started = (epoch - self.first_projection_epoch + 1) / self.settings.interval
        return min(self.steps, math.ceil(started - 1e-9))  # the tolerance: 1 / 0.1 is 10.000000000000002

    def start_epoch(self, epoch: int, evaluate: Evaluator) -> None:
        """Run the projection steps due at the start of ``epoch``."""
        while self.steps_done < self.due_steps(epoch):
            for cell_type in self.network.cell_types:
                if self.steps_done < self.edges:
                    self.project_op(cell_type, self.edge_order()[self.steps_done], evaluate)
                else:
                    self.project_topology(cell_type, self.steps_done - self.edges, evaluate)
            self.steps_done += 1

    def edge_order(self) -> list[int]:
        """The edges in the random order they are projected in (fixed by the search's seed)."""
        return [int(e) for e in np.random.default_rng([self.schedule.seed, 2]).permutation(self.edges)]

    def current_rows(self, cell_type: str) -> torch.Tensor:
        """The ``(edges, ops)`` weights cell type ``cell_type`` runs with now: the relaxation's
        (softmax(alpha)) with the decisions so far applied."""
        logits = self.network.cell_logits()[cell_type].detach()
        rows = self.relaxation.probabilities(logits).clone()
        for edge, op in enumerate(self.ops[cell_type]):
            if op is not None:
                rows[edge] = torch.nn.functional.one_hot(torch.tensor(op), rows.shape[1]).to(rows)
        for edge, removed in enumerate(self.removed[cell_type]):
            if removed:
                rows[edge] = 0
        return rows

    def score_with(self, cell_type: str, edge: int, row: torch.Tensor, evaluate: Evaluator) -> float:
        """The supernet's score with edge ``edge`` of ``cell_type`` weighted by ``row``."""
        rows = self.current_rows(cell_type)
        rows[edge] = row
        mask = self.decided(cell_type)
        mask[edge] = True
        with self.network.fixed_choices({cell_type: (rows, mask)}):
            return evaluate(self.settings.eval_batches)

    def project_op(self, cell_type: str, edge: int, evaluate: Evaluator) -> None:
        """Keep the op of ``edge`` whose masking lowers the score most."""
        row = self.current_rows(cell_type)[edge]
        scores = {}
        for op, name in enumerate(self.network.primitives):
            if name != "none":
                masked = row.clone()
                masked[op] = 0
                scores[op] = self.score_with(cell_type, edge, masked, evaluate)
        self.ops[cell_type][edge] = min(scores, key=scores.get)  # the lowest score without it; first on ties
        self.pin()
        tqdm.write(f"darts_pt: {cell_type} edge {edge} keeps {self.network.primitives[self.ops[cell_type][edge]]}")

    def project_topology(self, cell_type: str, block: int, evaluate: Evaluator) -> None:
        """Keep the two edges into ``block`` whose removal lowers the score most."""
        incoming = range(num_edges(block), num_edges(block + 1))
        zero = torch.zeros(len(self.network.primitives))
        scores = {edge: self.score_with(cell_type, edge, zero, evaluate) for edge in incoming}
        kept = sorted(scores, key=scores.get)[:2]
        for edge in incoming:
            self.removed[cell_type][edge] = edge not in kept
        self.pin()

    def decided(self, cell_type: str) -> torch.Tensor:
        """Which edges of ``cell_type`` have been decided (an op kept, or removed)."""
        return torch.tensor([op is not None or removed
                             for op, removed in zip(self.ops[cell_type], self.removed[cell_type])])

    def pin(self) -> None:
        """Pin the decided rows of every cell type on the supernet."""
        fixed = {}
        for cell_type in self.network.cell_types:
            decided = self.decided(cell_type)
            if decided.any():
                fixed[cell_type] = (self.current_rows(cell_type), decided)
        self.network.pin_choices(fixed)

    def state_dict(self) -> dict[str, Any]:
        """The projection steps done and the decisions."""
        return {"steps_done": self.steps_done, "ops": self.ops, "removed": self.removed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` and pin the decisions."""
        if state:
            self.steps_done, self.ops, self.removed = state["steps_done"], state["ops"], state["removed"]
        self.pin()
