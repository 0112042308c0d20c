"""What differs between the two search modes: the supernet, the data, the metric, the result.

A :class:`SearchTask` bundles them so that one loop (:mod:`autoseg.engine.search_loop`)
runs both the DARTS cell search on CIFAR-10 and the hierarchical Auto-DeepLab search.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from autoseg.config import SearchConfig
from autoseg.data import dataset_num_classes, split_in_halves
from autoseg.engine.datasets import build_split
from autoseg.engine.evaluation import evaluate_classification, evaluate_segmentation
from autoseg.errors import UserError
from autoseg.search.darts_network import DartsSearchNetwork
from autoseg.search.trellis_network import TrellisSearchNetwork
from autoseg.visualize import alpha_heatmap, cell_figure, trellis_figure


@dataclass
class SearchTask:
    """The mode-specific parts of a search."""

    model: nn.Module
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    evaluate: Callable[..., dict[str, Any]]
    metric: str
    artifact: str
    num_classes: int

    def decode(self) -> dict[str, Any]:
        """The discrete architecture the supernet currently encodes, as JSON-ready data."""
        if isinstance(self.model, DartsSearchNetwork):
            return self.model.genotype().to_dict()
        return self.model.decode()

    def images(self) -> dict[str, np.ndarray]:
        """Pictures of the architecture parameters for TensorBoard."""
        weights = self.model.arch_weights()
        primitives = list(self.model.primitives)
        if isinstance(self.model, DartsSearchNetwork):
            return {f"alpha/{name}": alpha_heatmap(w, primitives, title=f"softmax(alpha) {name}")
                    for name, w in weights.items()}
        arch = self.model.decode()
        return {"alpha/cell": alpha_heatmap(weights["cell"], primitives, title="softmax(alpha)"),
                "beta/trellis": trellis_figure(weights["transitions"], arch["path"],
                                               title="transitions and Viterbi path"),
                "cell/decoded": cell_figure(arch["cell"]["blocks"], title="decoded cell")}

    def summary(self) -> dict[str, Any]:
        """The dry-run summary: model name, weight and architecture parameter counts."""
        out = {"model": type(self.model).__name__,
               "params": sum(p.numel() for p in self.model.weight_parameters()),
               "arch_params": sum(p.numel() for p in self.model.arch_parameters())}
        if isinstance(self.model, TrellisSearchNetwork):
            out["trellis_nodes"] = len(self.model.nodes)
        return out


def build_search_model(cfg: SearchConfig, num_classes: int) -> nn.Module:
    """The supernet of ``cfg.mode`` for ``num_classes`` classes."""
    m = cfg.model
    try:
        if cfg.mode == "cifar":
            return DartsSearchNetwork(num_classes, m.init_channels, m.layers, m.blocks, m.multiplier,
                                      m.stem_multiplier, m.primitives, **m.collapse_guards())
        return TrellisSearchNetwork(num_classes, m.layers, m.levels, m.blocks, m.filter_multiplier, m.primitives,
                                    m.free_first_step, m.aspp_base_rate, m.aspp_channels, m.checkpoint_cells,
                                    **m.collapse_guards())
    except ValueError as exc:
        raise UserError(f"bad model settings in the config: {exc}") from exc


def build_search_task(cfg: SearchConfig) -> SearchTask:
    """Supernet, loss, metric and result file for the configured mode (no data is read)."""
    if (cfg.mode == "cifar") != (cfg.data.dataset == "cifar10"):
        raise UserError(f"dataset {cfg.data.dataset!r} does not go with search mode {cfg.mode!r}: the cifar mode "
                        "searches on cifar10, the hierarchical mode on segmentation data (use the matching config)")
    num_classes = dataset_num_classes(cfg.data.dataset, cfg.data.num_classes)
    model = build_search_model(cfg, num_classes)
    if cfg.mode == "cifar":
        criterion = nn.CrossEntropyLoss()
        return SearchTask(model, criterion, partial(evaluate_classification, criterion=criterion), "acc",
                          "genotype.json", num_classes)
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    evaluate = partial(evaluate_segmentation, criterion=criterion, num_classes=num_classes,
                       input_scale=cfg.data.scale or 1.0)
    return SearchTask(model, criterion, evaluate, "miou", "arch.json", num_classes)


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
