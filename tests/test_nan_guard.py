"""The NaN/inf guard (train.nan_policy) and step checkpoints (train.checkpoint_every_steps)."""
from __future__ import annotations

import pytest
import torch
from conftest import load_tool, write_tiny_retrain_config, write_tiny_search_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import autoseg.engine.run as run_module
from autoseg.cli import run_tool
from autoseg.engine.checkpoint import load_checkpoint
from autoseg.engine.retrain_loop import RetrainRun
from autoseg.engine.search_loop import SearchRun


def _nan_images(batch):
    images, target = batch
    return torch.full_like(images, float("nan")), target


def corrupt_at(monkeypatch, run_class: type, steps: set[int], part: str = "weights") -> None:
    """Make the images of the batch of ``part`` (``weights``, or ``architecture`` for a search)
    NaN at the given (1-based) global steps, as a corrupt sample would."""
    original = run_class.train_step

    def train_step(self, batch):
        if self.global_step + 1 in steps:
            if run_class is RetrainRun:
                batch = _nan_images(batch)
            elif part == "weights":
                batch = (_nan_images(batch[0]), batch[1])
            else:
                batch = (batch[0], _nan_images(batch[1]))
        return original(self, batch)

    monkeypatch.setattr(run_class, "train_step", train_step)


def _error_of(tool: str, argv: list[str], capsys) -> str:
    """Run a tool as ``autoseg`` does; assert it exits 2 and return its one error line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run_tool(load_tool(tool).main, argv)
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    return errors[0]


def _all_finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_a_nan_architecture_loss_stops_the_search_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    config = write_tiny_search_config(tmp_path / "search.yaml", checkpoint_every_steps=1)
    run = tmp_path / "run"
    load_tool("search").main(["--config", str(config), "--out", str(run), "--max-steps", "4"])  # warm-up epoch
    arch_before = (run / "arch.json").read_bytes()
    corrupt_at(monkeypatch, SearchRun, {6}, "architecture")
    error = _error_of("search", ["--resume", str(run)], capsys)
    assert error.startswith("error: the architecture loss is nan at step 6 (epoch 2): the training diverged; "
                            "lower the learning rate (arch_optimizer.lr) or drop --amp")
    assert "or set train.nan_policy: skip to drop the updates of such batches" in error
    assert error.endswith(f"the last good checkpoint (step 5) in {run} is kept")
    state = load_checkpoint(run)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 1, 5) and _all_finite(state)
    assert [h["epoch"] for h in state["history"]] == [1]
    assert (run / "arch.json").read_bytes() == arch_before  # no NaN architecture was written
    assert not list(run.glob(".checkpoint.pt.*"))


def test_an_absurd_learning_rate_stops_the_retrain_tool_with_exit_2(tmp_path, capsys):
    config = write_tiny_retrain_config(tmp_path / "retrain.yaml", checkpoint_every_steps=1)
    run = tmp_path / "run"
    error = _error_of("retrain", ["--config", str(config), "--out", str(run), "--lr", "1e30"], capsys)
    assert error.startswith("error: the ") and \
        "the training diverged; lower the learning rate (optimizer.lr) or drop --amp" in error
    state = load_checkpoint(run)
    assert error.endswith(f"the last good checkpoint (step {state['global_step']}) in {run} is kept")
    assert _all_finite(state) and state["history"] == []


def test_skip_drops_exactly_the_bad_batch_update_and_counts_it(tmp_path, monkeypatch):
    config = write_tiny_retrain_config(tmp_path / "retrain.yaml", nan_policy="skip")
    retrain = load_tool("retrain").main
    retrain(["--config", str(config), "--out", str(tmp_path / "one"), "--max-steps", "1"])
    corrupt_at(monkeypatch, RetrainRun, {2})
    retrain(["--config", str(config), "--out", str(tmp_path / "two"), "--max-steps", "2"])
    one, two = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    for key, value in one["model"].items():  # weights and batch-norm statistics as before step 2
        assert torch.equal(value, two["model"][key]), key
    for index, buffers in one["optimizer"]["state"].items():  # momentum untouched
        assert torch.equal(buffers["momentum_buffer"], two["optimizer"]["state"][index]["momentum_buffer"])
    assert two["scheduler"]["last_epoch"] == 2  # the poly schedule follows the iterations
    retrain(["--resume", str(tmp_path / "two")])
    state = load_checkpoint(tmp_path / "two")
    assert [(h["train"]["skipped_batches"], h["train"]["steps"]) for h in state["history"]] == [(1, 3), (0, 4), (0, 4)]
    assert _all_finite(state)
    events = EventAccumulator(str(tmp_path / "two" / "tensorboard")).Reload()
    assert [event.value for event in events.Scalars("train/skipped_batches")] == [1, 0, 0]


def test_skip_drops_a_bad_architecture_update_of_the_search(tmp_path, monkeypatch):
    config = write_tiny_search_config(tmp_path / "search.yaml", nan_policy="skip")
    corrupt_at(monkeypatch, SearchRun, {6}, "architecture")
    load_tool("search").main(["--config", str(config), "--out", str(tmp_path / "run")])
    state = load_checkpoint(tmp_path / "run")
    assert [(h["train"]["skipped_batches"], h["train"]["skipped_arch_batches"]) for h in state["history"]] == \
        [(0, 0), (0, 1)]
    assert [int(s["step"]) for s in state["a_optimizer"]["state"].values()] == [3, 3]  # 4 steps, one dropped
    assert _all_finite(state)


def test_skipping_stops_when_every_batch_is_bad(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_module, "SKIPS_IN_A_ROW_LIMIT", 3)
    config = write_tiny_retrain_config(tmp_path / "retrain.yaml", nan_policy="skip")
    corrupt_at(monkeypatch, RetrainRun, {2, 3, 4})
    error = _error_of("retrain", ["--config", str(config), "--out", str(tmp_path / "run")], capsys)
    assert error.startswith("error: 3 steps in a row had a non-finite value at step 4 (epoch 1)")
    assert "lower the learning rate (optimizer.lr)" in error and "nan_policy" not in error
    assert error.endswith(f"no checkpoint was written in {tmp_path / 'run'}")


@pytest.mark.parametrize("every,saves", [
    # only before and with the evaluations (every 2 epochs of 4 steps)
    (None, [(8, 0, False), (8, 0, True), (12, 0, False), (12, 0, True)]),
    (3, [(3, 3, False), (6, 2, False), (8, 0, False), (8, 0, True), (9, 1, False), (12, 0, False), (12, 0, True)]),
])
def test_checkpoint_every_steps_writes_the_position_mid_epoch(tmp_path, monkeypatch, every, saves):
    written = []
    original = run_module.save_checkpoint

    def spy(state, path, beside=None):
        written.append((state["global_step"], state["step_in_epoch"], beside is not None))
        original(state, path, beside)

    monkeypatch.setattr(run_module, "save_checkpoint", spy)
    config = write_tiny_retrain_config(tmp_path / "retrain.yaml", eval_every=2, checkpoint_every_steps=every)
    load_tool("retrain").main(["--config", str(config), "--out", str(tmp_path / "run")])
    assert written == saves
    assert [h["epoch"] for h in load_checkpoint(tmp_path / "run")["history"]] == [2, 3]
