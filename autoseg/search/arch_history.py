"""Every epoch's decoded architecture, so that which epoch to take stays the user's choice.

A search keeps one entry per finished epoch: the architecture decoded at its end (the content of
its ``arch.json`` / ``genotype.json``, so that an entry reads as an architecture), with
``epoch``, the op set (``primitives``) and ``op_weights``, softmax(alpha) of each cell type
(``num_edges x num_ops``; in a hierarchical entry the same numbers as its ``cell_weights``, kept
under one key for both kinds of search). The entries live in the checkpoint, so a resumed run
continues exactly the history of the checkpoint it resumes from; all of them are written, with
the checkpoint's other outputs, to ``RUN/arch_history.jsonl`` (``genotype_history.jsonl`` for a
cell search), one JSON object per line, and drawn in ``RUN/arch_evolution.png``.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.space.architecture import Architecture, NetworkArch, architecture_from_dict
from autoseg.utils.errors import UserError
from autoseg.utils.files import atomic_write
from autoseg.space.genotype import Genotype
from autoseg.search.network import SearchNetwork
from autoseg.analysis.visualize import evolution_figure, save_png

EVOLUTION_FIGURE = "arch_evolution.png"
"""The figure of how the op weights (and the path) evolved, in the run directory."""


def history_file(arch_file: str) -> str:
    """The name of the history beside an architecture file: ``arch.json`` -> ``arch_history.jsonl``."""
    return arch_file.replace(".json", "_history.jsonl")


HISTORY_FILES = tuple(history_file(kind.FILE_NAME) for kind in (NetworkArch, Genotype))
"""The history files a search may write (one, for its kind of architecture)."""


def history_entry(epoch: int, arch: Architecture, network: SearchNetwork) -> dict[str, Any]:
    """The entry of ``epoch``: ``arch`` (decoded by ``network`` at its end) and the op weights."""
    weights = network.arch_weights()
    return {"epoch": epoch, **arch.to_dict(), "primitives": list(network.primitives),
            "op_weights": {name: np.round(weights[name].astype(np.float64), 6).tolist() for name in network.cell_types}}


def history_text(entries: list[dict[str, Any]]) -> str:
    """The history file's content: one JSON object per entry and line."""
    return "".join(json.dumps(entry) + "\n" for entry in entries)


def write_history(entries: list[dict[str, Any]], run_dir: Path, arch_file: str) -> None:
    """Write the history (every entry, atomically) and, once an epoch is done, its figure."""
    text = history_text(entries)
    atomic_write(run_dir / history_file(arch_file), lambda tmp: Path(tmp).write_text(text))
    if entries:
        image = history_figure(entries)
        atomic_write(run_dir / EVOLUTION_FIGURE, lambda tmp: save_png(image, tmp))


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The entries of the history in ``run_dir``; a run without one is a UserError."""
    found = [run_dir / name for name in HISTORY_FILES if (run_dir / name).is_file()]
    if not found:
        raise UserError(f"{run_dir} has no {' or '.join(HISTORY_FILES)}: the search that wrote it kept no history "
                        "of its epochs (it predates it, or finished no epoch)")
    entries = []
    for number, line in enumerate(found[0].read_text().splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except ValueError as exc:
            raise UserError(f"{found[0]} line {number} is not valid JSON ({exc})") from exc
    return entries


def architecture_of_epoch(entries: list[dict[str, Any]], epoch: int, source: Path) -> Architecture:
    """The architecture decoded at the end of ``epoch``; an epoch not in the history is a UserError
    that lists those that are."""
    for entry in entries:
        if entry["epoch"] == epoch:
            return architecture_from_dict(entry, f"epoch {epoch} of {source}")
    available = ", ".join(str(entry["epoch"]) for entry in entries) or "none"
    raise UserError(f"epoch {epoch} is not in the history of {source}; its epochs: {available}")


def evolution_series(entries: list[dict[str, Any]]) -> tuple[list[int], dict[str, np.ndarray], np.ndarray | None]:
    """What :func:`history_figure` draws: the epochs, per cell type the mean softmax(alpha) over
    the cell's edges in each epoch (``T x num_ops``), and the decoded paths (``T x L``, None for
    a cell search)."""
    epochs = [entry["epoch"] for entry in entries]
    weights = {name: np.array([np.mean(entry["op_weights"][name], axis=0) for entry in entries])
               for name in entries[0]["op_weights"]}
    paths = np.array([entry["path"] for entry in entries]) if "path" in entries[0] else None
    return epochs, weights, paths


def history_figure(entries: list[dict[str, Any]]) -> np.ndarray:
    """The figure of the history: the op weights of each cell type and the path over the epochs
    (read-only). It is drawn once per history: the epoch's TensorBoard image and the
    ``arch_evolution.png`` of every checkpoint written until the next epoch ends share it."""
    return _drawn_history(history_text(entries))


@functools.lru_cache(maxsize=2)
def _drawn_history(text: str) -> np.ndarray:
    entries = [json.loads(line) for line in text.splitlines()]
    epochs, weights, paths = evolution_series(entries)
    image = evolution_figure(epochs, weights, entries[-1]["primitives"], paths)
    image.setflags(write=False)
    return image
