"""Train a found, published or baseline architecture from scratch, and evaluate it.

    autoseg retrain --dataset synthetic --arch runs/search/<run>/arch.json
    autoseg retrain --dataset cityscapes --data-root DIR --arch autodeeplab-s
    autoseg retrain --dataset cifar10 --data-root DIR --arch DARTS_V2     # or a genotype.json
    autoseg retrain --dataset cityscapes --data-root DIR --arch smp:DeepLabV3Plus:resnet50
    autoseg retrain --dataset cityscapes --data-root DIR --arch smp:FPN:runs/search/<run>/arch.json
    autoseg retrain --dataset folder --data-root DIR --num-classes 5 --arch autodeeplab-s \
        --init-from runs/retrain/<cityscapes run>                          # fine-tune
    autoseg retrain --resume runs/retrain/<run>

Without --config, the run starts from the config its dataset declares (listed below: e.g.
cifar10 -> configs/retrain/cifar10_darts.yaml, the DARTS protocol; cityscapes ->
configs/retrain/cityscapes_autodeeplab.yaml, the Auto-DeepLab protocol). The run directory gets
checkpoint.pt (last), best.pt (best validation metric), config.yaml and TensorBoard logs.

--init-from starts from the weights of an earlier retraining (its best.pt, or a .pt file) with the
same --arch: every tensor of matching name and shape is copied, the others (a classifier for
another number of classes) keep their fresh initialisation and are listed; the optimiser,
schedule and step count start afresh.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from torch import nn

from autoseg.cli import (COMMON_FLAGS, add_common_arguments, apply_overrides, choose_run_dir,
                         default_config, default_configs_help, resumed_config, start_run,
                         stopped_message)
from autoseg.config import RetrainConfig, load_config
from autoseg.data import dataset_eval_split
from autoseg.data.check import require_valid_data
from autoseg.engine import distributed
from autoseg.engine.checkpoint import resumed_state, seed_everything
from autoseg.engine.datasets import build_split
from autoseg.engine.fine_tune import init_from_checkpoint
from autoseg.engine.retrain_loop import RetrainRun
from autoseg.engine.task import Task, build_task
from autoseg.engine.trained import BEST_NAME, TrainedModelMeta
from autoseg.utils.errors import UserError
from autoseg.losses import LOSSES, list_losses, loss_defaults, loss_options
from autoseg.models import count_parameters
from autoseg.models.spec import build_model, fixed_filter_multiplier, model_spec, model_task
from autoseg.utils.process import is_main, world_size
from autoseg.analysis.profiling import profile_model

RETRAIN_FLAGS = {**COMMON_FLAGS, "amp": "train.amp", "arch": "model.arch", "iterations": "train.iterations",
                 "filter_multiplier": "model.filter_multiplier", "lr": "optimizer.lr", "init_from": "model.init_from"}


def losses_help() -> str:
    """The registered losses (``loss.name``), one line each with its default options."""
    lines = [f"  {name}: options {loss_defaults(name) or '{}'}"
             + ("" if LOSSES[name].takes_class_weights else "; takes no class weights") for name in list_losses()]
    return "losses (loss.name, with loss.options and loss.class_weights):\n" + "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The retrain tool's command line."""
    epilog = f"{losses_help()}\n\n{default_configs_help('retrain')}"
    parser = argparse.ArgumentParser(description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--arch", help="arch.json, genotype.json, a model name (autodeeplab-paper, autodeeplab-s/m/l, "
                                       "DARTS_V2, darts-cifar) or smp:<Arch>:<encoder> (encoder: an smp encoder, "
                                       "autodeeplab-paper/-s/-m/-l or an arch.json)")
    parser.add_argument("--filter-multiplier", type=int, help="F of an Auto-DeepLab network (20 = S, 32 = M, 48 = L)")
    parser.add_argument("--iterations", type=int, help="train for this many iterations instead of epochs")
    parser.add_argument("--lr", type=float, help="initial learning rate")
    parser.add_argument("--init-from", metavar="RUN_DIR_OR_PT",
                        help="fine-tune: start from the matching weights of a retrain run (its best.pt) or checkpoint")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> RetrainConfig:
    """The saved config when resuming, else the YAML file plus the flags; a named published network
    (autodeeplab-s/m/l) drops the config's filter multiplier, and refuses --filter-multiplier. The
    loss and its options are checked here (:func:`~autoseg.losses.loss_options`), before any data
    is read or anything is written."""
    cfg = _resumed_config(args) if args.resume is not None else _new_config(args)
    loss_options(cfg.loss)
    return cfg


def _resumed_config(args: argparse.Namespace) -> RetrainConfig:
    """The saved config of the run ``--resume`` continues (see :func:`~autoseg.cli.resumed_config`)."""
    if args.init_from is not None:
        raise UserError("--init-from starts a new run from another run's weights, --resume continues a run from "
                        "its own checkpoint: give one of them")
    return resumed_config(args, RetrainConfig, RETRAIN_FLAGS)


def _new_config(args: argparse.Namespace) -> RetrainConfig:
    """The YAML file (default: the dataset's) plus the flags."""
    cfg = load_config(args.config or default_config("retrain", args.dataset),
                      RetrainConfig)
    apply_overrides(cfg, args, RETRAIN_FLAGS)
    fixed = fixed_filter_multiplier(cfg.model.arch)
    if fixed is not None and cfg.model.filter_multiplier is not None:
        if args.filter_multiplier is not None:
            raise UserError(f"--filter-multiplier {args.filter_multiplier} clashes with --arch {cfg.model.arch}, whose "
                            f"filter multiplier is fixed at {fixed}: leave out --filter-multiplier, or choose F with "
                            "autodeeplab-paper in place of the preset's name")
        cfg.model.filter_multiplier = None  # a named published network wins over the config's default
    return cfg


def build(cfg: RetrainConfig, task: Task, resumed: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The model and its spec (how a checkpoint rebuilds it). A new run with ``model.init_from``
    starts from that checkpoint's matching weights, reported on the console, and records the file
    read in ``model.init_from``."""
    m = cfg.model
    spec = model_spec(m.arch, filter_multiplier=m.filter_multiplier, bn_momentum=m.bn_momentum, C=m.init_channels,
                      layers=m.layers, auxiliary=m.auxiliary, encoder_weights=m.encoder_weights)
    if model_task(spec) != task.kind:
        raise UserError(f"--arch {m.arch} is a {model_task(spec)} model but {cfg.data.dataset} is {task.kind} data: "
                        + ("use a segmentation model (autodeeplab-s, an arch.json, smp:<Arch>:<encoder>)"
                           if task.segmentation else "use DARTS_V2, darts-cifar or a genotype.json"))
    model = build_model(spec, task.num_classes)
    if m.init_from is not None and not resumed:  # a resumed run continues from its own checkpoint
        report = init_from_checkpoint(model, m.init_from)
        m.init_from = report.source
        if is_main():
            print("\n".join(report.lines()))
    return model, spec


def main(argv: list[str] | None = None) -> dict:
    """Retrain (or dry-run); returns the last evaluation record or the dry-run summary (with
    ``madds``, the Multi-Adds of one inference at the training crop, ``madds_input_size``)."""
    args = parse_args(argv)
    cfg = resolve_config(args)
    seed_everything(cfg.train.seed)
    task = build_task(cfg.data.dataset, cfg.data.num_classes)
    if args.dry_run:
        model, spec = build(cfg, task)
        side = cfg.data.crop_size or cfg.data.image_size or 32  # the training crop (CIFAR-10: 32x32)
        summary = {"model": spec["name"], "arch": cfg.model.arch, "init_from": cfg.model.init_from,
                   "params": count_parameters(model, exclude="auxiliary"),
                   "aux_params": count_parameters(model) - count_parameters(model, exclude="auxiliary"),
                   "madds": profile_model(model, (side, side)).madds, "madds_input_size": [side, side],
                   "num_classes": task.num_classes}
        print(json.dumps(summary))
        return summary
    device = distributed.setup(cfg.train.device)
    run_dir = distributed.on_main(lambda: choose_run_dir("retrain", cfg.data.dataset, args.out, args.resume))
    state = resumed_state(run_dir) if args.resume else None  # None: stopped before its first checkpoint
    model, spec = build(cfg, task, resumed=state is not None)
    train_set = build_split(cfg.data, "train", augment=True, transform_kind="retrain" if task.segmentation else None)
    val_set = build_split(cfg.data, dataset_eval_split(cfg.data.dataset), augment=False)
    distributed.on_main(lambda: require_valid_data([train_set, val_set]))
    meta = TrainedModelMeta(task.kind, cfg.data.dataset, task.num_classes, spec, list(train_set.class_names),
                            train_set.palette.tolist() if task.segmentation else [])
    run = RetrainRun(cfg, model, meta, task, train_set, val_set, run_dir, device)
    say = start_run(run, state, args.resume is not None, run_dir, cfg)
    say(f"retraining {cfg.model.arch} ({count_parameters(model):,} parameters) on {cfg.data.dataset}, "
        f"{run.total_steps} steps, device {device} x {world_size()} process(es), run directory {run_dir}")
    record = run.run()
    if not run.finished():
        say(stopped_message(run.global_step, run_dir))
    if run.best["value"] is not None:
        say(f"best {run.best['metric']} {run.best['value']:.2f} at epoch {run.best['epoch']}; "
            f"wrote {run_dir / BEST_NAME}")
    return record
