"""Segmentation training losses: a registry, chosen by the ``loss`` section of a retrain config.

A loss is one :class:`Loss` subclass registered with :func:`register_loss`: its ``Options``
dataclass (the settings of the config's ``loss.options``, with their defaults and ``BOUNDS``),
whether it takes class weights, and ``build``. The retrain tool, the documentation and the
contract tests find it here, by name (:func:`list_losses`). The built-in losses:

- ``ce`` (default): cross-entropy with ignore index 255, as Auto-DeepLab and DeepLab train;
  exactly ``torch.nn.CrossEntropyLoss(ignore_index=255)``.
- ``ohem``: online hard example mining (Shrivastava et al., "Training Region-based Object
  Detectors with Online Hard Example Mining", CVPR 2016) in the pixel form of the PSPNet and
  mmsegmentation code: cross-entropy averaged over the pixels whose predicted probability of
  their true class is below ``threshold``, and over the ``min_kept`` hardest pixels of the batch
  when fewer are below it. (DeepLab's own variant keeps a fixed top-k percent.)
- ``dice``, ``focal`` and ``lovasz``: segmentation_models_pytorch's ``DiceLoss``, ``FocalLoss``
  (one-vs-rest sigmoid focal loss of Lin et al., ICCV 2017, focusing parameter ``gamma``) and
  ``LovaszLoss`` (Lovasz-softmax of Berman et al., CVPR 2018), all in multiclass mode with
  ``ignore_index=255``: ignored pixels are removed (focal, Lovasz) or masked out of both the
  intersection and the cardinality (Dice) before the loss is computed.

Class weights (``class_weights``): a list of one weight per class, or ``median_frequency``
(Eigen and Fergus, "Predicting Depth, Surface Normals and Semantic Labels with a Common
Multi-Scale Convolutional Architecture", ICCV 2015): ``weight_c = median_freq / freq_c`` where
``freq_c`` is the number of pixels of class ``c`` divided by the total number of pixels of the
training images that contain ``c``; a class absent from every training mask gets weight 0.
They are computed once from the training split's full-size masks and cached in the run
directory (``class_weights.json``), so a resumed run reads them back. Cross-entropy and OHEM
weight each pixel's term by its class weight and divide by the sum of the weights; Dice and
focal weight the per-class losses; Lovasz takes none.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from autoseg.config import Bounds, LossConfig, config_problems, from_dict
from autoseg.data.transforms import IGNORE_INDEX
from autoseg.utils.errors import UserError

MEDIAN_FREQUENCY = "median_frequency"
CLASS_WEIGHTS_FILE = "class_weights.json"


class OhemCrossEntropy(nn.Module):
    """Cross-entropy over the hard pixels of a batch (see the module docstring).

    A pixel is kept when it is labelled (not ``ignore_index``) and the softmax probability of
    its true class is below ``threshold``; when fewer than ``min_kept`` pixels are, the
    ``min_kept`` labelled pixels of lowest true-class probability are kept instead (all of them
    when the batch has fewer). The selection carries no gradient.
    """

    def __init__(self, threshold: float = 0.7, min_kept: int = 100_000, ignore_index: int = IGNORE_INDEX,
                 weight: torch.Tensor | None = None):
        super().__init__()
        self.threshold, self.min_kept, self.ignore_index = threshold, min_kept, ignore_index
        self.register_buffer("weight", weight)

    def kept(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Boolean ``(N, H, W)`` mask of the pixels the loss averages over."""
        with torch.no_grad():
            labelled = target != self.ignore_index
            probability = logits.softmax(dim=1).gather(1, torch.where(labelled, target, 0).unsqueeze(1)).squeeze(1)
            hard = labelled & (probability < self.threshold)
            count = min(self.min_kept, int(labelled.sum()))
            if int(hard.sum()) >= count:
                return hard
            hardest = torch.where(labelled, probability, torch.inf).flatten().topk(count, largest=False).indices
            kept = torch.zeros_like(labelled).flatten()
            kept[hardest] = True
            return kept.view_as(labelled)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean (class-weighted) cross-entropy over the kept pixels."""
        kept = self.kept(logits, target)
        losses = F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index,
                                 reduction="none")
        if self.weight is None:
            return losses[kept].sum() / kept.sum()
        return losses[kept].sum() / self.weight[target[kept]].sum()


@dataclasses.dataclass
class NoOptions:
    """A loss without options."""

    BOUNDS: ClassVar[dict[str, Bounds]] = {}


class Loss(abc.ABC):
    """A registered training loss: its name, options and whether it takes class weights, and
    :meth:`build`, which makes the ``nn.Module`` for logits ``(N, C, H, W)`` and targets
    ``(N, H, W)``."""

    name: ClassVar[str]
    """The loss's registry name (``loss.name``), set by :func:`register_loss`."""

    Options: ClassVar[type] = NoOptions
    """The dataclass of the loss's settings (``loss.options``), with their defaults and ``BOUNDS``."""

    takes_class_weights: ClassVar[bool] = True
    """Whether ``loss.class_weights`` may be set for this loss."""

    @staticmethod
    @abc.abstractmethod
    def build(options: Any, ignore_index: int, weight: torch.Tensor | None) -> nn.Module:
        """The loss module with ``options`` (an ``Options``), ignoring targets ``ignore_index``,
        with the per-class ``weight`` (None: unweighted; always None where the loss takes none)."""


LossClass = TypeVar("LossClass", bound=type[Loss])

LOSSES: dict[str, type[Loss]] = {}
"""Every registered loss, by name."""


def register_loss(name: str) -> Callable[[LossClass], LossClass]:
    """Class decorator that registers a :class:`Loss` subclass as ``loss.name: name`` (a second
    loss of the same name is an error)."""

    def register(cls: LossClass) -> LossClass:
        if name in LOSSES:
            raise ValueError(f"a loss named {name!r} is registered already")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return register


def list_losses() -> list[str]:
    """The registered losses' names, in registration order (the default, ``ce``, first)."""
    return list(LOSSES)


def get_loss(name: str) -> type[Loss]:
    """The loss registered as ``name``, or a UserError listing the registered ones."""
    if name not in LOSSES:
        raise UserError(f"unknown loss.name {name!r}: choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def loss_options(config: LossConfig) -> Any:
    """The options of loss ``config.name`` from ``config.options``: an unknown loss or option key,
    a wrong type, a value out of range, or class weights for a loss that takes none, is a
    UserError naming the key. Cheap (reads no data), so tools call it before anything is written."""
    loss = get_loss(config.name)
    options = from_dict(loss.Options, config.options, "loss.options")
    problems = config_problems(options, "loss.options")
    if problems:
        raise UserError(f"{'; '.join(problems)} (options of loss {config.name!r})")
    _check_takes_weights(loss, config.class_weights)
    return options


def _check_takes_weights(loss: type[Loss], class_weights: Any) -> None:
    """A UserError when class weights are given to a loss that takes none."""
    if class_weights is not None and not loss.takes_class_weights:
        raise UserError(f"the {loss.name} loss takes no class weights: set loss.class_weights to null")


def loss_defaults(name: str) -> dict[str, Any]:
    """The default options of loss ``name``, as plain data."""
    return dataclasses.asdict(get_loss(name).Options())


def build_loss(config: LossConfig, num_classes: int, ignore_index: int = IGNORE_INDEX,
               class_weights: Sequence[float] | torch.Tensor | None = None) -> nn.Module:
    """The loss ``config.name`` with ``config.options`` (see :func:`loss_options`) for logits
    ``(N, num_classes, H, W)`` and targets ``(N, H, W)`` where ``ignore_index`` marks unlabelled
    pixels; ``class_weights`` are resolved weights (see :func:`resolve_class_weights`), ``None``
    for none.

    ``ce`` without weights is exactly ``nn.CrossEntropyLoss(ignore_index=ignore_index)``.
    """
    options, loss = loss_options(config), get_loss(config.name)
    weight = None
    _check_takes_weights(loss, class_weights)  # resolved weights may come without config.class_weights
    if class_weights is not None:
        weight = torch.as_tensor(class_weights, dtype=torch.float32)
        if weight.shape != (num_classes,) or bool((weight < 0).any()) or not bool(weight.sum() > 0):
            raise UserError(f"loss.class_weights must be {num_classes} non-negative numbers (one per class, not all "
                            f"zero), got {list(map(float, weight.flatten()))}")
    return loss.build(options, ignore_index, weight)


def _listed(weight: torch.Tensor | None) -> list[float] | None:
    """Class weights as the list segmentation_models_pytorch's losses take."""
    return None if weight is None else weight.tolist()


@register_loss("ce")
class CrossEntropy(Loss):
    """Cross-entropy, the papers' loss; unweighted it is exactly
    ``torch.nn.CrossEntropyLoss(ignore_index=255)``."""

    @staticmethod
    def build(options: NoOptions, ignore_index: int, weight: torch.Tensor | None) -> nn.Module:
        """``torch.nn.CrossEntropyLoss``."""
        return nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)


@dataclasses.dataclass
class OhemOptions:
    """``threshold``: a pixel is hard when the probability of its true class is below it;
    ``min_kept``: at least this many pixels per batch are kept (the hardest)."""

    threshold: float = 0.7
    min_kept: int = 100_000

    BOUNDS: ClassVar[dict[str, Bounds]] = {"threshold": Bounds(0, 1, low_open=True), "min_kept": Bounds(0)}


@register_loss("ohem")
class Ohem(Loss):
    """Cross-entropy over the hard pixels of each batch (online hard example mining, Shrivastava
    et al., CVPR 2016, in the pixel form of PSPNet and mmsegmentation)."""

    Options = OhemOptions

    @staticmethod
    def build(options: OhemOptions, ignore_index: int, weight: torch.Tensor | None) -> nn.Module:
        """:class:`OhemCrossEntropy`."""
        return OhemCrossEntropy(options.threshold, options.min_kept, ignore_index, weight)


@register_loss("dice")
class Dice(Loss):
    """segmentation_models_pytorch's multiclass Dice loss, ignored pixels masked out of both the
    intersection and the cardinality."""

    @staticmethod
    def build(options: NoOptions, ignore_index: int, weight: torch.Tensor | None) -> nn.Module:
        """``smp.losses.DiceLoss``."""
        import segmentation_models_pytorch as smp

        return smp.losses.DiceLoss("multiclass", ignore_index=ignore_index, class_weights=_listed(weight))


@dataclasses.dataclass
class FocalOptions:
    """``gamma``: the focusing parameter (0: one-vs-rest binary cross-entropy; Lin et al.: 2)."""

    gamma: float = 2.0

    BOUNDS: ClassVar[dict[str, Bounds]] = {"gamma": Bounds(0)}


@register_loss("focal")
class Focal(Loss):
    """segmentation_models_pytorch's one-vs-rest sigmoid focal loss (Lin et al., ICCV 2017)."""

    Options = FocalOptions

    @staticmethod
    def build(options: FocalOptions, ignore_index: int, weight: torch.Tensor | None) -> nn.Module:
        """``smp.losses.FocalLoss``."""
        import segmentation_models_pytorch as smp

        return smp.losses.FocalLoss("multiclass", gamma=options.gamma, ignore_index=ignore_index,
                                    class_weights=_listed(weight))


@register_loss("lovasz")
class Lovasz(Loss):
    """segmentation_models_pytorch's Lovasz-softmax loss (Berman et al., CVPR 2018); takes no
    class weights."""

    takes_class_weights = False

    @staticmethod
    def build(options: NoOptions, ignore_index: int, weight: torch.Tensor | None) -> nn.Module:
        """``smp.losses.LovaszLoss``."""
        import segmentation_models_pytorch as smp

        return smp.losses.LovaszLoss("multiclass", ignore_index=ignore_index)


def median_frequency_weights(dataset: Dataset, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Median-frequency class weights (see the module docstring) from the full-size masks of
    ``dataset`` (a :class:`~autoseg.data.SegmentationDataset`, read with ``load_mask``)."""
    if not hasattr(dataset, "load_mask"):
        raise UserError(f"median-frequency class weights need a segmentation dataset, got {type(dataset).__name__}")
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for index in tqdm(range(len(dataset)), desc="class frequencies", leave=False, dynamic_ncols=True):
        mask = np.asarray(dataset.load_mask(index))
        counts = np.bincount(mask[mask != ignore_index].ravel(), minlength=num_classes)[:num_classes]
        class_pixels += counts
        image_pixels[counts > 0] += mask.size
    present = class_pixels > 0
    if not present.any():
        raise UserError("the training masks hold no labelled pixel: median-frequency weights cannot be computed")
    frequency = np.where(present, class_pixels / np.maximum(image_pixels, 1), 0.0)
    median = np.median(frequency[present])
    return np.where(present, median / np.where(present, frequency, 1.0), 0.0)


def resolve_class_weights(config: LossConfig, train_set: Dataset, num_classes: int,
                          cache_dir: Path | None = None) -> list[float] | None:
    """The class weights ``config.class_weights`` asks for: ``None``, the given list, or the
    median-frequency weights of ``train_set``, read from ``cache_dir/class_weights.json`` when
    there, else computed and written there (when ``cache_dir`` is given)."""
    weights = config.class_weights
    if weights is None or isinstance(weights, list):
        return weights
    if weights != MEDIAN_FREQUENCY:
        raise UserError(f"loss.class_weights must be null, a list of {num_classes} numbers or {MEDIAN_FREQUENCY!r}, "
                        f"got {weights!r}")
    cache = None if cache_dir is None else Path(cache_dir) / CLASS_WEIGHTS_FILE
    if cache is not None and cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("method") == MEDIAN_FREQUENCY and len(cached.get("weights", [])) == num_classes:
            return [float(w) for w in cached["weights"]]
    computed = median_frequency_weights(train_set, num_classes).tolist()
    if cache is not None:  # atomically: the processes of a torchrun launch may all write it
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps({"method": MEDIAN_FREQUENCY, "images": len(train_set), "weights": computed}))
        partial.replace(cache)
    return computed


def training_criterion(config: LossConfig, task: str, train_set: Dataset, num_classes: int,
                       cache_dir: Path | None = None) -> nn.Module:
    """The retrain loop's criterion: the configured segmentation loss (class weights resolved,
    see :func:`resolve_class_weights`), or cross-entropy for classification, which takes no
    other loss."""
    if task != "segmentation":
        if config != LossConfig():
            raise UserError(f"the loss section applies to segmentation; a {task} model trains with plain "
                            "cross-entropy: remove the loss settings")
        return nn.CrossEntropyLoss()
    return build_loss(config, num_classes, IGNORE_INDEX, resolve_class_weights(config, train_set, num_classes,
                                                                               cache_dir))
