"""Segment images with a retrained model: a colour-coded mask and an overlay per image, or
class indices, or a Cityscapes benchmark submission.

    autoseg predict runs/retrain/<run> photo.jpg --out predictions
    autoseg predict runs/retrain/<run>/best.pt frames/ --out predictions --alpha 0.4
    autoseg predict runs/retrain/<run> DIR/leftImg8bit/test/* --out submission --format labelid \
        --scales 0.5 0.75 1.0 1.25 1.5 1.75 --flip

Every png/jpg/jpeg/bmp/tif(f) image (a folder's own images, sorted; subfolders are not
searched, other files are skipped) is segmented at its full size, normalised as in training
(ImageNet mean and std). For each input ``<stem>.<ext>`` the tool writes into --out, per
--format: ``color`` ``<stem>_mask.png`` (every pixel in the colour of its predicted class, from
the checkpoint's palette, e.g. the Cityscapes colours), ``overlay`` ``<stem>_overlay.png`` (the
image blended with the mask), ``trainid`` ``<stem>_trainIds.png`` (8-bit class indices) and,
for Cityscapes models, ``labelid`` ``<city>_<seq>_<frame>_labelIds.png`` (Cityscapes label ids
named as the benchmark server expects; written alone). The default is color and overlay.
--scales, --flip, --window and --stride predict as the papers evaluate (see autoseg evaluate).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from autoseg.data.folder import read_image, read_image_size
from autoseg.engine.checkpoint import resolve_device
from autoseg.engine.inference import predict_mask
from autoseg.engine.trained import load_trained_model
from autoseg.utils.errors import UserError
from autoseg.utils.files import require_writable_folder
from autoseg.evaluation.test_time import add_protocol_arguments, protocol_from_args
from autoseg.engine.prediction_files import (DEFAULT_FORMATS, OUTPUT_FORMATS, RESULT_KEYS, check_request,
                                      collect_images, write_outputs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The prediction tool's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a retrain run directory (its best.pt) or a checkpoint file")
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files or folders of images")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for the PNGs, not one holding input images; it may exist already: only the "
                             "outputs of the input images are overwritten, other files are left alone")
    parser.add_argument("--format", nargs="+", choices=OUTPUT_FORMATS, default=list(DEFAULT_FORMATS),
                        help="what to write per image: color (mask), overlay, trainid (class indices), labelid "
                             "(Cityscapes benchmark submission); default: color overlay")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="weight of the mask colours in the overlay, 0 (image only) to 1 (mask only)")
    add_protocol_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    """Segment every input image and write the requested formats; returns the written paths
    per format in input order: ``{"masks": [...], "overlays": [...]}`` by default, and
    ``"trainids"`` / ``"labelids"`` for those formats."""
    args = parse_args(argv)
    protocol = protocol_from_args(args)
    formats = list(dict.fromkeys(args.format))
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file: give a folder for the PNGs")
    images = collect_images(args.images)
    device = resolve_device(args.device)
    model, meta, _ = load_trained_model(args.checkpoint, device)
    if meta.task != "segmentation":
        raise UserError(f"{args.checkpoint} is a {meta.task} model: predict draws segmentation masks "
                        "(use autoseg evaluate to score a classifier)")
    check_request(formats, meta.dataset, images, args.out)
    for path in images:  # every image is one the protocol can run, before anything is written
        protocol.check_image_size(*read_image_size(path), name=str(path))
    require_writable_folder(args.out, "--out")
    palette = np.asarray(meta.palette, dtype=np.uint8)
    written: dict[str, list[str]] = {RESULT_KEYS[output_format]: [] for output_format in formats}
    for path in images:
        image = read_image(path)
        outputs = write_outputs(path, image, predict_mask(model, image, device, protocol), args.out, formats,
                                palette, args.alpha)
        print(f"{path} -> {', '.join(str(output) for output in outputs.values())}")
        for output_format, output in outputs.items():
            written[RESULT_KEYS[output_format]].append(str(output))
    print(f"segmented {len(images)} image(s) into {args.out}")
    return written

