"""The ground-truth table of a search space: the scoring maths (against brute force and hand
computations), the table's helpers, and `autoseg ground_truth` building, growing and guarding one."""
import csv
import itertools
import json
import math

import pytest
from conftest import write_search_config, TINY_TRELLIS, write_config

from autoseg.cli import CONFIG_DIR
from autoseg.config import RetrainConfig, SearchConfig, load_config, to_dict
from autoseg.utils.errors import UserError
from autoseg.analysis.ground_truth import (CSV_COLUMNS, list_tables, load_table, repeated_pairs, rows_of_seed,
                                           score_against, summary)
from autoseg.space.sampling import sample_architectures
from autoseg.tools.ground_truth import protocol_differences
from autoseg.analysis.search_quality import (cost_matched_percentile, expected_best_of_k, kendall_tau_b, percentile,
                                    protocol_noise, regret)


def test_percentile_counts_ties_half_and_regret_is_the_gap_to_the_best():
    scores = [10.0, 20.0, 20.0, 30.0, 40.0]
    assert percentile(45.0, scores) == 100.0 and percentile(5.0, scores) == 0.0
    assert percentile(20.0, scores) == 100 * (1 + 0.5 * 2) / 5  # one below, two tied
    assert percentile(25.0, scores) == 60.0
    assert regret(25.0, scores) == 15.0 and regret(41.0, scores) == -1.0
    with pytest.raises(ValueError):
        percentile(1.0, [])


def test_cost_matched_percentile_compares_only_architectures_within_ten_percent():
    scores, costs = [50.0, 60.0, 70.0, 80.0], [100.0, 95.0, 111.0, 109.0]
    # cost 100: 95, 100 and 109 are within 10 %, 111 is not
    assert cost_matched_percentile(65.0, 100.0, scores, costs) == {"percentile": 100 * 2 / 3, "n": 3}
    assert cost_matched_percentile(65.0, 500.0, scores, costs) == {"percentile": None, "n": 0}
    assert cost_matched_percentile(65.0, 100.0, scores, costs, tolerance=0.2)["n"] == 4


@pytest.mark.parametrize("scores", [[3.0, 1.0, 2.0], [5.0, 5.0, 1.0, 2.0], [7.0]])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_expected_best_of_k_equals_the_mean_over_every_draw(scores, k):
    draws = list(itertools.product(scores, repeat=k))  # every ordered draw with replacement, equally likely
    assert expected_best_of_k(scores, k) == pytest.approx(sum(map(max, draws)) / len(draws))


def test_expected_best_of_k_by_hand_and_its_limits():
    # two scores, two draws: the best is 0 only when both draws are 0 (probability 1/4)
    assert expected_best_of_k([0.0, 1.0], 2) == pytest.approx(0.75)
    assert expected_best_of_k([4.0, 8.0, 6.0], 1) == pytest.approx(6.0)  # one draw: the mean
    assert expected_best_of_k([4.0, 8.0, 6.0], 1000) == pytest.approx(8.0)  # many draws: the best
    assert 6.0 < expected_best_of_k([4.0, 8.0, 6.0], 1.5) < expected_best_of_k([4.0, 8.0, 6.0], 2)
    with pytest.raises(ValueError):
        expected_best_of_k([1.0], 0.5)


def _tau_b_by_pairs(first, second):
    """Kendall's tau-b from an explicit count over every pair."""
    concordant = discordant = tied_first = tied_second = 0
    for i, j in itertools.combinations(range(len(first)), 2):
        da, db = first[i] - first[j], second[i] - second[j]
        tied_first += da == 0
        tied_second += db == 0
        concordant += da * db > 0
        discordant += da * db < 0
    pairs = len(first) * (len(first) - 1) // 2
    return (concordant - discordant) / math.sqrt((pairs - tied_first) * (pairs - tied_second))


@pytest.mark.parametrize("first, second", [
    ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),
    ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]),
    ([1, 2, 2, 3, 4, 4, 5], [2, 1, 3, 3, 5, 4, 4]),  # ties in both, one pair tied in both
    ([3.5, 1.0, 2.0, 2.0, 9.0, 0.5], [0.1, 0.4, 0.2, 0.3, 0.3, 0.0]),
])
def test_kendall_tau_b_equals_a_count_over_every_pair(first, second):
    assert kendall_tau_b(first, second) == pytest.approx(_tau_b_by_pairs(first, second))


def test_kendall_tau_b_by_hand():
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # 2 concordant, 1 discordant
    # pairs: (1,2) tied in the first; (1,3), (2,3) concordant: 2 / sqrt(2 * 3)
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        kendall_tau_b([1, 2], [1, 2, 3])


def test_protocol_noise_from_repeated_retrainings():
    pairs = [(50.0, 52.0), (60.0, 59.0), (40.0, 43.0), (70.0, 70.0)]
    noise = protocol_noise(pairs)
    differences = [-2.0, 1.0, -3.0, 0.0]  # mean -1, squared deviations 1, 4, 4, 1
    assert noise["n"] == 4 and noise["mean_abs_difference"] == pytest.approx(1.5)
    assert noise["difference_std"] == pytest.approx(math.sqrt(10 / 3))
    assert noise["retrain_std"] == pytest.approx(math.sqrt(10 / 3) / math.sqrt(2))
    assert noise["kendall_tau"] == pytest.approx(1.0)  # the order 40 < 50 < 60 < 70 kept
    assert sum(differences) / 4 == -1.0
    with pytest.raises(ValueError):
        protocol_noise([(1.0, 2.0)])


TABLE = {"protocol": {"retrain_seeds": [0, 1]},
         "rows": [{"index": 1, "seed": 0, "final": 30.0, "madds": 100}, {"index": 0, "seed": 0, "final": 20.0,
                                                                          "madds": 200},
                  {"index": 0, "seed": 1, "final": 22.0, "madds": 200}, {"index": 2, "seed": 0, "final": 10.0,
                                                                         "madds": 105},
                  {"index": 1, "seed": 1, "final": 27.0, "madds": 100}]}


def test_table_rows_by_seed_and_repeated_pairs():
    assert [row["index"] for row in rows_of_seed(TABLE)] == [0, 1, 2]
    assert [row["final"] for row in rows_of_seed(TABLE, 1)] == [22.0, 27.0]
    assert repeated_pairs(TABLE) == [(20.0, 22.0), (30.0, 27.0)]


def test_summary_and_score_against_a_table():
    stats = summary(TABLE)
    assert (stats["rows"], stats["architectures"], stats["best"], stats["median"]) == (5, 3, 30.0, 20.0)
    assert stats["mean"] == 20.0 and stats["noise"]["n"] == 2 and stats["noise"]["kendall_tau"] == 1.0
    score = score_against(TABLE, 25.0, 102, k=2)
    assert score["percentile"] == 100 * 2 / 3 and score["regret"] == 5.0
    assert score["cost_matched"] == {"percentile": 50.0, "n": 2}  # among the 100 and 105 Multi-Adds rows
    assert score["random_search"] == pytest.approx(expected_best_of_k([10.0, 20.0, 30.0], 2))
    assert score_against(TABLE, 25.0, 102)["random_search"] is None


def test_a_shipped_table_loads_by_name_and_an_unknown_name_lists_them():
    assert "synthetic" in list_tables()
    table = load_table("synthetic")
    assert table["protocol"]["retrain_config"]["data"]["dataset"] == "synthetic" and table["rows"]
    with pytest.raises(UserError, match="no ground-truth table 'kitti'.*synthetic"):
        load_table("kitti")


def write_tiny_retrain_config(path, epochs=1):
    """A retraining of ``epochs`` epochs of 2 steps on 32x32 scenes, seed 3."""
    return write_config(path, "retrain/synthetic",
                        data={"image_size": 32, "crop_size": 32, "train_length": 8, "val_length": 4,
                              "batch_size": 4, "eval_batch_size": 4, "scale_range": [0.75, 1.25]},
                        model={"filter_multiplier": 2}, train={"epochs": epochs, "eval_every": 1, "seed": 3})


@pytest.fixture
def tiny_retrain_config(tmp_path):
    return write_tiny_retrain_config(tmp_path / "tiny_retrain.yaml")


def test_the_table_is_built_in_parts_resumed_and_guarded(tool, tiny_synthetic_config, tiny_retrain_config,
                                                         tmp_path, capsys):
    table_file, work = tmp_path / "gt" / "tiny.json", tmp_path / "work"
    argv = ["--config", str(tiny_synthetic_config), "--retrain-config", str(tiny_retrain_config), "-n", "2",
            "--repeats", "1", "--table", str(table_file), "--work", str(work), "--device", "cpu"]
    first = tool("ground_truth")([*argv, "--limit", "2"])
    # draw 0 with both seeds first: the retrain config's seed 3, then 4
    assert [(row["index"], row["seed"]) for row in first["rows"]] == [(0, 3), (0, 4)]
    assert first["protocol"]["retrain_seeds"] == [3, 4] and first["protocol"]["madds_input_size"] == [32, 32]
    assert not work.exists()  # run directories removed once their row is written
    drawn = sample_architectures(load_config(tiny_synthetic_config, SearchConfig), 2, seed=0)
    for row in first["rows"]:
        assert row["arch"] == drawn[0].to_dict() and row["part"] == 0
        assert 0 <= row["final"] <= row["best"] <= 100 and row["params"] > 0 and row["madds"] > 0
        assert (row["epochs"], row["steps"]) == (1, 2) and row["wall_seconds"] >= 0
    part = first["parts"][0]
    assert part["command"].startswith("autoseg ground_truth --config") and "--limit 2" in part["command"]
    assert part["machine"]["cores"] >= 1 and part["torch"] and part["date"]
    assert json.loads(table_file.read_text()) == first
    # the same command again: only the row left, in a part of its own, runs kept on request
    second = tool("ground_truth")([*argv, "--keep-runs"])
    assert [(row["index"], row["seed"], row["part"]) for row in second["rows"]] == [(0, 3, 0), (0, 4, 0), (1, 3, 1)]
    assert second["rows"][:2] == first["rows"] and second["rows"][2]["arch"] == drawn[1].to_dict()
    assert (work / "arch_0001_seed_3" / "retrain" / "checkpoint.pt").is_file()
    with table_file.with_suffix(".csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and [(r["index"], r["seed"]) for r in rows] == [("0", "3"), ("0", "4"),
                                                                                        ("1", "3")]
    assert json.loads(rows[2]["arch"]) == drawn[1].to_dict() and float(rows[2]["final"]) == second["rows"][2]["final"]
    stamp = table_file.stat().st_mtime_ns
    assert tool("ground_truth")(argv) == second and table_file.stat().st_mtime_ns == stamp  # nothing left to do
    assert "0 new" in capsys.readouterr().out
    # another protocol or another space is refused before anything is written
    longer = write_tiny_retrain_config(tmp_path / "longer.yaml", epochs=2)
    with pytest.raises(UserError, match=r"another protocol \(retrain_config.train.epochs differ\)"):
        tool("ground_truth")([*argv[:2], "--retrain-config", str(longer), *argv[4:]])
    with pytest.raises(UserError, match="another protocol .sample_seed differ"):
        tool("ground_truth")([*argv, "--sample-seed", "1"])
    other_space = write_search_config(tmp_path / "other_space.yaml", model={**TINY_TRELLIS, "blocks": 3})
    with pytest.raises(UserError, match="row 0 of .* holds another architecture than draw 0 of this search space"):
        tool("ground_truth")(["--config", str(other_space), *argv[2:]])
    assert table_file.stat().st_mtime_ns == stamp


def test_parallel_jobs_build_the_rows_one_process_builds(tool, tiny_synthetic_config, tiny_retrain_config, tmp_path):
    argv = ["--config", str(tiny_synthetic_config), "--retrain-config", str(tiny_retrain_config), "-n", "2",
            "--repeats", "1", "--device", "cpu"]
    parallel = tool("ground_truth")([*argv, "--table", str(tmp_path / "parallel.json"), "--jobs", "2"])
    serial = tool("ground_truth")([*argv, "--table", str(tmp_path / "serial.json")])
    assert [(r["index"], r["seed"]) for r in parallel["rows"]] == [(0, 3), (0, 4), (1, 3)]
    for mine, theirs in zip(parallel["rows"], serial["rows"]):
        assert {k: v for k, v in mine.items() if k not in ("final", "best", "best_epoch", "wall_seconds")} == \
               {k: v for k, v in theirs.items() if k not in ("final", "best", "best_epoch", "wall_seconds")}
        assert mine["final"] == pytest.approx(theirs["final"], abs=1.0)  # the thread count may differ
    machine = parallel["parts"][0]["machine"]
    assert machine["jobs"] == 2 and machine["torch_threads"] == max(1, machine["cores"] // 2)
    assert json.loads((tmp_path / "parallel.json").read_text()) == parallel


def test_bad_numbers_are_refused_at_once(tool, tmp_path):
    with pytest.raises(UserError, match=r"--repeats must lie in 0 .. N \(2\), got 3.*--limit must be at least 1"):
        tool("ground_truth")(["-n", "2", "--repeats", "3", "--limit", "0", "--table", str(tmp_path / "t.json")])
    with pytest.raises(UserError, match="--jobs must be at least 1, got 0"):
        tool("ground_truth")(["--jobs", "0", "--table", str(tmp_path / "t.json")])
    with pytest.raises(UserError, match="--table must name a .json file"):
        tool("ground_truth")(["--table", str(tmp_path / "t.csv")])
    assert not any(tmp_path.iterdir())


def test_a_spent_time_budget_starts_no_row(tool, tiny_synthetic_config, tiny_retrain_config, tmp_path, capsys):
    table_file = tmp_path / "gt.json"
    table = tool("ground_truth")(["--config", str(tiny_synthetic_config), "--retrain-config", str(tiny_retrain_config),
                                  "-n", "2", "--table", str(table_file), "--time-budget", "1e-9"])
    assert table["rows"] == [] and not table_file.exists() and not (tmp_path / "runs").exists()
    assert "time budget of 0 s spent" in capsys.readouterr().out


@pytest.mark.parametrize("name", list_tables())
def test_a_shipped_table_continues_under_its_shipped_retrain_config(name):
    """Tables built before losses had their own options (flat ``loss.ohem_threshold`` ... keys in the
    stored protocol) compare equal to today's reading of the same config; another loss differs."""
    table = load_table(name)
    current = {**table["protocol"],
               "retrain_config": to_dict(load_config(CONFIG_DIR / "retrain" / f"{name}.yaml", RetrainConfig))}
    assert protocol_differences(table["protocol"], current) == []
    current["retrain_config"]["loss"] = {"name": "focal", "options": {"gamma": 1.0}, "class_weights": None}
    assert protocol_differences(table["protocol"], current) == ["retrain_config.loss.name",
                                                                "retrain_config.loss.options.gamma"]
