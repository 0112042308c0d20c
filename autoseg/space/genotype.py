"""Discrete cell architectures: top-k decoding of alpha and the JSON-serialisable genotypes.

A cell is described, block by block, by the ``(op_name, input_state)`` pairs it keeps;
states 0 and 1 are the cell inputs (H^{l-2} and H^{l-1}) and state ``i + 2`` is block ``i``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from autoseg.utils.errors import UserError
from autoseg.utils.files import write_json

Edge = tuple[str, int]


def num_edges(num_blocks: int) -> int:
    """Number of mixed-op edges of a cell with ``num_blocks`` blocks (block i has 2 + i inputs)."""
    return sum(2 + i for i in range(num_blocks))


def blocks_from_edges(count: int) -> int:
    """Inverse of :func:`num_edges`; raises ValueError if ``count`` is no valid edge count."""
    blocks, total = 0, 0
    while total < count:
        total += 2 + blocks
        blocks += 1
    if total != count or count == 0:
        raise ValueError(f"{count} edges is not a cell: a cell of B blocks has 2+3+...+(B+1) edges "
                         "(2, 5, 9, 14, 20, ...)")
    return blocks


def topk_cell(weights: Any, primitives: Sequence[str], k: int = 2, *,
              max_skip_connect: int | None = None) -> list[list[Edge]]:
    """Decode one cell from its softmax-normalised alpha with the DARTS rule.

    ``weights`` is a (num_edges x num_ops) array, edges ordered block by block (block i has
    2 + i incoming edges, from states 0 .. i + 1). For every block, each incoming edge is
    scored by its strongest op other than ``none``; the ``k`` best edges are kept (ties go
    to the lower input state) and each contributes that strongest non-``none`` op (ties go
    to the op listed first). Returns, per block, the ``k`` pairs ``(op_name, input_state)``
    in the order of their rank.

    ``max_skip_connect`` (default None: no cap) is the decode-time cap of P-DARTS (Chen et
    al., "Progressive Differentiable Architecture Search", ICCV 2019, section 3.3): while the
    decoded cell has more ``skip_connect`` edges than that, the one whose ``skip_connect``
    weight is the lowest (ties: the later edge, in the order of the rows) loses
    ``skip_connect`` from its candidates and the cell is decoded again, so that edge now
    scores with, and contributes, its strongest op other than ``skip_connect`` and ``none``
    (and may give its place to another edge of its block). The cell keeps its
    ``max_skip_connect`` strongest ``skip_connect`` edges.
    """
    w = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be 2-D (num_edges x num_ops), got shape {w.shape}")
    if w.shape[1] != len(primitives):
        raise ValueError(f"weights have {w.shape[1]} ops per edge but {len(primitives)} primitives were given")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights contain NaN or infinite entries")
    num_blocks = blocks_from_edges(w.shape[0])
    if not 1 <= k <= 2:
        raise ValueError(f"k must be 1 or 2 (the first block has only 2 inputs), got {k}")
    allowed = np.array([name != "none" for name in primitives])
    if not allowed.any():
        raise ValueError("the op set has no op other than 'none'")
    allowed = np.repeat(allowed[None], w.shape[0], axis=0)
    cell = _topk_ops(w, allowed, num_blocks, k)
    if max_skip_connect is not None and "skip_connect" in primitives:
        if max_skip_connect < 0:
            raise ValueError(f"max_skip_connect must be 0 or more, got {max_skip_connect}")
        if all(name in ("none", "skip_connect") for name in primitives):
            raise ValueError("max_skip_connect needs an op other than 'none' and 'skip_connect' in the op set")
        skip = list(primitives).index("skip_connect")
        while True:
            skip_rows = [num_edges(block) + state for block, pairs in enumerate(cell) for state, op in pairs
                         if op == skip]
            if len(skip_rows) <= max_skip_connect:
                break
            allowed[min(skip_rows, key=lambda row: (w[row, skip], -row)), skip] = False
            cell = _topk_ops(w, allowed, num_blocks, k)
    return [[(primitives[op], state) for state, op in pairs] for pairs in cell]


def _topk_ops(w: np.ndarray, allowed: np.ndarray, num_blocks: int, k: int) -> list[list[tuple[int, int]]]:
    """The DARTS rule over the ops ``allowed`` on each row: per block, the kept
    ``(input_state, op_index)`` pairs in the order of their rank."""
    scores = np.where(allowed, w, -np.inf)
    best_op, strength = scores.argmax(axis=1), scores.max(axis=1)
    cell = []
    for block in range(num_blocks):
        rows = range(num_edges(block), num_edges(block + 1))
        ranked = sorted(range(len(rows)), key=lambda state: -strength[rows[state]])[:k]
        cell.append([(state, int(best_op[rows[state]])) for state in ranked])
    return cell


@dataclass(frozen=True)
class CellGenotype:
    """One discrete cell: ``blocks[i]`` lists the ``(op, input_state)`` pairs of block i;
    the output concatenates the states listed in ``concat``."""

    blocks: tuple[tuple[Edge, ...], ...]
    concat: tuple[int, ...]

    @classmethod
    def from_blocks(cls, blocks: Sequence[Sequence[Sequence[Any]]],
                    concat: Sequence[int] | None = None) -> "CellGenotype":
        """Build from nested lists (as found in JSON); ``concat`` defaults to every block."""
        frozen = tuple(tuple((str(op), int(state)) for op, state in block) for block in blocks)
        for i, block in enumerate(frozen):
            for op, state in block:
                if not 0 <= state < i + 2:
                    raise ValueError(f"block {i} takes input state {state}, but only states 0..{i + 1} exist before it")
        if concat is None:
            concat = range(2, len(frozen) + 2)
        return cls(frozen, tuple(int(c) for c in concat))

    @property
    def num_blocks(self) -> int:
        """Number of blocks B."""
        return len(self.blocks)

    def ops(self) -> set[str]:
        """The op names this cell uses."""
        return {op for block in self.blocks for op, _ in block}

    def describe(self, name: str) -> list[str]:
        """Human-readable lines: the output, then each block's inputs (``name`` titles them)."""
        lines = [f"{name} (output = concat of states {list(self.concat)}):"]
        for i, block in enumerate(self.blocks):
            inputs = " + ".join(f"{op}(state {state})" for op, state in block)
            lines.append(f"  block {i + 1} (state {i + 2}) = {inputs}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: ``{"blocks": [[[op, state], ...], ...], "concat": [...]}``."""
        return {"blocks": [[list(edge) for edge in block] for block in self.blocks], "concat": list(self.concat)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellGenotype":
        """Inverse of :meth:`to_dict`."""
        return cls.from_blocks(data["blocks"], data.get("concat"))


@dataclass(frozen=True)
class Genotype:
    """A DARTS architecture: a normal cell and a reduction cell."""

    normal: CellGenotype
    reduce: CellGenotype

    FILE_NAME = "genotype.json"
    """Name of the file a DARTS search writes."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form with keys ``normal`` and ``reduce``."""
        return {"normal": self.normal.to_dict(), "reduce": self.reduce.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Genotype":
        """Inverse of :meth:`to_dict`."""
        return cls(CellGenotype.from_dict(data["normal"]), CellGenotype.from_dict(data["reduce"]))

    def to_json(self, path: str | Path) -> None:
        """Write the genotype as JSON to ``path`` (atomically)."""
        write_json(self.to_dict(), path)

    def describe(self) -> str:
        """Human-readable lines describing both cells."""
        return "\n".join(self.normal.describe("normal cell") + self.reduce.describe("reduction cell"))

    @classmethod
    def from_json(cls, path: str | Path) -> "Genotype":
        """Read a genotype written by :meth:`to_json` (or a search's ``genotype.json``)."""
        try:
            data = json.loads(Path(path).read_text())
            return cls.from_dict(data.get("genotype", data))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path} is not a genotype file ({exc}); expected JSON with 'normal' and 'reduce' "
                            "cells") from exc


def _pairs(flat: Sequence[Edge]) -> list[list[Edge]]:
    return [list(flat[i:i + 2]) for i in range(0, len(flat), 2)]


GENOTYPES: dict[str, Genotype] = {
    # DARTS (second order), docs/DESIGN.md §2.
    "DARTS_V2": Genotype(
        normal=CellGenotype.from_blocks(_pairs([
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)])),
        reduce=CellGenotype.from_blocks(_pairs([
            ("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)])),
    ),
}
"""Published DARTS genotypes by name."""

AUTODEEPLAB_CELL = CellGenotype.from_blocks([
    [("dil_conv_5x5", 0), ("sep_conv_3x3", 1)],
    [("sep_conv_3x3", 0), ("dil_conv_3x3", 1)],
    [("sep_conv_3x3", 3), ("sep_conv_3x3", 0)],
    [("sep_conv_5x5", 4), ("sep_conv_5x5", 2)],
    [("sep_conv_5x5", 3), ("dil_conv_5x5", 5)],
])
"""The published Auto-DeepLab cell (docs/DESIGN.md §4), in the section-1 input numbering."""

AUTODEEPLAB_PATH: tuple[int, ...] = (0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1)
"""The published Auto-DeepLab network path, one level per layer (0 = stride 4)."""


def get_genotype(name: str) -> Genotype:
    """A published genotype by name (see :data:`GENOTYPES`)."""
    if name not in GENOTYPES:
        raise UserError(f"unknown genotype {name!r}; known: {', '.join(GENOTYPES)} (or pass a genotype.json path)")
    return GENOTYPES[name]
