"""Reproducible, resumable batching: the sample order of an epoch is a function of a seed.

A stopped run restarts mid-epoch by skipping the batches it already consumed; together with
augmentation seeded per (seed, epoch, index) by the datasets, a resumed run sees exactly the
batches an uninterrupted one would.
"""
from __future__ import annotations

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset


def set_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell ``dataset`` (through Subset/ConcatDataset wrappers) which epoch it is serving,
    so that its augmentation draws the random numbers of that epoch."""
    if isinstance(dataset, Subset):
        set_epoch(dataset.dataset, epoch)
    elif isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            set_epoch(part, epoch)
    elif hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def epoch_order(length: int, seed: int) -> list[int]:
    """The shuffled sample order of one epoch."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(length, generator=generator).tolist()


def epoch_batches(dataset: Dataset, batch_size: int, seed: int, skip_batches: int = 0, num_workers: int = 0,
                  pin_memory: bool = False) -> DataLoader:
    """Full batches of ``dataset`` in the order of ``seed``, without the first ``skip_batches``."""
    order = epoch_order(len(dataset), seed)
    usable = len(order) // batch_size * batch_size
    return DataLoader(Subset(dataset, order[skip_batches * batch_size:usable]), batch_size=batch_size,
                      shuffle=False, drop_last=True, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False)
