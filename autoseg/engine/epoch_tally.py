"""The running training figures of the current epoch, kept in the checkpoint so that an epoch
resumed mid-way reports what the uninterrupted epoch reports."""
from __future__ import annotations

import copy
from typing import Any

import torch

from autoseg.evaluation.metrics import AccuracyMeter, ConfusionMeter
from autoseg.utils.process import sum_over_processes


class EpochTally:
    """This process's sums over the optimiser steps of the epoch so far: the training loss, the
    steps whose update was applied, the dropped updates per kind (``nan_policy: skip``), the
    seconds spent training and, when given a meter, the training metric's counts."""

    def __init__(self, meter: ConfusionMeter | AccuracyMeter | None = None) -> None:
        self.loss_sum, self.steps, self.seconds = 0.0, 0, 0.0
        self.skipped: dict[str, int] = {}
        self.meter = meter

    def add(self, loss: float, logits: torch.Tensor | None = None, target: torch.Tensor | None = None) -> None:
        """Count an applied step: its loss and, with a meter, its predictions."""
        self.loss_sum, self.steps = self.loss_sum + loss, self.steps + 1
        if self.meter is not None:
            self.meter.update(logits, target)

    def skip(self, kind: str) -> None:
        """Count a dropped update of ``kind`` (the record's key, e.g. ``skipped_batches``)."""
        self.skipped[kind] = self.skipped.get(kind, 0) + 1

    def mean_loss(self) -> float:
        """The mean training loss of the epoch over every process (NaN when no update was applied)."""
        loss_sum, steps = sum_over_processes([self.loss_sum, self.steps])  # every process runs the same steps
        return loss_sum / steps if steps else float("nan")

    def metrics_meter(self) -> ConfusionMeter | AccuracyMeter:
        """A copy of the meter with every process's counts (this tally's own counts stay this process's)."""
        meter = copy.deepcopy(self.meter)
        meter.all_reduce()
        return meter

    def state_dict(self) -> dict[str, Any]:
        """Plain data and tensors, for a checkpoint."""
        return {"loss_sum": self.loss_sum, "steps": self.steps, "seconds": self.seconds,
                "skipped": dict(self.skipped), "meter": None if self.meter is None else self.meter.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.loss_sum, self.steps, self.seconds = state["loss_sum"], state["steps"], state["seconds"]
        self.skipped = dict(state["skipped"])
        if self.meter is not None and state["meter"] is not None:
            self.meter.load_state_dict(state["meter"])
