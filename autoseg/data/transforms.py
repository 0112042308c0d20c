"""Albumentations pipelines that turn an (RGB uint8 image, uint8 mask) pair into tensors.

Three kinds exist, named by the stage that uses them:

- ``search``: the architecture-search crops (Auto-DeepLab searches Cityscapes at half
  resolution on random 321x321 crops): fixed resize by ``scale``, pad, random crop, flip.
- ``retrain``: DeepLab-style training: random scale in ``scale_range``, pad, random crop, flip.
- ``eval``: normalisation only, so images keep their stored size and masks their ids.

Every pipeline ends with ImageNet normalisation and a conversion to tensors. Masks are always
resized with nearest neighbour and padded with the ignore index, so no new ids appear.
"""

from __future__ import annotations

import albumentations as A
import cv2
import torch
from albumentations.pytorch import ToTensorV2

from autoseg.utils.errors import UserError

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRANSFORM_KINDS = ("search", "retrain", "eval")


def _resize_by(low: float, high: float) -> A.RandomScale:
    """Resize by a factor drawn from [low, high]: bilinear for the image, nearest for the mask."""
    return A.RandomScale(
        scale_limit=(low - 1.0, high - 1.0),
        interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST,
        p=1.0,
    )


def _to_tensors() -> list[A.BasicTransform]:
    """ImageNet normalisation, then HWC -> CHW float tensor (the mask stays HxW)."""
    return [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()]


def _pad_crop_flip(crop_size: int) -> list[A.BasicTransform]:
    """Pad to at least crop_size (image 0, mask ignore), random crop_size square, random flip."""
    return [
        A.PadIfNeeded(
            min_height=crop_size,
            min_width=crop_size,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=IGNORE_INDEX,
        ),
        A.RandomCrop(height=crop_size, width=crop_size),
        A.HorizontalFlip(p=0.5),
    ]


def _compose(transforms: list[A.BasicTransform]) -> A.Compose:
    """Compose seeded from torch's seed, so ``torch.manual_seed`` makes augmentation repeatable."""
    return A.Compose(transforms, seed=torch.initial_seed() % 2**32)


def _check_crop_size(crop_size: int) -> None:
    """Reject crop sizes that cannot produce a crop."""
    if crop_size < 1:
        raise UserError(f"crop_size must be a positive number of pixels, got {crop_size}: set e.g. crop_size=321")


def search_transform(crop_size: int, scale: float = 1.0) -> A.Compose:
    """Search-stage augmentation: resize by ``scale``, pad, random ``crop_size`` crop, flip, normalise."""
    _check_crop_size(crop_size)
    if scale <= 0:
        raise UserError(f"scale must be positive, got {scale}: use e.g. 0.5 for half resolution")
    resize = [] if scale == 1.0 else [_resize_by(scale, scale)]
    return _compose([*resize, *_pad_crop_flip(crop_size), *_to_tensors()])


def retrain_transform(crop_size: int, scale_range: tuple[float, float] = (0.5, 2.0)) -> A.Compose:
    """DeepLab-style augmentation: random scale in ``scale_range``, pad, random crop, flip, normalise."""
    _check_crop_size(crop_size)
    low, high = scale_range
    if not 0 < low <= high:
        raise UserError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}: use e.g. (0.5, 2.0)")
    return _compose([_resize_by(low, high), *_pad_crop_flip(crop_size), *_to_tensors()])


def eval_transform() -> A.Compose:
    """Evaluation: normalisation and tensor conversion only (no resize, no crop)."""
    return _compose(_to_tensors())


def build_transform(
    augment: bool,
    transform_kind: str | None,
    crop_size: int | None,
    scale: float = 1.0,
    scale_range: tuple[float, float] = (0.5, 2.0),
) -> A.Compose:
    """Pick the pipeline for a dataset.

    ``augment=False`` always means ``eval`` (whatever ``transform_kind`` says). With
    ``augment=True`` the kind defaults to ``search``; ``scale`` is used by ``search``,
    ``scale_range`` by ``retrain``; both need ``crop_size``.
    """
    if transform_kind is not None and transform_kind not in TRANSFORM_KINDS:
        raise UserError(f"unknown transform_kind {transform_kind!r}: use one of {', '.join(TRANSFORM_KINDS)}")
    kind = (transform_kind or "search") if augment else "eval"
    if kind == "eval":
        return eval_transform()
    if crop_size is None:
        raise UserError(f"the {kind!r} augmentation needs a crop size: set crop_size (e.g. 321)")
    if kind == "search":
        return search_transform(crop_size, scale)
    return retrain_transform(crop_size, scale_range)
