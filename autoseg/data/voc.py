"""``voc`` and ``voc_aug``: PASCAL VOC 2012 segmentation, 21 classes (background and 20 objects);
255 marks object borders and difficult regions and is ignored.

Official layout (``VOCtrainval_11-May-2012.tar`` from host.robots.ox.ac.uk; ROOT is
``VOCdevkit/VOC2012``, and ``VOCdevkit`` or the folder holding it work as well)::

    ROOT/JPEGImages/<id>.jpg
    ROOT/SegmentationClass/<id>.png                 palette PNG: palette index = class id, 255 = border
    ROOT/ImageSets/Segmentation/{train,val,trainval}.txt   one <id> per line (1,464 / 1,449 / 2,913)

``voc_aug`` trains on the SBD-augmented set used since DeepLab (the 11,355 images annotated by
Hariharan et al., "Semantic Contours from Inverse Detectors", ICCV 2011, merged with VOC
train, without VOC val: 10,582 images). Its masks and list are not part of the VOC download;
the usual converted release (``SegmentationClassAug.zip``) and list go beside the official
folders::

    ROOT/SegmentationClassAug/<id>.png              class ids (grayscale or palette PNG), 255 = border
    ROOT/ImageSets/Segmentation/train_aug.txt

Its ``train`` split reads ``train_aug.txt`` and ``SegmentationClassAug``; every other split is
the official one. Any other ``<split>.txt`` in ``ImageSets/Segmentation`` is a split too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from autoseg.data import register_dataset
from autoseg.data.file_pairs import FilePairsDataset, require_pairs, split_missing
from autoseg.data.folder import check_mask_ids, read_mask
from autoseg.utils.errors import UserError

CLASS_NAMES: list[str] = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]

_LISTS = Path("ImageSets") / "Segmentation"
_HOW_TO_GET = ("PASCAL VOC 2012 comes from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ "
               "(VOCtrainval_11-May-2012.tar): give --data-root VOCdevkit/VOC2012, which holds JPEGImages/, "
               "SegmentationClass/ and ImageSets/Segmentation/")


def voc_palette(count: int) -> np.ndarray:
    """The VOC devkit's colour map (``VOClabelcolormap``): the bits of each index spread over
    R, G and B from the most significant bit down. ``(count, 3)`` uint8."""
    palette = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        value = index
        for bit in range(7, -1, -1):
            for channel in range(3):
                palette[index, channel] |= ((value >> channel) & 1) << bit
            value >>= 3
    return palette


PALETTE: np.ndarray = voc_palette(len(CLASS_NAMES))


def find_voc_root(root: str | Path | None) -> Path:
    """The ``VOC2012`` folder: ``root`` itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``."""
    if root is None:
        raise UserError(f"the voc dataset needs a root folder. {_HOW_TO_GET}")
    for candidate in (Path(root), Path(root) / "VOC2012", Path(root) / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise UserError(f"no JPEGImages/ folder in {root} (nor in {root}/VOC2012 or {root}/VOCdevkit/VOC2012). "
                    f"{_HOW_TO_GET}")


def read_split(voc_root: Path, split: str) -> list[str]:
    """The image ids listed in ``ImageSets/Segmentation/<split>.txt``; an id that is a path (holding
    a ``/``, a ``\\`` or ``..``), which would read files outside the dataset, is refused."""
    listing = voc_root / _LISTS / f"{split}.txt"
    if not listing.is_file():
        known = sorted(path.stem for path in (voc_root / _LISTS).glob("*.txt"))
        raise UserError(f"split list {listing} not found; the lists there are: {', '.join(known) or 'none'}. "
                        f"{_HOW_TO_GET}")
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise UserError(f"split list {listing} is empty: it needs one image id per line")
    paths = [name for name in ids if "/" in name or "\\" in name or ".." in name]
    if paths:
        raise UserError(f"split list {listing} holds {len(paths)} id(s) that are paths, e.g. {paths[0]!r}: a VOC "
                        "list names images of JPEGImages/ by their id alone (such as 2007_000032)")
    return ids


def match_pairs(root: str | Path | None, split: str, masks: str = "SegmentationClass",
                listing: str | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, mask) paths of the ids of ``listing`` (default: ``split``) with masks from the
    folder ``masks``, and one problem per listed file that is missing."""
    voc_root = find_voc_root(root)
    pairs = [(voc_root / "JPEGImages" / f"{name}.jpg", voc_root / masks / f"{name}.png")
             for name in read_split(voc_root, listing or split)]
    return split_missing(pairs, f"listed in the {listing or split} split")


def find_pairs(root: str | Path | None, split: str, masks: str = "SegmentationClass",
               listing: str | None = None) -> list[tuple[Path, Path]]:
    """The pairs of :func:`match_pairs`; raises if a listed file is missing."""
    return require_pairs(match_pairs(root, split, masks, listing),
                         f"file(s) listed in the {listing or split} split are", _HOW_TO_GET)


def aug_match_pairs(root: str | Path | None, split: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """``voc_aug``'s pairs: ``train`` reads train_aug.txt with SegmentationClassAug; any other split
    is the official one."""
    if split == "train":
        return match_pairs(root, split, masks="SegmentationClassAug", listing="train_aug")
    return match_pairs(root, split)


def check_class_ids(ids: np.ndarray, path: Path) -> None:
    """Raise unless a mask (or an array of the ids it holds) has VOC's ids only: 0..20 and 255."""
    check_mask_ids(ids, len(CLASS_NAMES), path)


@register_dataset("voc")
class VOCDataset(FilePairsDataset):
    """PASCAL VOC 2012 segmentation (see the module docstring): 21 classes, 255 ignored.

    ``crop_size`` defaults to 321 (search) or DeepLab's 513 (retrain); ``scale`` (the fixed
    resize of the search augmentation) to 1.
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    search_config = "voc"
    retrain_config = "voc"
    palette = PALETTE
    find_pairs = staticmethod(find_pairs)

    def load_mask(self, index: int) -> np.ndarray:
        """The stored class ids (palette indices), checked to be 0..20 or 255."""
        mask_path = self.samples[index][1]
        mask = read_mask(mask_path)
        check_class_ids(mask, mask_path)
        return mask.astype(np.uint8)


@register_dataset("voc_aug")
class VOCAugDataset(VOCDataset):
    """PASCAL VOC 2012 whose ``train`` split is the SBD-augmented ``train_aug`` list with the
    ``SegmentationClassAug`` masks (see the module docstring)."""

    @staticmethod
    def find_pairs(root: str | Path | None, split: str) -> list[tuple[Path, Path]]:
        """``train``: train_aug.txt with SegmentationClassAug; any other split: the official one."""
        listing = "train_aug" if split == "train" else split
        return require_pairs(aug_match_pairs(root, split), f"file(s) listed in the {listing} split are", _HOW_TO_GET)
