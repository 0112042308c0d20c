"""``cityscapes``: the Cityscapes fine annotations, 34 label ids mapped to the 19 train ids.

Official layout (from the registered download at cityscapes-dataset.com)::

    ROOT/leftImg8bit/{train,val,test}/<city>/<name>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<name>_gtFine_labelIds.png

Auto-DeepLab searches at half resolution (``scale=0.5``, the default here) on 321x321 crops
and retrains on 769x769 crops with random scaling (``transform_kind="retrain"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoseg.data import register_dataset
from autoseg.data.file_pairs import FilePairsDataset
from autoseg.data.folder import read_mask
from autoseg.data.transforms import IGNORE_INDEX
from autoseg.utils.errors import UserError

SEARCH_CROP_SIZE = 321
RETRAIN_CROP_SIZE = 769

_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"
_HOW_TO_GET = (
    "Cityscapes needs a registered download from https://www.cityscapes-dataset.com: unzip "
    "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into ROOT so that it holds "
    f"ROOT/leftImg8bit/<split>/<city>/<name>{_IMAGE_SUFFIX} and ROOT/gtFine/<split>/<city>/<name>{_LABEL_SUFFIX}"
)

# label id -> (train id, class name, colour) for the 19 evaluated classes; every other id,
# including -1 (license plate, stored as 255), is ignored.
_TRAIN_CLASSES: dict[int, tuple[int, str, tuple[int, int, int]]] = {
    7: (0, "road", (128, 64, 128)),
    8: (1, "sidewalk", (244, 35, 232)),
    11: (2, "building", (70, 70, 70)),
    12: (3, "wall", (102, 102, 156)),
    13: (4, "fence", (190, 153, 153)),
    17: (5, "pole", (153, 153, 153)),
    19: (6, "traffic light", (250, 170, 30)),
    20: (7, "traffic sign", (220, 220, 0)),
    21: (8, "vegetation", (107, 142, 35)),
    22: (9, "terrain", (152, 251, 152)),
    23: (10, "sky", (70, 130, 180)),
    24: (11, "person", (220, 20, 60)),
    25: (12, "rider", (255, 0, 0)),
    26: (13, "car", (0, 0, 142)),
    27: (14, "truck", (0, 0, 70)),
    28: (15, "bus", (0, 60, 100)),
    31: (16, "train", (0, 80, 100)),
    32: (17, "motorcycle", (0, 0, 230)),
    33: (18, "bicycle", (119, 11, 32)),
}

_BY_TRAIN_ID = sorted(_TRAIN_CLASSES.values())
CLASS_NAMES: list[str] = [name for _, name, _ in _BY_TRAIN_ID]
PALETTE: np.ndarray = np.array([colour for _, _, colour in _BY_TRAIN_ID], dtype=np.uint8)


def _label_to_train_id_table() -> np.ndarray:
    """A 256-entry lookup table: stored label id -> train id, 255 for everything not evaluated."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, (train_id, _, _) in _TRAIN_CLASSES.items():
        table[label_id] = train_id
    return table


LABEL_TO_TRAIN_ID: np.ndarray = _label_to_train_id_table()

LABEL_IDS = (*range(34), IGNORE_INDEX)
"""The label ids of the official labelIds images: 0..33, and -1 (license plate) stored as 255."""
_IS_LABEL_ID = np.isin(np.arange(256), LABEL_IDS)


def check_label_ids(label_ids: np.ndarray, path: Path) -> None:
    """Raise unless ``label_ids`` (a labelIds image, or an array of the ids it holds) is 8-bit and
    holds official Cityscapes label ids only (:data:`LABEL_IDS`)."""
    if label_ids.dtype != np.uint8:
        raise UserError(f"{path} is not an 8-bit label-id image: use the official *{_LABEL_SUFFIX} files")
    if not _IS_LABEL_ID[label_ids].all():
        unknown = np.unique(label_ids[~_IS_LABEL_ID[label_ids]]).tolist()
        raise UserError(f"{path} holds label id(s) {unknown} that Cityscapes does not define (0..33, 255): use the "
                        f"official *{_LABEL_SUFFIX} files")


def _train_to_label_id_table() -> np.ndarray:
    """Train id (0..18) -> label id: the inverse of ``LABEL_TO_TRAIN_ID`` on the evaluated classes."""
    table = np.zeros(len(_TRAIN_CLASSES), dtype=np.uint8)
    for label_id, (train_id, _, _) in _TRAIN_CLASSES.items():
        table[train_id] = label_id
    return table


TRAIN_ID_TO_LABEL_ID: np.ndarray = _train_to_label_id_table()
"""What the Cityscapes benchmark server expects in a submitted prediction instead of train ids."""


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map an array of predicted train ids (0..18) to Cityscapes label ids (uint8).

    Raises:
        ValueError: an id is outside 0..18 (the ignore id 255 is never a prediction).
    """
    if train_ids.size and (train_ids.min() < 0 or train_ids.max() >= len(TRAIN_ID_TO_LABEL_ID)):
        raise ValueError(f"Cityscapes train ids are 0..{len(TRAIN_ID_TO_LABEL_ID) - 1}, got "
                         f"{train_ids.min()}..{train_ids.max()}")
    return TRAIN_ID_TO_LABEL_ID[train_ids]


def _existing_folder(path: Path) -> Path:
    """Return ``path`` if it is a folder, else raise saying how to obtain the data."""
    if not path.is_dir():
        raise UserError(f"Cityscapes folder {path} not found. {_HOW_TO_GET}")
    return path


def match_pairs(root: str | Path | None, split: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, labelIds) paths of ``split`` sorted, and one problem per image without its label
    file; raises if a folder is missing or holds no images."""
    if root is None:
        raise UserError(f"the cityscapes dataset needs a root folder. {_HOW_TO_GET}")
    root = _existing_folder(Path(root))
    image_dir = _existing_folder(root / "leftImg8bit" / split)
    label_dir = _existing_folder(root / "gtFine" / split)
    images = sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
    if not images:
        raise UserError(f"no *{_IMAGE_SUFFIX} files in {image_dir}/<city>/. {_HOW_TO_GET}")
    pairs = [
        (image, label_dir / image.parent.name / image.name.replace(_IMAGE_SUFFIX, _LABEL_SUFFIX)) for image in images
    ]
    problems = [f"{label} is missing (the label file of {image})" for image, label in pairs if not label.is_file()]
    return [(image, label) for image, label in pairs if label.is_file()], problems


def find_pairs(root: str | Path | None, split: str) -> list[tuple[Path, Path]]:
    """(image, labelIds) paths of ``split``, sorted; raises if a folder or a label file is missing."""
    pairs, problems = match_pairs(root, split)
    if problems:
        raise UserError(f"{len(problems)} image(s) in {Path(root) / 'leftImg8bit' / split} have no label file, e.g. "
                        f"{problems[0]}. {_HOW_TO_GET}")
    return pairs


@register_dataset("cityscapes")
class CityscapesDataset(FilePairsDataset):
    """Cityscapes fine annotations with the 19 train ids (255 = ignore).

    ``crop_size`` defaults to the paper's 321 (search) or 769 (retrain); ``scale`` is the
    fixed resize of the search augmentation (0.5 = the paper's half resolution) and
    ``scale_range`` the random scaling of the retrain augmentation.
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    search_config = "cityscapes"
    retrain_config = "cityscapes_autodeeplab"
    palette = PALETTE
    search_crop_size = SEARCH_CROP_SIZE
    retrain_crop_size = RETRAIN_CROP_SIZE
    search_scale = 0.5
    find_pairs = staticmethod(find_pairs)

    def load_mask(self, index: int) -> np.ndarray:
        """The train-id mask (label ids mapped through ``LABEL_TO_TRAIN_ID``)."""
        label_path = self.samples[index][1]
        label_ids = read_mask(label_path)
        check_label_ids(label_ids, label_path)
        return LABEL_TO_TRAIN_ID[label_ids]
