"""The registry of search spaces: one record per space says everything the search, the tools
and the tests need to know about it, so none of them tests the ``mode`` string.

A space is named by a search config's ``mode``; its record gives the task of the data it is
searched on, its ``model`` config section, how its supernet is built from a config, how its
training images are transformed, where the search evaluates, and what its architectures are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from autoseg.space.architecture import Architecture, NetworkArch
from autoseg.config import SearchConfig
from autoseg.utils.errors import UserError
from autoseg.space.genotype import Genotype
from autoseg.search.darts_network import DartsSearchNetwork
from autoseg.search.network import SearchNetwork
from autoseg.search.trellis_network import TrellisSearchNetwork
from autoseg.space.trellis import check_crop_size


@dataclass(frozen=True)
class SearchSpace:
    """A search space: ``name`` (the config's ``mode``), the ``task`` of its data, its
    ``model_config`` section type, ``build_network(config, num_classes)``, the
    ``transform_kind`` of its training images (:func:`autoseg.data.transforms`; None: the
    dataset's own), whether the search's held-out evaluation is on half B of the training data
    (``evaluates_on_half_b``, the DARTS code's way) rather than the validation split, the
    ``architecture`` type it decodes to, and whether it has a cost model for the cost-aware
    search (``has_cost_model``); ``check_data(config)`` raises a UserError when the config's data
    settings cannot be searched in this space (before anything is written); ``architecture_keys``
    are the ``model`` settings that decide which architectures the space holds (two configs with
    the same mode and the same values of these search the same space)."""

    name: str
    task: str
    model_config: type
    build_network: Callable[[SearchConfig, int], SearchNetwork]
    transform_kind: str | None
    evaluates_on_half_b: bool
    architecture: type[Architecture]
    has_cost_model: bool
    description: str
    check_data: Callable[[SearchConfig], None]
    architecture_keys: tuple[str, ...]


def _darts_cells(cfg: SearchConfig, num_classes: int) -> SearchNetwork:
    m = cfg.model
    return DartsSearchNetwork(num_classes, m.init_channels, m.layers, m.blocks, m.multiplier, m.stem_multiplier,
                              m.primitives, guards=m.collapse_guards(), selective_checkpoint=m.selective_checkpoint)


def _any_data(cfg: SearchConfig) -> None:
    """Every data setting fits the space."""


def _crop_reaches_the_deepest_level(cfg: SearchConfig) -> None:
    if cfg.data.crop_size is not None:
        check_crop_size(cfg.data.crop_size, cfg.model.levels)


def _trellis(cfg: SearchConfig, num_classes: int) -> SearchNetwork:
    m = cfg.model
    return TrellisSearchNetwork(num_classes, m.layers, m.levels, m.blocks, m.filter_multiplier, m.primitives,
                                m.free_first_step, m.aspp_base_rate, m.aspp_channels, m.checkpoint_cells,
                                guards=m.collapse_guards(), selective_checkpoint=m.selective_checkpoint)


SEARCH_SPACES: dict[str, SearchSpace] = {space.name: space for space in (
    SearchSpace("cifar", "classification", SearchConfig.MODEL_TYPES["cifar"], _darts_cells, None, True, Genotype,
                False, "DARTS normal and reduction cells on classification data (CIFAR-10)", _any_data,
                ("blocks", "multiplier", "primitives")),
    SearchSpace("hierarchical", "segmentation", SearchConfig.MODEL_TYPES["hierarchical"], _trellis, "search", False,
                NetworkArch, True, "the Auto-DeepLab trellis: one cell and a network path, on segmentation data",
                _crop_reaches_the_deepest_level, ("layers", "levels", "blocks", "primitives", "free_first_step")),
)}
"""Every search space, by the ``mode`` that names it."""


def space_signature(cfg: SearchConfig) -> dict[str, Any]:
    """What decides the architectures a search config's space holds: its mode and the values of
    its space's :attr:`~SearchSpace.architecture_keys`."""
    return {"mode": cfg.mode, **{key: getattr(cfg.model, key) for key in get_space(cfg.mode).architecture_keys}}


def get_space(name: str) -> SearchSpace:
    """The search space named ``name``, or a UserError listing them."""
    if name not in SEARCH_SPACES:
        raise UserError(f"unknown search mode {name!r}; the search spaces are {', '.join(SEARCH_SPACES)}")
    return SEARCH_SPACES[name]


def build_search_network(cfg: SearchConfig, num_classes: int) -> SearchNetwork:
    """The supernet of the config's search space for ``num_classes`` classes."""
    try:
        return get_space(cfg.mode).build_network(cfg, num_classes)
    except ValueError as exc:
        raise UserError(f"bad model settings in the config: {exc}") from exc
