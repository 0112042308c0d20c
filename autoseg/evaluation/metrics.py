"""Segmentation metrics from a confusion matrix: small pure functions plus an accumulator.

The confusion matrix has one row per target class and one column per predicted class, so
``cm[t, p]`` counts pixels of class ``t`` predicted as ``p``. Pixels whose target equals
``ignore_index`` are left out.
"""
from __future__ import annotations

import torch

from autoseg.utils.process import sum_tensor_


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Confusion matrix ``(C, C)`` (int64; rows = target, columns = prediction).

    Args:
        pred: integer class predictions, any shape.
        target: integer labels, same shape as ``pred``; ``ignore_index`` marks unlabeled pixels.
        num_classes: ``C``.
        ignore_index: target value excluded from the count.

    Raises:
        ValueError: shapes differ, non-integer inputs, ``num_classes < 1``, or a prediction
            (or a non-ignored target) outside ``[0, C)``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("pred and target must be integer class indices (argmax logits first)")
    keep = target != ignore_index
    pred, target = pred[keep].long(), target[keep].long()
    for name, values in (("pred", pred), ("target", target)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} holds values outside [0, {num_classes - 1}] (ignore_index is "
                f"{ignore_index})"
            )
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _check_matrix(cm: torch.Tensor) -> None:
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square (C, C), got {tuple(cm.shape)}")


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every class (float64); NaN where a class is absent from both
    target and prediction.

    Raises:
        ValueError: ``cm`` is not square.
    """
    _check_matrix(cm)
    cm = cm.double()
    intersection = cm.diagonal()
    union = cm.sum(dim=0) + cm.sum(dim=1) - intersection
    return intersection / union  # 0 / 0 = NaN for absent classes


def mean_iou(cm: torch.Tensor) -> float:
    """Mean IoU over the classes present in target or prediction (NaN if none is)."""
    return float(torch.nanmean(iou_per_class(cm)))


def pixel_accuracy(cm: torch.Tensor) -> float:
    """Fraction of counted pixels predicted correctly (NaN for an empty matrix).

    Raises:
        ValueError: ``cm`` is not square.
    """
    _check_matrix(cm)
    cm = cm.double()
    return float(cm.trace() / cm.sum())


class ConfusionMeter:
    """Accumulates a confusion matrix over batches (and over processes with torch.distributed).

    Args:
        num_classes: number of classes ``C``.
        ignore_index: target value excluded from the count.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.matrix = torch.zeros_like(self.matrix)

    def update(self, logits_or_pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch.

        Args:
            logits_or_pred: logits ``(N, C, H, W)`` (argmax over ``C`` is taken) or integer
                predictions ``(N, H, W)``.
            target: labels ``(N, H, W)``.

        Raises:
            ValueError: shapes do not match either form, or wrong number of classes.
        """
        if logits_or_pred.ndim == target.ndim + 1:
            if logits_or_pred.shape[1] != self.num_classes:
                raise ValueError(
                    f"logits have {logits_or_pred.shape[1]} channels, expected "
                    f"{self.num_classes} (one per class, dimension 1)"
                )
            pred = logits_or_pred.argmax(dim=1)
        else:
            pred = logits_or_pred
        batch = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.matrix = self.matrix.to(batch.device) + batch

    def merge(self, other: torch.Tensor | ConfusionMeter) -> None:
        """Add another confusion matrix (or another meter's counts) to this one.

        Raises:
            ValueError: the other matrix is not ``(C, C)``.
        """
        other_matrix = other.matrix if isinstance(other, ConfusionMeter) else other
        if tuple(other_matrix.shape) != tuple(self.matrix.shape):
            raise ValueError(
                f"cannot merge a {tuple(other_matrix.shape)} matrix into a "
                f"{tuple(self.matrix.shape)} one"
            )
        self.matrix = self.matrix + other_matrix.to(self.matrix.device, torch.long)

    def all_reduce(self) -> None:
        """Sum the matrix over all processes (no-op in a single process)."""
        sum_tensor_(self.matrix)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The counts so far (on the CPU), for a checkpoint."""
        return {"matrix": self.matrix.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from the counts of :meth:`state_dict`."""
        self.matrix = state["matrix"].clone()

    def compute(self) -> dict[str, float | list[float]]:
        """Metrics of the counts so far: ``miou``, ``pixel_acc`` and ``iou_per_class`` (a list)."""
        return {
            "miou": mean_iou(self.matrix),
            "pixel_acc": pixel_accuracy(self.matrix),
            "iou_per_class": iou_per_class(self.matrix).tolist(),
        }


class AccuracyMeter:
    """Counts correct top-1 predictions over batches (and over processes)."""

    def __init__(self) -> None:
        self.counts = torch.zeros(2, dtype=torch.long)  # correct, total

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch of logits ``(N, C)`` against labels ``(N,)``."""
        batch = torch.stack([(logits.argmax(dim=1) == target).sum(), torch.tensor(target.numel())]).cpu()
        self.counts += batch

    def all_reduce(self) -> None:
        """Sum the counts over all processes (no-op in a single process)."""
        sum_tensor_(self.counts)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The counts so far, for a checkpoint."""
        return {"counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from the counts of :meth:`state_dict`."""
        self.counts = state["counts"].clone()

    def compute(self) -> dict[str, float]:
        """``acc``: the fraction of samples predicted correctly (NaN before any sample)."""
        correct, total = self.counts.tolist()
        return {"acc": correct / total if total else float("nan")}
