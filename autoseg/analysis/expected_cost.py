"""The expected Multi-Adds of the network a hierarchical search decodes, differentiable in alpha and beta.

A search decodes into an :class:`~autoseg.models.autodeeplab.AutoDeepLab` network: the stem,
one cell per layer along a path through the trellis, and a DeepLabv3+ head on the last cell.
Read the architecture as random — each edge of the cell takes op ``o`` with probability
``softmax(alpha)[edge, o]``, and the path is the Markov chain over levels whose transition
probabilities are :func:`autoseg.space.trellis.transition_probabilities` of beta, started at the
stem (level 0) — and its Multi-Adds have the expectation :meth:`TrellisCost.expected_madds`:

- stem: a constant;
- cell of layer ``l`` at level ``c`` after level ``b`` at layer ``l - 1`` and ``a`` at layer
  ``l - 2``: its preprocessing (1x1 projection of H^{l-1}, and of H^{l-2} when the channel
  counts differ, both at the resolution the cell reads, which is level ``b`` on a step down
  and ``c`` otherwise) depends on ``(a, b, c)`` and is weighted by their joint probability
  ``P(a) T[l-1][a, b] T[l][b, c]``; its ops depend on ``(b, c)`` (stride 2 on the ops reading
  the cell inputs on a step down) and cost ``sum_edges sum_ops p(op) * cost(op)``, with
  ``none`` costing 0. Layers 0 and 1 read the stem's outputs instead of cells;
- head: ASPP at the last level, and a decoder whose low-level input is the last level-0 cell,
  or the stem when the path never visits level 0 (a 1x1 projection of other width); both
  cases are weighted by their probability.

Every cost is profiled once, on the meta device, from the real modules of the decoded network
(:func:`autoseg.analysis.profiling.count_madds`), so with one-hot alpha and beta the expectation is the
exact count of the decoded network (``profile_model``); otherwise it equals the mean over
architectures sampled from those distributions. The cost-aware search adds
:class:`CostPenalty` to the architecture loss (see :class:`autoseg.config.CostConfig`).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.space.architecture import Architecture, NetworkArch
from autoseg.config import CostConfig, SearchConfig
from autoseg.utils.errors import UserError
from autoseg.space.genotype import CellGenotype, num_edges
from autoseg.models.autodeeplab import (FAMILY, STEM_CHANNELS, AutoDeepLabCell, AutoDeepLabStem,
                                        autodeeplab_from_arch, halve)
from autoseg.models.deeplab_head import DeepLabV3PlusHead
from autoseg.models.fixed_cell import edge_stride
from autoseg.layers.ops import build_op
from autoseg.analysis.profiling import count_madds
from autoseg.search.spaces import get_space
from autoseg.search.trellis_network import TrellisSearchNetwork
from autoseg.space.trellis import node_exists, transition_probabilities

PREPROCESSING_ONLY = CellGenotype.from_blocks([[("none", 1)]])
"""A cell whose only op costs nothing: profiling it counts the cell's preprocessing alone."""


def _meta(shape: Sequence[int]) -> torch.Tensor:
    return torch.empty(*shape, device="meta")


class TrellisCost:
    """Multi-Adds of the networks a trellis decodes into, exact and expected.

    The decoded cell concatenates all its blocks, as :func:`~autoseg.space.genotype.topk_cell`
    decodes it.

    Args:
        layers, levels, blocks, primitives, free_first_step: the search space (as the supernet's).
        filter_multiplier: F of the decoded network whose cost is counted.
        num_classes: classes of its head.
        input_size: ``(H, W)`` of its input.
    """

    def __init__(self, layers: int, levels: int, blocks: int, primitives: Sequence[str], filter_multiplier: int,
                 num_classes: int, input_size: Sequence[int], free_first_step: bool = True):
        self.layers, self.levels, self.blocks = layers, levels, blocks
        self.primitives = tuple(primitives)
        self.filter_multiplier, self.num_classes = filter_multiplier, num_classes
        self.input_size = tuple(int(s) for s in input_size)
        self.free_first_step = free_first_step
        with torch.device("meta"):
            stem = AutoDeepLabStem()
            image = _meta((1, 3, *self.input_size))
            stride2, stride4 = stem(image)
        self.stem_madds = count_madds(stem, image)
        self.sizes = [tuple(stride4.shape[-2:])]
        while len(self.sizes) < levels:
            self.sizes.append(halve(self.sizes[-1]))
        self.stride2_size = tuple(stride2.shape[-2:])
        self._profiles: dict[tuple, int] = {}
        self._networks: dict[tuple, tuple[int, int]] = {}
        # op_madds[b, c, edge, op]: cost of each op on each edge of a cell at level c after level b
        self.op_madds = torch.zeros(levels, levels, num_edges(blocks), len(self.primitives), dtype=torch.float64)
        # preprocessing_madds[kind, a, b, c]: kind 0 = layer 0, 1 = layer 1, 2 = later layers
        self.preprocessing_madds = torch.zeros(3, levels, levels, levels, dtype=torch.float64)
        for b in range(levels):
            for c in range(max(b - 1, 0), min(b + 2, levels)):
                self._fill_cell(b, c)
        # head_madds[s, visits_level_0]
        self.head_madds = torch.zeros(levels, 2, dtype=torch.float64)
        for s in range(levels):
            if node_exists(layers - 1, s, levels, free_first_step):
                for visited in (0, 1):
                    self.head_madds[s, visited] = self._head(s, bool(visited))
        self._on_device: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    # -- profiling ------------------------------------------------------------------------
    def channels(self, level: int) -> int:
        """Channels per block of a cell at ``level``."""
        return self.filter_multiplier * 2 ** level

    def _profile(self, key: tuple, build: Callable[[], nn.Module], *shapes: Sequence[int]) -> int:
        """Multi-Adds of ``build()`` (built on meta) on inputs of ``shapes``, profiled once per ``key``."""
        if key not in self._profiles:
            with torch.device("meta"):
                module = build()
            self._profiles[key] = count_madds(module, *(_meta(shape) for shape in shapes))
        return self._profiles[key]

    def _preprocessing(self, c_pp: int, pp_size: Sequence[int], c_prev: int, b: int, c: int) -> int:
        """Multi-Adds of the preprocessing of a cell at level c reading H^{l-1} (``c_prev``
        channels, level b) and H^{l-2} (``c_pp`` channels of size ``pp_size``)."""
        stride = 2 if c > b else 1
        read = min(b, c)  # H^{l-1} is resized up to level c before the cell; a step down happens inside
        return self._profile(("pre", c_pp, tuple(pp_size), c_prev, self.channels(c), stride, read),
                             lambda: AutoDeepLabCell(PREPROCESSING_ONLY, c_pp, c_prev, self.channels(c), stride),
                             (1, c_pp, *pp_size), (1, c_prev, *self.sizes[read]))

    def _fill_cell(self, b: int, c: int) -> None:
        """Fill the op and preprocessing costs of a cell at level c after level b."""
        channels, stride, read = self.channels(c), 2 if c > b else 1, min(b, c)
        for block in range(self.blocks):
            for state in range(block + 2):
                op_stride = edge_stride(state, stride)
                size = self.sizes[read] if state < 2 else self.sizes[c]
                for k, name in enumerate(self.primitives):
                    self.op_madds[b, c, num_edges(block) + state, k] = self._profile(
                        ("op", name, channels, op_stride, size),
                        lambda name=name, op_stride=op_stride: build_op(name, channels, op_stride, True, FAMILY),
                        (1, channels, *size))
        cell_channels = self.blocks * self.filter_multiplier
        stem_pp, stem_out = STEM_CHANNELS
        if b == 0:  # layer 0 reads the stem: H^{l-2} is its stride-2 output, H^{l-1} its stride-4 output
            self.preprocessing_madds[0, 0, b, c] = self._preprocessing(stem_pp, self.stride2_size, stem_out, b, c)
        if b <= 1:  # layer 1: H^{l-2} is the stem output, H^{l-1} the layer-0 cell
            self.preprocessing_madds[1, 0, b, c] = self._preprocessing(stem_out, self.sizes[0],
                                                                       cell_channels * 2 ** b, b, c)
        for a in range(max(b - 1, 0), min(b + 2, self.levels)):
            self.preprocessing_madds[2, a, b, c] = self._preprocessing(
                cell_channels * 2 ** a, self.sizes[a], cell_channels * 2 ** b, b, c)

    def _head(self, level: int, visits_level_0: bool) -> int:
        """Multi-Adds of the DeepLabv3+ head on a last cell at ``level``; its low-level input is a
        level-0 cell if the path visits level 0, else the stem."""
        c_in = self.blocks * self.channels(level)
        c_low = self.blocks * self.channels(0) if visits_level_0 else STEM_CHANNELS[1]
        try:
            return self._profile(("head", c_in, c_low, level),
                                 lambda: DeepLabV3PlusHead(c_in, c_low, self.num_classes, 4 * 2 ** level),
                                 (1, c_low, *self.sizes[0]), (1, c_in, *self.sizes[level]))
        except ValueError as exc:
            raise UserError(f"cannot count the head of a network ending at level {level} ({exc}); "
                            f"the decoded network supports at most 4 levels") from exc

    # -- expected and exact costs ---------------------------------------------------------
    def _tables(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._on_device:
            self._on_device[device] = tuple(t.to(device) for t in (self.op_madds, self.preprocessing_madds,
                                                                   self.head_madds))
        return self._on_device[device]

    def expected_madds(self, alphas: torch.Tensor, betas: torch.Tensor,
                       probabilities: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Expected Multi-Adds (float64 scalar) of the decoded network under the op probabilities
        of ``alphas`` (``(edges, ops)``) and the chain of transition probabilities of ``betas``
        (``(L, S, 3)``), rows of logits turned into probabilities by ``probabilities`` (default
        softmax; a relaxation's distribution); differentiable in both."""
        if tuple(alphas.shape) != tuple(self.op_madds.shape[2:]) or tuple(betas.shape) != (self.layers,
                                                                                             self.levels, 3):
            raise ValueError(f"alphas {tuple(alphas.shape)} and betas {tuple(betas.shape)} do not fit this trellis "
                             f"({self.layers} layers, {self.levels} levels, {self.blocks} blocks)")
        op_madds, preprocessing_madds, head_madds = self._tables(alphas.device)
        with torch.autocast(alphas.device.type, enabled=False):
            probs = F.softmax(alphas.double(), dim=-1) if probabilities is None else probabilities(alphas.double())
            transitions = transition_probabilities(betas.double(), self.free_first_step, probabilities)
            cell_ops = torch.einsum("bceo,eo->bc", op_madds, probs)  # expected op cost of each move b -> c
            start = F.one_hot(torch.tensor(0, device=alphas.device), self.levels).double()
            before = torch.outer(start, start)  # P(level a at layer l-2, level b at layer l-1); the stem is level 0
            total = torch.tensor(float(self.stem_madds), dtype=torch.float64, device=alphas.device)
            not_level_0 = (torch.arange(self.levels, device=alphas.device) > 0).double()
            avoided = start  # P(level at layer l-1, and no cell so far at level 0)
            for layer in range(self.layers):
                joint = before.unsqueeze(-1) * transitions[layer].unsqueeze(0)  # P(a, b, c)
                moves = joint.sum(0)  # P(b at layer l-1, c at layer l)
                total = total + (joint * preprocessing_madds[min(layer, 2)]).sum() + (moves * cell_ops).sum()
                before = moves
                avoided = (avoided @ transitions[layer]) * not_level_0
            last = before.sum(0)
            head = ((last - avoided) * head_madds[:, 1] + avoided * head_madds[:, 0]).sum()
        return total + head

    def supernet_madds(self, network: TrellisSearchNetwork) -> torch.Tensor:
        """:meth:`expected_madds` of the supernet's current alpha and beta."""
        return self.expected_madds(network.alphas, network.betas, network.relaxation.probabilities)

    def network_cost(self, arch: NetworkArch) -> dict[str, Any]:
        """The exact cost of the network ``arch`` builds with this F, classes and input size:
        ``{"madds", "params", "input_size", "filter_multiplier", "num_classes"}``, counted by
        profiling the built network on the meta device."""
        key = (arch.path, arch.cell)
        if key not in self._networks:
            with torch.device("meta"):
                model = autodeeplab_from_arch(arch, self.num_classes, filter_multiplier=self.filter_multiplier)
            self._networks[key] = (count_madds(model, _meta((1, 3, *self.input_size))),
                                   sum(p.numel() for p in model.parameters()))
        madds, params = self._networks[key]
        return {"madds": madds, "params": params, "input_size": list(self.input_size),
                "filter_multiplier": self.filter_multiplier, "num_classes": self.num_classes}

    def with_cost(self, arch: NetworkArch) -> NetworkArch:
        """``arch`` with its :meth:`network_cost` recorded (``cost`` in ``arch.json``)."""
        return dataclasses.replace(arch, cost=self.network_cost(arch))


def with_cost(arch: Architecture, cost: TrellisCost | None) -> Architecture:
    """``arch`` with the cost of its network when there is a cost model, else as it is."""
    return arch if cost is None else cost.with_cost(arch)


def cost_input_size(cfg: SearchConfig) -> tuple[int, int] | None:
    """The input size costs are counted at: ``cost.input_size``, else the search crop, else the
    image size of a synthetic dataset; None when the config names none."""
    if cfg.cost.input_size is not None:
        return tuple(cfg.cost.input_size)
    side = cfg.data.crop_size or cfg.data.image_size
    return None if side is None else (side, side)


@functools.lru_cache(maxsize=8)
def _shared_trellis_cost(layers: int, levels: int, blocks: int, primitives: tuple[str, ...], filter_multiplier: int,
                         num_classes: int, input_size: tuple[int, ...], free_first_step: bool) -> TrellisCost:
    """One :class:`TrellisCost` per process for each space, F, classes and input size: profiling
    one takes seconds, and it only reads (and memoises) costs, so every search, decode and dry run
    of a process (a scoring's searches, a test session's) can share it."""
    return TrellisCost(layers, levels, blocks, primitives, filter_multiplier, num_classes, input_size,
                       free_first_step)


def build_trellis_cost(cfg: SearchConfig, num_classes: int) -> TrellisCost | None:
    """The cost model of a hierarchical search config, or None when there is none to build (the
    cifar mode, no input size known, or more levels than the decoded network supports); then a
    ``cost.target_madds`` is an error."""
    if not get_space(cfg.mode).has_cost_model:
        return None
    size = cost_input_size(cfg)
    if size is None:
        if cfg.cost.target_madds is not None:
            raise UserError("cost.target_madds needs an input size: set cost.input_size or data.crop_size")
        return None
    m = cfg.model
    try:
        return _shared_trellis_cost(m.layers, m.levels, m.blocks, tuple(m.primitives),
                                    cfg.cost.filter_multiplier or m.filter_multiplier, num_classes, size,
                                    m.free_first_step)
    except UserError:
        if cfg.cost.target_madds is not None:
            raise
        return None  # a trellis the retrain network cannot decode into (more than 4 levels): nothing to report


class CostPenalty:
    """The cost term of the architecture loss: ``weight * max(0, log(E / target))``.

    E is :meth:`TrellisCost.supernet_madds` of ``network``, its current alpha and beta. The form
    is MnasNet's objective ``ACC * (LAT / T)^w`` with ``w = 0`` at or below the target and
    ``w = -weight`` above it (Tan et al., "MnasNet: Platform-Aware Neural Architecture Search
    for Mobile", CVPR 2019, section 3; ``weight = 1`` is its hard constraint), taken as a loss
    (the negative log, the cross-entropy standing for ``-log ACC``): no pull below the target,
    and above it a pull proportional to the relative excess. Calling it returns the term
    (float32 scalar).
    """

    def __init__(self, cost: TrellisCost, network: TrellisSearchNetwork, config: CostConfig):
        if config.target_madds is None or not config.target_madds > 0 or not config.weight > 0:
            raise UserError(f"cost.target_madds and cost.weight must be positive, got {config.target_madds} "
                            f"and {config.weight}")
        self.cost, self.network = cost, network
        self.log_target, self.weight = math.log(config.target_madds), config.weight

    def __call__(self) -> torch.Tensor:
        expected = self.cost.supernet_madds(self.network)
        return (self.weight * F.relu(expected.log() - self.log_target)).float()
