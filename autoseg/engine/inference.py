"""Running a trained segmentation model on image files: finding, loading, normalising,
predicting and colour-coding.

Images are normalised exactly as the datasets normalise them for training and evaluation
(:func:`autoseg.data.transforms.eval_transform`: ImageNet mean and std, no resize), so a
model sees a file the way it saw its training data, at the file's full size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from autoseg.data.folder import IMAGE_SUFFIXES
from autoseg.data.transforms import eval_transform
from autoseg.utils.errors import UserError
from autoseg.evaluation.test_time import InferenceProtocol


def list_images(source: str | Path) -> list[Path]:
    """The image files of ``source``: the file itself, or the images directly inside a
    folder (not its subfolders), sorted by name. Other files in a folder are skipped.

    Raises:
        UserError: ``source`` does not exist, is a file that is not an image, holds no
            image, or holds two images with the same stem (their outputs would collide).
    """
    source = Path(source)
    suffixes = "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
    if source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"{source} is not an image: give a {suffixes} file or a folder of them")
        return [source]
    if not source.is_dir():
        raise UserError(f"{source} does not exist: give an image file or a folder of images")
    images = sorted(p for p in source.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not images:
        raise UserError(f"no images in {source}: it needs {suffixes} files directly inside it (subfolders are "
                        "not searched)")
    stems: dict[str, Path] = {}
    for path in images:
        if path.stem in stems:
            raise UserError(f"{stems[path.stem].name} and {path.name} in {source} share a stem, so their outputs "
                            "would overwrite each other: rename or move one of them")
        stems[path.stem] = path
    return images


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """An RGB uint8 ``HxWx3`` image as the normalised ``1x3xHxW`` float batch a model takes."""
    return eval_transform()(image=image)["image"].unsqueeze(0)


@torch.inference_mode()
def predict_mask(model: nn.Module, image: np.ndarray, device: torch.device,
                 protocol: InferenceProtocol = InferenceProtocol()) -> np.ndarray:
    """The class id of every pixel of an RGB uint8 ``HxWx3`` image: an ``HxW`` int64 array.

    ``model`` must be in eval mode and return ``(1, C, H, W)`` logits; ``protocol`` adds
    multi-scale, flipped or sliding-window inference (default: plain inference).
    """
    logits = protocol.logits(model, image_tensor(image).to(device))
    return logits.argmax(dim=1)[0].cpu().numpy()


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Colour-code an ``HxW`` array of class ids with a ``(C, 3)`` uint8 palette: ``HxWx3`` uint8.

    Raises:
        ValueError: a class id has no palette entry.
    """
    palette = np.asarray(palette, dtype=np.uint8)
    if mask.size and (mask.min() < 0 or mask.max() >= len(palette)):
        raise ValueError(f"class ids must be in [0, {len(palette) - 1}] to be coloured, got {mask.min()}..{mask.max()}")
    return palette[mask]


def blend(image: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colors``, rounded to uint8 (both ``HxWx3`` uint8).

    Raises:
        ValueError: ``alpha`` is outside [0, 1] or the shapes differ.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if image.shape != colors.shape:
        raise ValueError(f"image {image.shape} and colours {colors.shape} must have the same shape")
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colors.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

