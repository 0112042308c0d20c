"""Prove and measure every CUDA path in one command of at most 8 minutes: one JSON file and a summary.

    autoseg gpu_check                                  # on a CUDA machine: writes runs/gpu_check/cuda-<time>/
    autoseg gpu_check --plan                           # print the sections, their settings and budgets; run nothing
    autoseg gpu_check --sections hierarchical/fp32 exactness/amp-bf16 --out runs/gpu_check/again
    autoseg gpu_check --device cpu --tiny --sections environment hierarchical/fp32   # the runner, on a CPU

Runs the sections of :func:`plan` one after the other, each in a process of its own with a time
budget (a section that runs past it is killed and recorded as skipped, with the reason; one that
fails is recorded with its error, and the next runs): the paper-size hierarchical weight and
architecture steps (F=8, L=12, 4 levels, B=5, 321x321, batch 2; float32, --amp bf16 and fp16,
selective_checkpoint, checkpoint_cells, partial_channels 4, --compile default and
reduce-overhead) and the CIFAR-10 DARTS supernet (batch 64, first and second order), each with
``autoseg benchmark`` (median step times, peak memory, saved activations, ``paper_search_hours``);
the exactness of the device's steps (:mod:`autoseg.engine.step_exactness`); search, kill, resume,
decode, retrain, evaluate (multi-scale, flipped) and ONNX export end to end on the synthetic
scenes; ``torchrun --nproc_per_node 1`` with NCCL on a search and a retraining; and
``autoseg profile_model`` latency and peak memory of autodeeplab-s/m/l at 1024x2048. The budgets
add up to at most :data:`TOTAL_BUDGET_S` seconds.

Without a visible CUDA device it stops with one line, ``error: ...``, and writes nothing, unless
``--device cpu`` is given (with ``--tiny``, small sizes: for trying the runner). Writes into
``--out``: ``gpu_check.json`` (:data:`REPORT_FIELDS`, :data:`SECTION_FIELDS`), ``gpu_check.md``
(the same as tables), and per section ``logs/<section>.log`` (what it printed) and
``sections/<section>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from autoseg.cli import default_run_dir
from autoseg.engine import step_exactness
from autoseg.engine.checkpoint import check_run_dir, load_checkpoint
from autoseg.utils.errors import UserError
from autoseg.utils.files import atomic_write, write_json

TOTAL_BUDGET_S = 480
"""The whole check's wall-time budget: the sections' budgets add up to at most this."""
SCHEMA = "autoseg.gpu_check/1"
PAPER_GOAL_HOURS = 8.0
"""Goal: the paper's 40-epoch search within 8 hours of one card (the paper: 72 P100-hours)."""
MEMORY_GOAL_SHARE = 0.8
"""Goal: the paper-size search step peaks at no more than this share of the card's memory."""
PEER_GOAL_RATIO = 0.3
"""Goal: the weight step in no more than this share of the peer implementation's on the same card."""

TINY_HIERARCHICAL = ["--layers", "2", "--levels", "2", "--blocks", "2", "--filter-multiplier", "2",
                     "--crop-size", "16", "--num-classes", "3"]
TINY_CIFAR = ["--layers", "3", "--blocks", "2", "--init-channels", "4", "--batch-size", "2"]
HIERARCHICAL_VARIANTS: dict[str, tuple[list[str], int]] = {
    "fp32": ([], 30),
    "amp-bf16": (["--amp", "bf16"], 20),
    "amp-fp16": (["--amp", "fp16"], 20),
    "selective_checkpoint": (["--selective-checkpoint"], 20),
    "checkpoint_cells": (["--checkpoint-cells"], 20),
    "partial_channels-4": (["--partial-channels", "4"], 20),
}
"""Eager settings of the paper-size hierarchical step: benchmark flags and budget (seconds)."""

METHOD_SECTIONS = ("gdas", "random_ws")
"""Search methods whose paper-size steps are timed besides darts's (the ones whose weight step differs:
a sampled architecture per forward pass)."""


@dataclass(frozen=True)
class Section:
    """One isolated part of the check: what it runs (``kind`` and ``settings``) and its budget."""

    name: str
    """``group/setting``, e.g. ``hierarchical/amp-bf16``; the ``--sections`` filter takes names or groups."""
    kind: str
    """environment, benchmark, exactness, end_to_end, torchrun or profile."""
    what: str
    budget_s: int
    settings: dict[str, Any] = field(default_factory=dict)
    needs_cuda: bool = False

    @property
    def group(self) -> str:
        """The part of the name before ``/``."""
        return self.name.split("/")[0]


def _benchmark(name: str, what: str, argv: list[str], budget: int) -> Section:
    return Section(name, "benchmark", what, budget, {"argv": argv})


def plan(tiny: bool = False, budget_scale: float = 1.0) -> list[Section]:
    """Every section of the check, in the order they run (the figures the goals need first, compiling
    last), with its settings and budget (times ``budget_scale``); ``tiny`` swaps the paper sizes for
    small ones."""
    timing = ["--steps", "3", "--warmup", "1"]
    hierarchical = TINY_HIERARCHICAL if tiny else []  # the benchmark's defaults are the paper's setting
    cifar = ["--mode", "cifar", *(TINY_CIFAR if tiny else [])]
    sections = [Section("environment", "environment", "card, memory, driver, torch, CUDA, cuDNN, NCCL, Triton", 10)]
    sections += [_benchmark(f"hierarchical/{name}", "paper-size hierarchical weight and architecture step",
                            ["--mode", "hierarchical", *hierarchical, *flags, *timing], budget)
                 for name, (flags, budget) in HIERARCHICAL_VARIANTS.items()]
    sections += [_benchmark(f"methods/{method}", f"paper-size hierarchical steps of the {method} search method",
                            ["--mode", "hierarchical", *hierarchical, "--method", method, *timing], 15)
                 for method in METHOD_SECTIONS]
    sections += [_benchmark("cifar/first-order", "DARTS CIFAR-10 supernet, batch 64", [*cifar, *timing], 20),
                 _benchmark("cifar/second-order", "DARTS CIFAR-10 supernet, batch 64, --unrolled",
                            [*cifar, "--unrolled", *timing], 20)]
    sections += [Section(f"exactness/amp-{amp}", "exactness", f"--amp {amp} step against float32", 12,
                         {"check": "amp", "amp": amp}) for amp in ("bf16", "fp16")]
    sections += [Section(f"exactness/{option}", "exactness", f"{option} step against plain", 12,
                         {"check": "recomputation", "option": option})
                 for option in ("selective_checkpoint", "checkpoint_cells")]
    sections += [Section("end_to_end/synthetic", "end_to_end",
                         "search (killed, resumed), decode, retrain, evaluate (multi-scale, flip), ONNX export", 55),
                 Section("torchrun/nccl", "torchrun", "torchrun --nproc_per_node 1 (NCCL): a search and a retraining",
                         35, needs_cuda=True),
                 Section("profile/autodeeplab", "profile", "profile_model autodeeplab-s/m/l: latency, peak memory", 25,
                         {"models": ["autodeeplab-s", "autodeeplab-m", "autodeeplab-l"],
                          "size": [64, 128] if tiny else [1024, 2048]}),
                 Section("exactness/compile", "exactness", "compiled (default mode) step against eager", 35,
                         {"check": "compile"})]
    sections += [_benchmark(f"hierarchical/compile-{mode}", f"paper-size steps compiled ({mode}), compile time",
                            ["--mode", "hierarchical", *hierarchical, "--compile", mode, *timing], 30)
                 for mode in ("default", "reduce-overhead")]
    return [replace(s, budget_s=round(s.budget_s * budget_scale)) for s in sections]


def select(sections: list[Section], names: list[str] | None) -> list[Section]:
    """The sections named (a name, or a group for all its sections) in ``names``, in plan order; all
    when ``names`` is None. An unknown name is a UserError listing the known ones."""
    if names is None:
        return sections
    known = {s.name for s in sections} | {s.group for s in sections}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(s.name for s in sections)} "
                        f"or a group ({', '.join(dict.fromkeys(s.group for s in sections))})")
    return [s for s in sections if s.name in names or s.group in names]


# ----------------------------------------------------------------------------- what each section does


def _environment(device: torch.device, section: Section, work: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                            "platform": platform.platform(), "cpus": os.cpu_count(), "device": device.type}
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        properties = torch.cuda.get_device_properties(device)
        info.update(card=properties.name, memory_mb=round(properties.total_memory / 2**20),
                    capability=f"{properties.major}.{properties.minor}", cards=torch.cuda.device_count(),
                    bf16=torch.cuda.is_bf16_supported(including_emulation=False), triton=has_triton(),
                    nccl=".".join(map(str, torch.cuda.nccl.version())) if torch.distributed.is_nccl_available()
                    else None, cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    return info


# Each section runs in a fresh process, whose start-up counts against its budget: a section imports
# the tools it runs, not all of them.


def _benchmark_section(device: torch.device, section: Section, work: Path) -> dict[str, Any]:
    from autoseg.tools import benchmark
    return benchmark.main([*section.settings["argv"], "--device", device.type])


def _exactness(device: torch.device, section: Section, work: Path) -> dict[str, Any]:
    check = section.settings["check"]
    if check == "amp":
        return step_exactness.amp_against_float32(device, section.settings["amp"])
    if check == "recomputation":
        return step_exactness.recomputation_against_plain(device, section.settings["option"])
    return step_exactness.compiled_against_eager(device)


def _tiny_configs(work: Path, device: torch.device) -> tuple[Path, Path]:
    """A search of 2 epochs of 4 steps (the first a warm-up, the papers' ``darts`` method whatever
    method the quick start uses) with a checkpoint at every step, and a retraining of 2 epochs of
    4 steps, both on 32x32 synthetic scenes on ``device``."""
    import yaml

    from autoseg.cli import CONFIG_DIR

    def write(base: str, name: str, **sections: dict) -> Path:
        config = yaml.safe_load((CONFIG_DIR / f"{base}.yaml").read_text())
        for key, values in sections.items():
            config[key].update(values)
        if base.startswith("search/"):
            config["method_options"] = {}  # the darts defaults, not the quick start method's settings
        path = work / name
        path.write_text(yaml.safe_dump(config))
        return path

    data = {"image_size": 32, "crop_size": 32, "train_length": 16, "val_length": 4, "batch_size": 2,
            "eval_batch_size": 2}
    return (write("search/synthetic", "search.yaml", data=data,
                  model={"layers": 3, "levels": 2, "blocks": 2, "filter_multiplier": 2, "aspp_channels": 8},
                  train={"epochs": 2, "warmup_epochs": 1, "checkpoint_every_steps": 1, "device": device.type,
                         "method": "darts"}),
            write("retrain/synthetic", "retrain.yaml", data={**data, "scale_range": [0.75, 1.25]},
                  model={"filter_multiplier": 2}, train={"epochs": 2, "eval_every": 1, "device": device.type}))


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "autoseg.cli", *argv]


def _kill_after_step(command: list[str], run_dir: Path, step: int, timeout: float) -> int:
    """Start ``command``, SIGKILL it once ``run_dir``'s checkpoint holds global step ``step`` or more;
    returns the step the checkpoint held then."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if (run_dir / "checkpoint.pt").is_file():
                held = load_checkpoint(run_dir)["global_step"]
                if held >= step:
                    process.kill()
                    return held
            time.sleep(0.2)
        raise RuntimeError(f"the search ended or stalled before its step {step} checkpoint: "
                           f"{(process.stderr.read() if process.poll() is not None else '')[-500:]}")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = run()
    return result, round(time.perf_counter() - start, 2)


def _end_to_end(device: torch.device, section: Section, work: Path) -> dict[str, Any]:
    from autoseg.tools import decode, evaluate, export, retrain, search
    search_config, retrain_config = _tiny_configs(work, device)
    run = work / "search"
    killed_at = _kill_after_step(_cli("search", "--config", str(search_config), "--out", str(run)), run, 3,
                                 section.budget_s / 2)
    arch, search_s = _timed(lambda: search.main(["--resume", str(run)]))
    state = load_checkpoint(run)
    decoded, decode_s = _timed(lambda: decode.main([str(run), "--out", str(work / "decoded")]))
    if decoded != arch:
        raise RuntimeError("decode gave another architecture than the search wrote")
    trained = work / "retrain"
    record, retrain_s = _timed(lambda: retrain.main(["--config", str(retrain_config), "--arch",
                                                     str(work / "decoded" / "arch.json"), "--out", str(trained)]))
    evaluated, evaluate_s = _timed(lambda: evaluate.main([str(trained), "--device", device.type, "--json",
                                                          "--scales", "0.75", "1.0", "1.25", "--flip"]))
    exported, export_s = _timed(lambda: export.main([str(trained), "--onnx", str(work / "model.onnx")]))
    return {"killed_at_step": killed_at, "search_steps": state["global_step"], "search_epochs": len(state["history"]),
            "resumed_search_s": search_s, "decode_s": decode_s, "retrain_s": retrain_s,
            "retrain_miou": (record.get("valid") or {}).get("miou"), "evaluate_s": evaluate_s,
            "evaluate_miou": evaluated["miou"], "evaluate_protocol": evaluated["protocol"], "export_s": export_s,
            "onnx_max_abs_diff": exported["max_abs_diff"]}


def _torchrun(device: torch.device, section: Section, work: Path) -> dict[str, Any]:
    search_config, retrain_config = _tiny_configs(work, device)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
              "-m", "autoseg.cli"]
    result: dict[str, Any] = {}
    for tool, config in (("search", search_config), ("retrain", retrain_config)):
        done, seconds = _timed(lambda: subprocess.run(
            [*launch, tool, "--config", str(config), "--out", str(work / tool)], capture_output=True, text=True,
            env={**os.environ, "NCCL_DEBUG": "INFO"}, timeout=section.budget_s))
        if done.returncode:
            raise RuntimeError(f"torchrun {tool} exited {done.returncode}: {done.stderr[-800:]}")
        output = done.stdout + done.stderr
        result[tool] = {"seconds": seconds, "nccl": "NCCL INFO" in output,
                        "global_step": load_checkpoint(work / tool)["global_step"]}
    return result


def _profile(device: torch.device, section: Section, work: Path) -> dict[str, Any]:
    from autoseg.tools import profile_model
    height, width = section.settings["size"]
    return {name: {key: report[key] for key in ("params", "madds", "latency_s", "peak_memory_bytes", "memory")
                   if key in report}
            for name in section.settings["models"]
            for report in [profile_model.main([name, "--device", device.type, "--size", str(height), str(width),
                                               "--warmup", "2", "--repeats", "5", "--json"])]}


RUNNERS: dict[str, Callable[[torch.device, Section, Path], dict[str, Any]]] = {
    "environment": _environment, "benchmark": _benchmark_section, "exactness": _exactness,
    "end_to_end": _end_to_end, "torchrun": _torchrun, "profile": _profile}
"""What each kind of section runs, in its own process: (device, section, work directory) -> result."""


# ----------------------------------------------------------------------------- the report

REPORT_FIELDS: dict[str, str] = {
    "schema": f"'{SCHEMA}'",
    "command": "the command line that wrote it",
    "started": "when it started (local time, ISO 8601)",
    "device": "cuda or cpu",
    "tiny": "true when --tiny swapped the paper sizes for small ones",
    "budget_s": f"the wall-time budget of the whole check ({TOTAL_BUDGET_S} s times --budget-scale)",
    "wall_s": "the seconds it took",
    "environment": "the environment section's result (card, memory_mb, torch, cuda, ...), null if not run",
    "sections": "one record per section run or skipped, in plan order (SECTION_FIELDS)",
    "goals": "one record per goal: goal, target, measured (text or null), met (true, false or null: not measured)",
}
"""The top-level fields of ``gpu_check.json``."""
SECTION_FIELDS: dict[str, str] = {
    "name": "group/setting", "group": "hierarchical, cifar, exactness, end_to_end, torchrun, profile, environment",
    "what": "one line", "settings": "what it ran with (benchmark flags, ...)", "budget_s": "its budget",
    "status": "ok, failed (an error, or a check out of its tolerance) or skipped (not run to its end)",
    "reason": "why it failed or was skipped, null when ok", "wall_s": "its seconds, null when not started",
    "result": "its figures (the benchmark's JSON line, a check's errors and tolerances, ...), null without",
}
"""The fields of each record of ``sections``."""


def section_record(section: Section, status: str, reason: str | None = None, wall_s: float | None = None,
                   result: dict[str, Any] | None = None) -> dict[str, Any]:
    """One record of ``sections`` (:data:`SECTION_FIELDS`)."""
    return {"name": section.name, "group": section.group, "what": section.what, "settings": section.settings,
            "budget_s": section.budget_s, "status": status, "reason": reason, "wall_s": wall_s, "result": result}


def check_report(report: dict[str, Any]) -> list[str]:
    """What makes ``report`` not a ``gpu_check.json`` (missing or unknown fields, bad statuses): empty
    when it is one."""
    problems = [f"field {key}: {'missing' if key in REPORT_FIELDS else 'unknown'}"
                for key in REPORT_FIELDS.keys() ^ report.keys()]
    for record in report.get("sections", []):
        problems += [f"section {record.get('name')}: field {key}" for key in SECTION_FIELDS.keys() ^ record.keys()]
        if record.get("status") not in ("ok", "failed", "skipped"):
            problems.append(f"section {record.get('name')}: status {record.get('status')!r}")
        if (record.get("status") == "ok") == bool(record.get("reason")):
            problems.append(f"section {record.get('name')}: a reason goes with failed and skipped only")
    return problems


def _result(records: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r["result"] for r in records if r["name"] == name and r["status"] == "ok"), None)


def goals(records: list[dict[str, Any]], memory_mb: float | None, peer_weight_step_s: float | None
          ) -> list[dict[str, Any]]:
    """The goals measured against (README, docs/BENCHMARKS.md "GPU check"): the paper's search within
    :data:`PAPER_GOAL_HOURS` of this card, its step within :data:`MEMORY_GOAL_SHARE` of the card's
    memory, the weight step within :data:`PEER_GOAL_RATIO` of the peer implementation's."""
    paper = _result(records, "hierarchical/fp32") or {}
    hours, peak, step = (paper.get(key) for key in ("paper_search_hours", "peak_memory_mb", "weight_step_s"))

    def goal(text: str, target: str, measured: str | None, met: bool | None) -> dict[str, Any]:
        return {"goal": text, "target": target, "measured": measured, "met": met}

    share = peak / memory_mb if peak is not None and memory_mb else None
    ratio = step / peer_weight_step_s if step is not None and peer_weight_step_s else None
    return [goal("paper's 40-epoch search on one card, float32", f"<= {PAPER_GOAL_HOURS:g} h",
                 None if hours is None else f"{hours} h", None if hours is None else hours <= PAPER_GOAL_HOURS),
            goal("paper-size search step peak memory", f"<= {MEMORY_GOAL_SHARE:.0%} of the card's memory",
                 None if share is None else f"{peak:,.0f} MB of {memory_mb:,.0f} MB ({share:.0%})",
                 None if share is None else share <= MEMORY_GOAL_SHARE),
            goal("paper-size weight step against the peer implementation's on the same card",
                 f"<= {PEER_GOAL_RATIO}x",
                 None if ratio is None else f"{step} s / {peer_weight_step_s} s = {ratio:.2f}x",
                 None if ratio is None else ratio <= PEER_GOAL_RATIO)]


# ----------------------------------------------------------------------------- the summary

_FIGURES = {"weight_step_s": "weight step s", "arch_step_s": "arch step s",
            "first_weight_step_s": "first weight step s",
            "peak_memory_mb": "peak MB", "saved_activations_mb": "saved activations MB",
            "paper_search_hours": "paper search h", "train_step_s": "train step s"}


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.2f}"
    return str(value)


def _headline(record: dict[str, Any]) -> str:
    """The few figures of a section worth a table cell."""
    result = record["result"] or {}
    if "errors" in result:
        return f"worst {result['worst_group']}: {result['errors'][result['worst_group']]:.2e} " \
               f"(tolerance {result['tolerances'][result['worst_group']]:.0e})" + \
               ("" if "bitwise" not in result else f", bitwise {_cell(result['bitwise'])}")
    if record["group"] in ("hierarchical", "cifar"):
        return ", ".join(f"{label} {_cell(result.get(key))}" for key, label in _FIGURES.items() if key in result)
    return ", ".join(f"{key} {_cell(value)}" for key, value in result.items() if not isinstance(value, (dict, list)))


def markdown(report: dict[str, Any]) -> str:
    """``gpu_check.md``: the goals, then one row per section."""
    env = report["environment"] or {}
    lines = [f"# autoseg gpu_check, {report['started']}", "",
             f"`{report['command']}`: {env.get('card', report['device'])}, torch {env.get('torch')}, "
             f"CUDA {env.get('cuda')}; {report['wall_s']} s of a {report['budget_s']} s budget"
             + (" (tiny sizes)" if report["tiny"] else "") + ".", "",
             "| goal | target | measured | met |", "|---|---|---|---|"]
    lines += [f"| {g['goal']} | {g['target']} | {g['measured'] or 'not measured'} | {_cell(g['met'])} |"
              for g in report["goals"]]
    lines += ["", "| section | status | seconds (budget) | figures, or why not |", "|---|---|---|---|"]
    lines += [f"| `{r['name']}` | {r['status']} | {_cell(r['wall_s'])} ({r['budget_s']}) | "
              f"{(r['reason'] or '').replace('|', '/') if r['status'] != 'ok' else _headline(r)} |"
              for r in report["sections"]]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- running


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The check's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="directory to create (default: runs/gpu_check/<device>-<time>)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (the default; refused without a visible CUDA device) or cpu (to try the runner)")
    parser.add_argument("--tiny", action="store_true", help="small sizes instead of the papers' (to try the runner)")
    parser.add_argument("--sections", nargs="+", metavar="NAME", help="run only these sections or groups")
    parser.add_argument("--plan", action="store_true", help="print the plan (sections, settings, budgets) and exit")
    parser.add_argument("--budget-scale", type=float, default=1.0, metavar="F",
                        help="multiply every budget, the total's included, by F (a slow machine; a long compile)")
    parser.add_argument("--peer-weight-step-s", type=float, metavar="SECONDS",
                        help="the peer implementation's paper-size weight step on the same card, for its goal")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # run one section, in the process the runner started
    return parser.parse_args(argv)


def run_worker(section: Section, device: torch.device, out: Path) -> dict[str, Any]:
    """Run one section in this process and write its record to ``out/sections/<name>.json``."""
    work = out / "work" / section.name
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = RUNNERS[section.kind](device, section, work)
        failed = result.get("passed") is False
        record = section_record(section, "failed" if failed else "ok",
                                "out of its tolerance" if failed else None, None, result)
    except Exception as exc:  # a section's failure is its record; the runner goes on with the next
        traceback.print_exc()
        record = section_record(section, "failed", f"{type(exc).__name__}: {str(exc).strip()[-500:]}")
    write_json(record, out / "sections" / f"{section.name.replace('/', '__')}.json")
    return record


OWN_PROCESS_GROUP: dict[str, Any] = ({"process_group": 0} if sys.version_info >= (3, 11)
                                      else {"preexec_fn": os.setpgrp})
"""Popen arguments that start a section in a process group of its own (killed as one), in this session:
a new session would be a scheduling group of its own on Linux (autogroup), where its threads
compete with the rest of the machine as one group, which slowed a CPU section's steps 5 to 20 times
next to other work."""


def run_section(section: Section, argv: list[str], out: Path, timeout: float) -> dict[str, Any]:
    """Run ``section`` in a process of its own (its output to ``out/logs``), killed with its process
    group after ``timeout`` seconds; its record, ``wall_s`` the process's seconds, start-up included."""
    file_name = section.name.replace("/", "__")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / "logs" / f"{file_name}.log", "w") as log:
        process = subprocess.Popen(_cli("gpu_check", *argv, "--worker", section.name), stdout=log,
                                   stderr=subprocess.STDOUT, **OWN_PROCESS_GROUP)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    wall = round(time.perf_counter() - start, 2)
    written = out / "sections" / f"{file_name}.json"
    if written.is_file():  # its record, also when it was killed while exiting
        return {**json.loads(written.read_text()), "wall_s": wall}
    if process.returncode == -signal.SIGKILL:
        return section_record(section, "skipped", f"ran out of its {timeout:.0f} s budget", wall)
    return section_record(section, "failed", f"its process exited with status {process.returncode} and no record "
                                             f"(see logs/{file_name}.log)", wall)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Print the plan, or run the check (or, with the hidden ``--worker``, one section); returns the
    report (the plan: its sections)."""
    args = parse_args(argv)
    if args.budget_scale <= 0:
        raise UserError(f"--budget-scale must be positive, got {args.budget_scale}")
    sections = select(plan(args.tiny, args.budget_scale), args.sections)
    total = round(TOTAL_BUDGET_S * args.budget_scale)
    if args.plan:
        listing = [asdict(s) for s in sections]
        for s in sections:
            print(f"{s.name:<36} {s.budget_s:>4} s  {s.what}; {json.dumps(s.settings) if s.settings else ''}")
        print(f"total budget {sum(s.budget_s for s in sections)} s of {total} s")
        return {"sections": listing}
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA device is visible (torch.cuda.is_available() is false): gpu_check measures a GPU; "
                        "use --device cpu --tiny to try it on a CPU")
    device = torch.device(args.device)
    if args.worker:
        return run_worker(select(plan(args.tiny, args.budget_scale), [args.worker])[0], device, args.out)
    out = check_run_dir(args.out or default_run_dir("gpu_check", args.device), resume=False)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--out", str(out), "--device", args.device, "--budget-scale", str(args.budget_scale),
              *(["--tiny"] if args.tiny else [])]
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%S"), time.perf_counter()
    records = []
    for section in sections:
        left = total - (time.perf_counter() - clock)
        if section.needs_cuda and device.type != "cuda":
            records.append(section_record(section, "skipped", "needs a CUDA device"))
        elif left <= 0:
            records.append(section_record(section, "skipped", f"the check's {total} s had run out"))
        else:
            records.append(run_section(section, common, out, min(section.budget_s, left)))
        print(f"{section.name}: {records[-1]['status']}" + (f" ({records[-1]['reason']})" if records[-1]["reason"]
                                                               else ""), flush=True)
    environment = _result(records, "environment")
    report = {"schema": SCHEMA, "command": " ".join(["autoseg gpu_check", *(sys.argv[1:] if argv is None else argv)]),
              "started": started, "device": args.device, "tiny": args.tiny, "budget_s": total,
              "wall_s": round(time.perf_counter() - clock, 1), "environment": environment, "sections": records,
              "goals": goals(records, (environment or {}).get("memory_mb"), args.peer_weight_step_s)}
    write_json(report, out / "gpu_check.json")
    text = markdown(report)
    atomic_write(out / "gpu_check.md", lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return report
