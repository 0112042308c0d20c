"""Segment images with a retrained model: a colour-coded mask and an overlay per image.

    autoseg predict runs/retrain/<run> photo.jpg --out predictions
    autoseg predict runs/retrain/<run>/best.pt frames/ --out predictions --alpha 0.4

Every png/jpg/jpeg/bmp/tif(f) image (a folder's own images, sorted; subfolders are not
searched, other files are skipped) is segmented at its full size, normalised as in training
(ImageNet mean and std). For each input ``<stem>.<ext>`` the tool writes ``<stem>_mask.png``
(every pixel in the colour of its predicted class, from the checkpoint's palette, e.g. the
Cityscapes colours) and ``<stem>_overlay.png`` (the image blended with the mask) into --out.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from autoseg.data.folder import read_image
from autoseg.engine.checkpoint import resolve_device
from autoseg.engine.inference import blend, colorize, list_images, predict_mask
from autoseg.engine.trained import load_trained_model
from autoseg.errors import UserError
from autoseg.visualize import save_png


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The prediction tool's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a retrain run directory (its best.pt) or a checkpoint file")
    parser.add_argument("images", type=Path, metavar="IMAGE_OR_DIR", help="an image file or a folder of images")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for the PNGs; it may exist already: only <stem>_mask.png and "
                             "<stem>_overlay.png of the input stems are overwritten, other files are left alone")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="weight of the mask colours in the overlay, 0 (image only) to 1 (mask only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    """Segment every input image and write its mask and overlay; returns the written paths
    as ``{"masks": [...], "overlays": [...]}`` in input order."""
    args = parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file: give a folder for the PNGs")
    images = list_images(args.images)
    device = resolve_device(args.device)
    model, meta, _ = load_trained_model(args.checkpoint, device)
    if meta.task != "segmentation":
        raise UserError(f"{args.checkpoint} is a {meta.task} model: predict.py draws segmentation masks "
                        "(use tools/evaluate.py to score a classifier)")
    palette = np.asarray(meta.palette, dtype=np.uint8)
    written: dict[str, list[str]] = {"masks": [], "overlays": []}
    for path in images:
        image = read_image(path)
        colors = colorize(predict_mask(model, image, device), palette)
        mask_path = save_png(colors, args.out / f"{path.stem}_mask.png")
        overlay_path = save_png(blend(image, colors, args.alpha), args.out / f"{path.stem}_overlay.png")
        print(f"{path} -> {mask_path}, {overlay_path}")
        written["masks"].append(str(mask_path))
        written["overlays"].append(str(overlay_path))
    print(f"segmented {len(images)} image(s) into {args.out}")
    return written

