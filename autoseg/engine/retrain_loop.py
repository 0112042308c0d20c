"""Training a fixed architecture from scratch: the retrain loop (torchvision-reference style).

Segmentation follows the Auto-DeepLab protocol (SGD, poly learning rate stepped every
iteration, cross-entropy with ignore index 255, mIoU on the validation split); CIFAR-10 the
DARTS protocol (SGD, cosine per epoch, auxiliary head, drop-path increased linearly,
gradient clipping, top-1 on the test split). Every evaluation writes an atomic checkpoint, and
``best.pt`` when the metric improved; ``max_steps`` stops early and ``resume`` continues.
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from autoseg.config import RetrainConfig, to_dict
from autoseg.engine.checkpoint import CHECKPOINT_NAME, save_checkpoint
from autoseg.engine.distributed import (broadcast_buffers, data_parallel, is_distributed, is_main,
                                        process_rng_states, restore_process_rng_state, sum_over_processes)
from autoseg.engine.epoch_data import check_segmentation_batch_size, epoch_batches, evaluation_batches, set_epoch
from autoseg.engine.evaluation import evaluate_classification, evaluate_segmentation
from autoseg.errors import UserError
from autoseg.losses import training_criterion

BEST_NAME = "best.pt"


class RetrainRun:
    """One retraining run: model, optimiser, schedule, and the run directory it writes."""

    def __init__(self, cfg: RetrainConfig, model: nn.Module, meta: dict[str, Any], train_set: Dataset,
                 run_dir: Path, device: torch.device):
        self.cfg, self.meta, self.train_set, self.run_dir, self.device = cfg, meta, train_set, run_dir, device
        if cfg.train.sync_batchnorm and is_distributed() and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # statistics over the whole batch
        self.model = model.to(device)
        self.train_model = data_parallel(self.model, device)  # the training forward (gradients averaged)
        self.segmentation = meta["task"] == "segmentation"
        if self.segmentation:
            check_segmentation_batch_size(cfg.data.batch_size)
        self.metric = "miou" if self.segmentation else "acc"
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
        self.criterion = training_criterion(cfg.loss, meta["task"], train_set, meta["num_classes"], run_dir).to(device)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"metric": self.metric, "value": None, "epoch": None}

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: what resumes the run, and what rebuilds and describes the model."""
        return {**self.meta, "kind": "retrain", "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "history": self.history, "best": self.best, "rng": process_rng_states(),
                "config": to_dict(self.cfg)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.history, self.best = state["history"], state["best"]
        restore_process_rng_state(state["rng"])

    def save(self, best: bool) -> None:
        """Write the checkpoint atomically, and copy it to ``best.pt`` when ``best`` (the main process)."""
        state = self.state_dict()  # every process takes part: it gathers their RNG states
        if not is_main():
            return
        save_checkpoint(state, self.run_dir / CHECKPOINT_NAME)
        if best:
            shutil.copyfile(self.run_dir / CHECKPOINT_NAME, self.run_dir / f".{BEST_NAME}.tmp")
            (self.run_dir / f".{BEST_NAME}.tmp").replace(self.run_dir / BEST_NAME)

    # -- loop ----------------------------------------------------------------------------
    def loss(self, output: torch.Tensor | tuple, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, plus the weighted auxiliary-head loss when the model returns one."""
        if isinstance(output, (tuple, list)):
            main, auxiliary = output
            return (self.criterion(main.float(), target)
                    + self.cfg.model.auxiliary_weight * self.criterion(auxiliary.float(), target))
        return self.criterion(output.float(), target)

    def _stop(self) -> bool:
        limit = self.cfg.train.max_steps
        return self.global_step >= self.total_steps or (limit is not None and self.global_step >= limit)

    def train_one_epoch(self, writer: SummaryWriter | None) -> dict[str, float]:
        """Run (the rest of) the current epoch, or until a step limit."""
        cfg, device = self.cfg, self.device
        set_epoch(self.train_set, self.epoch)
        if hasattr(self.model, "drop_path_prob"):
            self.model.drop_path_prob = cfg.model.drop_path_prob * self.epoch / self.epochs
        batches = epoch_batches(self.train_set, cfg.data.batch_size, cfg.train.seed * 100_003 + self.epoch,
                                self.step_in_epoch, cfg.data.num_workers, pin_memory=device.type == "cuda")
        self.model.train()
        total, count = 0.0, 0
        bar = tqdm(batches, total=self.steps_per_epoch, initial=self.step_in_epoch, dynamic_ncols=True,
                   disable=None if is_main() else True,
                   desc=f"epoch {self.epoch + 1}/{self.epochs}")
        for inputs, target in bar:
            inputs, target = inputs.to(device, non_blocking=True), target.to(device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.amp):
                loss = self.loss(self.train_model(inputs), target)
            loss.backward()
            if cfg.optimizer.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optimizer.grad_clip)
            self.optimizer.step()
            if cfg.optimizer.schedule == "poly":
                self.scheduler.step()
            self.global_step += 1
            self.step_in_epoch += 1
            total, count = total + loss.item(), count + 1
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.4g}")
            if writer is not None and self.global_step % cfg.train.log_every == 0:
                writer.add_scalar("train/loss_step", loss.item(), self.global_step)
                writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.global_step)
            if self._stop():
                break
        bar.close()
        total, count_all = sum_over_processes([total, count])  # every process runs the same number of steps
        result = {"loss": total / max(count_all, 1), "steps": count}
        if hasattr(self.model, "drop_path_prob"):
            result["drop_path_prob"] = self.model.drop_path_prob
        return result

    def evaluate(self, loader: DataLoader) -> dict[str, Any]:
        """The validation metrics of the current weights."""
        cfg = self.cfg
        if self.segmentation:
            return evaluate_segmentation(self.model, loader, self.device, self.criterion, self.meta["num_classes"],
                                         cfg.train.amp)
        return evaluate_classification(self.model, loader, self.device, self.criterion, cfg.train.amp)

    def run(self, val_set: Dataset) -> dict[str, Any]:
        """Train until the configured length or ``max_steps``; returns the last record."""
        cfg = self.cfg
        loader = evaluation_batches(val_set, cfg.data.eval_batch_size, cfg.data.max_eval_batches,
                                    cfg.data.num_workers)
        writer = (SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.global_step or None)
                  if is_main() else None)
        record: dict[str, Any] = self.history[-1] if self.history else {}
        try:
            while not self._stop():
                start = time.time()
                train = self.train_one_epoch(writer)
                finished = self.step_in_epoch >= self.steps_per_epoch
                if finished:
                    if cfg.optimizer.schedule == "cosine":
                        self.scheduler.step()
                    self.epoch += 1
                    self.step_in_epoch = 0
                if finished and self.epoch % cfg.train.eval_every and not self._stop():
                    continue
                broadcast_buffers(self.model)
                valid = self.evaluate(loader)
                record = {"epoch": self.epoch, "global_step": self.global_step, "seconds": time.time() - start,
                          "train": train, "valid": valid}
                if writer is not None:
                    self._log(writer, record)
                self.history.append(record)
                improved = self.best["value"] is None or valid[self.metric] > self.best["value"]
                if improved:
                    self.best = {"metric": self.metric, "value": valid[self.metric], "epoch": self.epoch,
                                 "global_step": self.global_step}
                self.save(best=improved)
        finally:
            if writer is not None:
                writer.close()
        return record

    def _log(self, writer: SummaryWriter, record: dict[str, Any]) -> None:
        step = self.global_step
        writer.add_scalar("train/loss", record["train"]["loss"], step)
        for key, value in record["valid"].items():
            if isinstance(value, float):
                writer.add_scalar(f"valid/{key}", value, step)
        metric = self.metric
        tqdm.write(f"epoch {record['epoch']} step {step}: train loss {record['train']['loss']:.4f} | valid loss "
                   f"{record['valid']['loss']:.4f} {metric} {record['valid'][metric]:.2f} | {record['seconds']:.1f}s")

