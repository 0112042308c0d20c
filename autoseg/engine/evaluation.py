"""Evaluation passes shared by the search and retrain loops."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from autoseg.metrics import ConfusionMeter


def _logits(output: torch.Tensor | tuple) -> torch.Tensor:
    """The main logits of a model output (models with an auxiliary head return a tuple)."""
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def evaluate_classification(model: nn.Module, loader: DataLoader, device: torch.device,
                            criterion: Callable, max_batches: int | None = None, amp: bool = False) -> dict[str, float]:
    """Mean loss and top-1 accuracy (in %) over ``loader``."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for i, (images, labels) in enumerate(tqdm(loader, desc="eval", leave=False, dynamic_ncols=True, disable=None)):
        if max_batches is not None and i >= max_batches:
            break
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = _logits(model(images)).float()
        total_loss += criterion(logits, labels).item() * labels.numel()
        correct += (logits.argmax(1) == labels).sum().item()
        count += labels.numel()
    model.train()
    return {"loss": total_loss / max(count, 1), "acc": 100.0 * correct / max(count, 1)}


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: DataLoader, device: torch.device, criterion: Callable,
                          num_classes: int, max_batches: int | None = None, amp: bool = False,
                          input_scale: float = 1.0) -> dict:
    """Mean loss, mIoU and pixel accuracy (in %), and the per-class IoU over ``loader``.

    With ``input_scale`` the model sees each image resized by that factor (the scale it was
    trained at, e.g. 0.5 for a search on half-resolution Cityscapes) and its logits are
    resized back, so the metrics are always computed on the full-size masks.
    """
    model.eval()
    meter = ConfusionMeter(num_classes)
    total_loss, batches = 0.0, 0
    for i, (images, masks) in enumerate(tqdm(loader, desc="eval", leave=False, dynamic_ncols=True, disable=None)):
        if max_batches is not None and i >= max_batches:
            break
        images, masks = images.to(device), masks.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if input_scale == 1.0:
                logits = _logits(model(images)).float()
            else:
                small = F.interpolate(images, scale_factor=input_scale, mode="bilinear", align_corners=False)
                logits = F.interpolate(_logits(model(small)).float(), size=masks.shape[-2:], mode="bilinear",
                                       align_corners=False)
        total_loss += criterion(logits, masks).item()
        batches += 1
        meter.update(logits, masks)
    model.train()
    result = meter.compute()
    return {"loss": total_loss / max(batches, 1), "miou": 100.0 * result["miou"],
            "pixel_acc": 100.0 * result["pixel_acc"], "iou": result["iou_per_class"]}
