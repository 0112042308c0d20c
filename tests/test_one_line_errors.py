"""Errors a user can cause end in one line `error: ...` with exit status 2, found before anything
is written: invalid combinations of model and data, crops too small for the search space,
checkpoints of the other kind, presets against config defaults."""
from __future__ import annotations

import shutil

import pytest
from conftest import load_tool, write_tiny_retrain_config, write_tiny_search_config

from autoseg.cli import run_tool
from autoseg.utils.errors import UserError


def _one_line_error(tool: str, argv: list[str], capsys) -> str:
    """The stderr of ``autoseg tool argv``, which must end with exit status 2 and one line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run_tool(load_tool(tool).main, argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_classification_model_on_segmentation_data_is_refused_before_the_run_directory(tmp_path, capsys):
    err = _one_line_error("retrain", ["--dataset", "synthetic", "--arch", "DARTS_V2", "--out", str(tmp_path / "r")],
                          capsys)
    assert "--arch DARTS_V2 is a classification model but synthetic is segmentation data" in err
    assert not (tmp_path / "r").exists()


def test_a_search_crop_smaller_than_the_deepest_level_is_refused_before_anything_is_written(tmp_path, capsys):
    config = write_tiny_search_config(tmp_path / "search.yaml")  # 2 levels: the deepest at stride 8
    err = _one_line_error("search", ["--config", str(config), "--crop-size", "4", "--out", str(tmp_path / "s")], capsys)
    assert "crop_size 4 is smaller than the stride 8 of the trellis's deepest level (model.levels 2)" in err
    assert not (tmp_path / "s").exists()


def test_a_checkpoint_of_the_other_kind_is_refused_on_resume(tmp_path, capsys):
    load_tool("search").main(["--config", str(write_tiny_search_config(tmp_path / "search.yaml")),
                              "--out", str(tmp_path / "search"), "--max-steps", "1"])
    load_tool("retrain").main(["--config", str(write_tiny_retrain_config(tmp_path / "retrain.yaml")),
                               "--out", str(tmp_path / "retrain"), "--max-steps", "1"])
    searched = (tmp_path / "search" / "checkpoint.pt").read_bytes()
    shutil.copy(tmp_path / "search" / "checkpoint.pt", tmp_path / "search.pt")
    shutil.copy(tmp_path / "retrain" / "checkpoint.pt", tmp_path / "search" / "checkpoint.pt")
    err = _one_line_error("search", ["--resume", str(tmp_path / "search")], capsys)
    assert err == (f"error: {tmp_path / 'search' / 'checkpoint.pt'} is a retrain checkpoint, not a search one: "
                   f"continue it with autoseg retrain --resume {tmp_path / 'search'}\n")
    shutil.copy(tmp_path / "search.pt", tmp_path / "retrain" / "checkpoint.pt")
    err = _one_line_error("retrain", ["--resume", str(tmp_path / "retrain")], capsys)
    assert "is a search checkpoint, not a retrain one: continue it with autoseg search --resume" in err
    assert (tmp_path / "retrain" / "checkpoint.pt").read_bytes() == searched


@pytest.mark.parametrize("arch", ["autodeeplab-s", "smp:Unet:autodeeplab-s"])
def test_a_named_preset_wins_over_the_configs_filter_multiplier(tool, arch, capsys):
    summary = tool("retrain")(["--dataset", "synthetic", "--arch", arch, "--dry-run"])  # the config sets F=4
    assert summary["params"] > 5_000_000  # Auto-DeepLab-S (F=20), not an F=4 network
    err = _one_line_error("retrain", ["--dataset", "synthetic", "--arch", arch, "--filter-multiplier", "8",
                                      "--dry-run"], capsys)
    assert f"--filter-multiplier 8 clashes with --arch {arch}, whose filter multiplier is fixed at 20" in err


def test_autoseg_traceback_shows_the_traceback_of_a_user_error(monkeypatch):
    def fail(argv):
        raise UserError("bad input")

    monkeypatch.setenv("AUTOSEG_TRACEBACK", "1")
    with pytest.raises(UserError, match="bad input"):
        run_tool(fail, [])
