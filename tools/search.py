#!/usr/bin/env python
"""Architecture search: DARTS cells on CIFAR-10, or the hierarchical Auto-DeepLab search on
segmentation data (cityscapes, folder, synthetic).

    python tools/search.py --dataset synthetic                 # the embedded default
    python tools/search.py --dataset cifar10 --data-root DIR   # DARTS cell search
    python tools/search.py --dataset cityscapes --data-root DIR
    python tools/search.py --resume runs/search/<run>          # continue a stopped run
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoseg.cli import (COMMON_FLAGS, add_common_arguments, apply_overrides, choose_run_dir,  # noqa: E402
                         create_run_dir, default_config, resumed_config, run_tool)
from autoseg.config import SearchConfig, load_config  # noqa: E402
from autoseg.data.check import require_valid_data  # noqa: E402
from autoseg.engine import distributed  # noqa: E402
from autoseg.engine.checkpoint import load_checkpoint, seed_everything  # noqa: E402
from autoseg.engine.search_loop import SearchRun  # noqa: E402
from autoseg.engine.search_tasks import build_search_data, build_search_task  # noqa: E402
from autoseg.errors import UserError  # noqa: E402
from autoseg.search.arch_decoding import format_architecture  # noqa: E402

SEARCH_FLAGS = {**COMMON_FLAGS, "amp": "train.amp", "unrolled": "train.unrolled",
                "warmup_epochs": "train.warmup_epochs", "filter_multiplier": "model.filter_multiplier",
                "layers": "model.layers"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The search tool's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--unrolled", action="store_true", default=None,
                        help="second-order (unrolled) architecture gradient")
    parser.add_argument("--warmup-epochs", type=int, help="epochs that update the weights only")
    parser.add_argument("--filter-multiplier", type=int, help="F of the trellis (hierarchical mode)")
    parser.add_argument("--layers", type=int, help="number of layers (cells) of the supernet")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> SearchConfig:
    """The experiment: the saved config when resuming, else the YAML file plus the flags."""
    if args.resume is not None:
        return resumed_config(args, SearchConfig, SEARCH_FLAGS)
    cfg = load_config(args.config or default_config("search", args.dataset, "synthetic"), SearchConfig)
    for dest in ("filter_multiplier",):
        if getattr(args, dest) is not None and cfg.mode != "hierarchical":
            raise UserError(f"--{dest.replace('_', '-')} applies to the hierarchical search only")
    apply_overrides(cfg, args, SEARCH_FLAGS)
    return cfg


def main(argv: list[str] | None = None) -> dict:
    """Run (or dry-run) a search; returns the decoded architecture or the dry-run summary."""
    args = parse_args(argv)
    cfg = resolve_config(args)
    if args.dry_run:
        seed_everything(cfg.train.seed)
        summary = build_search_task(cfg).summary()
        print(json.dumps(summary))
        return summary
    device = distributed.setup(cfg.train.device)
    run_dir = distributed.on_main(lambda: choose_run_dir("search", cfg.data.dataset, args.out, args.resume))
    seed_everything(cfg.train.seed)
    data = build_search_data(cfg)
    distributed.on_main(lambda: require_valid_data(data))
    run = SearchRun(cfg, build_search_task(cfg), data, run_dir, device)
    if args.resume:
        run.load_state_dict(load_checkpoint(run_dir))
    else:
        distributed.on_main(lambda: create_run_dir(run_dir, cfg))
    task = run.task
    say = print if distributed.is_main() else lambda *_: None
    say(f"searching ({cfg.mode}) on {cfg.data.dataset} with {task.summary()['params']:,} weight parameters, "
        f"device {device} x {distributed.world_size()} process(es), run directory {run_dir}")
    run.run()
    arch = task.decode()
    say(format_architecture(arch))
    say(f"wrote {run_dir / task.artifact}")
    return arch


if __name__ == "__main__":
    run_tool(main)
