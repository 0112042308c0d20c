"""Architectures drawn at random from a search space: the baseline a search must beat.

Random search over the same space is the first baseline of a NAS method (Li & Talwalkar,
"Random Search and Reproducibility for Neural Architecture Search", UAI 2019; Yang et al., "NAS
evaluation is frustratingly hard", ICLR 2020). The draws here cover exactly what a search
decodes to, nothing more:

- a cell: every block takes 2 distinct input states, drawn uniformly among the states before
  it, with an op other than ``none`` drawn uniformly for each (the DARTS top-2 rule never keeps
  ``none`` and never takes a state twice);
- a network path (hierarchical search): uniform over all paths of the trellis
  (:mod:`autoseg.space.trellis`: first layer at level 0, or 0 or 1 with ``free_first_step``, at most
  one level change per layer, below ``levels``). Each step is drawn in proportion to the number
  of paths that complete it, counted by dynamic programming, so every path has the same
  probability ``1 / count_paths(...)`` -- unlike a random walk, which favours paths through
  the narrow first layers;
- a DARTS genotype (CIFAR-10 cell search): a normal and a reduction cell, the output the
  concatenation of the last ``multiplier`` states, as the DARTS decoding writes it.

Every function is pure given its generator (``numpy.random.Generator`` or an integer seed).
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from autoseg.space.architecture import Architecture, NetworkArch
from autoseg.config import DartsSearchModelConfig, SearchConfig, TrellisModelConfig
from autoseg.utils.errors import UserError
from autoseg.space.genotype import CellGenotype, Genotype
from autoseg.space.trellis import node_exists, predecessors

Seed = Union[int, np.random.Generator]
"""A seed, or a generator drawn from (and advanced) in place."""


def _generator(seed: Seed) -> np.random.Generator:
    return np.random.default_rng(seed)  # returns a Generator unchanged


def sample_cell(num_blocks: int, primitives: Sequence[str], seed: Seed,
                concat: Sequence[int] | None = None) -> CellGenotype:
    """A cell of ``num_blocks`` blocks: for block ``i``, 2 distinct input states drawn uniformly
    from ``0 .. i + 1`` (listed in ascending order), each with an op drawn uniformly from
    ``primitives`` less ``none``. ``concat`` as in :meth:`CellGenotype.from_blocks` (default:
    every block)."""
    ops = [name for name in primitives if name != "none"]
    if not ops:
        raise UserError(f"the op set {list(primitives)} has no op besides none to draw from")
    if num_blocks < 1:
        raise UserError(f"a cell needs at least one block, got {num_blocks}")
    rng = _generator(seed)
    blocks = []
    for block in range(num_blocks):
        states = sorted(int(s) for s in rng.choice(block + 2, size=2, replace=False))
        blocks.append([(ops[int(rng.integers(len(ops)))], state) for state in states])
    return CellGenotype.from_blocks(blocks, concat)


def path_completions(num_layers: int, num_levels: int, free_first_step: bool = True) -> list[dict[int, int]]:
    """``completions[l][s]``: the number of ways to finish a path from node ``(l, s)`` through
    the last layer (1 on the last layer), for every node of the trellis."""
    if num_layers < 1:
        raise UserError(f"a network path needs at least one layer, got {num_layers}")
    completions: list[dict[int, int]] = [{} for _ in range(num_layers)]
    for layer in reversed(range(num_layers)):
        for level in range(num_levels):
            if not node_exists(layer, level, num_levels, free_first_step):
                continue
            completions[layer][level] = 1 if layer == num_layers - 1 else sum(
                count for target, count in completions[layer + 1].items()
                if level in predecessors(layer + 1, target, num_levels, free_first_step))
    return completions


def sample_path(num_layers: int, num_levels: int, seed: Seed, free_first_step: bool = True) -> tuple[int, ...]:
    """A network path drawn uniformly over all valid paths of the trellis (see the module
    docstring): each step goes to a successor with probability proportional to its number of
    completions."""
    completions = path_completions(num_layers, num_levels, free_first_step)
    rng = _generator(seed)
    path: list[int] = []
    source = 0  # the stem
    for layer in range(num_layers):
        targets = [level for level in sorted(completions[layer])
                   if source in predecessors(layer, level, num_levels, free_first_step)]
        weights = np.array([completions[layer][level] for level in targets], dtype=np.float64)
        source = targets[int(rng.choice(len(targets), p=weights / weights.sum()))]
        path.append(source)
    return tuple(path)


def sample_network_arch(layers: int, levels: int, blocks: int, primitives: Sequence[str], seed: Seed,
                        filter_multiplier: int | None = None, free_first_step: bool = True) -> NetworkArch:
    """A hierarchical architecture of the trellis ``layers`` x ``levels`` with cells of ``blocks``
    blocks: a random cell, then a uniform path (recording ``filter_multiplier``, ``levels``,
    ``primitives`` and ``free_first_step``)."""
    rng = _generator(seed)
    cell = sample_cell(blocks, primitives, rng)
    path = sample_path(layers, levels, rng, free_first_step)
    return NetworkArch(path=path, cell=cell, filter_multiplier=filter_multiplier, levels=levels,
                       primitives=tuple(primitives), free_first_step=free_first_step)


def sample_genotype(blocks: int, multiplier: int, primitives: Sequence[str], seed: Seed) -> Genotype:
    """A DARTS genotype: random normal and reduction cells of ``blocks`` blocks, each the
    concatenation of its last ``multiplier`` states."""
    rng = _generator(seed)
    concat = range(2 + blocks - multiplier, blocks + 2)
    return Genotype(*(sample_cell(blocks, primitives, rng, concat) for _ in ("normal", "reduce")))


def sample_architecture(space: SearchConfig | TrellisModelConfig | DartsSearchModelConfig,
                        seed: Seed) -> Architecture:
    """One architecture drawn at random from the space a search with ``space`` explores (a
    search config, or its ``model`` section).

    Hierarchical: a :class:`NetworkArch` (:func:`sample_network_arch`) recording the config's
    ``filter_multiplier``, ``levels``, ``primitives`` and ``free_first_step``. CIFAR-10 cell
    search: a :class:`Genotype` (:func:`sample_genotype`).
    """
    model = space.model if isinstance(space, SearchConfig) else space
    if isinstance(model, TrellisModelConfig):
        return sample_network_arch(model.layers, model.levels, model.blocks, model.primitives, seed,
                                   model.filter_multiplier, model.free_first_step)
    if isinstance(model, DartsSearchModelConfig):
        return sample_genotype(model.blocks, model.multiplier, model.primitives, seed)
    raise TypeError(f"expected a SearchConfig or its model section, got {type(space).__name__}")


def sample_architectures(space: SearchConfig | TrellisModelConfig | DartsSearchModelConfig, count: int,
                         seed: int) -> list[Architecture]:
    """``count`` independent draws of :func:`sample_architecture`; draw ``i`` depends on
    ``seed`` and ``i`` only (``numpy.random.SeedSequence(seed).spawn``), so a longer list
    extends a shorter one."""
    if count < 0:
        raise UserError(f"the number of architectures to draw must be >= 0, got {count}")
    children = np.random.SeedSequence(seed).spawn(count)
    return [sample_architecture(space, np.random.default_rng(child)) for child in children]
