"""The skeleton every training run shares: the search and the retraining each add their step.

A :class:`TrainingRun` owns the run's position (epoch, step in the epoch, global step), its
history, the per-epoch seed, the running figures of the current epoch, the TensorBoard writer and
progress bars, the NaN/inf guard (:mod:`autoseg.engine.step_guard`), the checkpoint (atomic, with
every process's RNG state and running figures, resumed bit for bit) and the sequence::

    for each step of (the rest of) an epoch: the subclass's step -> check -> update
        [-> checkpoint every ``train.checkpoint_every_steps`` steps]
    [checkpoint -> evaluate -> log -> record -> checkpoint]

repeated until the configured length. A stop before it (``max_steps``) evaluates for the user
and writes a checkpoint of the position, but adds no record: the history and the best checkpoint
never depend on where a run was stopped. The checkpoint before an evaluation holds the evaluation
still due (``pending_record``), so that a run resumed after a crash in the evaluation evaluates
first and loses no training. A subclass supplies the batches of an epoch, its step (:meth:`~TrainingRun.train_step`,
forward and backward) and update, the state of its model and optimisers, and optional hooks
(what ends an epoch, when to evaluate, what else a record holds, what else to write).
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from autoseg.config import to_dict
from autoseg.utils.compilation import check_compile
from autoseg.engine.checkpoint import CHECKPOINT_NAME, save_checkpoint
from autoseg.engine.distributed import broadcast_buffers, on_main, process_rng_states, restore_process_rng_state
from autoseg.engine.epoch_data import epoch_batches, evaluation_batches, set_epoch
from autoseg.engine.epoch_tally import EpochTally
from autoseg.engine.run_lock import RunLock
from autoseg.engine.step_guard import (SKIPS_IN_A_ROW_LIMIT, BufferSnapshot, describe, divergence_message,
                                       non_finite_tensors, read_step)
from autoseg.engine.task import Task
from autoseg.utils.errors import RunInterrupted, UserError
from autoseg.utils.files import remove_interrupted_writes
from autoseg.utils.precision import check_amp
from autoseg.utils.process import gather_objects, is_main, rank

SEED_STRIDE = 100_003
"""Epoch ``e`` of a run seeded ``s`` shuffles with seed ``s * SEED_STRIDE + e``."""


@dataclass
class TrainStep:
    """What a subclass's :meth:`~TrainingRun.train_step` computed, before the update: the loss and
    the gradient norm (tensors, not read back yet; no norm where a gradient scaler checks the
    gradients), the logits and targets for a training metric, and further scalars to check with
    them (a search's architecture loss)."""

    loss: torch.Tensor
    grad_norm: torch.Tensor | None
    logits: torch.Tensor | None = None
    target: torch.Tensor | None = None
    checks: dict[str, torch.Tensor] = field(default_factory=dict)


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
    tracks_train_metric: bool = False
    """Whether the training figures include the task's metric on the training batches."""
    lock: RunLock | None = None
    """The main process's lock of the run directory (see :mod:`autoseg.engine.run_lock`), released
    when :meth:`run` ends."""

    def __init__(self, cfg: Any, task: Task, eval_set: Dataset, run_dir: Path, device: torch.device):
        check_amp(cfg.train.amp, device)
        check_compile(cfg.train.compile, device)
        self.cfg, self.task, self.run_dir, self.device = cfg, task, run_dir, device
        self.eval_set = eval_set
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.stop_record: dict[str, Any] | None = None
        self.pending_record: dict[str, Any] | None = None  # an evaluation due, of the checkpoint written before it
        self.tally = self.new_tally()
        self.skips_in_a_row = 0
        self.saved_step: int | None = None
        self.buffers: BufferSnapshot | None = None
        self.dropped = False

    # -- what a subclass provides ------------------------------------------------------------
    @abc.abstractmethod
    def epoch_batches(self) -> Iterable[Any]:
        """The batches of (the rest of) the current epoch, one per optimiser step."""

    @abc.abstractmethod
    def train_step(self, batch: Any) -> TrainStep:
        """The forward and backward passes of one batch (and anything applied before the weight
        update, such as the architecture step); call :meth:`mark_buffers` before each forward pass
        whose update may be dropped."""

    @abc.abstractmethod
    def update(self, apply: bool) -> None:
        """The optimiser step after :meth:`train_step` when ``apply`` (else the update is dropped),
        and a per-step learning-rate schedule either way."""

    @abc.abstractmethod
    def learning_rate(self) -> float:
        """The weights' current learning rate."""

    @abc.abstractmethod
    def training_state(self) -> dict[str, Any]:
        """The model's and optimisers' state (their ``state_dict()``) for the checkpoint."""

    @abc.abstractmethod
    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`training_state` returned."""

    def epoch_label(self) -> str:
        """Added to the progress bar's description."""
        return ""

    def prepare_epoch(self) -> None:
        """Called before (the rest of) an epoch is trained, also when resuming mid-epoch."""

    def train_figures(self) -> dict[str, Any]:
        """The epoch's training figures besides the loss."""
        return {}

    def log_step(self, writer: SummaryWriter) -> None:
        """More TensorBoard scalars of the step just taken (every ``train.log_every`` steps)."""

    def end_epoch(self) -> None:
        """Called when an epoch is complete (e.g. to step a per-epoch learning-rate schedule)."""

    def should_evaluate(self) -> bool:
        """Whether to evaluate after the epoch just completed (the run's last epoch always is)."""
        return True

    def record_extras(self) -> dict[str, Any]:
        """Entries added to the record of an evaluation, besides position, train and valid."""
        return {}

    def after_record(self, record: dict[str, Any]) -> None:
        """Called with each new record, before it is logged and checkpointed."""

    def output_files(self) -> list[str]:
        """The names of the files :meth:`write_outputs` writes in the run directory."""
        return []

    def write_outputs(self, checkpoint: Path) -> None:
        """Files the main process writes with the checkpoint of each evaluation (of a record, or of
        a stop: :attr:`stop_record` is set), given the new checkpoint file before it replaces the old one."""

    def log_extras(self, writer: SummaryWriter, record: dict[str, Any]) -> None:
        """More TensorBoard output for a record."""

    # -- shared -----------------------------------------------------------------------------
    def finished(self) -> bool:
        """Whether the configured length is done (all epochs)."""
        return self.epoch >= self.epochs

    def stopped(self) -> bool:
        """Whether the run is over: finished, or ``max_steps`` optimiser steps taken."""
        limit = self.cfg.train.max_steps
        return self.finished() or (limit is not None and self.global_step >= limit)

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

    def new_tally(self) -> EpochTally:
        """Empty running figures for a new epoch."""
        return EpochTally(self.task.meter() if self.tracks_train_metric else None)

    @property
    def skipping(self) -> bool:
        """Whether a non-finite step drops its update (``nan_policy: skip``) instead of stopping."""
        return self.cfg.train.nan_policy == "skip"

    def mark_buffers(self) -> None:
        """Remember the model's buffers before a forward pass whose update may be dropped."""
        self.buffers = BufferSnapshot(self.model) if self.skipping else None

    def check(self, quantities: dict[str, torch.Tensor]) -> tuple[dict[str, float], bool]:
        """Read the step's scalars back (:func:`~autoseg.engine.step_guard.read_step`); whether
        they are all finite. A non-finite one stops the run, unless ``nan_policy`` is ``skip``."""
        values, bad = read_step(quantities)
        if bad and not self.skipping:
            raise UserError(self.divergence(describe(bad[0], values[bad[0]]), self.global_step + 1))
        return values, not bad

    def drop_update(self, kind: str) -> None:
        """Drop the update just computed: zero the gradients, restore the buffers of the last
        :meth:`mark_buffers`, count it as ``kind`` in the epoch's figures."""
        self.model.zero_grad(set_to_none=True)
        if self.buffers is not None:
            self.buffers.restore()
        self.tally.skip(kind)
        self.dropped = True

    def kept(self) -> str:
        """What the run directory keeps of the run now: its last checkpoint, or none."""
        return (f"the last good checkpoint (step {self.saved_step}) in {self.run_dir} is kept"
                if self.saved_step is not None else f"no checkpoint was written in {self.run_dir}")

    def divergence(self, what: str, step: int) -> str:
        """The one-line error of a run stopped by a non-finite value at ``step``."""
        return divergence_message(what, step, self.epoch + 1, self.kept(), self.skipping)

    def train_one_epoch(self, writer: SummaryWriter | None) -> dict[str, Any]:
        """Train (the rest of) the current epoch, or until the run must stop; returns its training
        figures (over the whole epoch, also when it was resumed mid-way)."""
        self.prepare_epoch()
        start = time.time()
        bar = self.progress(self.epoch_batches(), self.epoch_label())
        for batch in bar:
            self.dropped = False
            step = self.train_step(batch)
            norm = {} if step.grad_norm is None else {"gradient norm": step.grad_norm}
            values, finite = self.check({**step.checks, "loss": step.loss, **norm})
            if finite:
                self.tally.add(values["loss"], step.logits, step.target)
            else:
                self.drop_update("skipped_batches")
            self.update(apply=finite)
            self.global_step += 1
            self.step_in_epoch += 1
            self.skips_in_a_row = self.skips_in_a_row + 1 if self.dropped else 0
            if self.skips_in_a_row >= SKIPS_IN_A_ROW_LIMIT:
                raise UserError(self.divergence(f"{self.skips_in_a_row} steps in a row had a non-finite value",
                                                self.global_step))
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{self.learning_rate():.4g}")
            if writer is not None and self.global_step % self.cfg.train.log_every == 0:
                writer.add_scalar("train/loss_step", values["loss"], self.global_step)
                self.log_step(writer)
            if self.stopped():
                break
            if self.step_in_epoch < self.steps_per_epoch and self.checkpoint_due():
                self.tally.seconds += time.time() - start
                self.save(outputs=False)
                start = time.time()
        bar.close()
        self.tally.seconds += time.time() - start
        figures = {"loss": self.tally.mean_loss(), **self.train_figures()}
        if self.skipping:
            figures.update({"skipped_batches": 0, **self.tally.skipped})
        return figures

    def checkpoint_due(self) -> bool:
        """Whether ``train.checkpoint_every_steps`` asks for a checkpoint at this step."""
        every = self.cfg.train.checkpoint_every_steps
        return every is not None and self.global_step % every == 0

    def evaluate(self) -> dict[str, Any]:
        """The task's metrics on the evaluation set (every process evaluates its share)."""
        d = self.cfg.data
        loader = evaluation_batches(self.eval_set, d.eval_batch_size, d.max_eval_batches, d.num_workers,
                                    pin_memory=self.device.type == "cuda")
        return self.task.evaluate(self.model, loader, self.device, amp=self.cfg.train.amp,
                                  input_scale=self.eval_input_scale)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run bit for bit, and its config (without ``max_steps``:
        where one invocation was told to stop is no property of the run)."""
        config = to_dict(self.cfg)
        config["train"]["max_steps"] = None
        return {"kind": self.kind, **self.training_state(), "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch, "global_step": self.global_step, "history": self.history,
                "stop_record": self.stop_record, "pending_record": self.pending_record,
                "skips_in_a_row": self.skips_in_a_row, "rng": process_rng_states(),
                "running": gather_objects(self.tally.state_dict()), "config": config}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; a checkpoint of the other kind (search, retrain) is a UserError."""
        kind = state.get("kind", self.kind)
        if kind != self.kind:
            raise UserError(f"{self.run_dir / CHECKPOINT_NAME} is a {kind} checkpoint, not a {self.kind} one: continue "
                            f"it with autoseg {kind} --resume {self.run_dir}")
        self.load_training_state(state)
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.history = state["global_step"], state["history"]
        self.skips_in_a_row = state.get("skips_in_a_row", 0)
        self.stop_record = state.get("stop_record")
        self.pending_record = state.get("pending_record")
        restore_process_rng_state(state["rng"])
        self.tally = self.new_tally()
        if "running" in state:  # checkpoints of earlier versions kept no running figures
            self.tally.load_state_dict(state["running"][rank()])
        self.saved_step = self.global_step

    def save(self, outputs: bool = True) -> None:
        """Write the checkpoint atomically (the main process), with :meth:`write_outputs` when
        ``outputs``; a model holding a NaN or an infinity is never written."""
        bad = non_finite_tensors(self.model)
        if bad:
            raise UserError(self.divergence(f"the model's {bad[0]} is not finite", self.global_step))
        state = self.state_dict()  # every process takes part: it gathers their RNG states
        on_main(lambda: save_checkpoint(state, self.run_dir / CHECKPOINT_NAME,
                                        self.write_outputs if outputs else None))
        self.saved_step = self.global_step

    def run(self) -> dict[str, Any]:
        """Train until the configured length or ``max_steps``; returns the last record."""
        if is_main():
            remove_interrupted_writes(self.run_dir, [CHECKPOINT_NAME, *self.output_files()])
        # a resumed run drops what the interrupted one logged after its checkpoint (the steps it redoes)
        purge = self.global_step + 1 if self.global_step else None
        writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge) if is_main() else None
        if not self.stopped():
            self.stop_record = None  # the run goes on from its stop
        record: dict[str, Any] = self.stop_record or (self.history[-1] if self.history else {})
        try:
            while self.pending_record is not None or not self.stopped():
                if self.pending_record is None:
                    self.model.train()
                    train = self.train_one_epoch(writer)
                    epoch = self.epoch + 1
                    complete = self.step_in_epoch >= self.steps_per_epoch
                    if complete:
                        self.end_epoch()
                        self.epoch, self.step_in_epoch = epoch, 0
                    if self.finished() or complete and self.should_evaluate():
                        self.pending_record = {"epoch": epoch, "train": train, "complete": complete}
                        self.save(outputs=False)  # an evaluation that fails loses none of the training
                        continue
                    stop = self.stopped()
                    if stop:
                        record = self.stop_record = self.stop_evaluation(epoch, train)
                    if complete:
                        self.tally = self.new_tally()
                    if stop:
                        self.save()
                    elif complete and self.checkpoint_due():
                        self.save(outputs=False)
                    continue
                pending = self.pending_record
                record = self.record(pending["epoch"], pending["train"], writer)
                if pending["complete"]:
                    self.tally = self.new_tally()
                self.pending_record = None
                self.save()
        except KeyboardInterrupt as interrupt:
            what = "continue with" if self.saved_step is not None else "start it over with"
            raise RunInterrupted(f"{self.kept()}; {what} --resume {self.run_dir}") from interrupt
        finally:
            if writer is not None:
                writer.close()
            if self.lock is not None:
                self.lock.release()
        return record

    def evaluation(self, epoch: int, train: dict[str, Any]) -> dict[str, Any]:
        """The record of an evaluation now, in (or after) epoch ``epoch`` with training figures ``train``."""
        broadcast_buffers(self.model)
        return {"epoch": epoch, "global_step": self.global_step, "seconds": self.tally.seconds,
                "train": train, "valid": self.evaluate(), **self.record_extras()}

    def record(self, epoch: int, train: dict[str, Any], writer: SummaryWriter | None) -> dict[str, Any]:
        """Evaluate, then add the record of ``epoch`` to the history (and log it)."""
        record = self.evaluation(epoch, train)
        self.after_record(record)
        if writer is not None:
            self.log(writer, record)
        self.history.append(record)
        return record

    def stop_evaluation(self, epoch: int, train: dict[str, Any]) -> dict[str, Any]:
        """The evaluation of a run stopped by ``max_steps`` where no record is due, for the user:
        printed, kept in the checkpoint as ``stop_record`` until the run goes on, never in the
        history, TensorBoard or the best checkpoint."""
        record = self.evaluation(epoch, train)
        if is_main():
            tqdm.write(f"{self.summary_line(record)} (stopped by --max-steps: not in the history)")
        return record

    def log(self, writer: SummaryWriter, record: dict[str, Any]) -> None:
        """The record's numbers to TensorBoard, a line on the console, then the subclass's extras."""
        step = self.global_step
        for split in ("train", "valid"):
            for key, value in record[split].items():
                if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
                    writer.add_scalar(f"{split}/{key}", value, step)
        tqdm.write(self.summary_line(record))
        self.log_extras(writer, record)

    def summary_line(self, record: dict[str, Any]) -> str:
        """A record on one line: position, training and validation loss and metric, seconds."""
        train, valid, metric = record["train"], record["valid"], self.task.metric
        train_metric = f" {metric} {train[metric]:.2f}" if metric in train else ""
        return (f"epoch {record['epoch']} step {record['global_step']}: train loss {train['loss']:.4f}{train_metric} "
                f"| valid loss {valid['loss']:.4f} {metric} {valid[metric]:.2f} | {record['seconds']:.1f}s")
