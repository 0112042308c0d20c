"""Shipped scorings of search methods against the ground-truth tables: the ``results.json`` of
``autoseg score_search`` for one table and one method, kept as ``scores/<table>/<method>.json``
beside the tables, so that the figures survive the run directories that made them.

A scoring keeps, per search, what scoring it needs (its final metric and Multi-Adds under the
table's protocol, its search and retraining seconds, the one-shot scores of the table's first
architectures), so :func:`rescore` scores it again against the table as it is now: percentiles,
regrets and random search follow a table as it grows; Kendall's tau stays over the architectures
the supernet scored when the search was scored.
"""
from __future__ import annotations

from typing import Any

from autoseg.analysis.ground_truth import TABLE_DIR, load_table, rows_of_seed, score_against, summary
from autoseg.analysis.search_quality import group_statistics, kendall_tau_b
from autoseg.utils.errors import UserError
from autoseg.utils.files import read_json

SCORES_DIR = TABLE_DIR / "scores"
"""Where the shipped scorings live: ``<table>/<method>.json``."""


def list_scorings() -> list[tuple[str, str]]:
    """(table, method) of every shipped scoring, sorted."""
    return sorted((path.parent.name, path.stem) for path in SCORES_DIR.glob("*/*.json"))


def load_scoring(table: str, method: str) -> dict[str, Any]:
    """The shipped scoring of ``method`` against the table ``table``."""
    path = SCORES_DIR / table / f"{method}.json"
    if not path.is_file():
        raise UserError(f"no scoring of {method!r} against the table {table!r} ships with autoseg; shipped: "
                        f"{', '.join('/'.join(pair) for pair in list_scorings()) or 'none'}")
    return read_json(path, "search scoring")


def rescore(scoring: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """The scoring's searches scored against ``table`` as it is now (the table the scoring was made
    against, possibly grown; another protocol is a UserError): per search its ``final`` metric,
    ``percentile``, ``regret``, ``cost_matched`` percentile (and how many architectures matched),
    ``random_search`` (expected best of k random architectures, with the search's k) and
    ``kendall_tau`` over the ``one_shot_n`` architectures its supernet scored; then ``means``, each
    figure's :func:`~autoseg.analysis.search_quality.group_statistics` over the searches, with the
    scoring's ``method_options`` and ``provenance``."""
    if scoring["settings"]["table"] != table["protocol"]:
        raise UserError("the scoring was made against a table of another protocol: score the method again with "
                        "autoseg score_search")
    finals_now = [row["final"] for row in rows_of_seed(table)]
    searches = []
    for search in scoring["searches"]:
        score = score_against(table, search["final"], search["madds"], search["k"])
        scored = search["one_shot"]["scores"]
        tau = kendall_tau_b(scored, finals_now[:len(scored)]) if len(scored) >= 2 else None
        searches.append({"name": search["name"], "final": search["final"], "strides": search["strides"],
                         "skip_connect": search["skip_connect"], "edges": search["edges"], "madds": search["madds"],
                         "percentile": score["percentile"], "regret": score["regret"],
                         "cost_matched": score["cost_matched"]["percentile"],
                         "cost_matched_n": score["cost_matched"]["n"], "random_search": score["random_search"],
                         "k": search["k"], "kendall_tau": tau, "one_shot_n": len(scored),
                         "search_seconds": search["search_seconds"], "retrain_seconds": search["retrain_seconds"]})
    figures = ("final", "percentile", "regret", "cost_matched", "random_search", "kendall_tau", "search_seconds",
               "retrain_seconds", "k")
    means = {}
    for figure in figures:
        present = [search[figure] for search in searches if search[figure] is not None]
        means[figure] = group_statistics(present) if present else None
    return {"method": scoring["method"], "method_options": scoring.get("method_options") or {},
            "provenance": scoring.get("provenance"), "table": summary(table), "searches": searches, "means": means}


def shipped_rescored(table_name: str) -> dict[str, dict[str, Any]]:
    """Every shipped scoring against the shipped table ``table_name``, rescored against it now, by method."""
    table = load_table(table_name)
    return {method: rescore(load_scoring(table_name, method), table)
            for name, method in list_scorings() if name == table_name}
