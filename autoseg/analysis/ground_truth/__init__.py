"""Ground-truth tables of a search space: architectures drawn uniformly from it, each retrained
under one fixed protocol (NAS-Bench-201 for autoseg's own space, Dong & Yang, ICLR 2020).

A table is one JSON file (``autoseg ground_truth`` writes it, with a CSV of the same rows beside
it): a header holding the protocol every row was retrained under (the resolved retrain config,
the seed of the draws, the two retraining seeds, the input size Multi-Adds are counted at), the
resolved search config whose space was drawn from, one record per part of the table built by one
command (command line, code version, machine, torch version, date), and one row per retraining
(:data:`CSV_COLUMNS` lists what a row holds). Rows are keyed by (draw index, retraining seed):
the first ``repeats`` draws are retrained with the second seed as well, to measure the
protocol's own noise.

The tables built for the shipped search configs live in this package (``<name>.json``):
:func:`load_table` reads one by name.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from autoseg.utils.errors import UserError
from autoseg.utils.files import atomic_write, read_json, write_json
from autoseg.analysis.search_quality import (cost_matched_percentile, expected_best_of_k, group_statistics, percentile,
                                    protocol_noise, regret)

TABLE_DIR = Path(__file__).resolve().parent
"""Where the shipped tables live."""

FORMAT = 1
"""Version of the table's JSON layout."""

CSV_COLUMNS = ("index", "seed", "final", "best", "metric", "best_epoch", "epochs", "steps", "params", "madds",
               "strides", "skip_connect", "edges", "wall_seconds", "part", "arch")
"""The columns of a table's CSV, one per key of a row (``strides`` space-separated, ``arch`` its
JSON dict): draw index, retraining seed, final and best validation metric, the epoch of the best,
epochs and optimiser steps trained, parameters, Multi-Adds at the protocol's input size, path
strides, ``skip_connect`` edges of the cell and its edge count, seconds the retraining took, the
part of the table that built it (an index into ``parts``), the architecture."""


def list_tables() -> list[str]:
    """Names of the shipped tables (``synthetic``, ...), sorted."""
    return sorted(path.stem for path in TABLE_DIR.glob("*.json"))


def load_table(name: str | Path) -> dict[str, Any]:
    """A shipped table by name (``load_table("synthetic")``), or any table file by path."""
    path = Path(name)
    if path.suffix != ".json":
        if name not in list_tables():
            raise UserError(f"no ground-truth table {name!r} ships with autoseg: choose one of "
                            f"{', '.join(list_tables()) or 'none'}, or give the path of a table file")
        path = TABLE_DIR / f"{name}.json"
    return read_json(path, "ground-truth table")


def retrain_seeds(table: dict[str, Any]) -> tuple[int, int]:
    """The table's (first, second) retraining seeds: every draw has a row of the first, the
    repeated draws one of the second."""
    first, second = table["protocol"]["retrain_seeds"]
    return first, second


def rows_of_seed(table: dict[str, Any], seed: int | None = None) -> list[dict[str, Any]]:
    """The rows retrained with ``seed`` (default: the first seed: one row per draw), by draw index."""
    seed = retrain_seeds(table)[0] if seed is None else seed
    return sorted((row for row in table["rows"] if row["seed"] == seed), key=lambda row: row["index"])


def repeated_pairs(table: dict[str, Any]) -> list[tuple[float, float]]:
    """(final metric with the first seed, with the second) of every draw retrained with both."""
    first, second = (({row["index"]: row["final"] for row in rows_of_seed(table, seed)})
                     for seed in retrain_seeds(table))
    return [(first[index], second[index]) for index in sorted(first.keys() & second.keys())]


def summary(table: dict[str, Any]) -> dict[str, Any]:
    """What the table says of its space: ``rows`` (all), ``architectures`` (rows of the first seed),
    the ``mean``, ``std``, ``best`` and ``median`` of their final metric, and the protocol's
    ``noise`` (:func:`~autoseg.analysis.search_quality.protocol_noise`; None with fewer than two repeats)."""
    finals = sorted(row["final"] for row in rows_of_seed(table))
    pairs = repeated_pairs(table)
    middle = len(finals) // 2
    return {"rows": len(table["rows"]), "architectures": len(finals), **group_statistics(finals),
            "best": finals[-1], "median": (finals[middle] + finals[~middle]) / 2,
            "noise": protocol_noise(pairs) if len(pairs) >= 2 else None}


def score_against(table: dict[str, Any], final: float, madds: float, k: float | None = None,
                  tolerance: float = 0.1) -> dict[str, Any]:
    """Score an architecture retrained under the table's protocol (its final metric and Multi-Adds at
    the protocol's input size) against the table's architectures (rows of the first seed):
    ``percentile``, ``regret``, ``cost_matched`` (percentile among those within ``tolerance`` of its
    Multi-Adds, and their number) and, given ``k`` (e.g. search time / retrain time),
    ``random_search``: the expected best of k architectures drawn from the table."""
    rows = rows_of_seed(table)
    finals = [row["final"] for row in rows]
    return {"percentile": percentile(final, finals), "regret": regret(final, finals),
            "cost_matched": cost_matched_percentile(final, madds, finals, [row["madds"] for row in rows], tolerance),
            "random_search": None if k is None else expected_best_of_k(finals, k)}


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV with :data:`CSV_COLUMNS` as header."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "strides": " ".join(map(str, row["strides"] or [])),
                         "arch": json.dumps(row["arch"], separators=(",", ":"))})
    return out.getvalue()


def write_table(table: dict[str, Any], path: Path) -> None:
    """Write the table to ``path`` (JSON) and its rows beside it (same name, ``.csv``), each file
    atomically; the JSON last, since it is what a continued build reads."""
    text = csv_text(table["rows"])
    atomic_write(path.with_suffix(".csv"), lambda tmp: Path(tmp).write_text(text))
    write_json(table, path)
