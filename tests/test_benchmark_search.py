"""autoseg benchmark_search: searched vs random architectures under one retrain budget, and the
verdict it states."""
import json

import pytest
import yaml
from conftest import write_config

from autoseg.config import SearchConfig, load_config
from autoseg.engine.checkpoint import load_checkpoint
from autoseg.utils.errors import UserError
from autoseg.space.sampling import sample_architectures
from autoseg.analysis.search_quality import compare_groups, group_statistics, results_markdown


def test_group_statistics_use_the_sample_standard_deviation():
    stats = group_statistics([40.0, 44.0, 48.0])
    assert stats == {"n": 3, "mean": 44.0, "std": 4.0}
    assert group_statistics([50.0]) == {"n": 1, "mean": 50.0, "std": None}
    with pytest.raises(ValueError):
        group_statistics([])


def test_search_that_beats_random_by_more_than_the_spread():
    result = compare_groups([60.0, 62.0], [50.0, 52.0, 54.0])
    assert result["search_beat_random"] and result["within_one_std"] is False
    assert result["difference"] == pytest.approx(9.0) and result["searched_below_random_mean"] == 0
    assert result["statement"] == (
        "searched mean mIoU 61.00 ± 1.41 (n=2) vs random 52.00 ± 2.00 (n=3): search beat random (+9.00 points); "
        "the difference is larger than one standard deviation; 0 of 2 searched architecture(s) scored below the "
        "random mean.")


def test_search_that_loses_within_the_noise_says_so():
    result = compare_groups([49.0, 53.0], [50.0, 54.0, 52.0])
    assert not result["search_beat_random"] and result["within_one_std"] is True
    assert result["searched_below_random_mean"] == 1
    assert "search did not beat random (-1.00 points)" in result["statement"]
    assert "within one standard deviation" in result["statement"]
    tie = compare_groups([52.0], [52.0, 52.0])
    assert not tie["search_beat_random"]  # equal means: search did not beat random
    single = compare_groups([55.0], [50.0], metric="acc")
    assert single["within_one_std"] is None and "no spread" in single["statement"]
    assert single["statement"].startswith("searched mean top-1 55.00 ± n/a (n=1)")


def test_markdown_table_lists_every_architecture_and_both_groups():
    rows = [{"name": "searched_0", "group": "searched", "final": 61.234, "best": 62.0, "params": 1234567,
             "skip_connect": 5, "edges": 6, "skip_connect_reduce": None, "strides": [4, 4, 8, 16]},
            {"name": "random_0", "group": "random", "final": 50.0, "best": 51.5, "params": 999,
             "skip_connect": 1, "edges": 8, "skip_connect_reduce": 2, "strides": None}]
    text = results_markdown(rows, compare_groups([61.234], [50.0]))
    lines = text.splitlines()
    assert lines[0] == "| architecture | group | final mIoU | best mIoU | params | skip_connect | path strides |"
    assert lines[2] == "| searched_0 | searched | 61.23 | 62.00 | 1,234,567 | 5/6 | 4 4 8 16 |"
    assert lines[3] == "| random_0 | random | 50.00 | 51.50 | 999 | 1/8 (reduce 2/8) | - |"
    assert "| searched | 61.23 ± n/a (n=1) |" in lines and "| random | 50.00 ± n/a (n=1) |" in lines
    assert lines[-1].startswith("searched mean mIoU 61.23")


@pytest.fixture
def tiny_retrain_config(tmp_path):
    return write_config(tmp_path / "tiny_retrain.yaml", "retrain/synthetic",
                        data={"image_size": 32, "crop_size": 32, "train_length": 8, "val_length": 4,
                              "batch_size": 4, "eval_batch_size": 4, "scale_range": [0.75, 1.25]},
                        model={"filter_multiplier": 2}, train={"epochs": 2, "eval_every": 1})


def test_benchmark_runs_end_to_end_and_continues_without_retraining(tool, tiny_synthetic_config,
                                                                    tiny_retrain_config, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--config", str(tiny_synthetic_config), "--retrain-config", str(tiny_retrain_config),
            "--searches", "1", "--random", "1", "--out", str(out), "--device", "cpu"]
    results = tool("benchmark_search")(argv)
    printed = capsys.readouterr().out
    assert json.loads((out / "results.json").read_text()) == results
    rows = results["architectures"]
    assert [(r["name"], r["group"]) for r in rows] == [("searched_0", "searched"), ("random_0", "random")]
    for row in rows:
        assert set(row) >= {"final", "best", "params", "skip_connect", "edges", "path", "strides"}
        assert 0 <= row["final"] <= row["best"] <= 100 and row["params"] > 0
        assert row["strides"] == [4 * 2 ** level for level in row["path"]] and len(row["path"]) == 3
        assert (row["epochs"], row["steps"]) == (2, 4)  # the same budget for every architecture
    # the random architecture retrained is the one drawn from the search's space
    drawn = sample_architectures(load_config(tiny_synthetic_config, SearchConfig), 1, seed=0)[0]
    assert json.loads((out / "random_0" / "arch.json").read_text()) == drawn.to_dict()
    spec = load_checkpoint(out / "random_0" / "retrain")["meta"]["model_spec"]
    assert spec["kwargs"]["arch"]["path"] == list(drawn.path)
    assert spec["kwargs"]["arch"]["cell"] == drawn.cell.to_dict()
    searched = json.loads((out / "searched_0" / "search" / "arch.json").read_text())
    assert rows[0]["path"] == searched["path"]
    assert load_checkpoint(out / "searched_0" / "search")["config"]["train"]["seed"] == 0
    # one retrain config for all, the architecture aside
    configs = [yaml.safe_load((out / name / "retrain" / "config.yaml").read_text())
               for name in ("searched_0", "random_0")]
    for config in configs:
        config["model"].pop("arch")
    assert configs[0] == configs[1]
    table = (out / "results.md").read_text()
    assert table in printed and "| searched_0 | searched |" in table and "| random_0 | random |" in table
    assert results["comparison"]["statement"] in table
    assert results["comparison"]["searched"]["mean"] == rows[0]["final"]
    # the same command again retrains nothing and gives the same results
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint.pt")}
    assert tool("benchmark_search")(argv) == results
    assert {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint.pt")} == stamps
    with pytest.raises(UserError, match="other settings"):
        tool("benchmark_search")([*argv, "--retrain-epochs", "1"])
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="no benchmark to continue"):
        tool("benchmark_search")([*argv[:-4], "--out", str(tmp_path / "elsewhere"), "--device", "cpu"])


def test_runs_are_resumed_finished_ones_kept_and_first_epoch_leftovers_restarted(tmp_path):
    from autoseg.tools.benchmark_search import ensure_run
    calls = []
    run = tmp_path / "run"
    ensure_run(calls.append, ["--config", "c.yaml"], run, max_steps=None)
    assert calls[-1] == ["--config", "c.yaml", "--out", str(run)]  # fresh
    run.mkdir()
    (run / "config.yaml").write_text("stopped before its first checkpoint")
    ensure_run(calls.append, ["--config", "c.yaml"], run, max_steps=5)
    assert calls[-1] == ["--config", "c.yaml", "--max-steps", "5", "--out", str(run)] and not run.exists()
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    ensure_run(calls.append, ["--config", "c.yaml"], run, max_steps=5)
    assert calls[-1] == ["--resume", str(run), "--max-steps", "5"]  # continued, or returns at once when finished
