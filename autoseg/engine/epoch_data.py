"""Reproducible, resumable batching: the sample order of an epoch is a function of a seed.

A stopped run restarts mid-epoch by skipping the batches it already consumed; together with
augmentation seeded per (seed, epoch, index) by the datasets, a resumed run sees exactly the
batches an uninterrupted one would. In a run of several processes each process loads its
share of every batch (:mod:`autoseg.engine.distributed`), so together they load exactly the
batches one process would.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, default_collate

from autoseg.engine.distributed import shard_batch_size
from autoseg.utils.process import rank, world_size
from autoseg.utils.errors import UserError


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
    """Full batches of ``batch_size`` samples of ``dataset`` in the order of ``seed``, without
    the first ``skip_batches``; with several processes, this process's share of each batch."""
    order = epoch_order(len(dataset), seed)
    share = shard_batch_size(batch_size)
    start = rank() * share
    indices = [index for step in range(skip_batches, len(order) // batch_size)
               for index in order[step * batch_size + start:step * batch_size + start + share]]
    return DataLoader(Subset(dataset, indices), batch_size=share, shuffle=False, drop_last=True,
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False,
                      generator=_own_generator())


def check_segmentation_batch_size(batch_size: int) -> None:
    """Raise unless every process gets at least 2 images per batch: the image-pooling branch of
    ASPP batch-normalises one value per image and channel, which needs two images."""
    if shard_batch_size(batch_size) < 2:
        raise UserError(f"a batch of {batch_size} gives each of the {world_size()} process(es) fewer than 2 images; "
                        "the ASPP image-pooling branch normalises over the images of a batch and needs at least 2: "
                        f"use --batch-size {2 * world_size()} or more")


class SizeGroups(list):
    """One evaluation batch as a list of ``(images, targets)`` pairs, one per image size: images of
    different sizes (a validation split of photos) cannot be stacked into one tensor, and padding
    them would change what the model sees (its image pooling averages over the padding)."""


def collate_by_size(samples: list[tuple[Any, ...]]) -> SizeGroups:
    """Collate the samples of a batch into one stacked group per image size, in order of first appearance."""
    groups: dict[tuple[int, ...], list[tuple[Any, ...]]] = {}
    for sample in samples:
        groups.setdefault(tuple(sample[0].shape), []).append(sample)
    return SizeGroups(default_collate(group) for group in groups.values())


def evaluation_batches(dataset: Dataset, batch_size: int, max_batches: int | None = None, num_workers: int = 0,
                       pin_memory: bool = False) -> DataLoader:
    """Batches of ``dataset`` in order (only the first ``max_batches`` batches' samples when
    given), each a :class:`SizeGroups`; with several processes, every process evaluates every
    ``world_size``-th sample."""
    length = len(dataset) if max_batches is None else min(len(dataset), max_batches * batch_size)
    indices = range(rank(), length, world_size())
    return DataLoader(Subset(dataset, indices), batch_size=batch_size, num_workers=num_workers,
                      pin_memory=pin_memory, collate_fn=collate_by_size, generator=_own_generator())


def _own_generator() -> torch.Generator:
    """A generator for a DataLoader's worker seeds, so that starting its iteration leaves the
    global random state alone: training that draws from it (dropout) then resumes exactly."""
    return torch.Generator().manual_seed(0)
