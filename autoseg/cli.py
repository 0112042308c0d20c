"""The ``autoseg`` command and the command-line conventions every tool shares.

``autoseg <tool> [args]`` runs :mod:`autoseg.tools.<tool>` (``python tools/<tool>.py`` in a
checkout is the same). Every training tool takes ``--config FILE`` and the common knobs as
flags overriding the file. Bad input (:class:`~autoseg.utils.errors.UserError`) ends the tool with a
one-line ``error: ...`` on stderr and exit status 2 (``AUTOSEG_TRACEBACK=1`` shows its traceback
instead, for bug reports).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from autoseg.utils.compilation import COMPILE_MODES
from autoseg.config import DataConfig, load_config, override, save_config, validate_config
from autoseg.data import dataset_default_config, list_datasets
from autoseg.engine import distributed
from autoseg.engine.checkpoint import check_run_dir
from autoseg.engine.run_lock import RunLock, claim_new_run_dir
from autoseg.utils.errors import UserError, one_line
from autoseg.utils.precision import AUTOCAST_DTYPES
from autoseg.utils.process import is_main

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The experiment configs shipped with the package (``configs/`` in a checkout)."""

COMMON_FLAGS: dict[str, str] = {
    "dataset": "data.dataset",
    "data_root": "data.root",
    "num_classes": "data.num_classes",
    "batch_size": "data.batch_size",
    "crop_size": "data.crop_size",
    "workers": "data.num_workers",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "seed": "train.seed",
    "device": "train.device",
    "compile": "train.compile",
}
"""Command-line flag (argparse dest) -> dotted config key."""


def add_amp_argument(parser: argparse.ArgumentParser) -> None:
    """``--amp [{bf16,fp16}]``: mixed precision; ``--amp`` alone is bfloat16, absent is off."""
    parser.add_argument("--amp", nargs="?", const="bf16", choices=tuple(AUTOCAST_DTYPES), default=None,
                        help="mixed precision: autocast in bfloat16 (--amp, --amp bf16) or float16 with gradient "
                             "scaling (--amp fp16, for GPUs without bfloat16: V100, T4, RTX 20xx)")


def add_compile_argument(parser: argparse.ArgumentParser, off_switch: bool = True) -> None:
    """``--compile [MODE]``: torch.compile the training steps (``--compile`` alone: the default mode),
    and with ``off_switch`` ``--no-compile`` (for a resumed run that was compiled)."""
    parser.add_argument("--compile", nargs="?", const=True, choices=COMPILE_MODES, default=None, metavar="MODE",
                        help="torch.compile the training forward and backward passes (--compile: the default "
                             f"mode; MODE: one of {', '.join(COMPILE_MODES)}; reduce-overhead uses CUDA graphs)")
    if off_switch:
        parser.add_argument("--no-compile", dest="compile", action="store_const", const=False,
                            help="run eagerly (the default; for a resumed run that was compiled)")


def method_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--method-option`` as a (key, value) pair, the value read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. single_path=false), got {text!r}")
    return key, yaml.safe_load(value)


def add_method_option_argument(parser: argparse.ArgumentParser) -> None:
    """``--method-option KEY=VALUE`` (repeatable): a setting of the search method, as in the config's
    ``method_options``; ``args.method_option`` is a list of (key, value) pairs, or None when absent."""
    parser.add_argument("--method-option", action="append", type=method_option, metavar="KEY=VALUE",
                        help="a setting of the search method (as in method_options, the value read as YAML), "
                             "e.g. single_path=false or interval=0.125; repeatable")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every training tool shares."""
    parser.add_argument("--config", type=Path, help="experiment YAML (default: the one for --dataset in configs/)")
    parser.add_argument("--dataset", help=f"one of {', '.join(list_datasets())}")
    parser.add_argument("--data-root", help="where the dataset lives (layouts: the datasets page of the documentation)")
    parser.add_argument("--num-classes", type=int, help="number of classes (folder datasets)")
    parser.add_argument("--out", type=Path, help="run directory to create (default: runs/<tool>/<dataset>-<time>)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to run (default: auto)")
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--batch-size", type=int, help="images per optimiser step")
    parser.add_argument("--crop-size", type=int, help="training crop size in pixels")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps in total (quick tries)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--workers", type=int, help="data loader worker processes")
    add_amp_argument(parser)
    add_compile_argument(parser)
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run in RUN_DIR")
    parser.add_argument("--dry-run", action="store_true",
                        help="build everything that needs no data, print a JSON summary line and exit")


def apply_overrides(config: Any, args: argparse.Namespace, flags: dict[str, str]) -> list[str]:
    """Apply every flag of ``flags`` that was given, then check the whole config (see
    :func:`~autoseg.config.validate_config`); returns the dotted keys changed."""
    changed = []
    for dest, key in flags.items():
        value = getattr(args, dest, None)
        if value is not None:
            override(config, key, value)
            changed.append(key)
    validate_config(config)
    return changed


RESUME_FLAGS: tuple[str, ...] = ("max_steps", "device", "workers", "compile")
"""The flags a resumed run may change; the rest of its config is the saved one."""


def resumed_config(args: argparse.Namespace, config_class: type[T], flags: dict[str, str]) -> T:
    """The saved config of the run ``args.resume`` continues, with the :data:`RESUME_FLAGS` given
    applied; any other flag of ``flags``, ``--config`` or ``--out`` is an error."""
    check_run_dir(args.resume, resume=True)
    config = load_config(args.resume / "config.yaml", config_class)
    fixed = [f"--{dest.replace('_', '-')}" for dest in flags
             if getattr(args, dest, None) is not None and dest not in RESUME_FLAGS]
    fixed += [f"--{name}" for name in ("config", "out") if getattr(args, name, None) is not None]
    if fixed:
        raise UserError(f"a resumed run keeps its saved config.yaml and writes into RUN_DIR; only --max-steps, "
                        f"--device, --workers and --compile / --no-compile may change (got {' '.join(fixed)})")
    root = config.data.root
    if root is not None and not Path(root).is_absolute():
        raise UserError(f"{args.resume / 'config.yaml'} keeps data.root {root!r} relative to the folder that run was "
                        "started from, which it does not record (runs of this version store it absolute): write the "
                        f"absolute path of the data into data.root of {args.resume / 'config.yaml'}, then resume")
    config.train.max_steps = None  # the stop of the interrupted run; a new one may be given
    apply_overrides(config, args, {dest: flags[dest] for dest in RESUME_FLAGS})
    return config


def stopped_message(global_step: int, run_dir: Path) -> str:
    """What a run stopped by ``--max-steps`` before its end tells the user."""
    return (f"stopped at step {global_step} (--max-steps): {run_dir / 'checkpoint.pt'} holds the position; "
            f"continue with --resume {run_dir}")


def default_config(kind: str, dataset: str | None) -> Path:
    """The config a ``kind`` run (``search`` or ``retrain``) on ``dataset`` starts from without
    ``--config``: ``configs/<kind>/<name>.yaml`` of the name the dataset declares (see
    :func:`~autoseg.data.dataset_default_config`); no dataset means the default one (synthetic).
    A dataset that declares none, or an unknown dataset, is a UserError."""
    dataset = dataset or DataConfig().dataset
    name = dataset_default_config(dataset, kind)
    if name is None:
        raise UserError(f"dataset {dataset!r} has no default {kind} config: pass --config FILE")
    return CONFIG_DIR / kind / f"{name}.yaml"


def default_configs_help(kind: str) -> str:
    """The config each registered dataset's ``kind`` runs start from without ``--config``, one line
    each (for a tool's ``--help``)."""
    names = {dataset: dataset_default_config(dataset, kind) for dataset in list_datasets()}
    lines = [f"  {dataset}: " + (f"{name}.yaml" if name else "none (--config is required)")
             for dataset, name in names.items()]
    return f"default configs (--dataset -> configs/{kind}/):\n" + "\n".join(lines)


def default_run_dir(tool: str, dataset: str) -> Path:
    """A fresh run directory name: ``runs/<tool>/<dataset>-<YYYYmmdd-HHMMSS>``."""
    return Path("runs") / tool / f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def choose_run_dir(tool: str, dataset: str, out: Path | None, resume: Path | None) -> Path:
    """Where a training tool writes: ``resume`` when continuing a run, else ``out`` or a fresh
    default; a directory that is not empty is refused unless resumed (see :func:`check_run_dir`)."""
    return check_run_dir(resume or out or default_run_dir(tool, dataset), resume=resume is not None)


def absolute_data_root(config: Any) -> None:
    """Store the config's data root as an absolute path, so that a run resumed from another
    working directory reads the same data."""
    if config.data.root is not None:
        config.data.root = str(Path(config.data.root).resolve())


def create_run_dir(run_dir: Path, config: Any) -> RunLock:
    """Create a new run directory exclusively, lock it (see :mod:`autoseg.engine.run_lock`) and
    write the resolved ``config`` into it; called once everything the run needs has been built,
    so that bad input leaves no directory behind."""
    lock = claim_new_run_dir(run_dir)
    save_config(config, run_dir / "config.yaml")
    return lock


def start_run(run: Any, state: dict[str, Any] | None, resuming: bool, run_dir: Path,
              config: Any) -> Callable[..., None]:
    """Put ``run`` where it continues: load a resumed run's checkpoint ``state``, or create a new
    run's directory (a resumed run stopped before its first checkpoint starts over in its own).
    The main process locks the directory for the run's life (``run.lock``, released when
    :meth:`~autoseg.engine.run.TrainingRun.run` ends). Returns the main process's ``print`` (a
    no-op on the other processes)."""
    if state is not None:
        run.load_state_dict(state)
    if not resuming:
        absolute_data_root(config)

    def claim() -> None:  # the lock stays in the main process (on_main hands results to all)
        run.lock = RunLock.take(run_dir) if resuming else create_run_dir(run_dir, config)

    distributed.on_main(claim)
    return print if is_main() else lambda *_: None


TRACEBACK_VARIABLE = "AUTOSEG_TRACEBACK"
"""Set to 1 in the environment, a UserError ends the tool with its whole traceback (for bug reports)."""


def run_tool(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a tool's ``main``; a UserError (also one raised in a DataLoader worker) becomes
    ``error: <message>`` and exit status 2, or its traceback with ``AUTOSEG_TRACEBACK=1``. A
    process of a torchrun launch leaves its process group at the end."""
    try:
        main(argv)
    except UserError as exc:
        if os.environ.get(TRACEBACK_VARIABLE) == "1":
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interrupt:  # a RunInterrupted says what the run directory keeps
        print(f"interrupted: {interrupt}" if str(interrupt) else "interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        distributed.teardown()


TOOLS: dict[str, str] = {
    "search": "architecture search (DARTS cells or the hierarchical Auto-DeepLab search)",
    "decode": "decode a search checkpoint into arch.json / genotype.json",
    "retrain": "train a found, published or baseline architecture from scratch",
    "evaluate": "evaluate a retrained model on a dataset split",
    "predict": "segment images with a retrained model",
    "export": "export a retrained model to ONNX and check it with onnxruntime",
    "benchmark": "time and measure the search supernets",
    "profile_model": "parameters, Multi-Adds, latency and peak memory of a model",
    "check_data": "check every image and mask of a dataset and list every problem",
    "sample": "draw random architectures from a search space (the baseline a search must beat)",
    "benchmark_search": "searched vs random architectures, retrained under one budget: does search beat random?",
    "gpu_check": "prove and measure every CUDA path in at most 8 minutes: one JSON file and a summary",
    "ground_truth": "retrain architectures drawn from a search space under one protocol: the space's ground truth",
    "score_search": "score a search method against a ground-truth table: percentile, regret, Kendall's tau",
}
"""The tools ``autoseg`` runs, each a module of :mod:`autoseg.tools` with a ``main(argv)``."""


def main(argv: list[str] | None = None) -> None:
    """The ``autoseg`` command: ``autoseg <tool> [args]``; ``autoseg --help`` lists the tools."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, TOOLS))
        print("usage: autoseg <tool> [args]   (autoseg <tool> --help for a tool's options)\n\ntools:")
        print("\n".join(f"  {name:<{width}}  {what}" for name, what in TOOLS.items()))
        sys.exit(0 if argv else 2)
    if argv[0] not in TOOLS:
        print(f"error: unknown tool {argv[0]!r}; choose one of {', '.join(TOOLS)}", file=sys.stderr)
        sys.exit(2)
    tool = importlib.import_module(f"autoseg.tools.{argv[0]}")
    run_tool(tool.main, argv[1:])


if __name__ == "__main__":
    main()
