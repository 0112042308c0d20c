"""Decode a search checkpoint into a discrete architecture.

    autoseg decode runs/search/<run>            # or a checkpoint .pt file
    autoseg decode runs/search/<run> --epoch 20 # the architecture decoded at the end of epoch 20

Rebuilds the search's supernet and search method from the checkpoint's config, loads its
architecture parameters and the method's state and decodes them with the same code the search
uses, so it reproduces the search's file exactly (a method whose selection rule evaluates the
supernet on data gives the architecture it last selected). Hierarchical runs: writes arch.json
(Viterbi path, top-2 cell, F, B, L, op set, the per-step probabilities, and the parameters and
Multi-Adds of the decoded network at the search's input size); CIFAR runs: genotype.json. Also
writes the search's figures as PNGs (arch_trellis.png and arch_cell.png, or a cell picture per
cell type) and prints the architecture with its parameters and Multi-Adds (CIFAR runs: of the
DARTS evaluation network, C=36 and 20 cells, at 32x32).

With ``--epoch N`` it reads the architecture of epoch N from the run's history
(arch_history.jsonl or genotype_history.jsonl, written by the search) and writes it as
arch_epochN.json (genotype_epochN.json), a file retrain takes like arch.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from autoseg.engine.search_setup import rebuild_search
from autoseg.analysis.expected_cost import build_trellis_cost, with_cost
from autoseg.utils.files import write_json
from autoseg.space.genotype import Genotype
from autoseg.models.spec import build_model, model_spec
from autoseg.analysis.profiling import profile_model
from autoseg.search.arch_history import architecture_of_epoch, read_history
from autoseg.analysis.visualize import save_png

FIGURE_FILES = {"beta/trellis": "arch_trellis.png", "cell/decoded": "arch_cell.png",
                "cell/normal": "genotype_normal.png", "cell/reduce": "genotype_reduce.png"}
"""Which of the search's TensorBoard figures decode.py writes, and as what."""


def evaluation_network_cost(genotype_file: Path, num_classes: int) -> str:
    """One line: parameters and Multi-Adds of the DARTS evaluation network of a genotype at 32x32."""
    report = profile_model(build_model(model_spec(str(genotype_file)), num_classes), (32, 32))
    return (f"DARTS evaluation network (C=36, 20 cells) at 32x32: {report.params:,} parameters, "
            f"{report.madds / 1e6:,.1f} M Multi-Adds")


def main(argv: list[str] | None = None) -> dict:
    """Decode, write the files, print; returns the decoded architecture (JSON form)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a search run directory or a checkpoint file")
    parser.add_argument("--out", type=Path, help="where to write (default: the run directory)")
    parser.add_argument("--epoch", type=int, help="the architecture of this epoch, from the run's history")
    args = parser.parse_args(argv)
    run_dir = args.source if args.source.is_dir() else args.source.parent
    out = args.out or run_dir
    if args.epoch is not None:
        return decode_epoch(run_dir, args.epoch, out)
    cfg, task, network, method = rebuild_search(args.source)
    num_classes = task.num_classes
    arch = with_cost(method.select(None), build_trellis_cost(cfg, num_classes))
    out.mkdir(parents=True, exist_ok=True)
    write_json(arch.to_dict(), out / arch.FILE_NAME)
    written = [arch.FILE_NAME]
    for tag, image in network.figures(arch).items():
        if tag in FIGURE_FILES:
            save_png(image, out / FIGURE_FILES[tag])
            written.append(FIGURE_FILES[tag])
    print(arch.describe())
    if isinstance(arch, Genotype):
        print(evaluation_network_cost(out / arch.FILE_NAME, num_classes))
    print("wrote " + ", ".join(str(out / name) for name in written))
    return arch.to_dict()


def decode_epoch(run_dir: Path, epoch: int, out: Path) -> dict:
    """Write and print the architecture of ``epoch`` from the history in ``run_dir``; returns it
    (JSON form)."""
    arch = architecture_of_epoch(read_history(run_dir), epoch, run_dir)
    path = out / arch.FILE_NAME.replace(".json", f"_epoch{epoch}.json")
    write_json(arch.to_dict(), path)
    print(arch.describe())
    print(f"wrote {path}")
    return arch.to_dict()
