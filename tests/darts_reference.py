"""The reference searches ``train.method: darts`` must reproduce bit for bit.

Each reference is a tiny search (a hierarchical one with first- and with second-order updates and
collapse guards, and a CIFAR-10 cell search) run in this process on one torch thread. Its final
weights, architecture parameters, optimiser state and written architecture file were recorded in
``tests/data/darts_reference.pt`` by :func:`record` at commit bba8c8c, before search methods
became plug-ins; ``tests/test_search_methods.py`` runs the same searches with today's code and
compares.

    python tests/darts_reference.py     # re-record (only to move the reference on purpose)
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import write_tiny_cifar_search_config, write_tiny_search_config  # noqa: E402

REFERENCE_FILE = Path(__file__).resolve().parent / "data" / "darts_reference.pt"

GUARDS = {"auxiliary_skip": 1.0, "max_skip_connect": 1, "skip_dropout": 0.2, "edge_normalization": True}

SEARCHES = {
    "trellis_first_order": lambda root: write_tiny_search_config(root / "a.yaml"),
    "trellis_second_order_guarded": lambda root: _with_model(write_tiny_search_config(root / "b.yaml", unrolled=True),
                                                             GUARDS),
    "cifar_first_order": lambda root: write_tiny_cifar_search_config(root),
}
"""Each reference search: a function writing its config under a folder, returning the file."""


def _with_model(path: Path, model: dict[str, Any]) -> Path:
    import yaml
    config = yaml.safe_load(path.read_text())
    config["model"].update(model)
    path.write_text(yaml.safe_dump(config))
    return path


def run_reference_search(name: str, root: Path, extra: list[str] | None = None) -> dict[str, Any]:
    """Run reference search ``name`` under ``root`` on one thread; returns what is compared: the
    checkpoint's model and optimiser states and the text of the architecture file."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root.mkdir(parents=True, exist_ok=True)
        config = SEARCHES[name](root)
        run = root / f"run_{name}"
        importlib.import_module("autoseg.tools.search").main(
            ["--config", str(config), "--out", str(run), "--device", "cpu", *(extra or [])])
    finally:
        torch.set_num_threads(threads)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    arch_file = next(run / name for name in ("arch.json", "genotype.json") if (run / name).is_file())
    return {"model": state["model"], "a_optimizer": state["a_optimizer"],
            "arch_file": arch_file.read_text(), "cpu": torch.backends.cpu.get_cpu_capability()}


def record(root: Path) -> None:
    """Run every reference search and write :data:`REFERENCE_FILE`."""
    references = {name: run_reference_search(name, root / name) for name in SEARCHES}
    REFERENCE_FILE.parent.mkdir(parents=True, exist_ok=True)
    torch.save(references, REFERENCE_FILE)


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        record(Path(folder))
    print(f"wrote {REFERENCE_FILE}")
