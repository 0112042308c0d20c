"""Building a search from its config: the supernet of the mode and the data it searches on."""
from __future__ import annotations

from torch.utils.data import Dataset

from autoseg.config import SearchConfig
from autoseg.data import dataset_task, split_in_halves
from autoseg.engine.datasets import build_split
from autoseg.errors import UserError
from autoseg.search.darts_network import DartsSearchNetwork
from autoseg.search.network import SearchNetwork
from autoseg.search.trellis_network import TrellisSearchNetwork
from autoseg.trellis import check_crop_size

MODE_TASKS = {"cifar": "classification", "hierarchical": "segmentation"}
"""The task of the data each search mode searches on."""


def check_mode_and_dataset(cfg: SearchConfig) -> None:
    """Raise unless the configured dataset has the task the search mode is for (and, for the
    hierarchical mode, the crop reaches the trellis's deepest level)."""
    if dataset_task(cfg.data.dataset) != MODE_TASKS[cfg.mode]:
        raise UserError(f"dataset {cfg.data.dataset!r} does not go with search mode {cfg.mode!r}: the cifar mode "
                        "searches on classification data (cifar10), the hierarchical mode on segmentation data "
                        "(use the matching config)")
    if cfg.mode == "hierarchical" and cfg.data.crop_size is not None:
        check_crop_size(cfg.data.crop_size, cfg.model.levels)


def build_search_network(cfg: SearchConfig, num_classes: int) -> SearchNetwork:
    """The supernet of ``cfg.mode`` for ``num_classes`` classes."""
    m = cfg.model
    try:
        if cfg.mode == "cifar":
            return DartsSearchNetwork(num_classes, m.init_channels, m.layers, m.blocks, m.multiplier,
                                      m.stem_multiplier, m.primitives, **m.collapse_guards(),
                                      selective_checkpoint=m.selective_checkpoint)
        return TrellisSearchNetwork(num_classes, m.layers, m.levels, m.blocks, m.filter_multiplier, m.primitives,
                                    m.free_first_step, m.aspp_base_rate, m.aspp_channels, m.checkpoint_cells,
                                    **m.collapse_guards(), selective_checkpoint=m.selective_checkpoint)
    except ValueError as exc:
        raise UserError(f"bad model settings in the config: {exc}") from exc


def build_search_data(cfg: SearchConfig) -> tuple[Dataset, Dataset, Dataset]:
    """(half A for the weights, half B for the architecture, the held-out evaluation set).

    CIFAR-10 follows the DARTS code and reports accuracy on half B; the hierarchical mode
    reports mIoU on the full-size masks of the dataset's validation split, the supernet seeing
    each image at the search scale (``data.scale``: half resolution for Cityscapes).
    """
    train = build_split(cfg.data, "train", augment=True, transform_kind=None if cfg.mode == "cifar" else "search")
    half_a, half_b = split_in_halves(train, seed=cfg.train.seed)
    if cfg.mode == "cifar":
        return half_a, half_b, half_b
    return half_a, half_b, build_split(cfg.data, "val", augment=False)
