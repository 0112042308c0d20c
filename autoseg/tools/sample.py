"""Draw architectures at random from a search space: the baseline a search must beat.

    autoseg sample --dataset synthetic -n 5 --seed 0 --out runs/random     # configs/search/synthetic.yaml
    autoseg sample --config configs/search/cityscapes.yaml -n 3 --out runs/random
    autoseg retrain --dataset synthetic --arch runs/random/random_0/arch.json

Writes DIR/random_<i>/arch.json (hierarchical search space) or genotype.json (CIFAR-10 cell
search space), which `autoseg retrain --arch` takes as it takes a search's. Draw i depends on
the seed and i only, so -n 5 extends what -n 3 wrote; a file that exists is kept when it holds
the same architecture and refused otherwise.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from autoseg.space.architecture import Architecture, NetworkArch, architecture_from_dict
from autoseg.cli import default_config, default_run_dir
from autoseg.config import SearchConfig, load_config
from autoseg.utils.errors import UserError
from autoseg.utils.files import read_json
from autoseg.space.genotype import CellGenotype
from autoseg.space.sampling import sample_architectures

SAMPLE_PREFIX = "random_"
"""Draw i goes to ``DIR/random_<i>/``."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The sample tool's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="search YAML whose space to draw from "
                                                    "(default: the one for --dataset in configs/search/)")
    parser.add_argument("--dataset", help="pick configs/search/<dataset>.yaml (default synthetic)")
    parser.add_argument("-n", "--num", type=int, default=1, help="how many architectures to draw (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, help="where to write random_<i>/ (default: runs/sample/<dataset>-<time>)")
    return parser.parse_args(argv)


def cell_skip_count(cell: CellGenotype) -> int:
    """Number of ``skip_connect`` edges of a cell."""
    return sum(op == "skip_connect" for block in cell.blocks for op, _ in block)


def describe_briefly(arch: Architecture) -> str:
    """One line: the path and its strides (hierarchical) and the ``skip_connect`` count of each cell."""
    if isinstance(arch, NetworkArch):
        edges = sum(len(block) for block in arch.cell.blocks)
        return f"path {list(arch.path)} (strides {arch.strides}), skip_connect {cell_skip_count(arch.cell)}/{edges}"
    return (f"skip_connect normal {cell_skip_count(arch.normal)}, reduce {cell_skip_count(arch.reduce)}")


def write_architectures(archs: list[Architecture], out: Path) -> list[Path]:
    """Write draw ``i`` to ``out/random_<i>/<arch.json or genotype.json>``; an existing file is kept
    when it holds the same architecture, else a UserError (nothing is overwritten)."""
    files = [out / f"{SAMPLE_PREFIX}{i}" / arch.FILE_NAME for i, arch in enumerate(archs)]
    for arch, file in zip(archs, files):
        if file.exists() and architecture_from_dict(read_json(file, "architecture file"), str(file)) != arch:
            raise UserError(f"{file} already holds another architecture (drawn with another seed or search space); "
                            "choose another --out")
    for arch, file in zip(archs, files):
        if not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True)
            arch.to_json(file)
    return files


def main(argv: list[str] | None = None) -> list[dict]:
    """Draw and write the architectures; returns their JSON forms."""
    args = parse_args(argv)
    if args.num < 1:
        raise UserError(f"-n must be at least 1, got {args.num}")
    config = load_config(args.config or default_config("search", args.dataset), SearchConfig)
    out = args.out or default_run_dir("sample", config.data.dataset)
    archs = sample_architectures(config, args.num, args.seed)
    files = write_architectures(archs, out)
    for arch, file in zip(archs, files):
        print(f"{file}: {describe_briefly(arch)}")
    print(f"wrote {len(files)} random architecture(s) of the {config.mode} search space to {out}")
    return [arch.to_dict() for arch in archs]
