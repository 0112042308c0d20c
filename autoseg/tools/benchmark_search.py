"""Does the search beat random architectures? Search K times, draw N random architectures from
the same space, retrain all of them under one identical budget and compare.

    autoseg benchmark_search --config configs/search/synthetic.yaml \\
        --retrain-config configs/retrain/synthetic.yaml --searches 2 --random 3 --out runs/quality
    autoseg benchmark_search ... --out runs/quality          # again: continues, skips finished runs

Search k runs with --seed k (k = 0 .. K-1) into DIR/searched_<k>/search and its decoded
architecture is retrained into DIR/searched_<k>/retrain; random architecture i (drawn as
`autoseg sample --seed SAMPLE_SEED` draws it) is written to DIR/random_<i>/arch.json (or
genotype.json) and retrained into DIR/random_<i>/retrain. Every retraining uses the same config,
seed and length. The table (final and best validation metric, parameters, skip_connect count,
path strides; each group's mean ± std; whether search beat random) is printed and written to
DIR/results.md and DIR/results.json. Runs already finished are not repeated, stopped ones are
resumed, so the same command continues an interrupted benchmark (or extends it with a larger
--searches or --random).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any, Callable

from autoseg.space.architecture import Architecture, NetworkArch, read_architecture
from autoseg.cli import default_config
from autoseg.config import RetrainConfig, SearchConfig, to_dict
from autoseg.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from autoseg.engine.trained import TrainedModelMeta
from autoseg.utils.errors import UserError
from autoseg.utils.files import read_json, write_json
from autoseg.models import count_parameters
from autoseg.models.spec import build_model
from autoseg.space.sampling import sample_architectures
from autoseg.search.spaces import get_space
from autoseg.analysis.search_quality import compare_groups, results_markdown
from autoseg.tools import retrain as retrain_tool
from autoseg.tools import search as search_tool
from autoseg.tools.sample import SAMPLE_PREFIX, cell_skip_count, write_architectures

SETTINGS_NAME = "benchmark.json"
"""What a benchmark directory was started with; a continuation must match it."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="search YAML (default configs/search/synthetic.yaml)")
    parser.add_argument("--retrain-config", type=Path,
                        help="retrain YAML every architecture is trained with (default: the one for the dataset)")
    parser.add_argument("--searches", type=int, default=2, help="K: searches, seeds 0 .. K-1 (default 2)")
    parser.add_argument("--random", type=int, default=3, help="N: random architectures (default 3)")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the random draws (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="benchmark directory (created, or continued)")
    parser.add_argument("--data-root", help="where the dataset lives (searches and retrainings)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to run (default: the configs')")
    parser.add_argument("--epochs", type=int, help="epochs of each search (default: the search config's)")
    parser.add_argument("--retrain-epochs", type=int, help="epochs of each retraining (default: the retrain config's)")
    parser.add_argument("--max-steps", type=int, help="stop every search and retraining after this many steps "
                                                      "(quick tries)")
    return parser.parse_args(argv)


def _flags(**values: Any) -> list[str]:
    """``--name value`` for every value given."""
    return [item for name, value in values.items() if value is not None
            for item in (f"--{name.replace('_', '-')}", str(value))]


def tool_flags(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The command lines (less ``--seed``, ``--arch``, ``--out``) every search and every retraining
    runs with; without ``--retrain-config``, the retrain config of the search's dataset."""
    common = _flags(data_root=args.data_root, device=args.device)
    search = ["--config", str(args.config or default_config("search", None)), *common,
              *_flags(epochs=args.epochs)]
    retrain_config = args.retrain_config
    if retrain_config is None:
        dataset = search_tool.resolve_config(search_tool.parse_args(search)).data.dataset
        retrain_config = default_config("retrain", dataset)
    return search, ["--config", str(retrain_config), *common, *_flags(epochs=args.retrain_epochs)]


def resolve_configs(args: argparse.Namespace) -> tuple[list[str], list[str], SearchConfig, RetrainConfig]:
    """The search and retrain command lines of :func:`tool_flags` and the configs they resolve to,
    which must be on the same dataset."""
    search_argv, retrain_argv = tool_flags(args)
    search_config = search_tool.resolve_config(search_tool.parse_args(search_argv))
    retrain_config = retrain_tool.resolve_config(retrain_tool.parse_args(retrain_argv))
    if retrain_config.data.dataset != search_config.data.dataset:
        raise UserError(f"the search config is on {search_config.data.dataset} but the retrain config on "
                        f"{retrain_config.data.dataset}; retrain on the data the search ran on")
    return search_argv, retrain_argv, search_config, retrain_config


def ensure_run(main: Callable[[list[str] | None], Any], argv: list[str], run_dir: Path, max_steps: int | None) -> None:
    """Run a tool into ``run_dir``, or resume it there: a finished run returns at once, a stopped
    one continues; a directory without a checkpoint (stopped in its first epoch) starts again."""
    limit = _flags(max_steps=max_steps)
    if (run_dir / CHECKPOINT_NAME).is_file():
        main(["--resume", str(run_dir), *limit])
        return
    if run_dir.exists():
        shutil.rmtree(run_dir)
    main([*argv, *limit, "--out", str(run_dir)])


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record the settings in ``out/benchmark.json``, or check a continued benchmark matches them."""
    file = out / SETTINGS_NAME
    if file.exists():
        before = read_json(file, "benchmark settings")
        if before != settings:
            changed = sorted(key for key in {*before, *settings} if before.get(key) != settings.get(key))
            raise UserError(f"{out} holds a benchmark with other settings ({', '.join(changed)} differ); "
                            "continue it with the same configs and flags, or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no {SETTINGS_NAME}, so it is no benchmark to continue; "
                        "choose another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json(settings, file)


def architecture_row(name: str, group: str, arch_file: Path, retrain_dir: Path) -> dict[str, Any]:
    """One table row: the retrained architecture's final validation metric (of its last record, or
    of the evaluation at its --max-steps stop) and best one, its parameters (the model rebuilt from
    the checkpoint), ``skip_connect`` count and strides."""
    arch: Architecture = read_architecture(arch_file)
    state = load_checkpoint(retrain_dir)
    meta = TrainedModelMeta.from_checkpoint(state)
    model = build_model(meta.model_spec, meta.num_classes)
    hierarchical = isinstance(arch, NetworkArch)
    cell = arch.cell if hierarchical else arch.normal
    metric = state["best"]["metric"]
    return {"name": name, "group": group, "arch_file": str(arch_file), "retrain_dir": str(retrain_dir),
            "metric": metric, "final": (state.get("stop_record") or state["history"][-1])["valid"][metric],
            "best": state["best"]["value"],
            "best_epoch": state["best"]["epoch"], "epochs": state["epoch"], "steps": state["global_step"],
            "params": count_parameters(model, exclude="auxiliary"),
            "skip_connect": cell_skip_count(cell), "edges": sum(len(block) for block in cell.blocks),
            "skip_connect_reduce": None if hierarchical else cell_skip_count(arch.reduce),
            "path": list(arch.path) if hierarchical else None, "strides": arch.strides if hierarchical else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run (or continue) the benchmark; returns what ``results.json`` holds."""
    args = parse_args(argv)
    if args.searches < 1 or args.random < 1:
        raise UserError(f"--searches and --random must be at least 1, got {args.searches} and {args.random}")
    search_argv, retrain_argv, search_config, retrain_config = resolve_configs(args)
    out: Path = args.out
    check_settings(out, {"search_config": to_dict(search_config), "retrain_config": to_dict(retrain_config),
                         "search_flags": search_argv[2:], "retrain_flags": retrain_argv[2:],
                         "max_steps": args.max_steps, "sample_seed": args.sample_seed})
    rows = []
    for k in range(args.searches):
        run = out / f"searched_{k}"
        print(f"== search {k + 1}/{args.searches} (seed {k}): {run / 'search'}", flush=True)
        ensure_run(search_tool.main, [*search_argv, "--seed", str(k)], run / "search", args.max_steps)
        arch_file = run / "search" / get_space(search_config.mode).architecture.FILE_NAME
        print(f"== retrain searched_{k}: {run / 'retrain'}", flush=True)
        ensure_run(retrain_tool.main, [*retrain_argv, "--arch", str(arch_file)], run / "retrain", args.max_steps)
        rows.append(architecture_row(f"searched_{k}", "searched", arch_file, run / "retrain"))
    arch_files = write_architectures(sample_architectures(search_config, args.random, args.sample_seed), out)
    for i, arch_file in enumerate(arch_files):
        name = f"{SAMPLE_PREFIX}{i}"
        print(f"== retrain {name} ({i + 1}/{args.random}): {arch_file.parent / 'retrain'}", flush=True)
        ensure_run(retrain_tool.main, [*retrain_argv, "--arch", str(arch_file)], arch_file.parent / "retrain",
                   args.max_steps)
        rows.append(architecture_row(name, "random", arch_file, arch_file.parent / "retrain"))
    comparison = compare_groups([r["final"] for r in rows if r["group"] == "searched"],
                                [r["final"] for r in rows if r["group"] == "random"], rows[0]["metric"])
    results = {"settings": read_json(out / SETTINGS_NAME, "benchmark settings"), "architectures": rows,
               "comparison": comparison}
    write_json(results, out / "results.json")
    table = results_markdown(rows, comparison)
    (out / "results.md").write_text(table)
    print(table, end="")
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return results
