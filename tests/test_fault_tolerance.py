"""Kill-anywhere resume and failed saves.

A tiny search and a tiny retrain, run as ``autoseg search`` / ``autoseg retrain`` in processes of
their own with a checkpoint every step, are killed with SIGKILL at a seeded list of points (two of
them while a checkpoint is being written), resumed with ``--resume`` after each kill, and
compared with an uninterrupted run: every tensor of the final checkpoint (weights, alpha, beta,
optimiser state, RNG states), the history and the files written beside it are identical. A save
that fails (disk full, a read-only run directory) leaves the previous checkpoint intact and says so
in one line.

The processes are forked from a server that has imported the tools once (``forkserver``), so
each start costs milliseconds instead of the seconds importing torch takes; each one runs exactly
what ``python tools/<tool>.py ARGS`` runs (:func:`autoseg.cli.run_tool`), single-threaded.
"""
from __future__ import annotations

import errno
import importlib
import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same, load_tool, write_tiny_retrain_config, write_tiny_search_config

import autoseg.utils.files
from autoseg.cli import run_tool
from autoseg.engine.checkpoint import load_checkpoint

TEMPORARY = ".checkpoint.pt."
"""How the checkpoint being written is named (atomic_write's temporary file) until it replaces the old one."""

TOOLS = ["autoseg.tools.search", "autoseg.tools.retrain"]
FORKSERVER = multiprocessing.get_context("forkserver")
FORKSERVER.set_forkserver_preload(TOOLS)


def _tool_process(tool: str, argv: list[str], log: str) -> None:
    """``python tools/<tool>.py ARGV`` in this process, its output in ``log``."""
    torch.set_num_threads(1)  # the same arithmetic in every process
    sys.stdout = sys.stderr = open(log, "a")
    run_tool(importlib.import_module(f"autoseg.tools.{tool}").main, argv)


class ToolProcess:
    """A tool running in a process of its own."""

    def __init__(self, tool: str, argv: list[str], log: Path) -> None:
        self.log = log
        self.process = FORKSERVER.Process(target=_tool_process, args=(tool, argv, str(log)))
        self.process.start()
        self.pid = self.process.pid

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.process.exitcode

    def send_signal(self, number: int) -> None:
        """Send signal ``number``."""
        os.kill(self.pid, number)

    def kill(self) -> None:
        """SIGKILL it and wait until it is gone."""
        self.process.kill()
        self.process.join()

    def output(self) -> str:
        """What it printed so far (the end of it)."""
        return self.log.read_text()[-2000:] if self.log.exists() else ""


def _start(tool: str, args: list[str]) -> ToolProcess:
    run_dir = Path(args[args.index("--out" if "--out" in args else "--resume") + 1])
    return ToolProcess(tool, args, run_dir.parent / f"{run_dir.name}.log")


def _finish(process: ToolProcess) -> None:
    process.process.join(timeout=300)
    assert process.poll() == 0, process.output()


def _temporaries(run_dir: Path) -> set[str]:
    try:
        return {name for name in os.listdir(run_dir) if name.startswith(TEMPORARY)}
    except FileNotFoundError:
        return set()


def _position(run_dir: Path) -> tuple[int, int, int] | None:
    """(epoch, step in epoch, global step) of the checkpoint on disk, None before the first one."""
    if not (run_dir / "checkpoint.pt").exists():
        return None
    state = load_checkpoint(run_dir)
    return state["epoch"], state["step_in_epoch"], state["global_step"]


def _kill_at(process: ToolProcess, run_dir: Path, step: int, during: bool) -> None:
    """SIGKILL ``process`` during the checkpoint write of global step ``step`` (or of a later step,
    if that write is over before the process is frozen), or once the checkpoint of ``step`` is in
    place (while the process computes the next step). With a checkpoint every step, the n-th write
    since the (re)start is that of step start + n."""
    start = (_position(run_dir) or (0, 0, 0))[2]
    left_over = seen = _temporaries(run_dir)  # by an earlier kill; the resumed run deletes them
    target: str | None = None
    while process.poll() is None:
        new = _temporaries(run_dir) - seen
        seen = seen | new
        if target is None and new and start + len(seen - left_over) >= step:
            target = sorted(new)[0]
            if during:
                process.send_signal(signal.SIGSTOP)  # frozen where it is
                if target in _temporaries(run_dir):
                    process.kill()
                    return
                process.send_signal(signal.SIGCONT)
                target = None
        if target is not None and target not in _temporaries(run_dir):  # renamed into place
            process.kill()
            return
        time.sleep(0.0005)
    raise AssertionError(f"the run ended before the kill at step {step}: {process.output()}")


def _killed_and_resumed(tool: str, config: Path, run_dir: Path, kills: list[tuple[int, bool]]) -> list:
    """Run ``tool`` to its end through the kills ((global step, during its checkpoint write)),
    resuming after each; returns the position each kill left on disk."""
    positions = []
    args = ["--config", str(config), "--out", str(run_dir)]
    for step, during in kills:
        _kill_at(_start(tool, args), run_dir, step, during)
        assert not during or _temporaries(run_dir)  # the interrupted write's file was left behind
        positions.append(_position(run_dir))
        args = ["--resume", str(run_dir)]
    _finish(_start(tool, args))
    assert not _temporaries(run_dir)  # the resumed run removed what the killed write left
    return positions


def _kill_points(seed: int, steps: int) -> list[tuple[int, bool]]:
    """Three distinct global steps before the last of ``steps``, drawn with ``seed``: a kill during
    the checkpoint write of the first two (or of a later step, when a write is over before the
    process is frozen), and one once the checkpoint of the third is in place."""
    points = sorted(random.Random(seed).sample(range(1, steps), 3))
    return list(zip(points, [True, True, False]))


@pytest.mark.parametrize("tool", ["search", "retrain"])
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_result(tool, tmp_path):
    if tool == "search":  # 2 epochs of 4 steps (the first a warm-up), a checkpoint every step
        config = write_tiny_search_config(tmp_path / "config.yaml", checkpoint_every_steps=1)
        outputs = ["arch.json", "arch_history.jsonl", "arch_evolution.png"]
    else:  # 2 epochs of 4 steps
        config = write_tiny_retrain_config(tmp_path / "config.yaml", epochs=2, checkpoint_every_steps=1)
        outputs = ["best.pt"]
    _finish(_start(tool, ["--config", str(config), "--out", str(tmp_path / "full")]))
    kills = _kill_points(seed=0, steps=8)
    assert kills == [(4, True), (6, True), (7, False)]  # the epoch-end write (with its outputs), the 2nd epoch
    positions = _killed_and_resumed(tool, config, tmp_path / "killed", kills)
    assert len(positions) == 3 and any(position[1] for position in positions)  # resumed mid-epoch
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "killed")
    assert resumed["global_step"] == full["global_step"] == 8
    assert_same(full, resumed)  # weights, alpha, beta, optimisers, schedule, RNG states, history
    for name in outputs:
        if name.endswith(".pt"):
            assert_same(load_checkpoint(tmp_path / "full" / name), load_checkpoint(tmp_path / "killed" / name))
        else:
            assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "killed" / name).read_bytes()


def _retrain_error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run_tool(load_tool("retrain").main, argv)
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    return errors[0]


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch, capsys):
    config = write_tiny_retrain_config(tmp_path / "retrain.yaml", checkpoint_every_steps=1)
    run = tmp_path / "run"
    save, calls = torch.save, []

    def save_until_the_disk_fills(obj, file, *args, **kwargs):
        calls.append(file)
        if len(calls) == 3:
            file.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    error = _retrain_error(["--config", str(config), "--out", str(run)], capsys)
    assert error == (f"error: could not write {run / 'checkpoint.pt'} (No space left on device): the previous "
                     f"checkpoint there is intact; free disk space or make {run} writable, then continue with "
                     f"--resume {run}")
    assert load_checkpoint(run)["global_step"] == 2 and not _temporaries(run)
    monkeypatch.setattr(torch, "save", save)
    load_tool("retrain").main(["--resume", str(run)])
    assert load_checkpoint(run)["global_step"] == 12


def test_a_read_only_run_directory_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch, capsys):
    config = write_tiny_retrain_config(tmp_path / "retrain.yaml")
    run = tmp_path / "run"
    load_tool("retrain").main(["--config", str(config), "--out", str(run), "--max-steps", "2"])
    before = (run / "checkpoint.pt").read_bytes()
    if os.geteuid() == 0:  # root writes into read-only directories: refuse as the kernel would for a user
        mkstemp = autoseg.utils.files.tempfile.mkstemp

        def refuse_in_read_only(*args, dir=None, **kwargs):
            if dir is not None and not os.stat(dir).st_mode & 0o200:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), dir)
            return mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(autoseg.utils.files.tempfile, "mkstemp", refuse_in_read_only)
    run.chmod(0o555)
    try:
        error = _retrain_error(["--resume", str(run)], capsys)
    finally:
        run.chmod(0o755)
    assert error.startswith(f"error: could not write {run / 'checkpoint.pt'} (Permission denied): the previous "
                            "checkpoint there is intact")
    assert (run / "checkpoint.pt").read_bytes() == before
