"""``cifar10``: CIFAR-10 classification for DARTS cell search and retraining.

Reads the standard python version, ``ROOT/cifar-10-batches-py`` (extracted from
cifar-10-python.tar.gz); nothing is ever downloaded. Splits: ``train`` (50,000 images) and
``test`` (10,000; ``val`` is an alias). Samples are ``(3x32x32 float tensor, int label)``.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from autoseg.data import register_dataset, sample_seed
from autoseg.utils.errors import UserError

if TYPE_CHECKING:
    from torchvision import transforms as T

CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_SPLITS = {"train": True, "test": False, "val": False}  # split name -> torchvision's ``train`` flag


class Cutout:
    """Zero a ``length`` x ``length`` square (clipped at the border) centred on a random pixel.

    Applied to the normalised tensor, as in the DARTS retraining (length 16). Uses torch's
    random generator, so DataLoader workers get different squares.
    """

    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Return a copy of the ``CxHxW`` tensor with the square zeroed."""
        height, width = image.shape[-2:]
        y = int(torch.randint(height, ()))
        x = int(torch.randint(width, ()))
        half = self.length // 2
        out = image.clone()
        out[..., max(y - half, 0) : y + half, max(x - half, 0) : x + half] = 0
        return out


def cifar_transform(augment: bool, cutout: int = 0) -> T.Compose:
    """DARTS pipeline: (random crop 32 with padding 4, flip,) to tensor, normalise (, cutout)."""
    from torchvision import transforms as T  # torchvision is imported only by a CIFAR-10 run

    steps: list[Callable] = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
    steps += [T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
    if cutout > 0:
        steps.append(Cutout(cutout))
    return T.Compose(steps)


@functools.cache
def _reader_class() -> type:
    """torchvision's CIFAR-10 reader, checking that the files exist instead of their MD5 sums (see
    :class:`CIFAR10Dataset`); made on first use, so that importing autoseg does not import torchvision."""
    from torchvision import datasets

    class CheckedCIFAR10(datasets.CIFAR10):
        def _check_integrity(self) -> bool:
            """All files present."""
            return not _missing_files(Path(self.root) / self.base_folder)

        def _load_meta(self) -> None:
            """Read the class names from ``batches.meta`` without checking its MD5 sum."""
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as meta_file:
                self.classes = pickle.load(meta_file, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {name: index for index, name in enumerate(self.classes)}

    return CheckedCIFAR10


def _missing_files(folder: Path) -> list[str]:
    """Names of the CIFAR-10 files that ``folder`` lacks."""
    reader = _reader_class()
    expected = [name for name, _ in reader.train_list + reader.test_list]
    expected.append(reader.meta["filename"])
    return [name for name in expected if not (folder / name).is_file()]


@register_dataset("cifar10")
class CIFAR10Dataset(Dataset):
    """CIFAR-10 through torchvision's reader, which checks that the files exist instead of their MD5 sums.

    torchvision verifies every batch against the MD5 of the official archive. We never
    download, so that check can only reject data the user already has: it re-hashes 180 MB
    on each construction and refuses re-packed copies (and the small fakes the tests write in
    the same pickle format). Missing files raise ``UserError`` with download instructions.
    """

    task = "classification"
    eval_split = "test"
    num_classes = len(CLASS_NAMES)
    search_config = "cifar10"
    retrain_config = "cifar10_darts"
    class_names = CLASS_NAMES

    def __init__(self, root: str | Path | None, split: str, augment: bool = True, cutout: int = 0) -> None:
        if split not in _SPLITS:
            raise UserError(f"unknown CIFAR-10 split {split!r}: use train or test (val is an alias of test)")
        if cutout < 0:
            raise UserError(f"cutout must be 0 (off) or a positive length in pixels, got {cutout}: DARTS uses 16")
        if root is None:
            raise UserError("the cifar10 dataset needs a root: the folder that holds cifar-10-batches-py")
        root = Path(root)
        folder = root / _reader_class().base_folder
        missing = _missing_files(folder)
        if missing:
            detail = f" (missing {', '.join(missing)})" if folder.is_dir() else ""
            raise UserError(
                f"CIFAR-10 not found in {folder}{detail}: download and extract "
                f"cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html into {root}"
            )
        try:
            self.reader: Any = _reader_class()(str(root), _SPLITS[split], transform=cifar_transform(augment, cutout),
                                               download=False)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as error:
            raise UserError(
                f"CIFAR-10 files in {folder} are corrupt ({error!r}): extract cifar-10-python.tar.gz again"
            ) from error
        self.classes = self.reader.classes
        self.augment_seed = torch.initial_seed() % 2**32
        self.epoch = 0

    def __len__(self) -> int:
        """Number of images of the split."""
        return len(self.reader)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation random numbers of ``epoch``."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """(normalised 3x32x32 image, label), augmented with the seed of (seed, epoch, index)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.augment_seed, self.epoch, index))
            return self.reader[index]
