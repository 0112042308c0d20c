"""Evaluate a retrained model on a dataset split.

    autoseg evaluate runs/retrain/<run>                  # best.pt, on the data it was trained for
    autoseg evaluate runs/retrain/<run>/checkpoint.pt --split train --max-batches 10
    autoseg evaluate CHECKPOINT --dataset folder --data-root DIR --json

The data options (dataset, root, number of classes, batch size, workers, and the synthetic
image size and validation length) default to the ``data`` section of the config saved in the
checkpoint, so the split is the one the run validated on; the flags override them. Choosing
another --dataset drops the old dataset's own options. Segmentation prints mIoU, pixel
accuracy and the IoU of every class (n/a for a class neither present in the split nor
predicted); classification prints top-1 accuracy. --json prints one JSON line instead.

--scales, --flip, --window and --stride evaluate as the papers do (DeepLab: --scales 0.5 0.75
1.0 1.25 1.5 1.75 --flip): the softmax of every scaled and mirrored view, resized back to the
image, is averaged; large images can be run window by window. The result reports the protocol.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from autoseg.cli import add_amp_argument, apply_overrides
from autoseg.config import DataConfig, from_dict
from autoseg.data import dataset_eval_split, list_datasets
from autoseg.engine.checkpoint import resolve_device
from autoseg.engine.datasets import build_split
from autoseg.engine.epoch_data import evaluation_batches
from autoseg.engine.task import Task
from autoseg.engine.trained import load_trained_model
from autoseg.utils.errors import UserError
from autoseg.evaluation.test_time import InferenceProtocol, add_protocol_arguments, protocol_from_args
from autoseg.utils.precision import check_amp
from autoseg.analysis.profiling import profile_model

DATA_FLAGS = {"data_root": "root", "num_classes": "num_classes", "batch_size": "eval_batch_size"}
"""Command-line flag (argparse dest) -> key of the checkpoint's ``data`` config it overrides."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The evaluation tool's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a retrain run directory (its best.pt) or a checkpoint file")
    parser.add_argument("--dataset", help=f"one of {', '.join(list_datasets())} (default: the checkpoint's)")
    parser.add_argument("--data-root", help="where the dataset lives (default: the checkpoint's)")
    parser.add_argument("--num-classes", type=int, help="number of classes of a folder dataset (must match the model)")
    parser.add_argument("--split", help="split to evaluate (default: val for segmentation, test for classification)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: the config's eval_batch_size)")
    parser.add_argument("--max-batches", type=int, help="evaluate only this many batches (default: the whole split)")
    add_amp_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line instead of a table")
    add_protocol_arguments(parser)
    return parser.parse_args(argv)


def data_config(config: dict[str, Any], args: argparse.Namespace) -> DataConfig:
    """The checkpoint's data settings with the flags applied; another --dataset starts from
    the defaults, keeping only the batch size and workers."""
    data = from_dict(DataConfig, config["data"], "the checkpoint's config.data")
    if args.dataset is not None and args.dataset != data.dataset:
        data = DataConfig(dataset=args.dataset, eval_batch_size=data.eval_batch_size, num_workers=data.num_workers)
    apply_overrides(data, args, DATA_FLAGS)
    if data.eval_batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {data.eval_batch_size}")
    return data


def format_report(result: dict[str, Any]) -> str:
    """The human-readable result: a header, the metrics and (segmentation) the per-class IoU table."""
    header = f"{result['task']} of {result['checkpoint']} on {result['dataset']} {result['split']}"
    lines = [f"{header} ({result['images']} images)",
             f"{result['params']:,} parameters, {result['madds'] / 1e9:.3f} G Multi-Adds per "
             f"{'x'.join(str(side) for side in result['madds_input_size'])} image (one view)"]
    if result["task"] == "classification":
        lines.append(f"top-1 accuracy {result['acc']:.2f} %   loss {result['loss']:.4f}")
        return "\n".join(lines)
    protocol = result["protocol"]
    lines.append(f"inference: scales {protocol['scales']}, flip {protocol['flip']}, window {protocol['window']}, "
                 f"stride {protocol['stride']}")
    lines.append(f"mIoU {result['miou']:.2f} %   pixel accuracy {result['pixel_acc']:.2f} %   "
                 f"loss {result['loss']:.4f}")
    width = max(len("class"), *(len(name) for name in result["iou"]))
    lines.append(f"{'class':<{width}}  IoU %")
    for name, iou in result["iou"].items():
        lines.append(f"{name:<{width}}  {'n/a' if iou is None else f'{iou:.2f}':>5}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate, print the table (or one JSON line); returns the result as JSON-ready data.

    Every result holds ``params`` and ``madds`` (Multi-Adds of one inference of one view at
    ``madds_input_size``, the size of the split's first image). Segmentation results hold
    ``protocol`` (scales, flip, window and stride of the inference), ``miou``, ``pixel_acc``
    (in %), ``loss`` and ``iou`` (class name -> IoU in %, ``None`` for a class absent from both
    the split and the predictions);
    classification results hold ``acc`` (top-1 in %) and ``loss``.
    """
    args = parse_args(argv)
    protocol = protocol_from_args(args)
    if args.max_batches is not None and args.max_batches < 1:
        raise UserError(f"--max-batches must be at least 1, got {args.max_batches}")
    device = resolve_device(args.device)
    check_amp(args.amp, device)
    model, meta, state = load_trained_model(args.checkpoint, device)
    data = data_config(state["config"], args)
    task = Task(meta.task, meta.num_classes)
    if not task.segmentation and protocol != InferenceProtocol():
        raise UserError("--scales, --flip, --window and --stride apply to segmentation models; leave them out for "
                        f"the {meta.task} model {args.checkpoint}")
    split = args.split or dataset_eval_split(data.dataset)
    dataset = build_split(data, split, augment=False)
    if dataset.num_classes != meta.num_classes:
        raise UserError(f"the model predicts {meta.num_classes} classes but {data.dataset} has "
                        f"{dataset.num_classes}: evaluate it on data with the classes it was trained for")
    loader = evaluation_batches(dataset, data.eval_batch_size, args.max_batches, data.num_workers,
                                pin_memory=device.type == "cuda")
    size = list(dataset[0][0].shape[-2:])  # Multi-Adds at the size of the split's first image
    cost = profile_model(model, size)
    result: dict[str, Any] = {"checkpoint": str(args.checkpoint), "task": meta.task, "dataset": data.dataset,
                              "split": split, "images": len(loader.dataset), "params": cost.params,
                              "madds": cost.madds, "madds_input_size": size}
    metrics = task.evaluate(model, loader, device, amp=args.amp, protocol=protocol)
    if task.segmentation:
        result["protocol"] = protocol.to_dict()
        metrics["iou"] = {name: None if math.isnan(value) else 100.0 * value
                          for name, value in zip(meta.class_names, metrics["iou"])}
    result.update(metrics)
    print(json.dumps(result) if args.json else format_report(result))
    return result

