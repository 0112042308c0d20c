"""The skeleton every training run shares: the search and the retraining each add their step.

A :class:`TrainingRun` owns the run's position (epoch, step in the epoch, global step), its
history, the per-epoch seed, the TensorBoard writer and progress bars, the checkpoint
(atomic, with every process's RNG state, resumed bit for bit) and the sequence

    train (the rest of) an epoch -> [evaluate -> log -> record -> checkpoint]

repeated until the configured length or ``max_steps``. A subclass supplies
:meth:`~TrainingRun.train_one_epoch` (its optimiser steps), the state of its model and
optimisers, and optional hooks (what ends an epoch, when to evaluate, what else a record holds,
what else to write).
"""
from __future__ import annotations

import abc
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from autoseg.config import to_dict
from autoseg.engine.checkpoint import CHECKPOINT_NAME, save_checkpoint
from autoseg.engine.distributed import broadcast_buffers, process_rng_states, restore_process_rng_state
from autoseg.engine.epoch_data import epoch_batches, evaluation_batches, set_epoch
from autoseg.engine.task import Task
from autoseg.precision import check_amp
from autoseg.process import is_main

SEED_STRIDE = 100_003
"""Epoch ``e`` of a run seeded ``s`` shuffles with seed ``s * SEED_STRIDE + e``."""


class TrainingRun(abc.ABC):
    """One run writing ``run_dir``: see the module docstring.

    Subclasses set :attr:`model` (the module whose weights are checkpointed),
    :attr:`steps_per_epoch` and :attr:`epochs` before calling :meth:`run`.
    """

    kind: str
    """What the checkpoint holds: ``search`` or ``retrain``."""

    model: nn.Module
    steps_per_epoch: int
    epochs: int
    eval_input_scale: float = 1.0
    """The scale the model sees evaluation images at (logits are scored at full size)."""

    def __init__(self, cfg: Any, task: Task, eval_set: Dataset, run_dir: Path, device: torch.device):
        check_amp(cfg.train.amp, device)
        self.cfg, self.task, self.run_dir, self.device = cfg, task, run_dir, device
        self.eval_set = eval_set
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: list[dict[str, Any]] = []

    # -- what a subclass provides ------------------------------------------------------------
    @abc.abstractmethod
    def train_one_epoch(self, writer: SummaryWriter | None) -> dict[str, Any]:
        """Run (the rest of) the current epoch, or until the run must stop; return its training
        figures. Advance :attr:`step_in_epoch` and :attr:`global_step` per optimiser step."""

    @abc.abstractmethod
    def training_state(self) -> dict[str, Any]:
        """The model's and optimisers' state (``state_dict``s) for the checkpoint."""

    @abc.abstractmethod
    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`training_state` returned."""

    def end_epoch(self) -> None:
        """Called when an epoch is complete (e.g. to step a per-epoch learning-rate schedule)."""

    def should_evaluate(self) -> bool:
        """Whether to evaluate after the epoch just completed (a stopped run always evaluates)."""
        return True

    def record_extras(self) -> dict[str, Any]:
        """Entries added to the record of an evaluation, besides position, train and valid."""
        return {}

    def after_record(self, record: dict[str, Any]) -> None:
        """Called with each new record, before it is logged and checkpointed."""

    def write_outputs(self) -> None:
        """Files the main process writes beside each checkpoint."""

    def log_extras(self, writer: SummaryWriter, record: dict[str, Any]) -> None:
        """More TensorBoard output for a record."""

    # -- shared -----------------------------------------------------------------------------
    def stopped(self) -> bool:
        """Whether the run is over: all epochs done, or ``max_steps`` optimiser steps taken."""
        limit = self.cfg.train.max_steps
        return self.epoch >= self.epochs or (limit is not None and self.global_step >= limit)

    def epoch_seed(self, offset: int = 0) -> int:
        """The seed of the current epoch's sample order (``offset`` tells data streams apart)."""
        return self.cfg.train.seed * SEED_STRIDE + self.epoch + offset

    def epoch_loader(self, dataset: Dataset, offset: int = 0) -> DataLoader:
        """The current epoch's batches of ``dataset`` from the step the run is at (this process's
        share of each batch); augmentation draws the random numbers of this epoch."""
        set_epoch(dataset, self.epoch)
        d = self.cfg.data
        return epoch_batches(dataset, d.batch_size, self.epoch_seed(offset), self.step_in_epoch, d.num_workers,
                             pin_memory=self.device.type == "cuda")

    def progress(self, batches: Iterable, suffix: str = "") -> tqdm:
        """A progress bar over the current epoch's batches, shown by the main process."""
        return tqdm(batches, total=self.steps_per_epoch, initial=self.step_in_epoch, dynamic_ncols=True,
                    disable=None if is_main() else True, desc=f"epoch {self.epoch + 1}/{self.epochs}{suffix}")

    def evaluate(self) -> dict[str, Any]:
        """The task's metrics on the evaluation set (every process evaluates its share)."""
        d = self.cfg.data
        loader = evaluation_batches(self.eval_set, d.eval_batch_size, d.max_eval_batches, d.num_workers,
                                    pin_memory=self.device.type == "cuda")
        return self.task.evaluate(self.model, loader, self.device, amp=self.cfg.train.amp,
                                  input_scale=self.eval_input_scale)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run bit for bit."""
        return {"kind": self.kind, **self.training_state(), "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch, "global_step": self.global_step, "history": self.history,
                "rng": process_rng_states(), "config": to_dict(self.cfg)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.load_training_state(state)
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.history = state["global_step"], state["history"]
        restore_process_rng_state(state["rng"])

    def save(self) -> None:
        """Write the checkpoint atomically, then :meth:`write_outputs` (the main process)."""
        state = self.state_dict()  # every process takes part: it gathers their RNG states
        if is_main():
            save_checkpoint(state, self.run_dir / CHECKPOINT_NAME)
            self.write_outputs()

    def run(self) -> dict[str, Any]:
        """Train until the configured length or ``max_steps``; returns the last record."""
        writer = (SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.global_step or None)
                  if is_main() else None)
        record: dict[str, Any] = self.history[-1] if self.history else {}
        try:
            while not self.stopped():
                start = time.time()
                self.model.train()
                train = self.train_one_epoch(writer)
                epoch = self.epoch + 1
                complete = self.step_in_epoch >= self.steps_per_epoch
                if complete:
                    self.end_epoch()
                    self.epoch, self.step_in_epoch = epoch, 0
                else:
                    train["partial"] = True
                if complete and not self.should_evaluate() and not self.stopped():
                    continue
                broadcast_buffers(self.model)
                record = {"epoch": epoch, "global_step": self.global_step, "seconds": time.time() - start,
                          "train": train, "valid": self.evaluate(), **self.record_extras()}
                self.after_record(record)
                if writer is not None:
                    self.log(writer, record)
                self.history.append(record)
                self.save()
        finally:
            if writer is not None:
                writer.close()
        return record

    def log(self, writer: SummaryWriter, record: dict[str, Any]) -> None:
        """The record's numbers to TensorBoard, a line on the console, then the subclass's extras."""
        step = self.global_step
        for split in ("train", "valid"):
            for key, value in record[split].items():
                if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
                    writer.add_scalar(f"{split}/{key}", value, step)
        train, valid, metric = record["train"], record["valid"], self.task.metric
        train_metric = f" {metric} {train[metric]:.2f}" if metric in train else ""
        tqdm.write(f"epoch {record['epoch']} step {step}: train loss {train['loss']:.4f}{train_metric} | "
                   f"valid loss {valid['loss']:.4f} {metric} {valid[metric]:.2f} | {record['seconds']:.1f}s")
        self.log_extras(writer, record)
