"""Build (or grow) the ground-truth table of a search space: N architectures drawn uniformly from it,
each retrained under one fixed protocol, one row each.

    autoseg ground_truth --config configs/search/synthetic.yaml \\
        --retrain-config configs/retrain/synthetic.yaml -n 150 --repeats 20 \\
        --table autoseg/analysis/ground_truth/synthetic.json --time-budget 3600
    autoseg ground_truth ...                  # the same command again: continues where it stopped

Draw i is `autoseg sample --seed SAMPLE_SEED`'s draw i. Every draw is retrained with the retrain
config as it is (its train.seed is the first retraining seed); the first --repeats draws again
with that seed + 1, to measure the protocol's own noise. The order of work is draw 0 (first seed),
draw 0 (second seed, when repeated), draw 1, ... Each row (draw index, architecture, parameters,
Multi-Adds at the retrain crop, final and best validation metric, retraining seed, wall seconds)
is written to the table as soon as its retraining ends, atomically, with a CSV of the rows beside
the JSON. The table's header holds the protocol (the resolved configs, the seeds) and, for every
part of the table one command built, the command line, code version, machine, torch version and
date.

The table is the state: the same command again skips the rows it holds and resumes a retraining
stopped half-way (its run directory is under --work); a table built under another protocol is
refused. --limit K stops after K new rows, --time-budget SECONDS before a row that would not end
within the budget (judged by this command's mean time per row). Run directories are removed once
their row is written, unless --keep-runs.

--jobs J retrains J rows at once, each in a process of its own with (CPU cores / J) torch threads
(on a GPU, J processes share it): rows then end out of order, and each is written as it ends. A
part records its J and its processes' thread count; rows retrained with another thread count or on
another device differ by noise of the kind the repeated rows measure.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from autoseg.space.architecture import Architecture, architecture_from_dict
from autoseg.utils.provenance import provenance
from autoseg.config import RetrainConfig, from_dict, to_dict
from autoseg.utils.errors import UserError
from autoseg.utils.files import read_json
from autoseg.analysis.ground_truth import FORMAT, write_table
from autoseg.space.sampling import sample_architectures
from autoseg.tools import retrain as retrain_tool
from autoseg.tools.benchmark_search import architecture_row, ensure_run, resolve_configs

PLACE_KEYS = ("data.root", "data.num_workers", "train.device")
"""Retrain settings that say where the data and the computation are, not what is trained: a table
may grow on another machine with other values of them."""

DEFAULT_REPEATS = 20
"""Draws retrained with the second seed unless ``--repeats`` says otherwise (the issue's minimum)."""

RUN_ONLY_KEYS = ("name", "group", "arch_file", "retrain_dir")
"""Keys of a benchmark row that name run files, which a table does not keep."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The table builder's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="search YAML whose space to draw from "
                                                    "(default configs/search/synthetic.yaml)")
    parser.add_argument("--retrain-config", type=Path,
                        help="retrain YAML: the protocol every row is retrained with (default: the one for the "
                             "search config's dataset)")
    parser.add_argument("--table", type=Path, required=True, help="the table's JSON file (created, or continued); "
                                                                  "the CSV goes beside it")
    parser.add_argument("-n", "--architectures", type=int, default=150,
                        help="N: architectures to draw and retrain (default 150)")
    parser.add_argument("--repeats", type=int,
                        help="M: the first M draws are retrained again with a second seed (default 20, at most N)")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--work", type=Path, help="where the retrainings run (default runs/ground_truth/<table name>)")
    parser.add_argument("--keep-runs", action="store_true", help="keep each retraining's run directory")
    parser.add_argument("--limit", type=int, help="stop after K new rows")
    parser.add_argument("--jobs", type=int, default=1, metavar="J",
                        help="rows retrained at once, each in its own process (default 1: in this process)")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS",
                        help="start no row that would end after this many seconds")
    parser.add_argument("--data-root", help="where the dataset lives")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to retrain (default: the config's)")
    # tool_flags also reads the search and retrain lengths, which a table never changes
    parser.set_defaults(epochs=None, retrain_epochs=None)
    return parser.parse_args(argv)


def _check_args(args: argparse.Namespace) -> None:
    """Fill in the default of ``--repeats``; every bad number on the command line, as one UserError."""
    problems = []
    if args.repeats is None:
        args.repeats = min(DEFAULT_REPEATS, args.architectures)
    if args.architectures < 1:
        problems.append(f"-n must be at least 1, got {args.architectures}")
    if not 0 <= args.repeats <= args.architectures:
        problems.append(f"--repeats must lie in 0 .. N ({args.architectures}), got {args.repeats}")
    if args.limit is not None and args.limit < 1:
        problems.append(f"--limit must be at least 1, got {args.limit}")
    if args.jobs < 1:
        problems.append(f"--jobs must be at least 1, got {args.jobs}")
    if args.time_budget is not None and args.time_budget <= 0:
        problems.append(f"--time-budget must be positive, got {args.time_budget}")
    if args.table.suffix != ".json":
        problems.append(f"--table must name a .json file, got {args.table}")
    if problems:
        raise UserError("; ".join(problems))


def schedule(architectures: int, repeats: int, seeds: tuple[int, int]) -> list[tuple[int, int]]:
    """The (draw index, retraining seed) of every row, in the order they are built: each draw with
    the first seed, followed by the same draw with the second seed when it is among the first
    ``repeats``."""
    return [(index, seed) for index in range(architectures)
            for seed in (seeds if index < repeats else seeds[:1])]


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _resolved(protocol: dict[str, Any]) -> dict[str, Any]:
    """``protocol`` with its retrain config read as today's config reads a saved run's (the keys of
    earlier versions moved where they live now, e.g. the flat ``loss.ohem_threshold`` into
    ``loss.options``), so that a table built by an earlier autoseg compares setting by setting."""
    return {**protocol, "retrain_config": to_dict(from_dict(RetrainConfig, protocol["retrain_config"],
                                                            "the table's retrain config"))}


def protocol_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys (dotted) in which two protocols differ, :data:`PLACE_KEYS` aside. A retrain setting
    that only one of them has counts when its value differs from the setting's default (a setting
    a later autoseg added, left at its default, trains as before it existed)."""
    defaults = _flat(to_dict(RetrainConfig()))
    first, second = _flat(_resolved(stored)), _flat(_resolved(current))
    differ = []
    for key in sorted(first.keys() | second.keys()):
        if key.removeprefix("retrain_config.") in PLACE_KEYS:
            continue
        default = defaults.get(key.removeprefix("retrain_config."), object())
        if first.get(key, default) != second.get(key, default):
            differ.append(key)
    return differ


def part_record(argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Who built a part of the table, and how: command, code version, machine, torch, date, and the
    size the part was asked to reach."""
    return {**provenance(["autoseg", "ground_truth", *argv], worker_threads(args.jobs), args.jobs),
            "architectures": args.architectures, "repeats": args.repeats}


def worker_threads(jobs: int) -> int:
    """The torch threads a retraining runs with: this process's with one job, else the CPU's cores
    shared out between the jobs (at least one each)."""
    return torch.get_num_threads() if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)


class InProcessExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, in this process (``--jobs 1``), returning its finished future."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Call ``fn(*args, **kwargs)`` now; its result or its exception in a done future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # handed to whoever reads the future, as a process pool does
            future.set_exception(error)
        return future


def retraining_executor(jobs: int) -> concurrent.futures.Executor:
    """Where rows are retrained: in this process (one job), or a pool of ``jobs`` fresh processes
    (spawned, so that no CUDA or thread state is inherited) with :func:`worker_threads` threads each."""
    if jobs == 1:
        return InProcessExecutor()
    return concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=torch.set_num_threads,
                                                  initargs=(worker_threads(jobs),))


def open_table(path: Path, header: dict[str, Any], archs: list[Architecture]) -> dict[str, Any]:
    """The table at ``path`` to continue (its protocol must be ``header``'s and its rows must hold
    the draws of this space), or a new empty one."""
    if not path.exists():
        return {**header, "parts": [], "rows": []}
    table = read_json(path, "ground-truth table")
    if table.get("format") != FORMAT:
        raise UserError(f"{path} is no ground-truth table of format {FORMAT}; choose another --table")
    differ = protocol_differences(table["protocol"], header["protocol"])
    if differ:
        raise UserError(f"{path} was built under another protocol ({', '.join(differ)} differ); continue it with "
                        "the same configs and --sample-seed, or choose another --table")
    for row in table["rows"]:
        if row["index"] < len(archs) and architecture_from_dict(row["arch"], str(path)) != archs[row["index"]]:
            raise UserError(f"row {row['index']} of {path} holds another architecture than draw {row['index']} of "
                            "this search space; continue it with the search config it was built from")
    return table


def retrain_row(index: int, seed: int, arch: Architecture, retrain_argv: list[str], run: Path) -> dict[str, Any]:
    """Retrain draw ``index`` with ``seed`` in ``run`` (resuming a stopped retraining there) and
    return its row."""
    arch_file = run / arch.FILE_NAME
    if not arch_file.exists():
        run.mkdir(parents=True, exist_ok=True)
        arch.to_json(arch_file)
    train_argv = [*retrain_argv, "--arch", str(arch_file)]
    cost = retrain_tool.main([*train_argv, "--dry-run"])
    start = time.perf_counter()
    ensure_run(retrain_tool.main, [*train_argv, "--seed", str(seed)], run / "retrain", None)
    wall_seconds = time.perf_counter() - start
    row = {key: value for key, value in architecture_row(f"{index}", "table", arch_file, run / "retrain").items()
           if key not in RUN_ONLY_KEYS}
    return {"index": index, "seed": seed, **row, "madds": cost["madds"], "wall_seconds": round(wall_seconds, 1),
            "arch": arch.to_dict()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Build or continue the table; returns it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    _check_args(args)
    _, retrain_argv, search_config, retrain_config = resolve_configs(args)
    side = retrain_config.data.crop_size or retrain_config.data.image_size
    seeds = (retrain_config.train.seed, retrain_config.train.seed + 1)
    header = {"format": FORMAT,
              "protocol": {"retrain_config": to_dict(retrain_config), "sample_seed": args.sample_seed,
                           "retrain_seeds": list(seeds), "madds_input_size": [side, side]},
              "search_config": to_dict(search_config)}
    archs = sample_architectures(search_config, args.architectures, args.sample_seed)
    table = open_table(args.table, header, archs)
    work = args.work or Path("runs") / "ground_truth" / args.table.stem
    done = {(row["index"], row["seed"]) for row in table["rows"]}
    todo = [key for key in schedule(args.architectures, args.repeats, seeds) if key not in done]
    part = part_record(argv, args)
    start, durations, failure = time.perf_counter(), [], None
    queue = iter(todo)
    with retraining_executor(args.jobs) as pool:
        running: dict[concurrent.futures.Future, tuple[Path, float]] = {}  # its run directory, when it started
        while True:
            while failure is None and len(running) < args.jobs:
                if args.limit is not None and len(durations) + len(running) >= args.limit:
                    break
                expected = sum(durations) / len(durations) if durations else 0.0
                if args.time_budget is not None and time.perf_counter() - start + expected > args.time_budget:
                    print(f"time budget of {args.time_budget:.0f} s spent", flush=True)
                    break
                index, seed = next(queue, (None, None))
                if index is None:
                    break
                run = work / f"arch_{index:04d}_seed_{seed}"
                print(f"== draw {index} seed {seed} ({len(durations) + len(running) + 1}/{len(todo)} to do): {run}",
                      flush=True)
                submitted = time.perf_counter()
                running[pool.submit(retrain_row, index, seed, archs[index], retrain_argv, run)] = run, submitted
            if not running:
                break
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                run, submitted = running.pop(future)
                if future.exception() is not None:
                    failure = failure or future.exception()  # let the other rows end, then raise it
                    continue
                if not durations:
                    table["parts"].append(part)
                table["rows"].append({**future.result(), "part": len(table["parts"]) - 1})
                table["rows"].sort(key=lambda r: (r["index"], r["seed"]))
                write_table(table, args.table)
                if not args.keep_runs:
                    shutil.rmtree(run)
                durations.append(time.perf_counter() - submitted)
    if failure is not None:
        raise failure
    if not args.keep_runs and work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    left = len(todo) - len(durations)
    mean = f", {sum(durations) / len(durations):.0f} s per row" if durations else ""
    print(f"{args.table}: {len(table['rows'])} row(s), {len(durations)} new{mean}; {left} left to build"
          + (" (the same command continues)" if left else ""))
    return table
