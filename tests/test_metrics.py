"""Tests of the confusion-matrix metrics on a small hand-computed example."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from autoseg.evaluation.metrics import (
    ConfusionMeter,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)

# 2 x 4 image, 3 classes, one ignored pixel (target 255, predicted 2).
TARGET = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
PRED = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
# Counted (target, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (1,0).
EXPECTED_CM = [[1, 1, 0],
               [1, 2, 0],
               [1, 0, 1]]
# IoU = tp / (row + column - tp): class 0: 1 / (2 + 3 - 1), class 1: 2 / (3 + 3 - 2),
# class 2: 1 / (2 + 1 - 1).
EXPECTED_IOU = [0.25, 0.5, 0.5]


def test_confusion_matrix_hand_example() -> None:
    cm = confusion_matrix(PRED, TARGET, num_classes=3)
    assert cm.dtype == torch.long
    assert cm.tolist() == EXPECTED_CM
    assert iou_per_class(cm).tolist() == EXPECTED_IOU
    assert mean_iou(cm) == pytest.approx(1.25 / 3)
    assert pixel_accuracy(cm) == pytest.approx(4 / 7)


def test_ignore_index_is_configurable() -> None:
    target = TARGET.clone()
    target[target == 255] = -1
    assert confusion_matrix(PRED, target, 3, ignore_index=-1).tolist() == EXPECTED_CM
    # Without ignoring it, 255 is an out-of-range label.
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(PRED, TARGET, 3, ignore_index=-1)


def test_absent_class_is_nan_and_left_out_of_the_mean() -> None:
    cm = confusion_matrix(PRED, TARGET, num_classes=4)
    iou = iou_per_class(cm)
    assert iou[:3].tolist() == EXPECTED_IOU and math.isnan(iou[3].item())
    assert mean_iou(cm) == pytest.approx(1.25 / 3)


def test_class_predicted_but_absent_from_target_scores_zero() -> None:
    cm = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), num_classes=2)
    assert cm.tolist() == [[1, 1], [0, 0]]
    assert iou_per_class(cm).tolist() == [0.5, 0.0]
    assert mean_iou(cm) == pytest.approx(0.25)


def test_empty_matrix_gives_nan() -> None:
    cm = confusion_matrix(torch.full((2, 2), 255), torch.full((2, 2), 255), num_classes=3)
    assert cm.sum() == 0
    assert math.isnan(mean_iou(cm)) and math.isnan(pixel_accuracy(cm))


@pytest.mark.parametrize("pred,target,num_classes,message", [
    (torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 3, "shape"),
    (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), 3, "integer"),
    (torch.full((2, 3), 3), torch.zeros(2, 3, dtype=torch.long), 3, "pred"),
    (torch.full((2, 3), -1), torch.zeros(2, 3, dtype=torch.long), 3, "pred"),
    (torch.zeros(2, 3, dtype=torch.long), torch.full((2, 3), 7), 3, "target"),
    (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 0, "num_classes"),
])
def test_confusion_matrix_rejects_bad_input(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        confusion_matrix(pred, target, num_classes)


@pytest.mark.parametrize("function", [iou_per_class, mean_iou, pixel_accuracy])
def test_matrix_functions_reject_non_square(function: Callable[[torch.Tensor], object]) -> None:
    with pytest.raises(ValueError, match="square"):
        function(torch.ones(2, 3, dtype=torch.long))


def test_meter_accumulates_logits_and_predictions_across_batches() -> None:
    meter = ConfusionMeter(num_classes=3)
    # First row as logits (N, C, H, W), second row as predictions (N, H, W).
    logits = F.one_hot(PRED[:1], 3).permute(0, 2, 1).unsqueeze(-1).float()
    meter.update(logits, TARGET[:1].unsqueeze(-1))
    meter.update(PRED[1:], TARGET[1:])
    assert meter.matrix.tolist() == EXPECTED_CM
    metrics = meter.compute()
    assert metrics["miou"] == pytest.approx(1.25 / 3)
    assert metrics["pixel_acc"] == pytest.approx(4 / 7)
    assert metrics["iou_per_class"] == EXPECTED_IOU
    meter.reset()
    assert meter.matrix.sum() == 0


def test_meter_merge() -> None:
    first, second = ConfusionMeter(3), ConfusionMeter(3)
    first.update(PRED[:1], TARGET[:1])
    second.update(PRED[1:], TARGET[1:])
    first.merge(second)
    assert first.matrix.tolist() == EXPECTED_CM
    first.merge(torch.eye(3, dtype=torch.long))
    assert first.matrix.diagonal().tolist() == [2, 3, 2]
    with pytest.raises(ValueError, match="merge"):
        first.merge(torch.zeros(4, 4, dtype=torch.long))


def test_meter_rejects_bad_shapes() -> None:
    meter = ConfusionMeter(3)
    with pytest.raises(ValueError, match="channels"):
        meter.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        meter.update(torch.zeros(1, 3, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        ConfusionMeter(0)


def test_all_reduce_is_a_no_op_without_distributed() -> None:
    meter = ConfusionMeter(3)
    meter.update(PRED, TARGET)
    meter.all_reduce()
    assert meter.matrix.tolist() == EXPECTED_CM


def test_all_reduce_in_a_single_process_group(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        meter = ConfusionMeter(3)
        meter.update(PRED, TARGET)
        meter.all_reduce()
        assert meter.matrix.tolist() == EXPECTED_CM
    finally:
        dist.destroy_process_group()


class _SizeRecorder(torch.nn.Module):
    """Predicts class 1 everywhere and records the input sizes it is given."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        logits = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        logits[:, 1] = 5.0
        return logits


@pytest.mark.parametrize("scale,seen", [(1.0, (8, 10)), (0.5, (4, 5))])
def test_evaluation_at_an_input_scale_scores_the_full_size_masks(scale, seen):
    from autoseg.engine.task import Task
    masks = torch.ones(2, 8, 10, dtype=torch.long)
    masks[:, :, 5:] = 2  # half class 1 (predicted), half class 2 (never predicted), class 0 absent
    loader = [(torch.randn(2, 3, 8, 10), masks)]
    model = _SizeRecorder()
    result = Task("segmentation", 3).evaluate(model, loader, torch.device("cpu"), input_scale=scale)
    assert model.sizes == [seen]
    assert result["pixel_acc"] == pytest.approx(50.0)
    assert result["miou"] == pytest.approx(25.0)  # IoU 50 % (class 1) and 0 % (class 2)
