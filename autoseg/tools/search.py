"""Architecture search: DARTS cells on CIFAR-10, or the hierarchical Auto-DeepLab search on
segmentation data, with a search method from the registry (--method; default darts).

    autoseg search --dataset synthetic                 # the embedded default
    autoseg search --dataset cifar10 --data-root DIR   # DARTS cell search
    autoseg search --dataset cityscapes --data-root DIR
    autoseg search --dataset synthetic --target-madds 4e8   # cost-aware: decoded network <= 0.4 G Multi-Adds
    autoseg search --dataset synthetic --method gdas   # another search method
    autoseg search --dataset synthetic --method random_ws --method-option candidates=20   # its settings
    autoseg search --resume runs/search/<run>          # continue a stopped run
"""
from __future__ import annotations

import argparse
import json

import torch

from autoseg.cli import (COMMON_FLAGS, add_common_arguments, add_method_option_argument, apply_overrides,
                         choose_run_dir, default_config, default_configs_help, resumed_config, start_run,
                         stopped_message)
from autoseg.config import SearchConfig, load_config
from autoseg.data.check import require_valid_data
from autoseg.engine import distributed
from autoseg.engine.checkpoint import resumed_state, seed_everything
from autoseg.engine.search_loop import SearchRun
from autoseg.engine.search_setup import (build_search_data, build_search_method, build_search_network,
                                         check_space_and_dataset)
from autoseg.engine.task import build_task
from autoseg.utils.errors import UserError
from autoseg.analysis.expected_cost import build_trellis_cost, with_cost
from autoseg.utils.process import world_size
from autoseg.search.methods import SEARCH_METHODS, method_defaults, method_settings

SEARCH_FLAGS = {**COMMON_FLAGS, "amp": "train.amp", "method": "train.method",
                "warmup_epochs": "train.warmup_epochs", "filter_multiplier": "model.filter_multiplier",
                "layers": "model.layers", "target_madds": "cost.target_madds"}


def methods_help() -> str:
    """The registered search methods, one line each with its paper and default settings."""
    lines = [f"  {name}: {method.reference}; method_options {method_defaults(name) or '{}'}"
             for name, method in SEARCH_METHODS.items()]
    return "search methods (--method, train.method):\n" + "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The search tool's command line."""
    epilog = f"{methods_help()}\n\n{default_configs_help('search')}"
    parser = argparse.ArgumentParser(description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--method", choices=list(SEARCH_METHODS),
                        help="search method (default: the config's train.method; listed below)")
    parser.add_argument("--unrolled", action="store_true", default=None,
                        help="second-order (unrolled) architecture gradient of the darts method "
                             "(method_options.unrolled)")
    add_method_option_argument(parser)
    parser.add_argument("--warmup-epochs", type=int, help="epochs that update the weights only")
    parser.add_argument("--filter-multiplier", type=int, help="F of the trellis (hierarchical mode)")
    parser.add_argument("--layers", type=int, help="number of layers (cells) of the supernet")
    parser.add_argument("--target-madds", type=float, help="cost-aware search (hierarchical mode): Multi-Adds the "
                                                           "decoded network should not exceed (cost.target_madds)")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> SearchConfig:
    """The experiment: the saved config when resuming, else the YAML file plus the flags."""
    if args.resume is not None:
        if args.unrolled or args.method_option:
            raise UserError("a resumed search keeps the method settings of its config.yaml: drop --unrolled and "
                            "--method-option, or start a new search with them")
        return resumed_config(args, SearchConfig, SEARCH_FLAGS)
    cfg = load_config(args.config or default_config("search", args.dataset), SearchConfig)
    for dest in ("filter_multiplier", "target_madds"):
        if getattr(args, dest) is not None and cfg.mode != "hierarchical":
            raise UserError(f"--{dest.replace('_', '-')} applies to the hierarchical search only")
    apply_overrides(cfg, args, SEARCH_FLAGS)
    if args.unrolled:
        cfg.method_options["unrolled"] = True
    cfg.method_options.update(args.method_option or [])
    method_settings(cfg.train.method, cfg.method_options)  # a wrong setting fails before a run starts
    return cfg


def main(argv: list[str] | None = None) -> dict:
    """Run (or dry-run) a search; returns the decoded architecture (JSON form) or the dry-run summary
    (for the hierarchical search with ``expected_madds``, the expected Multi-Adds at initialisation,
    and ``decoded_madds``, those of the network decoded then)."""
    args = parse_args(argv)
    cfg = resolve_config(args)
    check_space_and_dataset(cfg)
    task = build_task(cfg.data.dataset, cfg.data.num_classes)
    if args.dry_run:
        seed_everything(cfg.train.seed)
        network = build_search_network(cfg, task.num_classes)
        method = build_search_method(cfg, network)
        summary = {**network.summary(), "method": method.name}
        cost = build_trellis_cost(cfg, task.num_classes)
        if cost is not None:
            with torch.no_grad():
                summary["expected_madds"] = round(cost.supernet_madds(network).item())
            summary["decoded_madds"] = with_cost(method.select(None), cost).cost["madds"]
        print(json.dumps(summary))
        return summary
    device = distributed.setup(cfg.train.device)
    build_search_method(cfg, build_search_network(cfg, task.num_classes))  # bad method settings: before the run dir
    run_dir = distributed.on_main(lambda: choose_run_dir("search", cfg.data.dataset, args.out, args.resume))
    seed_everything(cfg.train.seed)
    data = build_search_data(cfg)
    distributed.on_main(lambda: require_valid_data(data))
    run = SearchRun(cfg, build_search_network(cfg, task.num_classes), task, data, run_dir, device)
    state = resumed_state(run_dir) if args.resume else None
    say = start_run(run, state, args.resume is not None, run_dir, cfg)
    already_finished = run.finished()
    say(f"searching ({cfg.mode}, method {cfg.train.method}) on {cfg.data.dataset} with "
        f"{run.model.summary()['params']:,} weight parameters, "
        f"device {device} x {world_size()} process(es), run directory {run_dir}")
    run.run()
    arch = run.arch if run.finished() else run.decode()  # a stop writes the architecture of then
    say(arch.describe())
    say(f"the search had already finished: its architecture is {run_dir / arch.FILE_NAME}" if already_finished
        else f"wrote {run_dir / arch.FILE_NAME}")
    if not run.finished():
        say(stopped_message(run.global_step, run_dir))
    return arch.to_dict()
