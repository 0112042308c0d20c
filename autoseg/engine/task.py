"""What a dataset's task asks of a training loop: the criterion, the evaluation and the metric.

Datasets declare their task (``segmentation`` or ``classification``, see
:mod:`autoseg.data`); :func:`build_task` turns that into a :class:`Task`, which the search
loop, the retrain loop and ``tools/evaluate.py`` all use, so that the switch between the two
tasks is written once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from autoseg.data import dataset_num_classes, dataset_task
from autoseg.config import LossConfig
from autoseg.engine.epoch_data import SizeGroups
from autoseg.data.transforms import IGNORE_INDEX
from autoseg.evaluation.test_time import InferenceProtocol
from autoseg.losses import training_criterion
from autoseg.evaluation.metrics import AccuracyMeter, ConfusionMeter
from autoseg.utils.precision import autocast
from autoseg.utils.process import is_main, sum_over_processes

TASKS = ("segmentation", "classification")


def main_logits(output: torch.Tensor | tuple) -> torch.Tensor:
    """The main logits of a model output (models with an auxiliary head return a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


@dataclass(frozen=True)
class Task:
    """Segmentation (per-pixel classes, ``ignore_index`` unlabelled, mIoU) or classification
    (one class per image, top-1 accuracy)."""

    kind: str
    num_classes: int
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        if self.kind not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.kind!r}")

    @property
    def segmentation(self) -> bool:
        """Whether this is the segmentation task."""
        return self.kind == "segmentation"

    @property
    def metric(self) -> str:
        """The metric that ranks models: ``miou`` or ``acc`` (both in %)."""
        return "miou" if self.segmentation else "acc"

    def criterion(self, loss: LossConfig | None = None, train_set: Dataset | None = None,
                  cache_dir: Path | None = None) -> nn.Module:
        """The training loss: by default that of both papers, cross-entropy (ignoring unlabelled
        pixels); for segmentation the configured ``loss`` (class weights computed from
        ``train_set`` and cached in ``cache_dir`` when asked for; see :mod:`autoseg.losses`)."""
        return training_criterion(loss or LossConfig(), self.kind, train_set, self.num_classes, cache_dir)

    def meter(self) -> ConfusionMeter | AccuracyMeter:
        """A fresh accumulator of the task's metric."""
        return ConfusionMeter(self.num_classes, self.ignore_index) if self.segmentation else AccuracyMeter()

    def metrics(self, meter: ConfusionMeter | AccuracyMeter) -> dict[str, Any]:
        """The meter's results in %: ``miou``, ``pixel_acc`` and ``iou`` (per class, fractions)
        for segmentation, ``acc`` for classification."""
        result = meter.compute()
        if not self.segmentation:
            return {"acc": 100.0 * result["acc"]}
        return {"miou": 100.0 * result["miou"], "pixel_acc": 100.0 * result["pixel_acc"],
                "iou": result["iou_per_class"]}

    def loss_sum(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
        """Summed cross-entropy of a batch and the number of samples (or labelled pixels) it
        covers, so that a mean over many batches and processes is divided once."""
        total = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="sum")
        count = int((target != self.ignore_index).sum()) if self.segmentation else target.numel()
        return float(total), count

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, device: torch.device, amp: str | None = None,
                 input_scale: float = 1.0, protocol: InferenceProtocol = InferenceProtocol()) -> dict[str, Any]:
        """The model's mean loss and metrics (:meth:`metrics`) over ``loader`` (of ``(images, targets)``
        batches, or of :class:`~autoseg.engine.epoch_data.SizeGroups` of them), in eval mode
        (left in eval mode); over every process's loader in a run of several processes.

        Segmentation: with ``input_scale`` the model sees each image resized by that factor (the
        scale it was trained at, e.g. 0.5 for a search on half-resolution Cityscapes) and its
        logits are resized back, so the metrics are always computed on the full-size masks;
        ``protocol`` adds multi-scale, flipped or sliding-window inference (its scales multiply
        ``input_scale``). ``amp`` (``bf16``, ``fp16``) runs the forward passes in autocast.
        """
        protocol = protocol.at_scale(input_scale)
        model.eval()
        meter = self.meter()
        loss, count = 0.0, 0
        batches = tqdm(loader, desc="eval", leave=False, dynamic_ncols=True, disable=None if is_main() else True)
        for batch in batches:
            for images, target in batch if isinstance(batch, SizeGroups) else [batch]:
                images, target = images.to(device), target.to(device)
                with autocast(device, amp):
                    logits = (protocol.logits(model, images) if self.segmentation
                              else main_logits(model(images)).float())
                batch_loss, batch_count = self.loss_sum(logits, target)
                loss, count = loss + batch_loss, count + batch_count
                meter.update(logits, target)
        meter.all_reduce()
        loss, count = sum_over_processes([loss, count])
        return {"loss": loss / max(count, 1), **self.metrics(meter)}


def build_task(dataset: str, num_classes: int | None = None) -> Task:
    """The task of dataset ``dataset`` (its declared task and class count; ``num_classes`` for
    datasets without a fixed one)."""
    return Task(dataset_task(dataset), dataset_num_classes(dataset, num_classes))
