"""The base of the datasets stored as (image file, mask file) pairs in a fixed public layout
(Cityscapes, PASCAL VOC, ADE20K): construction, loading, size checks and the defaults of each
augmentation stage."""
from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from autoseg.data import SegmentationDataset
from autoseg.data.folder import check_same_size, read_image
from autoseg.data.transforms import build_transform
from autoseg.utils.errors import UserError


Pair = tuple[Path, Path]


def split_missing(pairs: list[Pair], what: str) -> tuple[list[Pair], list[str]]:
    """The pairs whose image and mask both exist, and one problem per missing file (``what``
    says which files the pairs are, e.g. "listed in the train split")."""
    problems = [f"{path} is missing (a file {what})" for pair in pairs for path in pair if not path.is_file()]
    return [pair for pair in pairs if all(path.is_file() for path in pair)], problems


def require_pairs(matched: tuple[list[Pair], list[str]], what: str, how_to_get: str) -> list[Pair]:
    """The pairs of :func:`split_missing`'s result; a UserError counting the missing files (``what``
    says which files they are, ``how_to_get`` how to obtain the dataset) when there are any."""
    pairs, problems = matched
    if problems:
        example = problems[0].partition(" is missing")[0]
        raise UserError(f"{len(problems)} {what} missing, e.g. {example}. {how_to_get}")
    return pairs


class FilePairsDataset(SegmentationDataset):
    """A split of (image path, mask path) pairs, found by :meth:`find_pairs`, whose mask files
    :meth:`load_mask` turns into train ids.

    Subclasses may change the defaults used when ``crop_size`` or ``scale`` is not given:
    ``search_crop_size`` (321, Auto-DeepLab's search crop), ``retrain_crop_size`` (513,
    DeepLab's crop on PASCAL VOC and ADE20K) and ``search_scale`` (1, the fixed resize of the
    search augmentation). ``scale_range`` is the random scaling of the retrain augmentation.
    """

    search_crop_size: int = 321
    retrain_crop_size: int = 513
    search_scale: float = 1.0

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        augment: bool = True,
        crop_size: int | None = None,
        transform_kind: str | None = None,
        scale: float | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
    ) -> None:
        self.samples = self.find_pairs(root, split)
        self.root, self.split = Path(root), split  # where the pre-flight data check looks
        if crop_size is None:
            crop_size = self.retrain_crop_size if transform_kind == "retrain" else self.search_crop_size
        scale = self.search_scale if scale is None else scale
        super().__init__(build_transform(augment, transform_kind, crop_size, scale, scale_range))

    @staticmethod
    @abc.abstractmethod
    def find_pairs(root: str | Path | None, split: str) -> list[tuple[Path, Path]]:
        """The (image, mask) paths of ``split`` below ``root``; raises UserError if any is missing."""

    def __len__(self) -> int:
        """Number of image/mask pairs in the split."""
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB image and its train-id mask, checked to have the same size."""
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        mask = self.load_mask(index)
        check_same_size(image.shape[:2], mask.shape, image_path, mask_path)
        return image, mask

    @abc.abstractmethod
    def load_mask(self, index: int) -> np.ndarray:
        """The uint8 train-id mask of sample ``index`` (255 = ignore)."""
