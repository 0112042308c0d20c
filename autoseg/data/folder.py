"""``folder``: your own segmentation data as image files and single-channel class-id masks.

Layout::

    ROOT/train/images/<stem>.png|jpg|jpeg|bmp|tif
    ROOT/train/masks/<stem>.png      (one class id per pixel, 255 = ignore)
    ROOT/val/...                     (same)

Every image needs a mask with the same stem. The pairing is checked when the dataset is
built; sizes, channels and class ids when a sample is loaded (and all at once, before a long
run, by :mod:`autoseg.data.check`). Bad data raises ``UserError``; nothing is skipped.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from autoseg.data import SegmentationDataset, register_dataset
from autoseg.data.transforms import IGNORE_INDEX, build_transform
from autoseg.utils.errors import UserError, problems_error

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MASK_SUFFIXES = (".png",)
_SHOWN = 5  # how many offending names an error message lists


def _few(names: list[str]) -> str:
    """The first few names joined by commas, with a count of the rest."""
    shown = ", ".join(names[:_SHOWN])
    return shown if len(names) <= _SHOWN else f"{shown} (+{len(names) - _SHOWN} more)"


def _unreadable_image(path: Path, error: Exception) -> UserError:
    """The error of an image file that cannot be read."""
    return UserError(f"cannot read image {path} ({error}): replace it with a valid png/jpg/bmp/tif file")


def read_image(path: Path) -> np.ndarray:
    """Read an image file as an RGB uint8 ``HxWx3`` array: the one reader of training, evaluation,
    prediction and the data check.

    The pixels are read as stored: an EXIF orientation tag is ignored, as it is for the masks (a
    mask is never rotated, so an image turned by its tag would no longer match it). A file that is
    truncated or damaged anywhere (a JPEG cut short, which other decoders fill with grey) is a
    UserError. 16-bit grayscale images keep their 8 most significant bits.
    """
    try:
        with Image.open(path) as stored:
            stored.load()
            if stored.mode.startswith("I;16"):
                gray = (np.asarray(stored) >> 8).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            return np.asarray(stored.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as error:
        raise _unreadable_image(path, error) from None


def read_image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header, as :func:`read_image` reads it (the
    EXIF orientation tag ignored); a file that is not an image is a UserError."""
    try:
        with Image.open(path) as stored:
            return stored.height, stored.width
    except (OSError, SyntaxError, ValueError) as error:
        raise _unreadable_image(path, error) from None


def read_mask(path: Path) -> np.ndarray:
    """Read a mask file as a 2-D array of ids (palette PNGs give their palette indices)."""
    try:
        with Image.open(path) as stored:
            mask = np.asarray(stored)
    except OSError as error:
        raise UserError(f"cannot read mask {path} ({error}): replace it with a valid single-channel PNG") from error
    if mask.ndim != 2:
        raise UserError(
            f"mask {path} has {mask.shape[-1]} channels: masks must be single-channel PNGs "
            "(grayscale or palette) holding one class id per pixel, not colour images"
        )
    return mask


def check_same_size(image_hw: tuple[int, int], mask_hw: tuple[int, int], image_path: Path, mask_path: Path) -> None:
    """Raise if the mask (``mask_hw``: its height and width) does not cover the image pixel for pixel."""
    if tuple(mask_hw) != tuple(image_hw):
        raise UserError(
            f"mask {mask_path} is {mask_hw[0]}x{mask_hw[1]} (HxW) but image {image_path} is "
            f"{image_hw[0]}x{image_hw[1]}: masks must have exactly the size of their image"
        )


def check_mask_ids(mask: np.ndarray, num_classes: int, mask_path: Path) -> None:
    """Raise if the mask (or an array of the ids it holds) has ids other than ``0..num_classes-1``
    and 255 (ignore)."""
    invalid = ((mask < 0) | (mask >= num_classes)) & (mask != IGNORE_INDEX)
    if invalid.any():
        bad = np.unique(mask[invalid]).tolist()
        raise UserError(
            f"mask {mask_path} holds class id(s) {_few([str(i) for i in bad])} but num_classes={num_classes}: "
            f"ids must be 0..{num_classes - 1} or {IGNORE_INDEX} (ignore); fix the mask or raise num_classes"
        )


def load_checked_pair(image_path: Path, mask_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Load an image and its mask, validate them, and return (RGB uint8 image, uint8 mask)."""
    image = read_image(image_path)
    mask = read_mask(mask_path)
    check_same_size(image.shape[:2], mask.shape, image_path, mask_path)
    check_mask_ids(mask, num_classes, mask_path)
    return image, mask.astype(np.uint8)


def _index_folder(folder: Path, suffixes: tuple[str, ...], what: str) -> tuple[dict[str, Path], list[str]]:
    """Map file stem -> path for the files of ``folder`` (hidden files are skipped), and the
    problems found: files of another type, two files sharing a stem."""
    if not folder.is_dir():
        raise UserError(f"folder {folder} not found: put the {what} there (see the folder dataset layout)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    problems = [f"unsupported file {p} in the {what}: {what} must be {'/'.join(suffixes)}"
                for p in files if p.suffix.lower() not in suffixes]
    index: dict[str, Path] = {}
    for path in files:
        if path.suffix.lower() not in suffixes:
            continue
        if path.stem in index:
            problems.append(f"{index[path.stem].name} and {path.name} in {folder} share a stem: keep one of them")
        index[path.stem] = path
    return index, problems


def match_pairs(root: str | Path, split: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, mask) paths of ``ROOT/split`` sorted by stem, and one problem per file that cannot
    be paired (no partner, unsupported type, shared stem); raises if a folder is missing or empty."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise UserError(f"split folder {split_dir} not found: create {split_dir}/images and {split_dir}/masks")
    images, image_problems = _index_folder(split_dir / "images", IMAGE_SUFFIXES, "images")
    masks, mask_problems = _index_folder(split_dir / "masks", MASK_SUFFIXES, "masks")
    if not images and not image_problems:
        raise UserError(f"no images in {split_dir / 'images'}: add images and masks or point root elsewhere")
    problems = image_problems + mask_problems
    problems += [f"image {images[stem]} has no mask {split_dir / 'masks' / stem}.png: every image needs a mask PNG "
                 "with the same file stem" for stem in sorted(images.keys() - masks.keys())]
    problems += [f"mask {masks[stem]} has no image of the same stem in {split_dir / 'images'}: add the image or "
                 "remove the mask" for stem in sorted(masks.keys() - images.keys())]
    return [(images[stem], masks[stem]) for stem in sorted(images.keys() & masks.keys())], problems


def list_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, mask) paths of ``ROOT/split``, sorted by stem; raises if any file cannot be paired."""
    pairs, problems = match_pairs(root, split)
    if problems:
        raise problems_error(problems, f"in {Path(root) / split} (autoseg check_data lists them all)")
    return pairs


def checked_num_classes(num_classes: int | None) -> int:
    """Validate the user's class count: required, and ids must fit below the ignore id 255."""
    if num_classes is None:
        raise UserError("the folder dataset needs num_classes: set it in the config or pass --num-classes")
    if not 1 <= num_classes <= IGNORE_INDEX:
        raise UserError(f"num_classes must be between 1 and {IGNORE_INDEX} (255 is the ignore id), got {num_classes}")
    return num_classes


def generate_palette(num_classes: int) -> np.ndarray:
    """Distinct, deterministic colours: hues spaced by the golden ratio, alternating brightness."""
    index = np.arange(num_classes)
    hue = (index * 0.618033988749895 % 1.0) * 179
    saturation = np.where(index % 2 == 0, 220, 150)
    value = np.where(index % 3 == 0, 255, 190)
    hsv = np.stack([hue, saturation, value], axis=-1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


@register_dataset("folder")
class FolderDataset(SegmentationDataset):
    """Images and masks from ``ROOT/{split}/images`` and ``ROOT/{split}/masks`` (see module doc).

    ``num_classes`` is required; ``class_names`` default to ``class_0..``. ``transform_kind``
    picks the augmentation (``search`` by default, ``eval`` when ``augment=False``).
    """

    search_config = "folder"
    retrain_config = "cityscapes_autodeeplab"

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        augment: bool = True,
        crop_size: int | None = None,
        num_classes: int | None = None,
        transform_kind: str | None = None,
        scale: float = 1.0,
        scale_range: tuple[float, float] = (0.5, 2.0),
        class_names: list[str] | None = None,
    ) -> None:
        if root is None:
            raise UserError(
                "the folder dataset needs a root: give the folder that holds train/ and val/ "
                "(each with images/ and masks/)"
            )
        self.num_classes = checked_num_classes(num_classes)
        if class_names is not None and len(class_names) != self.num_classes:
            raise UserError(
                f"{len(class_names)} class_names given for num_classes={self.num_classes}: give one name per class"
            )
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(self.num_classes)]
        self.palette = generate_palette(self.num_classes)
        self.root, self.split = Path(root), split
        self.samples = list_pairs(root, split)
        super().__init__(build_transform(augment, transform_kind, crop_size, scale, scale_range))

    def __len__(self) -> int:
        """Number of image/mask pairs."""
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Load and validate pair ``index``."""
        return load_checked_pair(*self.samples[index], self.num_classes)
