"""The bilevel search loop, shared by the CIFAR-10 cell search and the hierarchical search.

Per step: when past the warm-up, one architecture update on a batch of half B (the
architect), then one weight update (SGD, gradient clipping) on a batch of half A. The
weight learning rate follows a cosine schedule per epoch. Every epoch ends with an
evaluation, the decoded architecture, TensorBoard scalars and images, and an atomic
checkpoint; ``max_steps`` stops early (with the same outputs) and ``resume`` continues a
stopped run exactly where it stopped.
"""
from __future__ import annotations

import json
import time
from itertools import repeat
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from autoseg.config import SearchConfig, to_dict
from autoseg.engine.checkpoint import CHECKPOINT_NAME, save_checkpoint, write_json
from autoseg.engine.distributed import (broadcast_buffers, data_parallel, is_main,
                                        process_rng_states, restore_process_rng_state, sum_over_processes)
from autoseg.engine.epoch_data import check_segmentation_batch_size, epoch_batches, evaluation_batches, set_epoch
from autoseg.engine.search_tasks import SearchTask
from autoseg.errors import UserError
from autoseg.metrics import ConfusionMeter
from autoseg.search.architect import Architect


class SearchRun:
    """One search: the task, its optimisers and schedule, and the run directory it writes."""

    def __init__(self, cfg: SearchConfig, task: SearchTask, data: tuple[Dataset, Dataset, Dataset], run_dir: Path,
                 device: torch.device):
        """``data``: half A (weights), half B (architecture) and the held-out evaluation set."""
        self.cfg, self.task, self.run_dir, self.device = cfg, task, run_dir, device
        self.half_a, self.half_b, self.held_out = data
        if min(len(self.half_a), len(self.half_b)) < cfg.data.batch_size:
            raise UserError(f"the halves of the training split have {len(self.half_a)} and {len(self.half_b)} "
                            f"samples, fewer than one batch of {cfg.data.batch_size}: use more data or a smaller "
                            "--batch-size")
        if task.metric == "miou":
            check_segmentation_batch_size(cfg.data.batch_size)
        self.model = task.model.to(device)
        self.train_model = data_parallel(self.model, device)  # the weight steps' forward (gradients averaged)
        o, a = cfg.optimizer, cfg.arch_optimizer
        self.w_optimizer = torch.optim.SGD(self.model.weight_parameters(), lr=o.lr, momentum=o.momentum,
                                           weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optimizer, T_max=cfg.train.epochs,
                                                                    eta_min=o.lr_min)
        self.a_optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=a.lr, betas=tuple(a.betas),
                                            weight_decay=a.weight_decay)
        self.architect = Architect(self.model, task.criterion, self.a_optimizer, self.w_optimizer,
                                   unrolled=cfg.train.unrolled)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: list[dict[str, Any]] = []

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run bit for bit."""
        return {"model": self.model.state_dict(), "w_optimizer": self.w_optimizer.state_dict(),
                "a_optimizer": self.a_optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "history": self.history, "rng": process_rng_states(), "config": to_dict(self.cfg),
                "mode": self.cfg.mode,
                "arch": self.task.decode()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.a_optimizer.load_state_dict(state["a_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.history = state["global_step"], state["history"]
        restore_process_rng_state(state["rng"])

    def save(self) -> None:
        """Write the checkpoint and the decoded architecture atomically (the main process)."""
        state = self.state_dict()  # every process takes part: it gathers their RNG states
        if is_main():
            save_checkpoint(state, self.run_dir / CHECKPOINT_NAME)
            write_json(self.task.decode(), self.run_dir / self.task.artifact)

    # -- loop ----------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle_seed: int, skip: int = 0) -> DataLoader:
        d = self.cfg.data
        return epoch_batches(dataset, d.batch_size, shuffle_seed, skip, d.num_workers,
                             pin_memory=self.device.type == "cuda")

    def train_one_epoch(self, writer: SummaryWriter | None) -> dict[str, float] | None:
        """Run (the rest of) the current epoch; returns its training metrics, or None if
        ``max_steps`` stopped it first."""
        cfg, device = self.cfg, self.device
        self.model.set_search_progress(self.epoch / cfg.train.epochs)
        seed = cfg.train.seed * 100_003 + self.epoch
        half_a, half_b = self.half_a, self.half_b
        for dataset in (half_a, half_b):
            set_epoch(dataset, self.epoch)
        steps = min(len(half_a), len(half_b)) // cfg.data.batch_size
        search_arch = self.epoch >= cfg.train.warmup_epochs
        weight_batches = self._loader(half_a, seed, self.step_in_epoch)
        arch_batches = self._loader(half_b, seed + 1, self.step_in_epoch) if search_arch else repeat(None)
        # the halves may differ by a batch (odd lengths): an epoch is as long as the shorter one
        batches = zip(range(self.step_in_epoch, steps), weight_batches, arch_batches)
        lr = self.scheduler.get_last_lr()[0]
        totals = {"loss": 0.0, "count": 0}
        meter = ConfusionMeter(self.task.num_classes) if self.task.metric == "miou" else None
        correct = 0
        bar = tqdm(batches, total=steps, initial=self.step_in_epoch, dynamic_ncols=True,
                   disable=None if is_main() else True,
                   desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}" + ("" if search_arch else " (warm-up)"))
        for _, (inputs, target), arch_batch in bar:
            inputs, target = inputs.to(device, non_blocking=True), target.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.amp):
                if arch_batch is not None:
                    v_inputs, v_target = arch_batch
                    arch_loss = self.architect.step((inputs, target), (v_inputs.to(device), v_target.to(device)), lr)
                    if writer is not None:
                        writer.add_scalar("search/arch_loss", arch_loss.item(), self.global_step)
                self.w_optimizer.zero_grad(set_to_none=True)
                logits = self.train_model(inputs)
                loss = self.task.criterion(logits.float(), target)
            loss.backward()
            if cfg.optimizer.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.weight_parameters(), cfg.optimizer.grad_clip)
            self.w_optimizer.step()
            self.global_step += 1
            self.step_in_epoch += 1
            totals["loss"] += loss.item()
            totals["count"] += 1
            if meter is not None:
                meter.update(logits.detach().float(), target)
            else:
                correct += (logits.argmax(1) == target).float().mean().item()
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.4g}")
            if writer is not None and self.global_step % cfg.train.log_every == 0:
                writer.add_scalar("train/loss_step", loss.item(), self.global_step)
            if cfg.train.max_steps is not None and self.global_step >= cfg.train.max_steps:
                break
        bar.close()
        loss_sum, count, correct = sum_over_processes([totals["loss"], totals["count"], correct])
        result = {"loss": loss_sum / max(count, 1), "lr": lr}
        if meter is not None:
            meter.all_reduce()
            result["miou"] = 100.0 * meter.compute()["miou"]
        else:
            result["acc"] = 100.0 * correct / max(count, 1)
        if self.step_in_epoch < steps:
            return None if not totals["count"] else {**result, "partial": True}
        return result

    def run(self) -> dict[str, Any]:
        """Search until the configured epochs or ``max_steps``; returns the last epoch's record."""
        cfg = self.cfg
        writer = (SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.global_step or None)
                  if is_main() else None)
        eval_loader = evaluation_batches(self.held_out, cfg.data.eval_batch_size, cfg.data.max_eval_batches,
                                         cfg.data.num_workers)
        record: dict[str, Any] = self.history[-1] if self.history else {}
        try:
            while self.epoch < cfg.train.epochs:
                if cfg.train.max_steps is not None and self.global_step >= cfg.train.max_steps:
                    break
                start = time.time()
                train = self.train_one_epoch(writer)
                finished = train is not None and not train.get("partial")
                if finished:
                    self.scheduler.step()
                broadcast_buffers(self.model)
                valid = self.task.evaluate(self.model, eval_loader, self.device, amp=cfg.train.amp)
                record = {"epoch": self.epoch + 1, "global_step": self.global_step, "seconds": time.time() - start,
                          "train": train, "valid": {k: v for k, v in valid.items() if k != "iou"},
                          "arch": self.task.decode()}
                if writer is not None:
                    self._log(writer, record)
                if finished:
                    self.epoch += 1
                    self.step_in_epoch = 0
                self.history.append({k: v for k, v in record.items() if k != "arch"})
                self.save()
        finally:
            if writer is not None:
                writer.close()
        return record

    def _log(self, writer: SummaryWriter, record: dict[str, Any]) -> None:
        step = self.global_step
        for split in ("train", "valid"):
            for key, value in (record[split] or {}).items():
                if isinstance(value, (int, float)) and key != "partial":
                    writer.add_scalar(f"{split}/{key}", value, step)
        for tag, image in self.task.images().items():
            writer.add_image(tag, image, step, dataformats="HWC")
        arch = json.dumps({k: v for k, v in record["arch"].items() if k in ("normal", "reduce", "path", "cell")})
        writer.add_text("arch", arch, step)
        train, valid = record["train"] or {}, record["valid"]
        metric = self.task.metric
        tqdm.write(f"epoch {record['epoch']} step {step}: train loss {train.get('loss', float('nan')):.4f} "
                   f"{metric} {train.get(metric, float('nan')):.2f} | valid loss {valid['loss']:.4f} "
                   f"{metric} {valid[metric]:.2f} | {record['seconds']:.1f}s")
        tqdm.write("architecture: " + arch)

