"""Building a search from its config: the supernet of its space, its method and the data it
searches on."""
from __future__ import annotations

from torch.utils.data import Dataset

from pathlib import Path

from autoseg.config import SearchConfig, from_dict
from autoseg.data import dataset_task, split_in_halves
from autoseg.engine.checkpoint import load_checkpoint
from autoseg.engine.datasets import build_split
from autoseg.engine.task import Task, build_task
from autoseg.utils.errors import UserError
from autoseg.search.methods import SearchMethod, SearchSchedule, build_method
from autoseg.search.network import SearchNetwork
from autoseg.search.spaces import build_search_network, get_space

__all__ = ["build_search_data", "build_search_method", "build_search_network", "check_space_and_dataset",
           "rebuild_search"]


def check_space_and_dataset(cfg: SearchConfig) -> None:
    """Raise unless the configured dataset has the task the search space is for, and the data
    settings fit the space (:attr:`~autoseg.search.spaces.SearchSpace.check_data`)."""
    space = get_space(cfg.mode)
    if dataset_task(cfg.data.dataset) != space.task:
        raise UserError(f"dataset {cfg.data.dataset!r} does not go with search mode {cfg.mode!r} ({space.description}):"
                        f" it searches on {space.task} data (use the matching config)")
    space.check_data(cfg)


def build_search_method(cfg: SearchConfig, network: SearchNetwork) -> SearchMethod:
    """The config's search method (``train.method`` with ``method_options``) on ``network``."""
    schedule = SearchSchedule(cfg.train.epochs, cfg.train.warmup_epochs, cfg.train.seed)
    return build_method(cfg.train.method, cfg.method_options, network, schedule)


def rebuild_search(source: Path) -> tuple[SearchConfig, Task, SearchNetwork, SearchMethod]:
    """The search saved in ``source`` (a run directory or checkpoint file): its config, task,
    supernet with the saved weights and architecture parameters, and method with its saved state;
    a UserError when it holds no search checkpoint."""
    state = load_checkpoint(source)
    if state.get("kind", "search") != "search" or "mode" not in state or "config" not in state:
        raise UserError(f"{source} is not a search checkpoint (no architecture parameters in it)")
    cfg = from_dict(SearchConfig, state["config"], "the checkpoint's config")
    task = build_task(cfg.data.dataset, cfg.data.num_classes)
    network = build_search_network(cfg, task.num_classes)
    network.load_state_dict(state["model"])
    method = build_search_method(cfg, network)
    method.load_state_dict(state.get("method", {}))
    return cfg, task, network, method


def build_search_data(cfg: SearchConfig) -> tuple[Dataset, Dataset, Dataset]:
    """(half A for the weights, half B for the architecture, the held-out evaluation set).

    CIFAR-10 follows the DARTS code and reports accuracy on half B; the hierarchical mode
    reports mIoU on the full-size masks of the dataset's validation split, the supernet seeing
    each image at the search scale (``data.scale``: half resolution for Cityscapes).
    """
    space = get_space(cfg.mode)
    train = build_split(cfg.data, "train", augment=True, transform_kind=space.transform_kind)
    half_a, half_b = split_in_halves(train, seed=cfg.train.seed)
    if space.evaluates_on_half_b:
        return half_a, half_b, half_b
    return half_a, half_b, build_split(cfg.data, "val", augment=False)
