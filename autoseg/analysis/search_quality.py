"""Does a search beat random architectures? The summary of a search-quality benchmark.

The question every NAS result must answer first (Li & Talwalkar, "Random Search and
Reproducibility for Neural Architecture Search", UAI 2019; Yang et al., "NAS evaluation is
frustratingly hard", ICLR 2020): retrained under one identical budget, do the searched
architectures score above architectures drawn at random from the same space? Pure functions
over the per-architecture results: group means and sample standard deviations, the plain
verdict, and the table (Markdown) a benchmark prints and writes.

Scoring against a ground-truth table of the space (:mod:`autoseg.analysis.ground_truth`; NAS-Bench-201,
Dong & Yang, ICLR 2020): a score's percentile among the table's, its regret to the table's best,
its percentile among the table's architectures of similar cost, the expected best of k random
architectures (random search with the same compute), Kendall's tau-b between two rankings (a
one-shot score against the truth), and the noise of the retraining protocol itself.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

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


def mean_std_text(stats: dict[str, Any] | None, digits: int = 2) -> str:
    """``mean ± std`` of :func:`group_statistics` with ``digits`` decimals (the mean alone for one
    value, ``-`` for none)."""
    if stats is None:
        return "-"
    spread = "" if stats["std"] is None else f" ± {stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}{spread}"


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


def percentile(score: float, scores: Sequence[float]) -> float:
    """The percentile of ``score`` among ``scores``: the percentage of them below it, ties counted
    half (``scipy.stats.percentileofscore(kind="mean")``); 100 beats every one, 50 is the median."""
    if not scores:
        raise ValueError("a percentile needs at least one score to compare with")
    below = sum(value < score for value in scores)
    equal = sum(value == score for value in scores)
    return 100.0 * (below + 0.5 * equal) / len(scores)


def regret(score: float, scores: Sequence[float]) -> float:
    """How far ``score`` lies below the best of ``scores`` (negative when it beats them all)."""
    if not scores:
        raise ValueError("a regret needs at least one score to compare with")
    return max(scores) - score


def cost_matched_percentile(score: float, cost: float, scores: Sequence[float], costs: Sequence[float],
                            tolerance: float = 0.1) -> dict[str, Any]:
    """The percentile of ``score`` among the ``scores`` whose cost (e.g. Multi-Adds) lies within
    ``tolerance`` (relative: 0.1 is +-10 %) of ``cost``: ``percentile`` (None when none does) and
    ``n``, how many did."""
    if len(scores) != len(costs):
        raise ValueError(f"{len(scores)} scores but {len(costs)} costs")
    matched = [value for value, other in zip(scores, costs) if abs(other - cost) <= tolerance * cost]
    return {"percentile": percentile(score, matched) if matched else None, "n": len(matched)}


def expected_best_of_k(scores: Sequence[float], k: float) -> float:
    """The expected best of ``k`` architectures drawn at random, with replacement, from ``scores``
    (each equally likely): random search that retrains k architectures.

    Exact over the empirical distribution: with ``x_1 <= ... <= x_n`` sorted, the best of k draws
    is ``x_i`` or below with probability ``(i / n) ** k``, so the expectation is
    ``sum_i x_i ((i / n) ** k - ((i - 1) / n) ** k)``. A non-integer ``k`` (the compute of a search
    in retrainings) interpolates between the integers around it; ``k`` must be at least 1.
    """
    if not scores:
        raise ValueError("the expected best needs at least one score")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(ordered)
    below = (np.arange(n + 1) / n) ** k
    return float(np.dot(ordered, np.diff(below)))


def kendall_tau_b(first: Sequence[float], second: Sequence[float]) -> float:
    """Kendall's tau-b between two scores of the same items (Kendall, 1945): over all pairs of
    items, (concordant - discordant) / sqrt((pairs - tied in first) (pairs - tied in second)), a
    pair tied in both counting in both; 1 for the same ranking, -1 for the reverse. NaN when
    either list is constant (no ranking to compare)."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} and {len(second)} scores: Kendall's tau needs one pair per item")
    if len(first) < 2:
        raise ValueError("Kendall's tau needs at least two items")
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    upper = np.triu_indices(len(a), k=1)
    sign_a = np.sign(a[:, None] - a[None, :])[upper]
    sign_b = np.sign(b[:, None] - b[None, :])[upper]
    pairs = len(sign_a)
    untied_a, untied_b = pairs - np.sum(sign_a == 0), pairs - np.sum(sign_b == 0)
    if untied_a == 0 or untied_b == 0:
        return math.nan
    return float(np.sum(sign_a * sign_b) / math.sqrt(untied_a * untied_b))


def protocol_noise(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """How much one retraining of an architecture depends on its seed, from ``(score with seed 1,
    score with seed 2)`` per architecture: ``n``; ``difference_std``, the sample standard
    deviation of the differences; ``retrain_std``, the standard deviation of one retraining that
    implies (``difference_std / sqrt(2)``, seeds independent); ``mean_abs_difference``; and
    ``kendall_tau``, how well the second seed keeps the first seed's ranking."""
    if len(pairs) < 2:
        raise ValueError(f"the protocol's noise needs at least two repeated architectures, got {len(pairs)}")
    first, second = zip(*pairs)
    differences = [a - b for a, b in pairs]
    spread = group_statistics(differences)["std"]
    return {"n": len(pairs), "difference_std": spread, "retrain_std": spread / math.sqrt(2),
            "mean_abs_difference": sum(map(abs, differences)) / len(pairs),
            "kendall_tau": kendall_tau_b(first, second)}
