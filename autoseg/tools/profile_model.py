"""What a model costs: parameters, Multi-Adds and, on a real device, latency and peak memory.

    autoseg profile_model autodeeplab-s                           # Multi-Adds at 1024x2048 (meta: no memory)
    autoseg profile_model runs/search/<run>/arch.json --filter-multiplier 20
    autoseg profile_model runs/retrain/<run> --device cuda        # + batch-1 latency and peak memory
    autoseg profile_model smp:DeepLabV3Plus:resnet50 --size 512 1024 --json
    autoseg profile_model DARTS_V2                                # a genotype: 32x32, 10 classes

The model is a retrain run directory or checkpoint, a search run directory (its arch.json or
genotype.json), an arch.json or genotype.json, a registered model name or smp:<Arch>:<encoder>.
Multi-Adds (multiply-accumulates of convolutions and matrix products) are counted on the meta
device, by layer kind and by module. --device cpu/cuda also measures the median latency of a
batch-1 inference and the peak memory of one (CUDA max allocated, or the CPU peak RSS above what
the process held before). --json prints one JSON line instead of the tables.

(Not ``tools/profile.py``: run as a script, that name would shadow the standard library's
``profile`` module, which torch imports, for every tool in this directory.)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from torch import nn

from autoseg.engine.trained import load_trained_model
from autoseg.utils.errors import UserError
from autoseg.models.spec import build_model, model_spec
from autoseg.analysis.profiling import profile_model

SEGMENTATION_SIZE, CLASSIFICATION_SIZE = (1024, 2048), (32, 32)
"""Default input sizes: a Cityscapes image, a CIFAR-10 image."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The profiling tool's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="run directory, checkpoint, arch.json, genotype.json, model name or "
                                      "smp:<Arch>:<encoder>")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size (default 1024 2048 for segmentation, 32 32 for CIFAR-10)")
    parser.add_argument("--num-classes", type=int, help="classes of a model built here (default 19, CIFAR-10: 10)")
    parser.add_argument("--filter-multiplier", type=int, help="F of an Auto-DeepLab network built here")
    parser.add_argument("--device", choices=("meta", "cpu", "cuda"), default="meta",
                        help="meta: count only; cpu/cuda: also measure latency and peak memory")
    parser.add_argument("--warmup", type=int, default=3, help="untimed inferences before timing")
    parser.add_argument("--repeats", type=int, default=10, help="timed inferences (the median is reported)")
    parser.add_argument("--depth", type=int, default=2, help="module name components of the module breakdown")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the tables")
    return parser.parse_args(argv)


def load_model(source: str, num_classes: int | None, filter_multiplier: int | None) -> tuple[nn.Module, str, int]:
    """The model ``source`` names, its task (segmentation or classification) and its classes."""
    path = Path(source)
    if path.is_dir() and not (path / "best.pt").is_file():
        found = [path / name for name in ("arch.json", "genotype.json") if (path / name).is_file()]
        path = found[0] if found else path
    if path.is_dir() or path.suffix == ".pt":
        if num_classes is not None or filter_multiplier is not None:
            raise UserError("--num-classes and --filter-multiplier size a model built here; a trained "
                            "checkpoint has its own")
        model, meta, _ = load_trained_model(path)
        return model, meta.task, meta.num_classes
    spec = model_spec(str(path), filter_multiplier=filter_multiplier)
    task = "classification" if spec["name"] == "darts-cifar" else "segmentation"
    classes = num_classes or (10 if task == "classification" else 19)
    return build_model(spec, classes), task, classes


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Profile the model, print the report; returns it as JSON-ready data."""
    args = parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.depth < 1:
        raise UserError("--repeats and --depth must be at least 1 and --warmup at least 0")
    model, task, classes = load_model(args.model, args.num_classes, args.filter_multiplier)
    size = args.size or (CLASSIFICATION_SIZE if task == "classification" else SEGMENTATION_SIZE)
    if min(size) < 1:
        raise UserError(f"--size must be two positive numbers, got {size}")
    report = profile_model(model, size, device=args.device, warmup=args.warmup, repeats=args.repeats,
                           depth=args.depth)
    result = {"model": args.model, "task": task, "num_classes": classes, **report.to_dict()}
    print(json.dumps(result) if args.json else f"{args.model} ({task}, {classes} classes)\n{report.format()}")
    return result

