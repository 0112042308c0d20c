"""Datasets: one registry, one factory, and the contract every segmentation dataset keeps.

The built-in datasets are the modules imported at the bottom of this file; :func:`list_datasets`
names every registered one (``synthetic``, generated street scenes, is the default).

Every dataset class declares its ``task`` (``"segmentation"`` or ``"classification"``),
``eval_split`` (the split results are reported on) and the experiment configs a run on it starts
from without ``--config``: ``search_config`` and ``retrain_config``, the names of files in
``configs/search/`` and ``configs/retrain/`` (None where there is none), so that nothing guesses
them from names and no table elsewhere lists the datasets.

A segmentation dataset returns ``(image, mask)``: a float32 ``3xHxW`` tensor normalised
with the ImageNet mean and std, and an int64 ``HxW`` tensor of train ids where 255 means
ignore. It also carries ``num_classes``, ``class_names``, ``ignore_index`` and a
``palette`` (``(num_classes, 3)`` uint8) for colour-coding predictions.

A new dataset is one module holding one class decorated with ``@register_dataset("name")``
whose constructor takes ``(root, split, augment=..., ...)`` (``build_dataset`` passes the rest by
keyword) and whose class attributes say the above, plus, for a built-in dataset, its module's name
in the import line at the bottom of this file (that import is what registers it; a dataset of
your own registers when your code imports its module). Its default configs, if it declares any,
are YAML files in ``configs/``. Every tool, help text, documentation page and contract test finds
it through :func:`list_datasets`.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from autoseg.data.transforms import IGNORE_INDEX
from autoseg.utils.errors import UserError

__all__ = [
    "SegmentationDataset",
    "build_dataset",
    "dataset_default_config",
    "dataset_eval_split",
    "dataset_num_classes",
    "dataset_task",
    "list_datasets",
    "register_dataset",
    "registered_name",
    "sample_seed",
    "split_in_halves",
]

DatasetClass = TypeVar("DatasetClass", bound=type)

_REGISTRY: dict[str, type] = {}


def register_dataset(name: str) -> Callable[[DatasetClass], DatasetClass]:
    """Class decorator that makes a dataset available to ``build_dataset`` under ``name``."""

    def register(cls: DatasetClass) -> DatasetClass:
        if name in _REGISTRY:
            raise ValueError(f"dataset name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        _REGISTRY[name] = cls
        return cls

    return register


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(_REGISTRY)


def registered_name(dataset_cls: type) -> str | None:
    """The name ``dataset_cls`` is registered under, or None for a class that is not registered."""
    return next((name for name, cls in _REGISTRY.items() if cls is dataset_cls), None)


# Settings of the whole run rather than of one dataset: passed to the datasets whose
# constructor takes them (``seed`` shapes generated data) and left out for the others.
_RUN_WIDE_OPTIONS = ("seed",)


def _dataset_class(name: str) -> type:
    """The class registered as ``name``; an unknown name lists the known ones."""
    if name not in _REGISTRY:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(list_datasets())}")
    return _REGISTRY[name]


def dataset_task(name: str) -> str:
    """What dataset ``name`` is for: ``"segmentation"`` or ``"classification"`` (its class
    attribute ``task``)."""
    return _dataset_class(name).task


def dataset_eval_split(name: str) -> str:
    """The split dataset ``name`` reports results on (``val``, or ``test`` for CIFAR-10)."""
    return _dataset_class(name).eval_split


CONFIG_KINDS = ("search", "retrain")
"""The experiment kinds a dataset names a default config for (``<kind>_config``)."""


def dataset_default_config(name: str, kind: str) -> str | None:
    """The name of the config in ``configs/<kind>/`` a ``kind`` run (``search`` or ``retrain``) on
    dataset ``name`` starts from (its class attribute ``search_config`` or ``retrain_config``);
    None where the dataset declares none."""
    if kind not in CONFIG_KINDS:
        raise ValueError(f"kind must be one of {', '.join(CONFIG_KINDS)}, got {kind!r}")
    return getattr(_dataset_class(name), f"{kind}_config", None)


def dataset_num_classes(name: str, num_classes: int | None = None) -> int:
    """Number of classes of dataset ``name``, without reading any data.

    Datasets with a fixed class count declare it as a class attribute; a ``num_classes`` that
    contradicts it is an error. Datasets without one (``folder``) need ``num_classes``.
    """
    fixed = getattr(_dataset_class(name), "num_classes", None)
    if fixed is None:
        if num_classes is None:
            raise UserError(f"dataset {name!r} needs num_classes: set it in the config or pass --num-classes")
        return num_classes
    if num_classes is not None and num_classes != fixed:
        raise UserError(
            f"dataset {name!r} has {fixed} classes but num_classes={num_classes} was given: "
            f"set num_classes to {fixed} or leave it out"
        )
    return fixed


def build_dataset(
    name: str,
    root: str | None,
    split: str,
    augment: bool = True,
    crop_size: int | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> Dataset:
    """Build the registered dataset ``name`` for ``split`` (e.g. ``"train"``, ``"val"``).

    ``crop_size`` is passed on when given; ``num_classes`` is passed to datasets that take it
    and checked against the others' fixed count. ``kwargs`` are dataset-specific
    (``transform_kind``, ``scale``, ``image_size``, ``length``, ``cutout``, ...), except
    ``seed``, which only datasets that generate data take. An unknown name or an option the
    dataset does not take raises ``UserError``.
    """
    dataset_cls = _dataset_class(name)
    accepted = inspect.signature(dataset_cls).parameters
    options = {key: value for key, value in kwargs.items() if key in accepted or key not in _RUN_WIDE_OPTIONS}
    options["augment"] = augment
    if crop_size is not None:
        options["crop_size"] = crop_size
    if "num_classes" in accepted:
        options["num_classes"] = num_classes
    else:
        dataset_num_classes(name, num_classes)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = ", ".join(p for p in accepted if p not in ("root", "split"))
        raise UserError(f"dataset {name!r} does not take option(s) {', '.join(unknown)}: it takes {allowed}")
    return dataset_cls(root, split, **options)


def split_in_halves(dataset: Dataset, seed: int) -> tuple[Subset, Subset]:
    """Shuffle the indices of ``dataset`` with ``seed`` and cut them into two disjoint halves.

    The bilevel search updates the weights on the first half and the architecture on the
    second. With an odd length the first half gets the extra sample.
    """
    length = len(dataset)  # type: ignore[arg-type]
    if length < 2:
        raise UserError(f"the dataset has {length} sample(s); the search needs at least 2 to split in halves")
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = (length + 1) // 2
    return Subset(dataset, order[:cut]), Subset(dataset, order[cut:])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch``.

    Seeding every sample from (seed, epoch, index) makes augmentation independent of worker
    processes and of what was loaded before, so a run resumed mid-epoch, or with another
    number of workers, sees exactly the same augmented samples.
    """
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SegmentationDataset(Dataset, abc.ABC):
    """Base of the segmentation datasets: loads a numpy pair, applies the transform, casts.

    Subclasses set ``num_classes``, ``class_names`` and ``palette`` (and ``search_config`` /
    ``retrain_config`` where they have default configs) and implement ``__len__`` and ``load``.
    """

    task = "segmentation"
    eval_split = "val"
    search_config: str | None = None
    retrain_config: str | None = None
    ignore_index: int = IGNORE_INDEX
    num_classes: int
    class_names: list[str]
    palette: np.ndarray

    def __init__(self, transform: A.Compose) -> None:
        self.transform = transform
        self.augment_seed = torch.initial_seed() % 2**32
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation random numbers of ``epoch`` (see :func:`sample_seed`)."""
        self.epoch = epoch

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abc.abstractmethod
    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as an RGB uint8 ``HxWx3`` image and a uint8 ``HxW`` train-id mask."""

    def load_mask(self, index: int) -> np.ndarray:
        """The uint8 ``HxW`` train-id mask of sample ``index``, without augmentation (datasets
        that can read a mask without its image override this)."""
        return self.load(index)[1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (float32 3xHxW normalised image, int64 HxW mask with 255 = ignore)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        self.transform.set_random_seed(sample_seed(self.augment_seed, self.epoch, index))
        image, mask = self.load(index)
        sample = self.transform(image=image, mask=mask)
        return sample["image"], sample["mask"].long()


# The built-in datasets register themselves with the decorator above, so they are imported
# after it is defined.
from autoseg.data import ade20k, cifar10, cityscapes, folder, shapes, synthetic, voc  # noqa: E402,F401
