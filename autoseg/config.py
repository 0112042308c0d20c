"""Typed experiment configuration, loaded from one YAML file per experiment.

Unknown keys and values of the wrong type are errors (:class:`~autoseg.utils.errors.UserError`),
never silently ignored. Tools apply command-line overrides on top and save the resolved
configuration in the run directory.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import yaml

from autoseg.utils.compilation import compile_mode
from autoseg.utils.errors import UserError
from autoseg.layers.ops import PRIMITIVES, check_primitives
from autoseg.utils.precision import AUTOCAST_DTYPES

T = TypeVar("T")


@dataclass
class DataConfig:
    """Which data to read and how to batch it."""

    dataset: str = "synthetic"
    root: str | None = None
    num_classes: int | None = None
    batch_size: int = 2
    crop_size: int | None = None
    scale: float | None = None
    image_size: int | None = None
    train_length: int | None = None
    val_length: int | None = None
    num_workers: int = 0
    eval_batch_size: int = 1
    max_eval_batches: int | None = None
    scale_range: tuple[float, float] | None = None
    cutout: int | None = None


@dataclass
class OptimizerConfig:
    """SGD on the network weights with a cosine learning rate (both papers' search protocol)."""

    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float | None = 5.0


@dataclass
class ArchOptimizerConfig:
    """Adam on the architecture parameters (alpha, and beta for the trellis)."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-3


@dataclass
class CollapseGuardsConfig:
    """The collapse-guard settings of both search modes' ``model:`` section, flat as config files
    write them; all off by default, i.e. the papers' search. What each one does and its range:
    :class:`CollapseGuardSettings`, the one value the supernets take (:meth:`collapse_guards`)."""

    partial_channels: int = 1
    edge_normalization: bool = False
    auxiliary_skip: float = 0.0
    skip_dropout: float = 0.0
    max_skip_connect: int | None = None

    def collapse_guards(self) -> CollapseGuardSettings:
        """The guard settings as one value, the ``guards`` argument of the search supernets."""
        names = [item.name for item in dataclasses.fields(CollapseGuardSettings)]
        return CollapseGuardSettings(**{name: getattr(self, name) for name in names})


@dataclass
class DartsSearchModelConfig(CollapseGuardsConfig):
    """The DARTS search network (docs/DESIGN.md §2)."""

    init_channels: int = 16
    layers: int = 8
    blocks: int = 4
    multiplier: int = 4
    stem_multiplier: int = 3
    primitives: list[str] = field(default_factory=lambda: list(PRIMITIVES))
    selective_checkpoint: bool = False


@dataclass
class TrellisModelConfig(CollapseGuardsConfig):
    """The Auto-DeepLab trellis supernet (docs/DESIGN.md §3)."""

    layers: int = 12
    levels: int = 4
    blocks: int = 5
    filter_multiplier: int = 8
    primitives: list[str] = field(default_factory=lambda: list(PRIMITIVES))
    free_first_step: bool = True
    aspp_base_rate: int = 96
    aspp_channels: int | None = None
    checkpoint_cells: bool = False
    selective_checkpoint: bool = False


@dataclass
class TrainConfig:
    """The loop: length, bilevel schedule, device and reproducibility.

    ``amp``: mixed precision, off (null, the papers' float32), ``bf16`` or ``fp16`` (with gradient
    scaling; see :mod:`autoseg.utils.precision`). ``nan_policy``: what a step whose loss or gradient is
    not finite does, ``stop`` the run or ``skip`` the batch's update (see
    :mod:`autoseg.engine.step_guard`). ``checkpoint_every_steps``: also write the checkpoint every
    that many optimiser steps within an epoch (null: only at the end of an epoch). ``compile``:
    ``torch.compile`` the training forward and backward passes: false (eager), true or a mode of
    :data:`autoseg.utils.compilation.COMPILE_MODES` (see :mod:`autoseg.utils.compilation`). ``method``: the
    search method (:mod:`autoseg.search.methods`; ``darts``, the papers', by default), whose own
    settings are the config's ``method_options``.
    """

    epochs: int = 50
    warmup_epochs: int = 0
    method: str = "darts"
    max_steps: int | None = None
    seed: int = 2
    device: str = "auto"
    amp: str | None = None
    log_every: int = 50
    nan_policy: str = "stop"
    checkpoint_every_steps: int | None = None
    compile: bool | str = False


@dataclass
class CostConfig:
    """Cost-aware hierarchical search; off unless ``target_madds`` is set (the papers ignore cost).

    With a target, the architecture loss gets ``weight * max(0, log(E / target_madds))``, the
    hard constraint of MnasNet (Tan et al., CVPR 2019, section 3) in loss form, where E is the
    expected Multi-Adds of the network the search would decode, a differentiable function of
    alpha and beta (:mod:`autoseg.analysis.expected_cost`). The Multi-Adds are those of the decoded
    network (stem, cells along the path, DeepLabv3+ head) with ``filter_multiplier`` (default:
    the search's F) at ``input_size`` (``[H, W]``; default: the search crop), so a target can be
    given in the currency of the network that will be retrained.
    """

    target_madds: float | None = None
    weight: float = 1.0
    filter_multiplier: int | None = None
    input_size: tuple[int, int] | None = None


@dataclass
class SearchConfig:
    """A whole search experiment; ``mode`` names the search space (:mod:`autoseg.search.spaces`):
    ``cifar`` (DARTS cells) or ``hierarchical`` (the Auto-DeepLab trellis), whose supernet the
    ``model`` section sizes. ``method_options``: the settings of the search method
    ``train.method`` (checked against that method's settings when the search is built; empty:
    the method's paper defaults)."""

    mode: str = "cifar"
    data: DataConfig = field(default_factory=DataConfig)
    model: DartsSearchModelConfig | TrellisModelConfig = field(default_factory=DartsSearchModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    arch_optimizer: ArchOptimizerConfig = field(default_factory=ArchOptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    method_options: dict[str, Any] = field(default_factory=dict)

    MODEL_TYPES: typing.ClassVar[dict[str, type]] = {"cifar": DartsSearchModelConfig,
                                                      "hierarchical": TrellisModelConfig}
    """The ``model`` section of each search space."""


@dataclass
class RetrainModelConfig:
    """Which architecture to train and the factory settings that size it (unset = model default).

    ``init_from``: the retrain checkpoint whose matching weights the model starts from (see
    :mod:`autoseg.engine.fine_tune`); null trains from the fresh initialisation.
    """

    arch: str = "autodeeplab-paper"
    filter_multiplier: int | None = None
    bn_momentum: float | None = None
    init_channels: int | None = None
    layers: int | None = None
    auxiliary: bool | None = None
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.0
    encoder_weights: str | None = None
    init_from: str | None = None


@dataclass
class RetrainOptimizerConfig:
    """SGD with a poly (DeepLab) or cosine (DARTS) learning-rate schedule."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"
    poly_power: float = 0.9
    lr_min: float = 0.0
    grad_clip: float | None = None


@dataclass
class RetrainTrainConfig:
    """Length (epochs, or iterations when set), evaluation cadence, device and seed.

    ``sync_batchnorm``: on several GPUs (torchrun), batch norms use the statistics of the whole
    batch (``torch.nn.SyncBatchNorm``) instead of each GPU's share, as DeepLab trains.
    ``amp``, ``nan_policy``, ``checkpoint_every_steps`` and ``compile`` as in :class:`TrainConfig`.
    """

    epochs: int = 100
    iterations: int | None = None
    max_steps: int | None = None
    eval_every: int = 1
    seed: int = 0
    device: str = "auto"
    amp: str | None = None
    log_every: int = 50
    sync_batchnorm: bool = True
    nan_policy: str = "stop"
    checkpoint_every_steps: int | None = None
    compile: bool | str = False


@dataclass
class LossConfig:
    """The segmentation training loss (see :mod:`autoseg.losses`); pixels labelled 255 never count.

    ``name``: a registered loss (``ce``, cross-entropy, the papers'; ``ohem``, ``dice``, ``focal``,
    ``lovasz``). ``options``: that loss's own settings (checked against its options when the loss
    is built; empty: its defaults), e.g. ``{threshold: 0.7, min_kept: 100000}`` of ``ohem`` or
    ``{gamma: 2.0}`` of ``focal``. ``class_weights``: none, one weight per class, or
    ``median_frequency`` (computed from the training masks), for the losses that take them.
    """

    name: str = "ce"
    options: dict[str, Any] = field(default_factory=dict)
    class_weights: list[float] | str | None = None


@dataclass
class RetrainConfig:
    """A retraining experiment of a searched, published or baseline architecture."""

    data: DataConfig = field(default_factory=DataConfig)
    model: RetrainModelConfig = field(default_factory=RetrainModelConfig)
    optimizer: RetrainOptimizerConfig = field(default_factory=RetrainOptimizerConfig)
    train: RetrainTrainConfig = field(default_factory=RetrainTrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting may take: between ``low`` and ``high`` (None: unbounded),
    each end included unless marked open. ``None`` (an unset optional setting) is always allowed;
    of a pair (``betas``, ``scale_range``) every entry is checked."""

    low: int | float | None = None
    high: int | float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: Any) -> bool:
        """Whether ``value`` (a number, a pair of numbers or None) lies within the bounds."""
        if isinstance(value, (list, tuple)):
            return all(self.admits(v) for v in value)
        if isinstance(value, str):  # a named choice (e.g. class_weights: median_frequency), checked where used
            return True
        return value is None or not (
            self.low is not None and (value < self.low or (self.low_open and value == self.low))
            or self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'above' if self.low_open else 'at least'} {self.low}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


_COUNT = Bounds(1)  # epochs, sizes, layers, ...: a positive whole number
_NON_NEGATIVE = Bounds(0)
_POSITIVE = Bounds(0, low_open=True)
_FRACTION = Bounds(0, 1, high_open=True)  # momentum, Adam betas, drop-path probability
_SEED = Bounds(0, 2**32 - 1)  # what numpy.random.seed accepts


@dataclass(frozen=True)
class CollapseGuardSettings:
    """The guards against the search collapsing into ``skip_connect``
    (:mod:`autoseg.search.collapse_guards`) of one supernet, checked against their :attr:`BOUNDS`
    when the value is made (a :class:`~autoseg.utils.errors.UserError` naming each bad one); all off by
    default, i.e. the papers' search. A search config writes them flat in its ``model:`` section
    (:class:`CollapseGuardsConfig`).

    - ``partial_channels``: K, only 1/K of each edge's channels go through the mixed op, with
      channel shuffle (PC-DARTS, Xu et al., ICLR 2020); 1 = off.
    - ``edge_normalization``: per-edge architecture weights, softmax over each block's incoming
      edges, also used to decode (PC-DARTS).
    - ``auxiliary_skip``: beta0 of the auxiliary skip connection on every edge, decayed linearly
      to 0 over the search (DARTS-, Chu et al., ICLR 2021; the paper uses 1.0); 0 = off.
    - ``skip_dropout``: initial dropout rate after every identity ``skip_connect``, decayed
      linearly to 0 over the search (P-DARTS, Chen et al., ICCV 2019); 0 = off.
    - ``max_skip_connect``: decode-time cap M on the ``skip_connect`` edges of the (normal)
      cell (P-DARTS, which uses 2); null = no cap.
    """

    partial_channels: int = 1
    edge_normalization: bool = False
    auxiliary_skip: float = 0.0
    skip_dropout: float = 0.0
    max_skip_connect: int | None = None

    BOUNDS: ClassVar[dict[str, Bounds]] = {"partial_channels": _COUNT, "auxiliary_skip": _NON_NEGATIVE,
                                           "skip_dropout": _FRACTION, "max_skip_connect": _NON_NEGATIVE}
    """The range of each guard; the search configs' ``model`` sections check theirs against these."""

    def __post_init__(self) -> None:
        """Raise one UserError naming every guard out of its range (as the config check words it)."""
        problems = config_problems(self)
        if problems:
            raise UserError("; ".join(problems))


BOUNDS: dict[type, dict[str, Bounds]] = {
    DataConfig: {"num_classes": _COUNT, "batch_size": _COUNT, "crop_size": _COUNT, "scale": Bounds(0, 1, low_open=True),
                 "image_size": _COUNT, "train_length": _COUNT, "val_length": _COUNT, "num_workers": _NON_NEGATIVE,
                 "eval_batch_size": _COUNT, "max_eval_batches": _COUNT, "scale_range": _POSITIVE,
                 "cutout": _NON_NEGATIVE},
    OptimizerConfig: {"lr": _POSITIVE, "lr_min": _NON_NEGATIVE, "momentum": _FRACTION, "weight_decay": _NON_NEGATIVE,
                      "grad_clip": _POSITIVE},
    ArchOptimizerConfig: {"lr": _POSITIVE, "betas": _FRACTION, "weight_decay": _NON_NEGATIVE},
    DartsSearchModelConfig: {"init_channels": _COUNT, "layers": _COUNT, "blocks": _COUNT, "multiplier": _COUNT,
                             "stem_multiplier": _COUNT, **CollapseGuardSettings.BOUNDS},
    TrellisModelConfig: {"layers": _COUNT, "levels": _COUNT, "blocks": _COUNT, "filter_multiplier": _COUNT,
                         "aspp_base_rate": _COUNT, "aspp_channels": _COUNT, **CollapseGuardSettings.BOUNDS},
    TrainConfig: {"epochs": _COUNT, "warmup_epochs": _NON_NEGATIVE, "max_steps": _COUNT, "seed": _SEED,
                  "log_every": _COUNT, "checkpoint_every_steps": _COUNT},
    CostConfig: {"target_madds": _POSITIVE, "weight": _POSITIVE, "filter_multiplier": _COUNT, "input_size": _COUNT},
    RetrainModelConfig: {"filter_multiplier": _COUNT, "bn_momentum": Bounds(0, 1, low_open=True),
                         "init_channels": _COUNT, "layers": _COUNT, "auxiliary_weight": _NON_NEGATIVE,
                         "drop_path_prob": _FRACTION},
    RetrainOptimizerConfig: {"lr": _POSITIVE, "momentum": _FRACTION, "weight_decay": _NON_NEGATIVE,
                             "poly_power": _POSITIVE, "lr_min": _NON_NEGATIVE, "grad_clip": _POSITIVE},
    LossConfig: {"class_weights": _NON_NEGATIVE},
    RetrainTrainConfig: {"epochs": _COUNT, "iterations": _COUNT, "max_steps": _COUNT, "eval_every": _COUNT,
                         "seed": _SEED, "log_every": _COUNT, "checkpoint_every_steps": _COUNT},
}
"""The range of every numeric setting, per config section (checked by :func:`validate_config`)."""

DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("poly", "cosine")
NAN_POLICIES = ("stop", "skip")


def _crop_fits_image(data: DataConfig, at: str) -> str | None:
    """``data.crop_size`` is no larger than ``data.image_size``."""
    if data.crop_size is not None and data.image_size is not None and data.crop_size > data.image_size:
        return (f"{at}crop_size ({data.crop_size}) is larger than {at}image_size ({data.image_size}): lower "
                "crop_size or raise image_size")
    return None


def _scale_range_ordered(data: DataConfig, at: str) -> str | None:
    """``data.scale_range`` is ``[low, high]`` with ``low <= high``."""
    if data.scale_range is not None and data.scale_range[0] > data.scale_range[1]:
        return f"{at}scale_range must be [low, high] with low <= high, got {list(data.scale_range)}: e.g. [0.5, 2.0]"
    return None


def _lr_min_below_lr(optimizer: OptimizerConfig | RetrainOptimizerConfig, at: str) -> str | None:
    """``optimizer.lr_min`` is not above ``optimizer.lr`` (the schedule decays from one to the other)."""
    if optimizer.lr_min > optimizer.lr:
        return (f"{at}lr_min ({optimizer.lr_min:g}) is above {at}lr ({optimizer.lr:g}): the schedule decays from lr "
                "down to lr_min, lower lr_min")
    return None


def _known_schedule(optimizer: RetrainOptimizerConfig, at: str) -> str | None:
    """``optimizer.schedule`` is one of :data:`SCHEDULES`."""
    if optimizer.schedule not in SCHEDULES:
        return f"{at}schedule must be one of {', '.join(SCHEDULES)}, got {optimizer.schedule!r}"
    return None


def _known_primitives(model: DartsSearchModelConfig | TrellisModelConfig, at: str) -> str | None:
    """``model.primitives`` lists registered ops, each once, at least one of them other than ``none``."""
    try:
        check_primitives(model.primitives)
    except ValueError as exc:
        return f"{at}primitives: {exc}; list each op once, by its registered name"
    if not set(model.primitives) - {"none"}:
        return (f"{at}primitives has no op other than 'none' ({model.primitives}): add at least one real op, "
                "e.g. sep_conv_3x3")
    return None


def _multiplier_within_blocks(model: DartsSearchModelConfig, at: str) -> str | None:
    """``model.multiplier`` is not above ``model.blocks`` (the cell output concatenates the last ``multiplier``
    block states)."""
    if model.multiplier > model.blocks:
        return (f"{at}multiplier ({model.multiplier}) is above {at}blocks ({model.blocks}): the cell output "
                "concatenates the last `multiplier` block states, so lower it")
    return None


def _one_recomputation(model: TrellisModelConfig, at: str) -> str | None:
    """``model.checkpoint_cells`` and ``model.selective_checkpoint`` are not both on."""
    if model.checkpoint_cells and model.selective_checkpoint:
        return (f"{at}checkpoint_cells and {at}selective_checkpoint are both on: checkpoint_cells already keeps "
                "only each node's inputs, leaving selective_checkpoint nothing to save; turn off one of them")
    return None


def _warmup_below_epochs(train: TrainConfig, at: str) -> str | None:
    """``train.warmup_epochs`` is below ``train.epochs`` (at least one epoch updates the architecture)."""
    if train.warmup_epochs >= train.epochs:
        return (f"{at}warmup_epochs ({train.warmup_epochs}) must be below {at}epochs ({train.epochs}): the search "
                "needs at least one epoch that updates the architecture, lower warmup_epochs or raise epochs")
    return None


def _known_device(train: TrainConfig | RetrainTrainConfig, at: str) -> str | None:
    """``train.device`` is one of :data:`DEVICES`."""
    if train.device not in DEVICES:
        return f"{at}device must be one of {', '.join(DEVICES)}, got {train.device!r}"
    return None


def _known_nan_policy(train: TrainConfig | RetrainTrainConfig, at: str) -> str | None:
    """``train.nan_policy`` is one of :data:`NAN_POLICIES`."""
    if train.nan_policy not in NAN_POLICIES:
        return f"{at}nan_policy must be one of {', '.join(NAN_POLICIES)}, got {train.nan_policy!r}"
    return None


def _known_amp(train: TrainConfig | RetrainTrainConfig, at: str) -> str | None:
    """``train.amp`` is null (off) or a dtype of :data:`autoseg.utils.precision.AUTOCAST_DTYPES`."""
    if train.amp is not None and train.amp not in AUTOCAST_DTYPES:
        return f"{at}amp must be one of {', '.join(AUTOCAST_DTYPES)} or null (off), got {train.amp!r}"
    return None


def _cost_for_the_trellis(search: SearchConfig, at: str) -> str | None:
    """``cost.target_madds`` is set only for the hierarchical search (``mode: hierarchical``)."""
    if not isinstance(search.model, TrellisModelConfig) and search.cost.target_madds is not None:
        return (f"{at}cost.target_madds applies to the hierarchical search only (mode: hierarchical), "
                f"not to mode {search.mode!r}: remove it")


def _known_compile_mode(train: TrainConfig | RetrainTrainConfig, at: str) -> str | None:
    """``train.compile`` is false, true or a mode of :data:`autoseg.utils.compilation.COMPILE_MODES`."""
    try:
        compile_mode(train.compile)
    except UserError as exc:
        return f"{at}{exc}"
    return None


_UNTRACEABLE_RECOMPUTATION = {
    "checkpoint_cells": "the cells' recomputation, which must leave the batch-norm statistics alone",
    "selective_checkpoint": ("the recomputed stages' backward, which asks the autograd engine which gradients it "
                             "wants (compiling already recomputes cheap ops in backward by itself)"),
}


def _compile_without_cell_checkpointing(config: SearchConfig, at: str) -> str | None:
    """``train.compile`` is not combined with ``model.checkpoint_cells`` or ``model.selective_checkpoint``
    (torch.compile cannot trace their recomputation)."""
    for key, what in _UNTRACEABLE_RECOMPUTATION.items():
        if config.train.compile is not False and getattr(config.model, key, False):
            return (f"{at}train.compile and model.{key} cannot be combined: torch.compile cannot trace {what}; "
                    "drop one of them")
    return None


RELATIONS: dict[type, tuple[Callable[[Any, str], str | None], ...]] = {
    DataConfig: (_crop_fits_image, _scale_range_ordered),
    OptimizerConfig: (_lr_min_below_lr,),
    RetrainOptimizerConfig: (_lr_min_below_lr, _known_schedule),
    DartsSearchModelConfig: (_known_primitives, _multiplier_within_blocks),
    TrellisModelConfig: (_known_primitives, _one_recomputation),
    TrainConfig: (_warmup_below_epochs, _known_device, _known_amp, _known_nan_policy, _known_compile_mode),
    RetrainTrainConfig: (_known_device, _known_amp, _known_nan_policy, _known_compile_mode),
    SearchConfig: (_cost_for_the_trellis, _compile_without_cell_checkpointing),
}
"""The rules that tie a setting to another one or to a list of names, per config section; each
returns what is wrong (naming the keys under the section's prefix) or None. They run once the
section's settings are within their :data:`BOUNDS`."""


def _amp_from_bool(value: Any) -> Any:
    """``amp: true`` / ``false``, as configs were written when amp meant bfloat16 or nothing: ``bf16`` / off."""
    if isinstance(value, bool):
        return "bf16" if value else None
    return value


LEGACY_VALUES: dict[type, dict[str, Callable[[Any], Any]]] = {
    TrainConfig: {"amp": _amp_from_bool},
    RetrainTrainConfig: {"amp": _amp_from_bool},
}
"""Settings whose earlier form is still read (so that saved runs resume), per config section, each
with the function that turns an earlier value into today's."""


def _upgraded(cls: type, name: str, value: Any) -> Any:
    """``value`` of setting ``name`` of section ``cls`` in today's form (see :data:`LEGACY_VALUES`)."""
    upgrade = LEGACY_VALUES.get(cls, {}).get(name)
    return upgrade(value) if upgrade else value


def config_problems(config: Any, where: str | None = None) -> list[str]:
    """Every setting of ``config`` (a config dataclass, its sections included) that is out of range
    or contradicts another, one message each naming the dotted key (under the prefix ``where``)."""
    at = f"{where}." if where else ""
    problems, sections = [], []
    ranges = BOUNDS.get(type(config)) or getattr(type(config), "BOUNDS", {})  # a section's own (a method's)
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        bounds = ranges.get(item.name)
        if dataclasses.is_dataclass(value):
            sections.append((value, f"{at}{item.name}"))
        elif bounds is not None and not bounds.admits(value):
            problems.append(f"{at}{item.name} must be {bounds}, got {value!r}")
    if not problems:
        problems = [problem for rule in RELATIONS.get(type(config), ()) if (problem := rule(config, at))]
    for section, key in sections:
        problems += config_problems(section, key)
    return problems


def validate_config(config: Any, where: str | None = None) -> None:
    """Raise one UserError listing every bad setting of ``config`` (see :func:`config_problems`)."""
    problems = config_problems(config, where)
    if problems:
        raise UserError(f"{'; '.join(problems)} (fix the config file or the matching command-line flag)")


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """Coerce ``value`` to the annotated type ``hint`` or raise a UserError naming ``where``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{where} must not be null")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise UserError(f"{where} must be a mapping of names to values, got {value!r}")
        return dict(value)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and len(args) != len(value):
            raise UserError(f"{where} must have {len(args)} entries, got {len(value)}")
        items = [_check_value(v, args[i] if origin is tuple else args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where} must be a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} at {where}")


def _unrolled_as_method_option(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A search config as written before search methods were plug-ins, in today's form:
    ``train.unrolled`` (DARTS's second-order update) is now ``method_options.unrolled`` of the
    ``darts`` method."""
    train = data.get("train")
    if not isinstance(train, dict) or "unrolled" not in train:
        return data
    train = dict(train)
    unrolled = train.pop("unrolled")
    data = {**data, "train": train}
    if unrolled is not False:
        if train.get("method", "darts") != "darts":
            raise UserError(f"{where}.train.unrolled is a setting of the darts method, not of {train['method']!r}: "
                            "remove it (second-order updates are method_options.unrolled of train.method: darts)")
        data["method_options"] = {**(data.get("method_options") or {}), "unrolled": unrolled}
    return data


FLAT_LOSS_OPTIONS: dict[str, tuple[str, str]] = {"ohem_threshold": ("ohem", "threshold"),
                                                 "ohem_min_kept": ("ohem", "min_kept"),
                                                 "focal_gamma": ("focal", "gamma")}
"""The loss settings of the loss section as written before each loss had its own options: flat key
-> (the loss it set, its name among that loss's ``options``)."""


def _flat_loss_settings_as_options(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A loss section as written before each loss had its own options (saved runs wrote every flat
    key of :data:`FLAT_LOSS_OPTIONS`), in today's form: the flat keys of the loss ``name`` become
    its ``options``; those of the other losses, which never had an effect, are dropped."""
    flat = {key: data[key] for key in FLAT_LOSS_OPTIONS if key in data}
    if not flat:
        return data
    section = {key: value for key, value in data.items() if key not in FLAT_LOSS_OPTIONS}
    options = dict(section.get("options") or {})
    for key, value in flat.items():
        loss, option = FLAT_LOSS_OPTIONS[key]
        if loss != section.get("name", "ce"):
            continue
        if option in options:
            raise UserError(f"{where} sets {option} twice, as {key} and as options.{option}: keep options.{option}")
        options[option] = value
    return {**section, "options": options}


LEGACY_SECTIONS: dict[type, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    SearchConfig: _unrolled_as_method_option,
    LossConfig: _flat_loss_settings_as_options,
}
"""Sections whose earlier layout is still read (so that saved runs resume and old configs load),
each with the function that turns a mapping of that layout into today's."""


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrongly typed values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping of keys to values, got {data!r}")
    if cls in LEGACY_SECTIONS:
        data = LEGACY_SECTIONS[cls](data, where)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(names)}")
    values = {}
    for name, value in data.items():
        if cls is SearchConfig and name == "model":
            continue
        values[name] = _check_value(_upgraded(cls, name, value), hints[name], f"{where}.{name}")
    if cls is SearchConfig:
        mode = values.get("mode", "cifar")
        if mode not in SearchConfig.MODEL_TYPES:
            raise UserError(f"{where}.mode must be one of {', '.join(SearchConfig.MODEL_TYPES)}, got {mode!r}")
        values["model"] = from_dict(SearchConfig.MODEL_TYPES[mode], data.get("model"), f"{where}.model")
    return cls(**values)


def load_config(path: str | Path, cls: type[T]) -> T:
    """Read a YAML experiment file into ``cls``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pick one from configs/ or write your own")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    config = from_dict(cls, data, where=path.name)
    validate_config(config, where=path.name)
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-data form of a config (tuples become lists), ready for YAML."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(config))


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved configuration as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def override(config: Any, dotted: str, value: Any) -> None:
    """Set ``section.key`` of ``config`` to ``value`` (type-checked); used for command-line flags."""
    *parents, key = dotted.split(".")
    target = config
    for name in parents:
        target = getattr(target, name)
    hints = typing.get_type_hints(type(target))
    if key not in hints:
        raise UserError(f"{type(target).__name__} has no setting {key!r}")
    setattr(target, key, _check_value(_upgraded(type(target), key, value), hints[key], dotted))
