"""Score a search method against the ground-truth table of its search space.

    autoseg score_search --table synthetic --method gdas --searches 3 --out runs/score/gdas
    autoseg score_search --table synthetic --method darts_pt --method-option interval=0.125 --out runs/score/pt
    autoseg score_search --table synthetic --config my_search.yaml --searches 3 --out runs/score/mine
    autoseg score_search ... --out runs/score/gdas        # again: continues, skips finished runs

Runs K searches (seeds 0 .. K-1) of the search config (default: the one the table was drawn from,
with --method if given) into DIR/searched_<k>/search, retrains each searched architecture under
the table's protocol (its retrain config and first retraining seed) into DIR/searched_<k>/retrain,
and scores it against the table's architectures (:func:`autoseg.analysis.ground_truth.score_against`):

- ``percentile``: of its final metric among the table's (100: above every one);
- ``regret``: the table's best minus its final metric;
- ``cost_matched``: its percentile among the table's architectures whose Multi-Adds (at the
  protocol's input size) lie within 10 % of its own, and how many there are;
- ``random_search``: the expected best of k architectures of the table, with k the search's
  training time over the retraining's (random search given the same compute; at least 1);
- ``kendall_tau``: Kendall's tau-b between the one-shot scores of the table's architectures
  (the search's supernet pinned to each, on its held-out set: :mod:`autoseg.engine.one_shot`)
  and their final metric in the table: does the supernet rank them as training does?

Per search and as mean ± std over the searches, in DIR/results.md and DIR/results.json (with the
command, code version, machine and date that wrote it; copied to
``autoseg/analysis/ground_truth/scores/<table>/<method>.json`` it ships with the docs:
:mod:`autoseg.analysis.ground_truth.scorings`). The
search config's space must be the table's (same mode, layers, levels, blocks, ops). Runs already
finished are not repeated and stopped ones resume, so the same command continues; the one-shot
scores are kept by architecture (DIR/searched_<k>/search/one_shot.json), so the same command run
after the table has grown scores only the architectures it added.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from autoseg.cli import add_method_option_argument
from autoseg.space.architecture import Architecture, architecture_from_dict
from autoseg.config import RetrainConfig, SearchConfig, from_dict, load_config, to_dict
from autoseg.engine.checkpoint import load_checkpoint, resolve_device
from autoseg.engine.one_shot import one_shot_scores
from autoseg.utils.errors import UserError
from autoseg.utils.files import read_json, write_json
from autoseg.utils.provenance import provenance
from autoseg.analysis.ground_truth import load_table, rows_of_seed, score_against, summary
from autoseg.search.methods import SEARCH_METHODS
from autoseg.search.spaces import get_space, space_signature
from autoseg.analysis.search_quality import group_statistics, kendall_tau_b, mean_std_text, metric_label
from autoseg.tools import retrain as retrain_tool
from autoseg.tools import search as search_tool
from autoseg.tools.benchmark_search import SETTINGS_NAME, architecture_row, check_settings, ensure_run

ONE_SHOT_FILE = "one_shot.json"
"""A search's one-shot scores of the table's architectures, kept so that a continuation skips them."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The scoring tool's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True,
                        help="a shipped table's name (autoseg/analysis/ground_truth/) or a table file")
    parser.add_argument("--config", type=Path, help="search YAML (default: the one the table was drawn from)")
    parser.add_argument("--method", choices=list(SEARCH_METHODS), help="search method (default: the config's)")
    add_method_option_argument(parser)
    parser.add_argument("--searches", type=int, default=3, help="K: searches, seeds 0 .. K-1 (default 3)")
    parser.add_argument("--out", type=Path, required=True, help="scoring directory (created, or continued)")
    parser.add_argument("--one-shot", type=int, metavar="N",
                        help="one-shot scores of the table's first N architectures only (default: all)")
    parser.add_argument("--data-root", help="where the dataset lives (searches and retrainings)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to run (default: the configs')")
    parser.add_argument("--max-steps", type=int, help="stop every search and retraining after this many steps "
                                                      "(quick tries; the scores then mean little)")
    return parser.parse_args(argv)


def _write_yaml(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _protocol_retrain_config(table: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The table's retrain config, with this machine's data root when given."""
    config = to_dict(from_dict(RetrainConfig, table["protocol"]["retrain_config"], "the table's retrain config"))
    if args.data_root is not None:
        config["data"]["root"] = args.data_root
    return config


def _training_seconds(run_dir: Path) -> float:
    """The seconds a run trained for (its epochs' training time, evaluations excluded)."""
    state = load_checkpoint(run_dir)
    records = [*state["history"], *([state["stop_record"]] if state.get("stop_record") else [])]
    return float(sum(record.get("seconds", 0.0) for record in records))


def _arch_key(arch: Architecture) -> str:
    """An architecture as a string that names it: its ``arch.json`` form with sorted keys."""
    return json.dumps(arch.to_dict(), sort_keys=True)


def _cached_one_shot_scores(file: Path, archs: list[Architecture]) -> dict[str, float]:
    """The one-shot scores ``file`` holds, by :func:`_arch_key`. A file of the first format (a list
    of scores without their architectures) holds the scores of the first architectures of the
    table, which only grows at its end. A file of neither format is a UserError."""
    if not file.is_file():
        return {}
    cached = read_json(file, "one-shot scores")
    try:
        if "entries" in cached:
            return {_arch_key(architecture_from_dict(entry["arch"], str(file))): float(entry["score"])
                    for entry in cached["entries"]}
        return {_arch_key(arch): float(score) for arch, score in zip(archs, cached["scores"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{file} is not a file of one-shot scores ({exc!r}): delete it and run the same "
                        "command again to score the architectures anew") from exc


def _one_shot(search_dir: Path, archs: list[Architecture], finals: list[float],
              device: torch.device) -> dict[str, Any]:
    """Kendall's tau between the supernet's one-shot scores of ``archs`` and their ``finals``. The
    scores are kept by architecture in the search directory, so that a grown table scores only
    the architectures it added."""
    file = search_dir / ONE_SHOT_FILE
    keys = [_arch_key(arch) for arch in archs]
    known = _cached_one_shot_scores(file, archs)
    missing = {key: arch for arch, key in zip(archs, keys) if key not in known}
    if missing:
        print(f"   {len(missing)} of them not scored before", flush=True)
        known.update(zip(missing, one_shot_scores(search_dir, list(missing.values()), device)))
        write_json({"entries": [{"arch": arch.to_dict(), "score": known[key]} for arch, key in zip(archs, keys)]},
                   file)
    scores = [known[key] for key in keys]
    return {"n": len(scores), "kendall_tau": kendall_tau_b(scores, finals) if len(scores) >= 2 else None,
            "scores": scores}


def _mean_pm(values: list[float | None]) -> str:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return mean_std_text(group_statistics(present) if present else None)


def results_markdown(rows: list[dict[str, Any]], table_summary: dict[str, Any], metric: str) -> str:
    """One row per search, then the means over the searches, then the table's own figures."""
    label = metric_label(metric)
    lines = [f"| search | final {label} | percentile | regret | cost-matched percentile (n) | "
             f"expected best of k random (k) | Kendall tau (n) | search s | retrain s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        score, matched, shot = row["score"], row["score"]["cost_matched"], row["one_shot"]
        matched_text = "-" if matched["percentile"] is None else f"{matched['percentile']:.1f}"
        tau = "-" if shot["kendall_tau"] is None else f"{shot['kendall_tau']:.3f}"
        lines.append(f"| {row['name']} | {row['final']:.2f} | {score['percentile']:.1f} | {score['regret']:.2f} | "
                     f"{matched_text} ({matched['n']}) | {score['random_search']:.2f} ({row['k']:.1f}) | "
                     f"{tau} ({shot['n']}) | {row['search_seconds']:.0f} | {row['retrain_seconds']:.0f} |")
    column = {"percentile": [r["score"]["percentile"] for r in rows],
              "regret": [r["score"]["regret"] for r in rows],
              "cost_matched": [r["score"]["cost_matched"]["percentile"] for r in rows],
              "random": [r["score"]["random_search"] for r in rows],
              "tau": [r["one_shot"]["kendall_tau"] for r in rows],
              "final": [r["final"] for r in rows]}
    lines += ["", "| over the searches | mean ± std |", "|---|---|"]
    lines += [f"| final {label} | {_mean_pm(column['final'])} |", f"| percentile | {_mean_pm(column['percentile'])} |",
              f"| regret | {_mean_pm(column['regret'])} |",
              f"| cost-matched percentile | {_mean_pm(column['cost_matched'])} |",
              f"| expected best of k random | {_mean_pm(column['random'])} |",
              f"| Kendall tau | {_mean_pm(column['tau'])} |"]
    lines += ["", f"The table: {table_summary['architectures']} architectures, final {label} "
                  f"{table_summary['mean']:.2f} mean, {table_summary['median']:.2f} median, "
                  f"{table_summary['best']:.2f} best."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run (or continue) the scoring; returns what ``results.json`` holds."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.searches < 1 or (args.one_shot is not None and args.one_shot < 2):
        raise UserError(f"--searches must be at least 1 and --one-shot at least 2, got {args.searches} and "
                        f"{args.one_shot}")
    table = load_table(args.table)
    rows_of_table = rows_of_seed(table)
    if not rows_of_table:
        raise UserError(f"the table {args.table} has no row yet: grow it with autoseg ground_truth first")
    out: Path = args.out
    table_search = from_dict(SearchConfig, table["search_config"], "the table's search config")
    given = table_search if args.config is None else load_config(args.config, SearchConfig)
    if space_signature(given) != space_signature(table_search):
        raise UserError(f"the search config's space {space_signature(given)} is not the table's "
                        f"{space_signature(table_search)}: search the space the table was drawn from")
    # the table's rows are not part of the settings: a grown table rescores the same runs
    options = dict(args.method_option or [])
    check_settings(out, {"table": table["protocol"], "search_config": to_dict(given), "method": args.method,
                         **({"method_options": options} if options else {}),
                         "max_steps": args.max_steps, "one_shot": args.one_shot})
    search_file = args.config or _write_yaml(to_dict(table_search), out / "protocol" / "search.yaml")
    common = [*(["--data-root", args.data_root] if args.data_root else []),
              *(["--device", args.device] if args.device else [])]
    search_argv = ["--config", str(search_file), *common, *(["--method", args.method] if args.method else []),
                   *[f"--method-option={key}={json.dumps(value)}" for key, value in options.items()]]  # JSON is YAML
    search_config = search_tool.resolve_config(search_tool.parse_args(search_argv))
    retrain_file = _write_yaml(_protocol_retrain_config(table, args), out / "protocol" / "retrain.yaml")
    retrain_argv = ["--config", str(retrain_file), *common]
    archs = [architecture_from_dict(row["arch"], "the table") for row in rows_of_table][:args.one_shot]
    finals = [row["final"] for row in rows_of_table][:len(archs)]
    device = resolve_device(args.device or search_config.train.device)
    arch_name = get_space(search_config.mode).architecture.FILE_NAME
    rows = []
    for k in range(args.searches):
        run = out / f"searched_{k}"
        print(f"== search {k + 1}/{args.searches} (seed {k}): {run / 'search'}", flush=True)
        ensure_run(search_tool.main, [*search_argv, "--seed", str(k)], run / "search", args.max_steps)
        arch_file = run / "search" / arch_name
        print(f"== retrain searched_{k} under the table's protocol: {run / 'retrain'}", flush=True)
        ensure_run(retrain_tool.main, [*retrain_argv, "--arch", str(arch_file)], run / "retrain", args.max_steps)
        row = architecture_row(f"searched_{k}", "searched", arch_file, run / "retrain")
        madds = retrain_tool.main([*retrain_argv, "--arch", str(arch_file), "--dry-run"])["madds"]
        search_seconds, retrain_seconds = _training_seconds(run / "search"), _training_seconds(run / "retrain")
        k_random = max(1.0, search_seconds / retrain_seconds) if retrain_seconds > 0 else 1.0
        print(f"== one-shot scores of {len(archs)} table architectures with the supernet of searched_{k}", flush=True)
        rows.append({**row, "madds": madds, "search_seconds": search_seconds, "retrain_seconds": retrain_seconds,
                     "k": k_random, "score": score_against(table, row["final"], madds, k_random),
                     "one_shot": _one_shot(run / "search", archs, finals, device)})
    results = {"settings": read_json(out / SETTINGS_NAME, "scoring settings"), "method": search_config.train.method,
               "method_options": search_config.method_options, "table": summary(table),
               "provenance": provenance(["autoseg", "score_search", *argv], torch.get_num_threads()), "searches": rows}
    write_json(results, out / "results.json")
    text = results_markdown(rows, results["table"], rows[0]["metric"])
    (out / "results.md").write_text(text)
    print(text, end="")
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return results
