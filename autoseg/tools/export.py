"""Export a retrained model to ONNX and check the export with onnxruntime.

    autoseg export runs/retrain/<run> --onnx model.onnx
    autoseg export runs/retrain/<run>/best.pt --onnx model.onnx --height 1024 --width 2048
    autoseg export runs/retrain/<run> --onnx model.onnx --dynamic --opset 18

The graph has one input ``image`` (N x 3 x H x W float32, RGB normalised as in training:
ImageNet mean/std for segmentation, the CIFAR-10 mean/std for classification) and one output
``logits`` (N x classes x H x W for segmentation, N x classes for classification). The input
size is fixed at --height x --width, which default to 32 x 32 for classification and, for
segmentation, to the training crop size of the checkpoint's config (else its synthetic
image size, else 513 x 513, DeepLab's evaluation crop). --dynamic makes the batch size (and,
for segmentation, the height and width) free.

The export uses PyTorch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``),
which needs no package beyond onnx. Afterwards onnxruntime runs the file on a random input
(and, with --dynamic, on a second one of another batch size and image size) and its logits
are compared with PyTorch's; a maximum absolute difference above 1e-3 times the largest
logit (at least 1e-3) is an error.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch import nn

from autoseg.engine.trained import TrainedModelMeta, load_trained_model
from autoseg.utils.errors import UserError
from autoseg.utils.files import require_writable_folder

RELATIVE_TOLERANCE = 1e-3
"""Largest accepted |onnxruntime - PyTorch| difference, relative to the largest |logit| (at least 1)."""
CLASSIFICATION_SIZE = 32
FALLBACK_SEGMENTATION_SIZE = 513
OPSETS = range(11, 21)
"""Opsets the export accepts: 11 brings the Resize op the models need; 20 is the newest the
TorchScript exporter writes."""
DEFAULT_OPSET = 17


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The export tool's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a retrain run directory (its best.pt) or a checkpoint file")
    parser.add_argument("--onnx", type=Path, required=True, help="the .onnx file to write (overwritten if it exists)")
    parser.add_argument("--height", type=int, help="input height in pixels (default: see above)")
    parser.add_argument("--width", type=int, help="input width in pixels (default: see above)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1} (default: {DEFAULT_OPSET})")
    parser.add_argument("--dynamic", action="store_true",
                        help="free batch size (and height and width for segmentation) instead of a fixed input shape")
    return parser.parse_args(argv)


def default_size(meta: TrainedModelMeta, config: dict[str, Any]) -> int:
    """The side of the square input exported when --height/--width are not given."""
    if meta.task == "classification":
        return CLASSIFICATION_SIZE
    data = config["data"]
    return data.get("crop_size") or data.get("image_size") or FALLBACK_SEGMENTATION_SIZE


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int,
                dynamic_axes: dict[str, dict[int, str]] | None) -> None:
    """Write ``model`` traced on ``example`` to ``path`` with input ``image`` and output ``logits``."""
    # The legacy exporter warns that it is legacy, and the tracer about every shape it turns into
    # a constant; the onnxruntime comparison afterwards checks what those warnings are about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset, input_names=["image"],
                              output_names=["logits"], dynamic_axes=dynamic_axes)
        except torch.onnx.errors.OnnxExporterError as exc:
            raise UserError(f"ONNX export failed at opset {opset} ({exc}); try another --opset") from exc


@torch.inference_mode()
def compare(model: nn.Module, session: onnxruntime.InferenceSession, example: torch.Tensor) -> tuple[float, float]:
    """``(max |onnxruntime - PyTorch|, tolerance)`` of the logits for one input; raises if the
    difference is above the tolerance or the shapes differ."""
    expected = model(example).numpy()
    (got,) = session.run(["logits"], {"image": example.numpy()})
    if got.shape != expected.shape:
        raise UserError(f"the ONNX model returned logits of shape {got.shape} for an input of shape "
                        f"{tuple(example.shape)}, PyTorch {expected.shape}: export without --dynamic")
    difference = float(np.abs(got - expected).max())
    tolerance = RELATIVE_TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if difference > tolerance:
        raise UserError(f"onnxruntime and PyTorch disagree by up to {difference:.3g} (tolerance {tolerance:.3g}) "
                        f"on an input of shape {tuple(example.shape)}: try another --opset, or export without "
                        "--dynamic")
    return difference, tolerance


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Export, check with onnxruntime, print; returns the file, shapes and the largest difference."""
    args = parse_args(argv)
    if args.opset not in OPSETS:
        raise UserError(f"--opset must be between {OPSETS.start} and {OPSETS.stop - 1}, got {args.opset}")
    if args.onnx.is_dir():
        raise UserError(f"--onnx {args.onnx} is a folder: give the path of the .onnx file to write")
    model, meta, state = load_trained_model(args.checkpoint, "cpu")
    require_writable_folder(args.onnx.parent, "the folder of --onnx")
    side = default_size(meta, state["config"])
    height, width = (side if given is None else given for given in (args.height, args.width))
    if min(height, width) < 1:
        raise UserError(f"--height and --width must be positive, got {height}x{width}")
    segmentation = meta.task == "segmentation"
    free_axes = {0: "batch", 2: "height", 3: "width"} if segmentation else {0: "batch"}
    dynamic_axes = {"image": free_axes, "logits": free_axes} if args.dynamic else None
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 3, height, width, generator=generator)]
    if args.dynamic:
        other = (height + 8, width + 16) if segmentation else (height, width)
        inputs.append(torch.randn(2, 3, *other, generator=generator))
    export_onnx(model, inputs[0], args.onnx, args.opset, dynamic_axes)
    session = onnxruntime.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    input_shape = list(session.get_inputs()[0].shape)
    output_shape = list(session.get_outputs()[0].shape)
    print(f"exported {args.checkpoint} ({meta.task}, {meta.num_classes} classes) to {args.onnx} "
          f"(opset {args.opset}): input 'image' {input_shape}, output 'logits' {output_shape}")
    differences = []
    for example in inputs:
        difference, tolerance = compare(model, session, example)
        print(f"onnxruntime matches PyTorch on a random {'x'.join(map(str, example.shape))} input: "
              f"max abs difference {difference:.3g} (tolerance {tolerance:.3g})")
        differences.append(difference)
    return {"onnx": str(args.onnx), "opset": args.opset, "input_shape": input_shape, "output_shape": output_shape,
            "max_abs_diff": max(differences)}

