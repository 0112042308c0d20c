"""Which epoch to take: every epoch's architecture kept in the run directory (through a resume),
``autoseg decode --epoch N``, and the figure of how the op weights and the path evolved."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import load_tool, write_tiny_cifar_search_config, write_tiny_search_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from autoseg.space.architecture import read_architecture
from autoseg.engine.checkpoint import load_checkpoint
from autoseg.utils.errors import UserError
from autoseg.search import arch_history
from autoseg.search.arch_history import evolution_series
from autoseg.analysis.visualize import evolution_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _lines(run: Path, name: str = "arch_history.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


def _architecture_part(entry: dict) -> dict:
    """An entry without what the history adds to the architecture file's content (a genotype
    keeps no op set; an arch.json does)."""
    added = ("epoch", "op_weights") if "path" in entry else ("epoch", "op_weights", "primitives")
    return {key: value for key, value in entry.items() if key not in added}


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, Path]:
    """(config, run directory) of a finished tiny hierarchical search: 2 epochs, the first a warm-up."""
    root = tmp_path_factory.mktemp("history")
    config = write_tiny_search_config(root / "tiny.yaml")
    load_tool("search").main(["--config", str(config), "--out", str(root / "full")])
    return config, root / "full"


def test_history_survives_a_resume_line_for_line(searched, tmp_path):
    config, full = searched
    search = load_tool("search").main
    cut = tmp_path / "cut"
    search(["--config", str(config), "--out", str(cut), "--max-steps", "4"])  # stopped at the end of epoch 1
    assert _lines(cut) == _lines(full)[:1]
    softmax = torch.softmax(load_checkpoint(cut)["model"]["alphas"].double(), dim=-1).numpy()
    assert np.array(_lines(full)[0]["op_weights"]["cell"]) == pytest.approx(softmax, abs=1e-6)
    assert load_tool("decode").main([str(cut), "--out", str(tmp_path / "at_1")]) == _architecture_part(_lines(full)[0])
    # a kill after the history was written beside a checkpoint that never replaced the old one
    # leaves a line of an epoch the checkpoint has not reached: the resumed run must not keep it
    stale = {**_lines(full)[1], "path": [0, 0, 0]}
    with open(cut / "arch_history.jsonl", "a") as file:
        file.write(json.dumps(stale) + "\n")
    search(["--resume", str(cut)])
    assert [entry["epoch"] for entry in _lines(cut)] == [1, 2]
    assert (cut / "arch_history.jsonl").read_bytes() == (full / "arch_history.jsonl").read_bytes()
    assert (cut / "arch_evolution.png").read_bytes() == (full / "arch_evolution.png").read_bytes()
    assert load_checkpoint(cut)["arch_history"] == _lines(full)


def test_each_entry_is_the_architecture_and_op_weights_of_its_epoch(searched):
    _, run = searched
    entries = _lines(run)
    assert [entry["epoch"] for entry in entries] == [1, 2]
    assert _architecture_part(entries[-1]) == _architecture_part(json.loads((run / "arch.json").read_text()))
    alphas = load_checkpoint(run)["model"]["alphas"]
    softmax = torch.softmax(alphas.double(), dim=-1).numpy()
    assert np.array(entries[-1]["op_weights"]["cell"]) == pytest.approx(softmax, abs=1e-6)


def test_decode_epoch_gives_that_epochs_line_and_retrain_takes_it(searched, tmp_path, capsys):
    _, run = searched
    decode, entries = load_tool("decode").main, _lines(run)
    first = decode([str(run), "--epoch", "1", "--out", str(tmp_path)])
    assert first == _architecture_part(entries[0])
    assert json.loads((tmp_path / "arch_epoch1.json").read_text()) == first
    last = decode([str(run / "checkpoint.pt"), "--epoch", "2", "--out", str(tmp_path)])
    assert last == decode([str(run), "--out", str(tmp_path / "plain")])  # the final epoch is the checkpoint's
    assert read_architecture(tmp_path / "arch_epoch1.json").path == tuple(entries[0]["path"])
    capsys.readouterr()
    load_tool("retrain").main(["--dataset", "synthetic", "--arch", str(tmp_path / "arch_epoch1.json"), "--dry-run"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["params"] > 0


def test_decode_epoch_errors_list_the_epochs_there_are(searched, tmp_path):
    _, run = searched
    decode = load_tool("decode").main
    with pytest.raises(UserError, match=r"epoch 3 is not in the history of .*; its epochs: 1, 2$"):
        decode([str(run), "--epoch", "3", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="has no arch_history.jsonl or genotype_history.jsonl"):
        decode([str(tmp_path), "--epoch", "1"])
    (tmp_path / "arch_history.jsonl").write_text("")  # a run stopped before its first epoch ended
    with pytest.raises(UserError, match="its epochs: none"):
        decode([str(tmp_path), "--epoch", "1"])
    assert not list(tmp_path.glob("arch_epoch*.json"))


def test_the_figure_is_a_png_of_the_history_and_tensorboard_has_its_numbers(searched):
    _, run = searched
    png = run / "arch_evolution.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert matplotlib.image.imread(png).shape[2] in (3, 4)
    entries = _lines(run)
    epochs, weights, paths = evolution_series(entries)
    assert epochs == [1, 2] and list(weights) == ["cell"]
    for row, entry in zip(weights["cell"], entries):  # an op's mean weight over the edges, by hand
        for op in range(8):
            column = [edge[op] for edge in entry["op_weights"]["cell"]]
            assert row[op] == pytest.approx(sum(column) / len(column))
    assert paths.tolist() == [entry["path"] for entry in entries]
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    for op_index, op in enumerate(entries[0]["primitives"]):
        logged = [event.value for event in events.Scalars(f"op_weights/cell/{op}")]
        assert logged == pytest.approx(weights["cell"][:, op_index].tolist(), abs=1e-6)
    assert len(events.Images("arch/evolution")) == 2


def test_a_cell_search_keeps_a_genotype_history(tmp_path, capsys):
    config = write_tiny_cifar_search_config(tmp_path)
    run = tmp_path / "run"
    genotype = load_tool("search").main(["--config", str(config), "--out", str(run), "--device", "cpu"])
    entries = _lines(run, "genotype_history.jsonl")
    assert [entry["epoch"] for entry in entries] == [1, 2] and not (run / "arch_history.jsonl").exists()
    assert _architecture_part(entries[-1]) == genotype
    assert set(entries[0]["op_weights"]) == {"normal", "reduce"}
    _, weights, paths = evolution_series(entries)
    assert paths is None and weights["normal"].shape == weights["reduce"].shape == (2, 8)
    assert (run / "arch_evolution.png").read_bytes().startswith(PNG_SIGNATURE)
    first = load_tool("decode").main([str(run), "--epoch", "1"])
    assert first == _architecture_part(entries[0])
    capsys.readouterr()
    load_tool("retrain").main(["--dataset", "cifar10", "--arch", str(run / "genotype_epoch1.json"), "--dry-run"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == "darts-cifar"


def test_evolution_figure_checks_its_shapes():
    ops = ["none", "skip_connect", "sep_conv_3x3"]
    image = evolution_figure([1, 2, 3], {"cell": np.full((3, 3), 1 / 3)}, ops, np.array([[0, 1], [1, 1], [1, 2]]))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    with pytest.raises(ValueError, match="must be \\(3, 3\\)"):
        evolution_figure([1, 2, 3], {"cell": np.ones((2, 3))}, ops)
    with pytest.raises(ValueError, match="paths must be"):
        evolution_figure([1, 2, 3], {"cell": np.ones((3, 3))}, ops, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="at least one epoch"):
        evolution_figure([], {}, ops)


def test_the_history_figure_is_drawn_once_per_history_and_is_the_png_written(searched, tmp_path, monkeypatch):
    _, run = searched
    entries = _lines(run)
    epochs, weights, paths = evolution_series(entries)
    expected = evolution_figure(epochs, weights, entries[-1]["primitives"], paths)  # drawn here, uncached
    drawn = []
    monkeypatch.setattr(arch_history, "evolution_figure", lambda *a: drawn.append(a) or evolution_figure(*a))
    arch_history._drawn_history.cache_clear()
    for _ in range(3):  # an epoch's TensorBoard image and two checkpoints of the next epoch's steps
        arch_history.write_history(entries, tmp_path, "arch.json")
        assert np.array_equal(arch_history.history_figure(entries), expected)
    assert len(drawn) == 1
    assert (tmp_path / "arch_evolution.png").read_bytes() == (run / "arch_evolution.png").read_bytes()
    assert np.array_equal(matplotlib.image.imread(tmp_path / "arch_evolution.png")[..., :3],
                          expected.astype(np.float32) / 255)
    arch_history.write_history(entries[:1], tmp_path, "arch.json")  # another history: drawn again
    assert len(drawn) == 2
    assert (tmp_path / "arch_evolution.png").read_bytes() != (run / "arch_evolution.png").read_bytes()
