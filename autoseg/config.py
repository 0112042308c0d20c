"""Typed experiment configuration, loaded from one YAML file per experiment.

Unknown keys and values of the wrong type are errors (:class:`~autoseg.errors.UserError`),
never silently ignored. Tools apply command-line overrides on top and save the resolved
configuration in the run directory.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from autoseg.errors import UserError
from autoseg.ops import PRIMITIVES

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
    """Guards against the search collapsing into ``skip_connect`` (:mod:`autoseg.search.collapse_guards`),
    shared by both search modes; all off by default, i.e. the papers' search.

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

    def collapse_guards(self) -> dict[str, Any]:
        """The guard settings, as keyword arguments of the search supernets."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(CollapseGuardsConfig)}


@dataclass
class DartsSearchModelConfig(CollapseGuardsConfig):
    """The DARTS search network (REFERENCE.md section 2)."""

    init_channels: int = 16
    layers: int = 8
    blocks: int = 4
    multiplier: int = 4
    stem_multiplier: int = 3
    primitives: list[str] = field(default_factory=lambda: list(PRIMITIVES))


@dataclass
class TrellisModelConfig(CollapseGuardsConfig):
    """The Auto-DeepLab trellis supernet (REFERENCE.md section 3)."""

    layers: int = 12
    levels: int = 4
    blocks: int = 5
    filter_multiplier: int = 8
    primitives: list[str] = field(default_factory=lambda: list(PRIMITIVES))
    free_first_step: bool = True
    aspp_base_rate: int = 96
    aspp_channels: int | None = None
    checkpoint_cells: bool = False


@dataclass
class TrainConfig:
    """The loop: length, bilevel schedule, device and reproducibility."""

    epochs: int = 50
    warmup_epochs: int = 0
    unrolled: bool = False
    max_steps: int | None = None
    seed: int = 2
    device: str = "auto"
    amp: bool = False
    log_every: int = 50


@dataclass
class SearchConfig:
    """A whole search experiment; ``mode`` is ``cifar`` (DARTS cells) or ``hierarchical``."""

    mode: str = "cifar"
    data: DataConfig = field(default_factory=DataConfig)
    model: DartsSearchModelConfig | TrellisModelConfig = field(default_factory=DartsSearchModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    arch_optimizer: ArchOptimizerConfig = field(default_factory=ArchOptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    MODEL_TYPES: typing.ClassVar[dict[str, type]] = {"cifar": DartsSearchModelConfig,
                                                      "hierarchical": TrellisModelConfig}


@dataclass
class RetrainModelConfig:
    """Which architecture to train and the factory settings that size it (unset = model default)."""

    arch: str = "autodeeplab-paper"
    filter_multiplier: int | None = None
    bn_momentum: float | None = None
    init_channels: int | None = None
    layers: int | None = None
    auxiliary: bool | None = None
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.0
    encoder_weights: str | None = None


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
    """

    epochs: int = 100
    iterations: int | None = None
    max_steps: int | None = None
    eval_every: int = 1
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    log_every: int = 50
    sync_batchnorm: bool = True


@dataclass
class RetrainConfig:
    """A retraining experiment of a searched, published or baseline architecture."""

    data: DataConfig = field(default_factory=DataConfig)
    model: RetrainModelConfig = field(default_factory=RetrainModelConfig)
    optimizer: RetrainOptimizerConfig = field(default_factory=RetrainOptimizerConfig)
    train: RetrainTrainConfig = field(default_factory=RetrainTrainConfig)


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


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrongly typed values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(names)}")
    values = {}
    for name, value in data.items():
        if cls is SearchConfig and name == "model":
            continue
        values[name] = _check_value(value, hints[name], f"{where}.{name}")
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
    return from_dict(cls, data, where=path.name)


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
    setattr(target, key, _check_value(value, hints[key], dotted))
