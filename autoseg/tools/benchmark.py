"""Time the search supernets: median weight step and architecture step, and peak memory.

    autoseg benchmark --mode hierarchical --filter-multiplier 8 --crop-size 65 --batch-size 2
    autoseg benchmark --mode hierarchical --crop-size 321 --device cuda --amp        # bfloat16
    autoseg benchmark --mode hierarchical --crop-size 321 --device cuda --amp fp16   # V100, T4
    autoseg benchmark --mode cifar --batch-size 64
    autoseg benchmark --mode hierarchical --crop-size 65 --method gdas   # another search method's steps
    autoseg benchmark --mode retrain --arch autodeeplab-paper --filter-multiplier 4 --crop-size 64 --compile

Random inputs of the given size; the sizes default to each mode's paper setting. Prints one
JSON line: the setting, the weight parameter count, the median seconds of a weight step
(forward, backward, SGD) and of an architecture step of the search method ``--method`` (DARTS:
first order, or second order with --unrolled; none for a method that learns no architecture
parameter), the peak memory (CUDA max allocated, or the process's peak RSS on CPU), and the
activations one forward pass saves for backward (``saved_activations_mb``: device-independent,
so a CPU run tells how much GPU memory the activations of a setting take; with checkpointing,
what the checkpoints keep), and the ATen ops one weight step dispatches, views excluded
(``kernel_ops``, :func:`autoseg.analysis.profiling.kernel_ops`; ``--kernel-ops-top N`` adds the N most
frequent ops), which bounds a GPU step when the tensors are small. ``--mode retrain`` times
the training step of a retrain model (``--arch``, as ``autoseg retrain`` takes it; no architecture
step). ``--compile`` times the steps of the compiled model (:mod:`autoseg.utils.compilation`); the
``first_<step>_s`` figures, each step's first run, then include compiling.

Run at a paper's setting (the defaults, batch and crop included), the line also holds
``paper_search_hours`` (:func:`paper_search_hours`): the hours the paper's whole search would take
at the measured step times, Auto-DeepLab's 40 Cityscapes epochs or DARTS's 50 CIFAR-10 epochs.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from dataclasses import replace
from typing import Any, Callable

import torch

from autoseg.cli import CONFIG_DIR, add_amp_argument, add_compile_argument, add_method_option_argument
from autoseg.utils.compilation import check_compile, compiled
from autoseg.config import (DartsSearchModelConfig, SearchConfig, TrainConfig, TrellisModelConfig, load_config,
                            validate_config)
from autoseg.engine.checkpoint import resolve_device
from autoseg.engine.search_setup import build_search_network
from autoseg.models.spec import build_model, model_spec
from autoseg.utils.precision import autocast, check_amp, grad_scaler, scaled_step
from autoseg.analysis.profiling import kernel_ops, saved_activation_bytes
from autoseg.search.methods import SEARCH_METHODS, SearchSchedule, UpdateTools, build_method


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("hierarchical", "cifar", "retrain"), default="hierarchical")
    p.add_argument("--arch", default="autodeeplab-paper",
                   help="the model of --mode retrain (as autoseg retrain --arch)")
    p.add_argument("--filter-multiplier", type=int, help="F (default 8 hierarchical; retrain: the model's own)")
    p.add_argument("--layers", type=int, help="layers (default 12 hierarchical, 8 cifar)")
    p.add_argument("--levels", type=int, default=4, help="resolution levels (hierarchical)")
    p.add_argument("--blocks", type=int, help="blocks per cell (default 5 hierarchical, 4 cifar)")
    p.add_argument("--init-channels", type=int, default=16, help="C (cifar)")
    p.add_argument("--crop-size", type=int, help="input size (default 321 hierarchical, 32 cifar)")
    p.add_argument("--batch-size", type=int, help="default 2 hierarchical, 64 cifar")
    p.add_argument("--num-classes", type=int, help="default 19 hierarchical, 10 cifar")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add_amp_argument(p)
    add_compile_argument(p, off_switch=False)
    p.add_argument("--method", choices=list(SEARCH_METHODS), default="darts",
                   help="search method whose steps to time (default darts; its default settings)")
    add_method_option_argument(p)
    p.add_argument("--unrolled", action="store_true", help="time the second-order architecture step (darts)")
    p.add_argument("--checkpoint-cells", action="store_true", help="recompute cells in backward (hierarchical)")
    p.add_argument("--selective-checkpoint", action="store_true",
                   help="recompute the ReLUs and depthwise convs of the cells in backward (exact, less memory)")
    p.add_argument("--partial-channels", type=int, default=1, metavar="K",
                   help="PC-DARTS partial channel connections: 1/K of the channels through the mixed ops (1: off)")
    p.add_argument("--steps", type=int, default=5, help="timed steps of each kind (0: memory figures only)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--kernel-ops-top", type=int, default=0, metavar="N",
                   help="also report the N ops a weight step dispatches most often (kernel_ops_top)")
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(args: argparse.Namespace, device: torch.device,
               steps: dict[str, Callable[[], None]]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Run each step ``args.warmup`` times, then ``args.steps`` timed times; returns the machine, the
    median seconds of each (and of its first run, ``first_<name>``: compiling included with
    --compile) and the peak memory."""
    timings: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for name, step in steps.items():
        seconds = []
        for _ in range(args.warmup + args.steps):
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            seconds.append(time.perf_counter() - start)
        timed = seconds[args.warmup:]
        timings[name] = round(statistics.median(timed), 4) if timed else None
        timings[f"first_{name}"] = round(seconds[0], 3) if seconds else None
    if device.type == "cuda":
        peak = {"peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1), "memory": "cuda_max_allocated"}
        machine = torch.cuda.get_device_name()
    else:
        peak = {"peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "memory": "peak_rss"}
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if not args.steps + args.warmup:  # no step ran: there is no step's peak to report
        peak["peak_memory_mb"] = None
    return machine, timings, peak


MEMORY_OPTIONS = ("checkpoint_cells", "selective_checkpoint")
"""Model settings that trade memory for time and leave the computation as it is."""

PAPER_SEARCHES = {"hierarchical": ("cityscapes", 2975), "cifar": ("cifar10", 50000)}
"""The papers' search of each mode: the shipped config (``search/<name>.yaml``: epochs, warm-up epochs,
batch, crop, supernet) and the training images it splits in halves (Cityscapes train, Auto-DeepLab
§5.1; CIFAR-10 train, DARTS §3.1)."""


def paper_search_hours(mode: str, model_cfg: DartsSearchModelConfig | TrellisModelConfig, size: int, batch: int,
                       weight_step_s: float | None, arch_step_s: float | None) -> float | None:
    """Hours of the paper's search at the measured step times, or None unless the setting is the paper's.

    Every epoch runs one weight step per full batch of half A (the larger half of the training
    images); every epoch after the warm-up adds as many architecture steps, on half B. Data loading
    and the per-epoch evaluation are not counted.
    """
    name, images = PAPER_SEARCHES[mode]
    paper = load_config(CONFIG_DIR / "search" / f"{name}.yaml", SearchConfig)
    crop = paper.data.crop_size or 32  # CIFAR-10 images are 32x32, uncropped
    # the memory options change no number of the search
    same_supernet = (type(model_cfg) is type(paper.model)
                     and replace(model_cfg, **{key: getattr(paper.model, key) for key in MEMORY_OPTIONS
                                               if hasattr(model_cfg, key)}) == paper.model)
    paper_batch = (size, batch) == (crop, paper.data.batch_size)
    if weight_step_s is None or arch_step_s is None or not same_supernet or not paper_batch:
        return None
    steps = ((images + 1) // 2) // batch
    architecture_epochs = paper.train.epochs - paper.train.warmup_epochs
    return round(steps * (paper.train.epochs * weight_step_s + architecture_epochs * arch_step_s) / 3600, 2)


def benchmark_retrain(args: argparse.Namespace, device: torch.device, setting: bool | str) -> dict:
    """``--mode retrain``: time the training step (forward, backward, SGD) of the model ``--arch``
    builds at F = ``--filter-multiplier``; print and return its JSON line."""
    size, batch, classes = args.crop_size or 769, args.batch_size or 8, args.num_classes or 19
    torch.manual_seed(0)
    model = build_model(model_spec(args.arch, filter_multiplier=args.filter_multiplier), classes).to(device)
    forward = compiled(model, setting)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    scaler = grad_scaler(device, args.amp)
    inputs = torch.randn(batch, 3, size, size, device=device)
    target = torch.randint(0, classes, (batch, size, size)).to(device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, args.amp):
            loss = criterion(forward(inputs).float(), target)
        scaled_step(loss, optimizer, scaler, model.parameters(), grad_clip=None)

    machine, timings, peak = time_steps(args, device, {"train_step_s": train_step})
    result = {"mode": args.mode, "arch": args.arch, "device": device.type, "machine": machine, "amp": args.amp,
              "compile": setting, "batch_size": batch, "crop_size": size, "filter_multiplier": args.filter_multiplier,
              "params": sum(p.numel() for p in model.parameters()), **timings, **peak, "torch": torch.__version__}
    print(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and print its JSON line."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    check_amp(args.amp, device)
    setting = args.compile or False
    check_compile(setting, device)
    if args.mode == "retrain":
        return benchmark_retrain(args, device, setting)
    hierarchical = args.mode == "hierarchical"
    if hierarchical:
        model_cfg = TrellisModelConfig(layers=args.layers or 12, levels=args.levels, blocks=args.blocks or 5,
                                       filter_multiplier=args.filter_multiplier or 8,
                                       checkpoint_cells=args.checkpoint_cells, partial_channels=args.partial_channels,
                                       selective_checkpoint=args.selective_checkpoint)
    else:
        blocks = args.blocks or 4
        model_cfg = DartsSearchModelConfig(init_channels=args.init_channels, layers=args.layers or 8,
                                           blocks=blocks, multiplier=blocks, partial_channels=args.partial_channels,
                                           selective_checkpoint=args.selective_checkpoint)
    cfg = SearchConfig(mode=args.mode, model=model_cfg, train=TrainConfig(compile=setting))
    validate_config(cfg)
    size = args.crop_size or (321 if hierarchical else 32)
    batch = args.batch_size or (2 if hierarchical else 64)
    classes = args.num_classes or (19 if hierarchical else 10)
    torch.manual_seed(0)
    model = build_search_network(cfg, classes).to(device)
    forward = compiled(model, setting)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255) if hierarchical else torch.nn.CrossEntropyLoss()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4, foreach=True)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-3, weight_decay=1e-3)
    w_scaler = grad_scaler(device, args.amp)
    options = {**({"unrolled": True} if args.unrolled else {}), **dict(args.method_option or [])}
    method = build_method(args.method, options, model,
                          SearchSchedule(epochs=10**6, warmup_epochs=0, seed=0))  # steps only: any length fits
    method.prepare(UpdateTools(criterion, a_opt, w_opt, grad_scaler(device, args.amp), None, forward))
    inputs = torch.randn(batch, 3, size, size, device=device)
    target = (torch.randint(0, classes, (batch, size, size)) if hierarchical
              else torch.randint(0, classes, (batch,))).to(device)
    step_number = iter(range(1_000_000))

    def weight_step() -> None:
        w_opt.zero_grad(set_to_none=True)
        with method.weight_step(next(step_number)), autocast(device, args.amp):
            loss = criterion(forward(inputs).float(), target)
        scaled_step(loss, w_opt, w_scaler, model.weight_parameters(), grad_clip=None)

    def arch_step() -> None:
        with autocast(device, args.amp):
            loss, grads = method.architecture_gradient((inputs, target), (inputs, target), 0.025)
        method.apply(grads)

    steps = {"weight_step_s": weight_step, **({"arch_step_s": arch_step} if method.updates_architecture(0) else {})}
    machine, timings, peak = time_steps(args, device, steps)
    # one more weight step, after the timed ones (not with --compile: the counting mode would retrace)
    ops = kernel_ops(weight_step) if args.steps and not setting else None
    with method.weight_step(0), autocast(device, args.amp):
        saved = saved_activation_bytes(lambda: criterion(model(inputs).float(), target))
    result = {"mode": args.mode, "device": device.type, "machine": machine, "amp": args.amp, "compile": setting,
              "method": args.method, "method_options": options, "unrolled": args.unrolled,
              "checkpoint_cells": args.checkpoint_cells, "selective_checkpoint": args.selective_checkpoint,
              "partial_channels": args.partial_channels, "batch_size": batch,
              "crop_size": size, **({"filter_multiplier": model_cfg.filter_multiplier, "levels": args.levels}
                                    if hierarchical else {"init_channels": args.init_channels}),
              "layers": model_cfg.layers, "blocks": model_cfg.blocks,
              "params": sum(p.numel() for p in model.weight_parameters()), **timings, **peak,
              "saved_activations_mb": round(saved / 2**20, 1),
              "paper_search_hours": paper_search_hours(args.mode, model_cfg, size, batch, timings["weight_step_s"],
                                                       timings.get("arch_step_s", 0.0)),
              "kernel_ops": sum(ops.values()) if ops is not None else None,
              **({"kernel_ops_top": dict(ops.most_common(args.kernel_ops_top))}
                 if ops is not None and args.kernel_ops_top else {}),
              "torch": torch.__version__}
    print(json.dumps(result))
    return result
