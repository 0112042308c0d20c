"""Decode a search checkpoint into a discrete architecture.

    autoseg decode runs/search/<run>            # or a checkpoint .pt file

Rebuilds the search's supernet from the checkpoint's config, loads its architecture
parameters and decodes them with the same code the search uses, so it reproduces the search's
file exactly. Hierarchical runs: writes arch.json (Viterbi path, top-2 cell, F, B, L, op set,
the per-step probabilities, and the parameters and Multi-Adds of the decoded network at the
search's input size); CIFAR runs: genotype.json. Also writes the search's figures as PNGs
(arch_trellis.png and arch_cell.png, or a cell picture per cell type) and prints the
architecture with its parameters and Multi-Adds (CIFAR runs: of the DARTS evaluation network,
C=36 and 20 cells, at 32x32).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from autoseg.config import SearchConfig, from_dict
from autoseg.engine.checkpoint import load_checkpoint
from autoseg.engine.search_setup import build_search_network
from autoseg.engine.task import build_task
from autoseg.errors import UserError
from autoseg.expected_cost import build_trellis_cost, decode_with_cost
from autoseg.files import write_json
from autoseg.genotype import Genotype
from autoseg.models.spec import build_model, model_spec
from autoseg.profiling import profile_model
from autoseg.visualize import save_png

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
    args = parser.parse_args(argv)
    state = load_checkpoint(args.source)
    if state.get("kind", "search") != "search" or "mode" not in state or "config" not in state:
        raise UserError(f"{args.source} is not a search checkpoint (no architecture parameters in it)")
    cfg = from_dict(SearchConfig, state["config"], "the checkpoint's config")
    num_classes = build_task(cfg.data.dataset, cfg.data.num_classes).num_classes
    network = build_search_network(cfg, num_classes)
    network.load_state_dict(state["model"])
    arch = decode_with_cost(network, build_trellis_cost(cfg, num_classes))
    out = args.out or (args.source if args.source.is_dir() else args.source.parent)
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

