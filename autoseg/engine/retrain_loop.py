"""Training a fixed architecture from scratch: the retrain loop (torchvision-reference style).

Segmentation follows the Auto-DeepLab protocol (SGD, poly learning rate stepped every
iteration, cross-entropy with ignore index 255, mIoU on the validation split); CIFAR-10 the
DARTS protocol (SGD, cosine per epoch, auxiliary head, drop-path increased linearly,
gradient clipping, top-1 on the test split). Every evaluation writes an atomic checkpoint (through
:class:`~autoseg.engine.run.TrainingRun`), and ``best.pt`` when the metric improved;
``max_steps`` stops early (with a checkpoint of the position) and ``resume`` continues.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data import Dataset
from torch.utils.tensorboard import SummaryWriter

from autoseg.utils.compilation import compiled
from autoseg.config import RetrainConfig
from autoseg.engine.distributed import data_parallel
from autoseg.engine.epoch_data import check_segmentation_batch_size
from autoseg.engine.run import TrainingRun, TrainStep
from autoseg.engine.task import Task
from autoseg.engine.trained import BEST_NAME, TrainedModelMeta
from autoseg.utils.errors import UserError
from autoseg.utils.files import atomic_write
from autoseg.losses import resolve_class_weights
from autoseg.utils.precision import (autocast, grad_scaler, load_scaler_state, scaled_backward, scaled_update,
                                     step_schedule)
from autoseg.utils.process import is_distributed


class RetrainRun(TrainingRun):
    """One retraining run: model, optimiser, schedule, and the run directory it writes."""

    kind = "retrain"

    def __init__(self, cfg: RetrainConfig, model: nn.Module, meta: TrainedModelMeta, task: Task, train_set: Dataset,
                 val_set: Dataset, run_dir: Path, device: torch.device):
        super().__init__(cfg, task, val_set, run_dir, device)
        self.meta, self.train_set = meta, train_set
        if cfg.train.sync_batchnorm and is_distributed() and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # statistics over the whole batch
        self.model = model.to(device)
        # the training forward (--compile: compiled; gradients averaged over the processes)
        self.train_model = data_parallel(compiled(self.model, cfg.train.compile), device)
        if task.segmentation:
            check_segmentation_batch_size(cfg.data.batch_size)
        o, t = cfg.optimizer, cfg.train
        self.steps_per_epoch = len(train_set) // cfg.data.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(f"the training split has {len(train_set)} samples, fewer than one batch of "
                            f"{cfg.data.batch_size}: lower --batch-size")
        self.total_steps = t.iterations or t.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay)
        if o.schedule == "poly":
            self.scheduler = torch.optim.lr_scheduler.PolynomialLR(self.optimizer, total_iters=self.total_steps,
                                                                   power=o.poly_power)
        elif o.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.epochs,
                                                                        eta_min=o.lr_min)
        else:
            raise UserError(f"optimizer.schedule must be poly or cosine, got {o.schedule!r}")
        # class weights are cached in the run directory; a new run's is claimed only after this, so its
        # cache is written with its first checkpoint (write_outputs)
        claimed = run_dir.is_dir()
        self.criterion = task.criterion(cfg.loss, train_set, run_dir if claimed else None).to(device)
        self.class_weights_to_cache = not claimed and cfg.loss.class_weights is not None
        self.scaler = grad_scaler(device, t.amp)
        self.best: dict[str, Any] = {"metric": task.metric, "value": None, "epoch": None}
        self.improved = False

    def training_state(self) -> dict[str, Any]:
        """The model and what rebuilds and describes it, the optimiser, its gradient scaler, the
        schedule, the best result."""
        return {"meta": self.meta.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "best": self.best}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        load_scaler_state(self.scaler, state.get("scaler"))
        self.best = state["best"]

    def finished(self) -> bool:
        """Done when the configured iterations (or epochs) are."""
        return self.global_step >= self.total_steps or super().finished()

    def loss(self, output: torch.Tensor | tuple, target: torch.Tensor) -> torch.Tensor:
        """The criterion, plus the weighted auxiliary-head loss when the model returns one."""
        if isinstance(output, (tuple, list)):
            main, auxiliary = output
            return (self.criterion(main.float(), target)
                    + self.cfg.model.auxiliary_weight * self.criterion(auxiliary.float(), target))
        return self.criterion(output.float(), target)

    def epoch_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The current epoch's batches from the step the run is at."""
        return self.epoch_loader(self.train_set)

    def prepare_epoch(self) -> None:
        """Drop-path probability increased linearly with the epoch (DARTS models)."""
        if hasattr(self.model, "drop_path_prob"):
            self.model.drop_path_prob = self.cfg.model.drop_path_prob * self.epoch / self.epochs

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> TrainStep:
        """Forward and backward pass of one batch, the gradient clipped when configured."""
        device = self.device
        inputs, target = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        self.mark_buffers()
        with autocast(device, self.cfg.train.amp):
            loss = self.loss(self.train_model(inputs), target)
        grad_norm = scaled_backward(loss, self.optimizer, self.scaler, self.model.parameters(),
                                    self.cfg.optimizer.grad_clip)
        return TrainStep(loss, None if self.scaler.is_enabled() else grad_norm)

    def update(self, apply: bool) -> None:
        """The SGD step through the gradient scaler, and the poly schedule's step (it follows the
        iterations, dropped or not)."""
        scaled_update(self.optimizer, self.scaler, apply)
        if self.cfg.optimizer.schedule == "poly":
            step_schedule(self.scheduler)

    def learning_rate(self) -> float:
        """The learning rate of the next step."""
        return self.optimizer.param_groups[0]["lr"]

    def log_step(self, writer: SummaryWriter) -> None:
        """The learning rate."""
        writer.add_scalar("train/lr", self.learning_rate(), self.global_step)

    def train_figures(self) -> dict[str, Any]:
        """The number of applied steps of the epoch, and the drop-path probability of DARTS models."""
        figures: dict[str, Any] = {"steps": self.tally.steps}
        if hasattr(self.model, "drop_path_prob"):
            figures["drop_path_prob"] = self.model.drop_path_prob
        return figures

    def end_epoch(self) -> None:
        """Step a per-epoch (cosine) schedule."""
        if self.cfg.optimizer.schedule == "cosine":
            self.scheduler.step()

    def should_evaluate(self) -> bool:
        """Every ``train.eval_every`` epochs."""
        return self.epoch % self.cfg.train.eval_every == 0

    def after_record(self, record: dict[str, Any]) -> None:
        """Keep track of the best validation metric."""
        value = record["valid"][self.task.metric]
        self.improved = self.best["value"] is None or value > self.best["value"]
        if self.improved:
            self.best = {"metric": self.task.metric, "value": value, "epoch": record["epoch"],
                         "global_step": self.global_step}

    def output_files(self) -> list[str]:
        """``best.pt``."""
        return [BEST_NAME]

    def write_outputs(self, checkpoint: Path) -> None:
        """Copy the new checkpoint to ``best.pt`` when the metric of a record improved (a stop's
        evaluation never counts); a new run's first outputs also cache its class weights."""
        if self.class_weights_to_cache:
            resolve_class_weights(self.cfg.loss, self.train_set, self.task.num_classes, self.run_dir)
            self.class_weights_to_cache = False
        if self.improved and self.stop_record is None:
            atomic_write(self.run_dir / BEST_NAME, lambda tmp: shutil.copyfile(checkpoint, tmp))
