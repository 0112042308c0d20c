"""A run owns its directory: created exclusively, locked while it runs, its data root stored
absolute, a checkpoint written before each evaluation, an interruption that says what is kept,
and files written with the umask's permissions."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import assert_same, load_tool, write_config, write_tiny_retrain_config
from fakes import write_fake_folder

from autoseg.cli import run_tool
from autoseg.engine.checkpoint import load_checkpoint, save_checkpoint
from autoseg.engine.retrain_loop import RetrainRun
from autoseg.engine.run import TrainingRun
from autoseg.engine.run_lock import LOCK_NAME, RunLock, claim_new_run_dir
from autoseg.utils.errors import UserError
from autoseg.utils.files import write_json


def test_a_second_process_on_a_run_directory_is_refused_naming_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    lock = claim_new_run_dir(run)
    holder = rf"in use by process {os.getpid()} on host \S+ \(since "
    with pytest.raises(UserError, match=holder):
        claim_new_run_dir(run)  # a second new run with the same --out
    with pytest.raises(UserError, match=holder):
        RunLock.take(run)  # a --resume of it
    lock.release()
    RunLock.take(run).release()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": 999_999_999, "host": "gone", "since": "then"}))
    lock = claim_new_run_dir(run)
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_resuming_a_run_that_is_running_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    config = write_tiny_retrain_config(tmp_path / "retrain.yaml")
    run = tmp_path / "run"
    load_tool("retrain").main(["--config", str(config), "--out", str(run), "--max-steps", "2"])
    before = (run / "checkpoint.pt").read_bytes()
    lock = RunLock.take(run)
    try:
        with pytest.raises(UserError, match=f"run directory {run} is in use by process {os.getpid()}"):
            load_tool("retrain").main(["--resume", str(run)])
    finally:
        lock.release()
    assert (run / "checkpoint.pt").read_bytes() == before
    load_tool("retrain").main(["--resume", str(run), "--max-steps", "3"])  # the lock was released at the end
    assert load_checkpoint(run)["global_step"] == 3


def _folder_retrain_config(tmp_path: Path) -> Path:
    write_fake_folder(tmp_path / "data", num_classes=3, sizes=((32, 32),) * 4)
    return write_config(
        tmp_path / "retrain.yaml", "retrain/synthetic",
        data={"dataset": "folder", "root": "data", "num_classes": 3, "crop_size": 32, "batch_size": 2,
              "eval_batch_size": 2, "image_size": None, "train_length": None, "val_length": None},
        model={"filter_multiplier": 2}, train={"epochs": 1})


def test_the_data_root_is_stored_absolute_and_an_old_relative_one_is_refused(tmp_path: Path, monkeypatch) -> None:
    config = _folder_retrain_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    load_tool("retrain").main(["--config", str(config), "--out", "run", "--max-steps", "1"])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["root"] == str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)  # a folder of the same relative name, holding other data
    monkeypatch.chdir(elsewhere)
    load_tool("retrain").main(["--resume", str(tmp_path / "run"), "--max-steps", "2"])  # reads the same data
    assert load_checkpoint(tmp_path / "run")["global_step"] == 2
    saved["data"]["root"] = "data"  # as runs of earlier versions saved it
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(UserError, match=r"keeps data.root 'data' relative to the folder that run was started from"):
        load_tool("retrain").main(["--resume", str(tmp_path / "run")])


def test_a_failed_evaluation_loses_no_training(tmp_path: Path, monkeypatch) -> None:
    config = write_tiny_retrain_config(tmp_path / "retrain.yaml", epochs=2)
    load_tool("retrain").main(["--config", str(config), "--out", str(tmp_path / "full")])
    evaluate = TrainingRun.evaluate

    def fail_once(run: TrainingRun) -> dict:
        monkeypatch.setattr(TrainingRun, "evaluate", evaluate)
        raise RuntimeError("the evaluation crashed")

    monkeypatch.setattr(TrainingRun, "evaluate", fail_once)
    with pytest.raises(RuntimeError, match="crashed"):
        load_tool("retrain").main(["--config", str(config), "--out", str(tmp_path / "crashed")])
    saved = load_checkpoint(tmp_path / "crashed")
    assert saved["global_step"] == 4 and saved["pending_record"]["epoch"] == 1 and saved["history"] == []
    load_tool("retrain").main(["--resume", str(tmp_path / "crashed")])
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "crashed")
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    for record in full["history"] + resumed["history"]:
        record.pop("seconds")
    assert_same(full, resumed)


def test_ctrl_c_says_what_the_run_directory_keeps(tmp_path: Path, monkeypatch, capsys) -> None:
    config = write_tiny_retrain_config(tmp_path / "retrain.yaml")
    run = tmp_path / "run"
    train_step = RetrainRun.train_step
    calls = []

    def interrupt_at_step(step: int):
        def interrupted(self, batch):
            calls.append(step)
            if len(calls) == step:
                raise KeyboardInterrupt
            return train_step(self, batch)
        return interrupted

    for argv, step, expected in (
            (["--config", str(config), "--out", str(run)], 1,
             f"interrupted: no checkpoint was written in {run}; start it over with --resume {run}\n"),
            (["--resume", str(run), "--max-steps", "2"], 3, None),
            (["--resume", str(run)], 2,
             f"interrupted: the last good checkpoint (step 2) in {run} is kept; continue with --resume {run}\n")):
        calls.clear()
        monkeypatch.setattr(RetrainRun, "train_step", interrupt_at_step(step))
        if expected is None:
            load_tool("retrain").main(argv)
            continue
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            run_tool(load_tool("retrain").main, argv)
        assert exited.value.code == 130 and capsys.readouterr().err == expected


def test_evaluate_of_a_run_without_best_pt_names_the_partial_checkpoint(tmp_path: Path, capsys) -> None:
    config = write_tiny_retrain_config(tmp_path / "retrain.yaml")
    run = tmp_path / "run"
    load_tool("retrain").main(["--config", str(config), "--out", str(run), "--max-steps", "2"])
    assert not (run / "best.pt").exists()
    capsys.readouterr()
    load_tool("evaluate").main([str(run), "--max-batches", "1", "--json"])
    assert capsys.readouterr().err == (f"note: {run} has no best.pt (no evaluation of the run finished): using its "
                                       "partial checkpoint.pt of step 2\n")


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_are_written_with_the_permissions_of_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        write_json({"a": 1}, tmp_path / "out.json")
        save_checkpoint({"kind": "retrain"}, tmp_path / "checkpoint.pt")
    finally:
        os.umask(old)
    assert {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()} == {"out.json": mode,
                                                                                       "checkpoint.pt": mode}
