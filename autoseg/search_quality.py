"""Does a search beat random architectures? The summary of a search-quality benchmark.

The question every NAS result must answer first (Li & Talwalkar, "Random Search and
Reproducibility for Neural Architecture Search", UAI 2019; Yang et al., "NAS evaluation is
frustratingly hard", ICLR 2020): retrained under one identical budget, do the searched
architectures score above architectures drawn at random from the same space? Pure functions
over the per-architecture results: group means and sample standard deviations, the plain
verdict, and the table (Markdown) a benchmark prints and writes.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

METRIC_LABELS = {"miou": "mIoU", "acc": "top-1"}
"""How a task's metric is named in tables."""

GROUPS = ("searched", "random")
"""The two groups of a benchmark, in table order."""


def metric_label(metric: str) -> str:
    """The printed name of ``metric`` (``miou`` -> ``mIoU``)."""
    return METRIC_LABELS.get(metric, metric)


def group_statistics(values: Sequence[float]) -> dict[str, Any]:
    """``n``, ``mean`` and the sample standard deviation ``std`` (n - 1 in the denominator;
    ``None`` for fewer than two values, which have no spread)."""
    n = len(values)
    if n == 0:
        raise ValueError("a group needs at least one value")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "std": std}


def _mean_pm(stats: dict[str, Any]) -> str:
    spread = f"{stats['std']:.2f}" if stats["std"] is not None else "n/a"
    return f"{stats['mean']:.2f} ± {spread} (n={stats['n']})"


def compare_groups(searched: Sequence[float], random: Sequence[float], metric: str = "miou") -> dict[str, Any]:
    """Compare the final metric of the searched and the random architectures.

    Search beat random when the searched mean is strictly above the random mean. The difference
    is ``within_one_std`` when its size is at most the larger of the two groups' standard
    deviations (``None`` when neither group has two values, so there is no spread to judge it
    by). ``searched_below_random_mean`` counts the searches that lost to the random mean. The
    ``statement`` says all of it in one plain sentence.
    """
    s, r = group_statistics(searched), group_statistics(random)
    difference = s["mean"] - r["mean"]
    beat = difference > 0
    spreads = [g["std"] for g in (s, r) if g["std"] is not None]
    within = abs(difference) <= max(spreads) if spreads else None
    below = sum(value < r["mean"] for value in searched)
    label = metric_label(metric)
    statement = (f"searched mean {label} {_mean_pm(s)} vs random {_mean_pm(r)}: search "
                 f"{'beat' if beat else 'did not beat'} random ({difference:+.2f} points); ")
    if within is None:
        statement += "one architecture per group gives no spread to judge the difference by"
    elif within:
        statement += "the difference is within one standard deviation, so these runs do not tell them apart"
    else:
        statement += "the difference is larger than one standard deviation"
    statement += f"; {below} of {s['n']} searched architecture(s) scored below the random mean."
    return {"metric": metric, "searched": s, "random": r, "difference": difference, "search_beat_random": beat,
            "within_one_std": within, "searched_below_random_mean": below, "statement": statement}


def results_markdown(rows: Sequence[dict[str, Any]], comparison: dict[str, Any]) -> str:
    """The benchmark's table: one row per architecture (final and best metric, parameters,
    ``skip_connect`` count, path strides), then each group's mean ± std, then the statement."""
    label = metric_label(comparison["metric"])
    lines = [f"| architecture | group | final {label} | best {label} | params | skip_connect | path strides |",
             "|---|---|---:|---:|---:|---:|---|"]
    for row in rows:
        skips = f"{row['skip_connect']}/{row['edges']}"
        if row.get("skip_connect_reduce") is not None:
            skips += f" (reduce {row['skip_connect_reduce']}/{row['edges']})"
        strides = " ".join(map(str, row["strides"])) if row.get("strides") else "-"
        best = "-" if row["best"] is None else f"{row['best']:.2f}"  # a run stopped in its first epoch has none
        lines.append(f"| {row['name']} | {row['group']} | {row['final']:.2f} | {best} | "
                     f"{row['params']:,} | {skips} | {strides} |")
    lines += ["", f"| group | final {label} mean ± std (n) |", "|---|---|"]
    lines += [f"| {group} | {_mean_pm(comparison[group])} |" for group in GROUPS]
    return "\n".join(lines + ["", comparison["statement"]]) + "\n"
