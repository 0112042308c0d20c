"""One-shot scores: how a trained supernet rates architectures of its space with the weights it
has learnt, without retraining them.

A search checkpoint is rebuilt (its supernet, and its method's state), the supernet is pinned to
each architecture in turn (:meth:`~autoseg.search.network.SearchNetwork.fixed_choices`) and
evaluated on the search's held-out set (the validation split; half B for a CIFAR-10 cell
search) in eval mode, as the search evaluates itself every epoch. Compared with the same
architectures' retrained scores (Kendall's tau), this says whether the supernet ranks
architectures the way training them does (Yu et al., "Evaluating the Search Phase of Neural
Architecture Search", ICLR 2020).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from autoseg.space.architecture import Architecture
from autoseg.engine.checkpoint import seed_everything
from autoseg.engine.epoch_data import evaluation_batches
from autoseg.engine.search_setup import build_search_data, rebuild_search
from autoseg.utils.errors import UserError


def one_shot_scores(run_dir: Path, archs: Sequence[Architecture], device: torch.device,
                    max_batches: int | None = None) -> list[float]:
    """The task metric of the supernet of search run ``run_dir`` pinned to each of ``archs``, on
    the search's held-out set (its first ``max_batches`` evaluation batches, or all of it)."""
    cfg, task, network, _ = rebuild_search(run_dir)
    network.to(device)
    seed_everything(cfg.train.seed)
    held_out = build_search_data(cfg)[2]
    loader = evaluation_batches(held_out, cfg.data.eval_batch_size, max_batches or cfg.data.max_eval_batches)
    scores = []
    for index, arch in enumerate(archs):
        try:
            weights = network.architecture_weights(arch)
        except ValueError as exc:
            raise UserError(f"architecture {index} is not in the search space of {run_dir}: {exc}") from exc
        with network.fixed_choices({name: (value, None) for name, value in weights.items()}):
            metrics = task.evaluate(network, loader, device, amp=cfg.train.amp, input_scale=cfg.data.scale or 1.0)
        scores.append(metrics[task.metric])
    return scores
