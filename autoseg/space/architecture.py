"""Typed discrete architectures: the hierarchical :class:`NetworkArch`, and reading either kind.

A DARTS search finds a :class:`~autoseg.space.genotype.Genotype` (a normal and a reduction cell,
``genotype.json``); a hierarchical (Auto-DeepLab) search finds a :class:`NetworkArch` (a
network-level path through the trellis and one cell, ``arch.json``; docs/DESIGN.md §3). Both
are immutable values with ``to_dict``/``from_dict`` and ``to_json``/``from_json``, and both
are validated once, when built. :func:`read_architecture` reads either file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from autoseg.utils.errors import UserError
from autoseg.utils.files import read_json, write_json
from autoseg.space.genotype import CellGenotype, Genotype

DEFAULT_FILTER_MULTIPLIER = 20
"""F of a retrained network when neither the architecture nor the user gives one (Auto-DeepLab-S)."""

COST_KEYS = ("madds", "params", "input_size", "filter_multiplier", "num_classes")
"""What the ``cost`` of a :class:`NetworkArch` holds."""


def check_path(path: Sequence[int], free_first_step: bool = True, num_levels: int | None = None) -> tuple[int, ...]:
    """Validate a network-level path (one level per layer) and return it as a tuple.

    The stem sits at level 0, so the first layer is at level 0 or 1 (level 0 only when
    ``free_first_step`` is false), and every later layer moves by at most one level; with
    ``num_levels`` every level is below it. Raises UserError otherwise.
    """
    try:
        levels = tuple(int(level) for level in path)
    except (TypeError, ValueError):
        raise UserError(f"the network path must be a list of integer levels, got {path!r}") from None
    if not levels:
        raise UserError("the network path is empty; give one level per layer, e.g. [0, 0, 1, 2, 1]")
    steps = [(b - a) for a, b in zip((0,) + levels, levels)]
    if min(levels) < 0 or any(abs(step) > 1 for step in steps):
        raise UserError(f"invalid network path {list(levels)}: levels must be >= 0, start at 0 or 1, "
                        f"and change by at most one per layer")
    if not free_first_step and levels[0] != 0:
        raise UserError(f"invalid network path {list(levels)}: with free_first_step false the first layer is at "
                        "level 0")
    if num_levels is not None and max(levels) >= num_levels:
        raise UserError(f"invalid network path {list(levels)}: the trellis has levels 0..{num_levels - 1} only")
    return levels


def _cell(data: Any) -> CellGenotype:
    if isinstance(data, CellGenotype):
        return data
    try:
        return CellGenotype.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"the architecture's cell is not a cell genotype ({exc}); expected "
                        f"{{'blocks': [[[op, state], ...], ...], 'concat': [...]}}") from exc


@dataclass(frozen=True)
class NetworkArch:
    """A hierarchical architecture: one level per layer (``path``, 0 = stride 4) and the cell
    every layer uses.

    ``filter_multiplier`` is the F the search ran with (``None``: not recorded; retraining
    then uses :data:`DEFAULT_FILTER_MULTIPLIER` unless told otherwise). ``levels``,
    ``primitives`` and ``free_first_step`` describe the search space it was decoded from;
    ``step_probabilities`` (the transition probability of each step of the path),
    ``cell_weights`` (softmax(alpha)) and ``transitions`` (the (L, S, S) transition
    probabilities) are the numbers the decoding saw, kept for reports and figures;
    ``edge_weights`` (PC-DARTS edge normalisation) and ``max_skip_connect`` (the P-DARTS cap)
    record the collapse guards that shaped the decoding, when they were on. ``cost`` is what
    the decoded network costs (``madds``, ``params``, at ``input_size`` with
    ``filter_multiplier`` and ``num_classes``; :mod:`autoseg.analysis.expected_cost`), when counted.
    """

    path: tuple[int, ...]
    cell: CellGenotype
    filter_multiplier: int | None = None
    levels: int | None = None
    primitives: tuple[str, ...] | None = None
    free_first_step: bool = True
    step_probabilities: tuple[float, ...] | None = field(default=None, compare=False)
    cell_weights: list[list[float]] | None = field(default=None, compare=False, repr=False)
    transitions: list[list[list[float]]] | None = field(default=None, compare=False, repr=False)
    edge_weights: list[float] | None = field(default=None, compare=False, repr=False)
    max_skip_connect: int | None = None
    cost: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    FILE_NAME = "arch.json"
    """Name of the file a hierarchical search writes."""

    def __post_init__(self) -> None:
        """The one validation of a hierarchical architecture."""
        object.__setattr__(self, "cell", _cell(self.cell))
        object.__setattr__(self, "path", check_path(self.path, self.free_first_step, self.levels))
        if self.filter_multiplier is not None and (isinstance(self.filter_multiplier, bool)
                                                   or int(self.filter_multiplier) < 1):
            raise UserError(f"the architecture's filter_multiplier must be a positive integer, "
                            f"got {self.filter_multiplier!r}")
        if self.primitives is not None:
            object.__setattr__(self, "primitives", tuple(self.primitives))
            unknown = sorted(self.cell.ops() - set(self.primitives))
            if unknown:
                raise UserError(f"the architecture's cell uses {', '.join(unknown)}, which its op set "
                                f"{list(self.primitives)} does not contain")
        if self.step_probabilities is not None:
            object.__setattr__(self, "step_probabilities", tuple(float(p) for p in self.step_probabilities))
        if self.cost is not None and not (isinstance(self.cost, dict) and set(COST_KEYS) <= set(self.cost)):
            raise UserError(f"the architecture's cost must be an object with keys {', '.join(COST_KEYS)}, "
                            f"got {self.cost!r}; remove it to have it counted again")

    @property
    def layers(self) -> int:
        """Number of layers L (cells along the path)."""
        return len(self.path)

    @property
    def blocks(self) -> int:
        """Number of blocks B of the cell."""
        return self.cell.num_blocks

    @property
    def strides(self) -> list[int]:
        """Output stride of every layer (4 * 2**level)."""
        return [4 * 2 ** level for level in self.path]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the ``arch.json`` format (unknown facts are left out)."""
        data: dict[str, Any] = {"path": list(self.path), "cell": self.cell.to_dict()}
        optional = {"filter_multiplier": self.filter_multiplier, "blocks": self.blocks, "layers": self.layers,
                    "levels": self.levels, "primitives": list(self.primitives) if self.primitives else None,
                    "free_first_step": self.free_first_step,
                    "step_probabilities": list(self.step_probabilities) if self.step_probabilities else None,
                    "cell_weights": self.cell_weights, "transitions": self.transitions,
                    "edge_weights": self.edge_weights, "max_skip_connect": self.max_skip_connect,
                    "cost": self.cost}
        data.update({key: value for key, value in optional.items() if value is not None})
        return data

    @classmethod
    def from_dict(cls, data: Any) -> NetworkArch:
        """Inverse of :meth:`to_dict`; also reads the files of earlier autoseg versions and
        minimal hand-written ones (``path`` and ``cell`` only). Raises UserError on anything
        that is not a valid architecture."""
        if not isinstance(data, dict):
            raise UserError(f"an architecture must be a JSON object, got {type(data).__name__}")
        missing = [key for key in ("path", "cell") if key not in data]
        if missing:
            raise UserError(f"the architecture lacks {', '.join(missing)}; expected keys 'path', 'cell' "
                            f"and optionally 'filter_multiplier'")
        arch = cls(path=data["path"], cell=data["cell"], filter_multiplier=data.get("filter_multiplier"),
                   levels=data.get("levels"), primitives=data.get("primitives"),
                   free_first_step=bool(data.get("free_first_step", True)),
                   step_probabilities=data.get("step_probabilities"), cell_weights=data.get("cell_weights"),
                   transitions=data.get("transitions"), edge_weights=data.get("edge_weights"),
                   max_skip_connect=data.get("max_skip_connect"), cost=data.get("cost"))
        for key, value in (("layers", arch.layers), ("blocks", arch.blocks)):
            if key in data and data[key] != value:
                raise UserError(f"the architecture says {key}={data[key]} but its "
                                f"{'path' if key == 'layers' else 'cell'} has {value}")
        return arch

    def to_json(self, path: str | Path) -> None:
        """Write the architecture to ``path`` (atomically)."""
        write_json(self.to_dict(), path)

    @classmethod
    def from_json(cls, path: str | Path) -> NetworkArch:
        """Read an ``arch.json``."""
        return cls.from_dict(read_json(path, "architecture file"))

    def describe(self) -> str:
        """A few human-readable lines: the path, its strides, the sizes and the cell."""
        lines = [f"network path (level per layer): {list(self.path)}",
                 f"output stride per layer:       {self.strides}",
                 f"filter multiplier F={self.filter_multiplier}, blocks B={self.blocks}, layers L={self.layers}"]
        if self.cost is not None:
            size = "x".join(str(side) for side in self.cost["input_size"])
            lines.append(f"decoded network (F={self.cost['filter_multiplier']}, {self.cost['num_classes']} classes) at "
                         f"{size}: {self.cost['params']:,} parameters, {self.cost['madds'] / 1e6:,.1f} M Multi-Adds")
        return "\n".join(lines + self.cell.describe("cell"))


Architecture = Union[Genotype, NetworkArch]
"""What a search finds: DARTS cells or a hierarchical network."""


def architecture_from_dict(data: Any, source: str = "the architecture") -> Architecture:
    """A :class:`Genotype` (keys ``normal``, ``reduce``) or a :class:`NetworkArch` (keys ``path``,
    ``cell``) from its JSON form."""
    if isinstance(data, dict) and "path" in data and "cell" in data:
        return NetworkArch.from_dict(data)
    if isinstance(data, dict) and "normal" in data and "reduce" in data:
        try:
            return Genotype.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{source} is not a valid genotype ({exc})") from exc
    raise UserError(f"{source} is neither an arch.json (keys path, cell) nor a genotype.json (keys normal, reduce)")


def read_architecture(path: str | Path) -> Architecture:
    """Read a search's ``arch.json`` or ``genotype.json`` (any file name)."""
    return architecture_from_dict(read_json(path, "architecture file"), str(path))
