"""The bilevel search loop, shared by every search space and every search method.

Per step: when past the warm-up and the search method updates the architecture this epoch, one
architecture update on a batch of half B (the method's: :mod:`autoseg.search.methods`), then one
weight update (SGD, gradient clipping) on a batch of half A, in the method's context for weight
steps; in an fp16 run each of the two goes through its own gradient scaler
(:mod:`autoseg.utils.precision`). The method is told when an epoch starts and chooses the architecture
after every evaluation (with the task metric on batches of half B, when its rule needs one). The
weight learning rate follows a cosine schedule per epoch. A hierarchical search counts what its
decoded network costs (:mod:`autoseg.analysis.expected_cost`) and, with ``cost.target_madds``, adds the
cost term to the architecture loss. Every epoch ends (through
:class:`~autoseg.engine.run.TrainingRun`) with an evaluation, the architecture decoded once,
TensorBoard scalars and images, the architecture file, the history of every epoch's architecture
(:mod:`autoseg.search.arch_history`) and an atomic checkpoint; ``max_steps``
stops early (with a checkpoint of the position) and ``resume`` continues a stopped run exactly
where it stopped.
"""
from __future__ import annotations

import json
from itertools import repeat
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import Dataset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from autoseg.space.architecture import Architecture, architecture_from_dict
from autoseg.utils.compilation import compiled
from autoseg.config import SearchConfig
from autoseg.engine.distributed import data_parallel
from autoseg.engine.epoch_data import check_segmentation_batch_size, evaluation_batches, set_epoch
from autoseg.engine.run import TrainingRun, TrainStep
from autoseg.engine.search_setup import build_search_method
from autoseg.engine.task import Task
from autoseg.utils.errors import UserError
from autoseg.analysis.expected_cost import CostPenalty, build_trellis_cost, with_cost
from autoseg.utils.files import write_json
from autoseg.utils.precision import autocast, grad_scaler, load_scaler_state, scaled_backward, scaled_update
from autoseg.search.arch_history import (EVOLUTION_FIGURE, evolution_series, history_entry, history_figure,
                                         history_file,
                                         write_history)
from autoseg.search.architect import Batch
from autoseg.search.methods import UpdateTools
from autoseg.search.network import SearchNetwork


class SearchRun(TrainingRun):
    """One search: the supernet, its two optimisers and schedule, and the run directory it writes."""

    kind = "search"
    tracks_train_metric = True

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
        forward = compiled(self.model, cfg.train.compile)  # the training forward passes (--compile)
        self.train_model = data_parallel(forward, device)  # the weight steps' forward (gradients averaged)
        self.criterion = task.criterion()
        o, a = cfg.optimizer, cfg.arch_optimizer
        # foreach: one update of all weight tensors (torch's default on a GPU only; the same arithmetic)
        self.w_optimizer = torch.optim.SGD(self.model.weight_parameters(), lr=o.lr, momentum=o.momentum,
                                           weight_decay=o.weight_decay, foreach=True)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optimizer, T_max=cfg.train.epochs,
                                                                    eta_min=o.lr_min)
        self.a_optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=a.lr, betas=tuple(a.betas),
                                            weight_decay=a.weight_decay)
        # fp16: one gradient scaler per optimiser, so an overflow in one step skips only that step
        self.w_scaler, self.a_scaler = grad_scaler(device, cfg.train.amp), grad_scaler(device, cfg.train.amp)
        self.cost = build_trellis_cost(cfg, task.num_classes)  # None in the cifar mode
        self.method = build_search_method(cfg, self.model)  # gives the supernet the method's relaxation
        self.cost_penalty = (None if cfg.cost.target_madds is None
                             else CostPenalty(self.cost, self.model, cfg.cost))  # off: the papers' search
        self.method.prepare(UpdateTools(self.criterion, self.a_optimizer, self.w_optimizer, self.a_scaler,
                                        self.cost_penalty, forward))
        self.arch: Architecture = self.decode(evaluated=False)
        self.arch_history: list[dict[str, Any]] = []  # an entry per finished epoch (arch_history.history_entry)
        self.arch_loss: torch.Tensor | None = None

    def decode(self, evaluated: bool = True) -> Architecture:
        """The architecture the method selects now, with the decoded network's cost (hierarchical
        mode); without ``evaluated``, a selection rule that evaluates gives its last choice (or
        the supernet's decoding) instead, as ``autoseg decode`` of the checkpoint does."""
        return with_cost(self.method.select(self.evaluate_choices if evaluated else None), self.cost)

    def evaluate_choices(self, batches: int | None = None) -> float:
        """The task metric of the supernet as the method weights it now, on the first ``batches``
        batches of half B (all of it: None), augmented as in this epoch; the supernet is evaluated
        in eval mode and left in the mode it was in."""
        set_epoch(self.half_b, self.epoch)
        d = self.cfg.data
        loader = evaluation_batches(self.half_b, d.batch_size, batches, d.num_workers,
                                    pin_memory=self.device.type == "cuda")
        training = self.model.training
        metrics = self.task.evaluate(self.model, loader, self.device, amp=self.cfg.train.amp)
        self.model.train(training)
        return metrics[self.task.metric]

    def training_state(self) -> dict[str, Any]:
        """Supernet, both optimisers and their gradient scalers, the schedule, the search mode and the
        current architecture and the history of the architectures."""
        return {"model": self.model.state_dict(), "w_optimizer": self.w_optimizer.state_dict(),
                "a_optimizer": self.a_optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "w_scaler": self.w_scaler.state_dict(), "a_scaler": self.a_scaler.state_dict(),
                "mode": self.cfg.mode, "arch": self.arch.to_dict(),
                "arch_history": self.arch_history, "method": self.method.state_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state`."""
        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.a_optimizer.load_state_dict(state["a_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        load_scaler_state(self.w_scaler, state.get("w_scaler"))
        load_scaler_state(self.a_scaler, state.get("a_scaler"))
        self.method.load_state_dict(state.get("method", {}))  # checkpoints of earlier versions kept none
        self.arch = architecture_from_dict(state["arch"], "the checkpoint's architecture")
        self.arch_history = state.get("arch_history", [])  # checkpoints of earlier versions kept none

    def prepare_epoch(self) -> None:
        """Tell the supernet how far the search is (for what decays over it: the collapse guards),
        and the method that an epoch starts."""
        self.model.set_search_progress(self.epoch / self.cfg.train.epochs)
        self.method.start_epoch(self.epoch, self.evaluate_choices)

    def epoch_batches(self) -> Iterable[tuple[Batch, Batch | None]]:
        """(weight batch of half A, architecture batch of half B or None in the warm-up) per step."""
        weight_batches = self.epoch_loader(self.half_a)
        arch_batches = self.epoch_loader(self.half_b, offset=1) if self.searching_arch() else repeat(None)
        steps = range(self.step_in_epoch, self.steps_per_epoch)
        return ((weights, arch) for _, weights, arch in zip(steps, weight_batches, arch_batches))

    def searching_arch(self) -> bool:
        """Whether this epoch updates the architecture (it is past the warm-up, and the method
        updates it in this epoch)."""
        return self.epoch >= self.cfg.train.warmup_epochs and self.method.updates_architecture(self.epoch)

    def epoch_label(self) -> str:
        """Warm-up epochs say so on the progress bar."""
        return "" if self.searching_arch() else " (warm-up)"

    def train_step(self, batch: tuple[Batch, Batch | None]) -> TrainStep:
        """The architecture update on the batch of half B (when past the warm-up), then the
        forward pass of the weights on the batch of half A (in the method's context for weight
        steps) and its backward pass, clipped."""
        cfg, device = self.cfg, self.device
        (inputs, target), arch_batch = batch
        inputs, target = inputs.to(device, non_blocking=True), target.to(device, non_blocking=True)
        checks: dict[str, torch.Tensor] = {}
        self.arch_loss = None
        with autocast(device, cfg.train.amp):
            if arch_batch is not None:
                v_inputs, v_target = arch_batch
                checks = self.architecture_step((inputs, target), (v_inputs.to(device), v_target.to(device)))
            self.w_optimizer.zero_grad(set_to_none=True)
            self.mark_buffers()
        with self.method.weight_step(self.global_step), autocast(device, cfg.train.amp):
            logits = self.train_model(inputs)
            loss = self.criterion(logits.float(), target)
        grad_norm = scaled_backward(loss, self.w_optimizer, self.w_scaler, self.model.weight_parameters(),
                                    cfg.optimizer.grad_clip)
        return TrainStep(loss, None if self.w_scaler.is_enabled() else grad_norm, logits.detach().float(), target,
                         checks)

    def architecture_step(self, train_batch: Batch, valid_batch: Batch) -> dict[str, torch.Tensor]:
        """The method's architecture update; returns its loss and gradient norm to check with the weight
        step. Under ``nan_policy: skip`` they are checked at once instead, and a non-finite update
        is dropped before Adam applies it; in an fp16 run the gradient scaler checks it."""
        self.mark_buffers()
        loss, grads = self.method.architecture_gradient(train_batch, valid_batch, self.scheduler.get_last_lr()[0])
        self.arch_loss = loss
        if self.a_scaler.is_enabled():
            # fp16: the scaler skips an overflowed update itself (the scaled virtual step of the second
            # order can overflow into the loss too): nothing to check here
            self.method.apply(grads)
            return {}
        quantities = {"architecture loss": loss, "architecture gradient norm": torch.nn.utils.get_total_norm(grads)}
        if not self.skipping:
            self.method.apply(grads)
            return quantities
        if self.check(quantities)[1]:
            self.method.apply(grads)
        else:
            self.drop_update("skipped_arch_batches")
        return {}

    def update(self, apply: bool) -> None:
        """The weights' SGD step through their gradient scaler (the schedule steps per epoch)."""
        scaled_update(self.w_optimizer, self.w_scaler, apply)

    def learning_rate(self) -> float:
        """The weights' learning rate of this epoch."""
        return self.scheduler.get_last_lr()[0]

    def log_step(self, writer: SummaryWriter) -> None:
        """The architecture loss, read back only when logged: no device sync per step."""
        if self.arch_loss is not None:
            writer.add_scalar("search/arch_loss", self.arch_loss.item(), self.global_step)

    def train_figures(self) -> dict[str, Any]:
        """The epoch's learning rate and training metric (and dropped architecture updates)."""
        metric = self.task.metric
        figures = {"lr": self.learning_rate(), metric: self.task.metrics(self.tally.metrics_meter())[metric]}
        if self.skipping:
            figures["skipped_arch_batches"] = self.tally.skipped.get("skipped_arch_batches", 0)
        if self.cost_penalty is not None:
            with torch.no_grad():
                figures["expected_madds"] = self.cost.supernet_madds(self.model).item()
        return figures

    def end_epoch(self) -> None:
        """Step the cosine schedule."""
        self.scheduler.step()

    def after_record(self, record: dict[str, Any]) -> None:
        """Decode the architecture once per evaluation (every epoch) and add it to the history."""
        self.arch = self.decode()
        self.arch_history.append(history_entry(record["epoch"], self.arch, self.model))

    def output_files(self) -> list[str]:
        """The architecture file, its history and the history's figure."""
        return [self.arch.FILE_NAME, history_file(self.arch.FILE_NAME), EVOLUTION_FIGURE]

    def write_outputs(self, checkpoint: Path) -> None:
        """The decoded architecture (``arch.json`` or ``genotype.json``): of the evaluation's
        record, or at a stop the one decoded then (what ``autoseg decode`` of the checkpoint gives);
        the history of the finished epochs' architectures and its figure."""
        arch = self.arch if self.stop_record is None else self.decode(evaluated=False)
        write_json(arch.to_dict(), self.run_dir / arch.FILE_NAME)
        write_history(self.arch_history, self.run_dir, arch.FILE_NAME)

    def log_extras(self, writer: SummaryWriter, record: dict[str, Any]) -> None:
        """Pictures of the architecture parameters and of the decoded architecture, and its text;
        the mean op weights of each cell type and the figure of their history."""
        arch = self.arch
        for tag, image in self.model.figures(arch).items():
            writer.add_image(tag, image, self.global_step, dataformats="HWC")
        _, weights, _ = evolution_series(self.arch_history[-1:])
        for name, mean in weights.items():
            for op, weight in zip(self.model.primitives, mean[0]):
                writer.add_scalar(f"op_weights/{name}/{op}", weight, self.global_step)
        writer.add_image("arch/evolution", history_figure(self.arch_history), self.global_step, dataformats="HWC")
        essentials = {k: v for k, v in arch.to_dict().items() if k in ("normal", "reduce", "path", "cell", "cost")}
        if self.cost is not None:
            writer.add_scalar("search/decoded_madds", arch.cost["madds"], self.global_step)
        writer.add_text("arch", json.dumps(essentials), self.global_step)
        tqdm.write("architecture: " + json.dumps(essentials))
