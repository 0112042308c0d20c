"""The bilevel search loop, shared by the CIFAR-10 cell search and the hierarchical search.

Per step: when past the warm-up, one architecture update on a batch of half B (the
architect), then one weight update (SGD, gradient clipping) on a batch of half A; in an fp16
run each of the two goes through its own gradient scaler (:mod:`autoseg.precision`). The
weight learning rate follows a cosine schedule per epoch. Every epoch ends (through
:class:`~autoseg.engine.run.TrainingRun`) with an evaluation, the architecture decoded once,
TensorBoard scalars and images, the architecture file and an atomic checkpoint; ``max_steps``
stops early (with the same outputs) and ``resume`` continues a stopped run exactly where it
stopped.
"""
from __future__ import annotations

import json
from itertools import repeat
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from autoseg.architecture import Architecture
from autoseg.config import SearchConfig
from autoseg.engine.distributed import data_parallel
from autoseg.engine.epoch_data import check_segmentation_batch_size
from autoseg.engine.run import TrainingRun
from autoseg.engine.task import Task
from autoseg.errors import UserError
from autoseg.files import write_json
from autoseg.precision import autocast, grad_scaler, load_scaler_state, scaled_step
from autoseg.process import sum_over_processes
from autoseg.search.architect import Architect
from autoseg.search.network import SearchNetwork


class SearchRun(TrainingRun):
    """One search: the supernet, its two optimisers and schedule, and the run directory it writes."""

    kind = "search"

    def __init__(self, cfg: SearchConfig, network: SearchNetwork, task: Task,
                 data: tuple[Dataset, Dataset, Dataset], run_dir: Path, device: torch.device):
        """``data``: half A (weights), half B (architecture) and the held-out evaluation set."""
        self.half_a, self.half_b, held_out = data
        super().__init__(cfg, task, held_out, run_dir, device)
        if min(len(self.half_a), len(self.half_b)) < cfg.data.batch_size:
            raise UserError(f"the halves of the training split have {len(self.half_a)} and {len(self.half_b)} "
                            f"samples, fewer than one batch of {cfg.data.batch_size}: use more data or a smaller "
                            "--batch-size")
        if task.segmentation:
            check_segmentation_batch_size(cfg.data.batch_size)
        # the halves may differ by a sample (odd lengths): an epoch is as long as the shorter one
        self.steps_per_epoch = min(len(self.half_a), len(self.half_b)) // cfg.data.batch_size
        self.epochs = cfg.train.epochs
        self.eval_input_scale = cfg.data.scale or 1.0  # the supernet sees images at the search scale
        self.model: SearchNetwork = network.to(device)
        self.train_model = data_parallel(self.model, device)  # the weight steps' forward (gradients averaged)
        self.criterion = task.criterion()
        o, a = cfg.optimizer, cfg.arch_optimizer
        self.w_optimizer = torch.optim.SGD(self.model.weight_parameters(), lr=o.lr, momentum=o.momentum,
                                           weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optimizer, T_max=cfg.train.epochs,
                                                                    eta_min=o.lr_min)
        self.a_optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=a.lr, betas=tuple(a.betas),
                                            weight_decay=a.weight_decay)
        # fp16: one gradient scaler per optimiser, so an overflow in one step skips only that step
        self.w_scaler, self.a_scaler = grad_scaler(device, cfg.train.amp), grad_scaler(device, cfg.train.amp)
        self.architect = Architect(self.model, self.criterion, self.a_optimizer, self.w_optimizer,
                                   unrolled=cfg.train.unrolled, scaler=self.a_scaler)
        self.arch: Architecture = self.model.decode()

    def training_state(self) -> dict[str, Any]:
        """Supernet, both optimisers and their gradient scalers, the schedule, the search mode and the
        current architecture."""
        return {"model": self.model.state_dict(), "w_optimizer": self.w_optimizer.state_dict(),
                "a_optimizer": self.a_optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "w_scaler": self.w_scaler.state_dict(), "a_scaler": self.a_scaler.state_dict(),
                "mode": self.cfg.mode, "arch": self.arch.to_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state`."""
        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.a_optimizer.load_state_dict(state["a_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        load_scaler_state(self.w_scaler, state.get("w_scaler"))
        load_scaler_state(self.a_scaler, state.get("a_scaler"))
        self.arch = self.model.decode()

    def train_one_epoch(self, writer: SummaryWriter | None) -> dict[str, Any]:
        """Run (the rest of) the current epoch: architecture then weight step, batch by batch."""
        cfg, device = self.cfg, self.device
        self.model.set_search_progress(self.epoch / cfg.train.epochs)
        search_arch = self.epoch >= cfg.train.warmup_epochs
        weight_batches = self.epoch_loader(self.half_a)
        arch_batches = self.epoch_loader(self.half_b, offset=1) if search_arch else repeat(None)
        batches = zip(range(self.step_in_epoch, self.steps_per_epoch), weight_batches, arch_batches)
        lr = self.scheduler.get_last_lr()[0]
        loss_sum, steps = 0.0, 0
        meter = self.task.meter()
        bar = self.progress(batches, "" if search_arch else " (warm-up)")
        for _, (inputs, target), arch_batch in bar:
            inputs, target = inputs.to(device, non_blocking=True), target.to(device, non_blocking=True)
            with autocast(device, cfg.train.amp):
                if arch_batch is not None:
                    v_inputs, v_target = arch_batch
                    arch_loss = self.architect.step((inputs, target), (v_inputs.to(device), v_target.to(device)), lr)
                self.w_optimizer.zero_grad(set_to_none=True)
                logits = self.train_model(inputs)
                loss = self.criterion(logits.float(), target)
            scaled_step(loss, self.w_optimizer, self.w_scaler, self.model.weight_parameters(), cfg.optimizer.grad_clip)
            self.global_step += 1
            self.step_in_epoch += 1
            loss_value = loss.item()
            loss_sum, steps = loss_sum + loss_value, steps + 1
            meter.update(logits.detach().float(), target)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.4g}")
            if writer is not None and self.global_step % cfg.train.log_every == 0:
                writer.add_scalar("train/loss_step", loss_value, self.global_step)
                if arch_batch is not None:  # read back only when logged: no device sync per step
                    writer.add_scalar("search/arch_loss", arch_loss.item(), self.global_step)
            if self.stopped():
                break
        bar.close()
        meter.all_reduce()
        loss_sum, steps = sum_over_processes([loss_sum, steps])
        metric = self.task.metric
        return {"loss": loss_sum / max(steps, 1), "lr": lr, metric: self.task.metrics(meter)[metric]}

    def end_epoch(self) -> None:
        """Step the cosine schedule."""
        self.scheduler.step()

    def after_record(self, record: dict[str, Any]) -> None:
        """Decode the architecture once per evaluation."""
        self.arch = self.model.decode()

    def write_outputs(self) -> None:
        """The decoded architecture (``arch.json`` or ``genotype.json``)."""
        write_json(self.arch.to_dict(), self.run_dir / self.arch.FILE_NAME)

    def log_extras(self, writer: SummaryWriter, record: dict[str, Any]) -> None:
        """Pictures of the architecture parameters and of the decoded architecture, and its text."""
        arch = self.arch
        for tag, image in self.model.figures(arch).items():
            writer.add_image(tag, image, self.global_step, dataformats="HWC")
        essentials = {k: v for k, v in arch.to_dict().items() if k in ("normal", "reduce", "path", "cell")}
        writer.add_text("arch", json.dumps(essentials), self.global_step)
        tqdm.write("architecture: " + json.dumps(essentials))
