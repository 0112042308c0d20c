"""Evaluation passes shared by the search and retrain loops."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from autoseg.engine.distributed import is_main, sum_over_processes
from autoseg.inference import InferenceProtocol
from autoseg.metrics import ConfusionMeter


def _progress(loader: DataLoader) -> tqdm:
    """A transient progress bar over ``loader``, shown by the main process only."""
    return tqdm(loader, desc="eval", leave=False, dynamic_ncols=True, disable=None if is_main() else True)


def _logits(output: torch.Tensor | tuple) -> torch.Tensor:
    """The main logits of a model output (models with an auxiliary head return a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def evaluate_classification(model: nn.Module, loader: DataLoader, device: torch.device,
                            criterion: Callable, amp: bool = False) -> dict[str, float]:
    """Mean loss and top-1 accuracy (in %) over ``loader`` (over every process's loader in a
    run of several processes)."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for images, labels in _progress(loader):
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = _logits(model(images)).float()
        total_loss += criterion(logits, labels).item() * labels.numel()
        correct += (logits.argmax(1) == labels).sum().item()
        count += labels.numel()
    model.train()
    total_loss, correct, count = sum_over_processes([total_loss, correct, count])
    return {"loss": total_loss / max(count, 1), "acc": 100.0 * correct / max(count, 1)}


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: DataLoader, device: torch.device, criterion: Callable,
                          num_classes: int, amp: bool = False, input_scale: float = 1.0,
                          protocol: InferenceProtocol = InferenceProtocol()) -> dict:
    """Mean loss, mIoU and pixel accuracy (in %), and the per-class IoU over ``loader`` (over
    every process's loader in a run of several processes).

    With ``input_scale`` the model sees each image resized by that factor (the scale it was
    trained at, e.g. 0.5 for a search on half-resolution Cityscapes) and its logits are
    resized back, so the metrics are always computed on the full-size masks. ``protocol`` adds
    multi-scale, flipped or sliding-window inference (its scales multiply ``input_scale``); the
    default is plain inference.
    """
    model.eval()
    meter = ConfusionMeter(num_classes)
    total_loss, batches = 0.0, 0
    protocol = protocol.at_scale(input_scale)
    for images, masks in _progress(loader):
        images, masks = images.to(device), masks.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = protocol.logits(model, images)
        total_loss += criterion(logits, masks).item()
        batches += 1
        meter.update(logits, masks)
    model.train()
    meter.all_reduce()
    total_loss, batches = sum_over_processes([total_loss, batches])
    result = meter.compute()
    return {"loss": total_loss / max(batches, 1), "miou": 100.0 * result["miou"],
            "pixel_acc": 100.0 * result["pixel_acc"], "iou": result["iou_per_class"]}
