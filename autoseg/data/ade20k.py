"""``ade20k``: the ADE20K scene-parsing benchmark (SceneParsing / ADEChallengeData2016), 150 classes.

Official layout (``ADEChallengeData2016.zip`` from sceneparsing.csail.mit.edu; ROOT is
``ADEChallengeData2016`` or the folder holding it)::

    ROOT/images/{training,validation}/ADE_<split>_<number>.jpg
    ROOT/annotations/{training,validation}/ADE_<split>_<number>.png   grayscale: 0 = other, k = class k

Splits ``train`` and ``val`` (or ``training`` and ``validation``): 20,210 and 2,000 images.
Stored value 0 ("other objects", not evaluated) becomes the ignore id 255 and class ``k``
becomes train id ``k - 1``, as the benchmark evaluates. Class names are the first names of
the benchmark's ``objectInfo150``; the palette is autoseg's generated one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from autoseg.data import register_dataset
from autoseg.data.file_pairs import FilePairsDataset, require_pairs, split_missing
from autoseg.data.folder import generate_palette, read_mask
from autoseg.data.transforms import IGNORE_INDEX
from autoseg.utils.errors import UserError

CLASS_NAMES: list[str] = (
    "wall|building|sky|floor|tree|ceiling|road|bed|windowpane|grass|cabinet|sidewalk|person|earth|door|table|"
    "mountain|plant|curtain|chair|car|water|painting|sofa|shelf|house|sea|mirror|rug|field|armchair|seat|fence|"
    "desk|rock|wardrobe|lamp|bathtub|railing|cushion|base|box|column|signboard|chest of drawers|counter|sand|sink|"
    "skyscraper|fireplace|refrigerator|grandstand|path|stairs|runway|case|pool table|pillow|screen door|stairway|"
    "river|bridge|bookcase|blind|coffee table|toilet|flower|book|hill|bench|countertop|stove|palm|kitchen island|"
    "computer|swivel chair|boat|bar|arcade machine|hovel|bus|towel|light|truck|tower|chandelier|awning|"
    "streetlight|booth|television receiver|airplane|dirt track|apparel|pole|land|bannister|escalator|ottoman|"
    "bottle|buffet|poster|stage|van|ship|fountain|conveyer belt|canopy|washer|plaything|swimming pool|stool|"
    "barrel|basket|waterfall|tent|bag|minibike|cradle|oven|ball|food|step|tank|trade name|microwave|pot|animal|"
    "bicycle|lake|dishwasher|screen|blanket|sculpture|hood|sconce|vase|traffic light|tray|ashcan|fan|pier|"
    "crt screen|plate|monitor|bulletin board|shower|radiator|glass|clock|flag"
).split("|")

_SPLIT_FOLDERS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}
_HOW_TO_GET = ("ADE20K comes from http://sceneparsing.csail.mit.edu (ADEChallengeData2016.zip): give --data-root "
               "ADEChallengeData2016, which holds images/{training,validation}/*.jpg and "
               "annotations/{training,validation}/*.png")


def _stored_to_train_id_table() -> np.ndarray:
    """Stored annotation value -> train id: 0 -> 255 (ignored), k -> k - 1 for k = 1..150, 255 above."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    table[1:len(CLASS_NAMES) + 1] = np.arange(len(CLASS_NAMES))
    return table


STORED_TO_TRAIN_ID: np.ndarray = _stored_to_train_id_table()


def match_pairs(root: str | Path | None, split: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, annotation) paths of ``split``, sorted, and one problem per image without its
    annotation; raises if a folder is missing or holds no image."""
    if root is None:
        raise UserError(f"the ade20k dataset needs a root folder. {_HOW_TO_GET}")
    if split not in _SPLIT_FOLDERS:
        raise UserError(f"ade20k has the splits train and val (training, validation), not {split!r}")
    base = next((candidate for candidate in (Path(root), Path(root) / "ADEChallengeData2016")
                 if (candidate / "images").is_dir()), None)
    if base is None:
        raise UserError(f"no images/ folder in {root} (nor in {root}/ADEChallengeData2016). {_HOW_TO_GET}")
    folder = _SPLIT_FOLDERS[split]
    images = sorted((base / "images" / folder).glob("*.jpg"))
    if not images:
        raise UserError(f"no *.jpg images in {base / 'images' / folder}. {_HOW_TO_GET}")
    pairs = [(image, base / "annotations" / folder / f"{image.stem}.png") for image in images]
    return split_missing(pairs, f"of the {folder} annotations")


def find_pairs(root: str | Path | None, split: str) -> list[tuple[Path, Path]]:
    """The pairs of :func:`match_pairs`; raises if an annotation is missing."""
    return require_pairs(match_pairs(root, split), f"annotation(s) of {_SPLIT_FOLDERS.get(split)} images are",
                         _HOW_TO_GET)


def check_annotation_values(stored: np.ndarray, path: Path) -> None:
    """Raise unless an annotation (or an array of the values it holds) is 8-bit and holds 0 (other)
    and the class numbers 1..150 only."""
    if stored.dtype != np.uint8 or (stored.size and stored.max() > len(CLASS_NAMES)):
        raise UserError(f"annotation {path} holds values above {len(CLASS_NAMES)} (or is not 8-bit): ADE20K "
                        "annotations are grayscale PNGs of 0 (other) and the class numbers 1..150")


@register_dataset("ade20k")
class ADE20KDataset(FilePairsDataset):
    """ADE20K scene parsing with 150 classes (see the module docstring); 0 -> ignore, k -> k - 1.

    ``crop_size`` defaults to 321 (search) or DeepLab's 513 (retrain); ``scale`` (the fixed
    resize of the search augmentation) to 1.
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    search_config = "ade20k"
    retrain_config = "ade20k"
    palette = generate_palette(len(CLASS_NAMES))
    find_pairs = staticmethod(find_pairs)

    def load_mask(self, index: int) -> np.ndarray:
        """Train ids of annotation ``index``: stored 0 -> 255, k -> k - 1; values above 150 are errors."""
        path = self.samples[index][1]
        stored = read_mask(path)
        check_annotation_values(stored, path)
        return STORED_TO_TRAIN_ID[stored]
