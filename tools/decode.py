#!/usr/bin/env python
"""Decode a search checkpoint into a discrete architecture.

    python tools/decode.py runs/search/<run>            # or a checkpoint .pt file

Hierarchical runs: writes arch.json (Viterbi path, top-2 cell, F, B, L, op set and the
per-step probabilities) and arch_trellis.png / arch_cell.png. CIFAR runs: writes genotype.json
and a PNG per cell. Prints the architecture.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoseg.cli import run_tool  # noqa: E402
from autoseg.engine.checkpoint import load_checkpoint, write_json  # noqa: E402
from autoseg.errors import UserError  # noqa: E402
from autoseg.search.arch_decoding import decode_darts, decode_hierarchical, format_architecture  # noqa: E402
from autoseg.visualize import cell_figure, save_png, trellis_figure  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Decode, write the files, print; returns the decoded architecture."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a search run directory or a checkpoint file")
    parser.add_argument("--out", type=Path, help="where to write (default: the run directory)")
    args = parser.parse_args(argv)
    state = load_checkpoint(args.source)
    if "mode" not in state or "config" not in state:
        raise UserError(f"{args.source} is not a search checkpoint (no architecture parameters in it)")
    out = args.out or (args.source if args.source.is_dir() else args.source.parent)
    out.mkdir(parents=True, exist_ok=True)
    weights, model_cfg = state["model"], state["config"]["model"]
    if state["mode"] == "hierarchical":
        arch = decode_hierarchical(weights["alphas"], weights["betas"], model_cfg["primitives"],
                                   model_cfg["filter_multiplier"], model_cfg["free_first_step"],
                                   edge_betas=weights.get("edge_betas"),
                                   max_skip_connect=model_cfg.get("max_skip_connect"))
        write_json(arch, out / "arch.json")
        save_png(trellis_figure(arch["transitions"], arch["path"], title="transitions and Viterbi path"),
                 out / "arch_trellis.png")
        save_png(cell_figure(arch["cell"]["blocks"], title="decoded cell"), out / "arch_cell.png")
        written = ["arch.json", "arch_trellis.png", "arch_cell.png"]
    else:
        genotype = decode_darts(weights["alphas_normal"], weights["alphas_reduce"], model_cfg["primitives"],
                                model_cfg["blocks"], model_cfg["multiplier"], weights.get("edge_betas_normal"),
                                weights.get("edge_betas_reduce"), max_skip_connect=model_cfg.get("max_skip_connect"))
        arch = genotype.to_dict()
        write_json(arch, out / "genotype.json")
        for name in ("normal", "reduce"):
            save_png(cell_figure(arch[name]["blocks"], title=f"{name} cell"), out / f"genotype_{name}.png")
        written = ["genotype.json", "genotype_normal.png", "genotype_reduce.png"]
    print(format_architecture(arch))
    print("wrote " + ", ".join(str(out / name) for name in written))
    return arch


if __name__ == "__main__":
    run_tool(main)
