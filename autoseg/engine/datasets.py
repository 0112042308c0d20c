"""Build a split of the configured dataset with the options its config section sets."""
from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from autoseg.config import DataConfig
from autoseg.data import build_dataset


def build_split(data: DataConfig, split: str, augment: bool, transform_kind: str | None = None) -> Dataset:
    """Split ``split`` of ``data.dataset``; augmented (``transform_kind`` "search" or "retrain")
    for training, or at full size without augmentation for evaluation."""
    options: dict[str, Any] = {}
    length = data.train_length if split == "train" else data.val_length
    optional = {"image_size": data.image_size, "length": length}
    if augment:
        optional.update(scale=data.scale, cutout=data.cutout, transform_kind=transform_kind,
                         scale_range=tuple(data.scale_range) if data.scale_range else None)
    options.update({key: value for key, value in optional.items() if value is not None})
    return build_dataset(data.dataset, data.root, split, augment=augment,
                         crop_size=data.crop_size if augment else None, num_classes=data.num_classes, **options)
