"""autoseg score_search: a search method scored against a ground-truth table of its space."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import write_tiny_retrain_config, write_tiny_search_config

from autoseg.analysis.ground_truth import load_table
from autoseg.analysis.ground_truth.scorings import list_scorings, load_scoring, rescore
from autoseg.analysis.search_quality import kendall_tau_b
from autoseg.config import RetrainConfig, SearchConfig, from_dict, load_config, to_dict
from autoseg.engine.checkpoint import load_checkpoint
from autoseg.utils.errors import UserError
from autoseg.space.sampling import sample_architectures
from autoseg.tools import score_search as score_search_tool

FINALS = [20.0, 40.0, 60.0, 80.0, 30.0]


def _tiny_table(tmp_path):
    """A table of 5 architectures of the tiny search space with made-up final metrics, under the
    tiny retrain protocol (1 epoch)."""
    search = load_config(write_tiny_search_config(tmp_path / "search.yaml"), SearchConfig)
    retrain = load_config(write_tiny_retrain_config(tmp_path / "retrain.yaml", epochs=1), RetrainConfig)
    seed = retrain.train.seed
    rows = [{"index": i, "seed": seed, "final": final, "best": final, "metric": "miou", "madds": 1e8 * (i + 1),
             "arch": arch.to_dict()} for i, (arch, final) in enumerate(zip(sample_architectures(search, 5, 0), FINALS))]
    table = {"format": 1, "protocol": {"retrain_config": to_dict(retrain), "sample_seed": 0,
                                       "retrain_seeds": [seed, seed + 1], "madds_input_size": [32, 32]},
             "search_config": to_dict(search), "parts": [], "rows": rows}
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    return path


def test_a_search_is_retrained_under_the_tables_protocol_and_scored_against_it(tool, tmp_path):
    table = _tiny_table(tmp_path)
    out = tmp_path / "score"
    results = tool("score_search")(["--table", str(table), "--searches", "1", "--out", str(out), "--device", "cpu"])
    (row,) = results["searches"]
    retrained = load_checkpoint(out / "searched_0" / "retrain")
    assert retrained["config"]["train"]["epochs"] == 1  # the table's protocol, not the dataset's default config
    below = sum(f < row["final"] for f in FINALS) + 0.5 * sum(f == row["final"] for f in FINALS)
    assert row["score"]["percentile"] == pytest.approx(100 * below / 5)
    assert row["score"]["regret"] == pytest.approx(80.0 - row["final"])
    assert row["k"] >= 1 and 20.0 <= row["score"]["random_search"] <= 80.0
    assert row["one_shot"]["n"] == 5 and -1 <= row["one_shot"]["kendall_tau"] <= 1
    assert results["method"] == "darts" and "percentile" in (out / "results.md").read_text()
    again = tool("score_search")(["--table", str(table), "--searches", "1", "--out", str(out), "--device", "cpu"])
    assert again["searches"][0]["one_shot"] == row["one_shot"] and again["searches"][0]["final"] == row["final"]
    assert results["provenance"]["command"].startswith("autoseg score_search --table")

    # shipped, the results are scored again against the table as it grows
    data = json.loads(table.read_text())
    now = rescore(results, data)["searches"][0]
    assert now["percentile"] == row["score"]["percentile"] and now["kendall_tau"] == row["one_shot"]["kendall_tau"]
    data["rows"] += [{**data["rows"][0], "index": 5 + i, "final": final} for i, final in enumerate((90.0, 95.0))]
    grown = rescore(results, data)["searches"][0]
    finals = FINALS + [90.0, 95.0]
    below = sum(f < row["final"] for f in finals) + 0.5 * sum(f == row["final"] for f in finals)
    assert grown["percentile"] == pytest.approx(100 * below / 7) and grown["regret"] == pytest.approx(95 - row["final"])
    assert grown["kendall_tau"] == row["one_shot"]["kendall_tau"] and grown["one_shot_n"] == 5
    data["protocol"]["retrain_seeds"] = [7, 8]
    with pytest.raises(UserError, match="another protocol"):
        rescore(results, data)


def test_a_grown_table_scores_only_its_new_architectures_with_the_supernet(tool, tmp_path, monkeypatch):
    table = _tiny_table(tmp_path)
    out = tmp_path / "score"
    args = ["--table", str(table), "--searches", "1", "--out", str(out), "--device", "cpu", "--max-steps", "2"]
    first = tool("score_search")(args)["searches"][0]["one_shot"]
    data = json.loads(table.read_text())
    search = from_dict(SearchConfig, data["search_config"])
    new = sample_architectures(search, 7, 0)[5:]  # the draws a grown table appends
    data["rows"] += [{**data["rows"][0], "index": 5 + i, "arch": arch.to_dict(), "final": final}
                     for i, (arch, final) in enumerate(zip(new, (90.0, 10.0)))]
    table.write_text(json.dumps(data))
    kept = out / "searched_0" / "search" / "one_shot.json"
    kept.write_text(json.dumps({"scores": first["scores"]}))  # the first format: the table's first scores
    scored = []
    real = score_search_tool.one_shot_scores
    monkeypatch.setattr(score_search_tool, "one_shot_scores",
                        lambda run, archs, device: scored.append(archs) or real(run, archs, device))
    grown = tool("score_search")(args)["searches"][0]["one_shot"]
    assert [[a.to_dict() for a in archs] for archs in scored] == [[a.to_dict() for a in new]]
    assert grown["n"] == 7 and grown["scores"][:5] == first["scores"]
    supernet = out / "searched_0" / "search"
    assert grown["scores"][5:] == real(supernet, new, torch.device("cpu"))  # scored alone, as the first 5 were
    assert grown["kendall_tau"] == pytest.approx(kendall_tau_b(grown["scores"], FINALS + [90.0, 10.0]))
    assert tool("score_search")(args)["searches"][0]["one_shot"] == grown and len(scored) == 1  # nothing new
    kept.write_text(json.dumps({"entries": [{"score": 1.0}]}))  # not a file of scores: one error, nothing run
    with pytest.raises(UserError, match="is not a file of one-shot scores .*delete it and run the same command"):
        tool("score_search")(args)
    assert len(scored) == 1


def test_a_search_of_another_space_is_refused_before_anything_runs(tool, tmp_path):
    table = _tiny_table(tmp_path)
    other = write_tiny_search_config(tmp_path / "other.yaml")
    config = yaml.safe_load(other.read_text())
    config["model"]["blocks"] = 3
    other.write_text(yaml.safe_dump(config))
    with pytest.raises(UserError, match="is not the table's"):
        tool("score_search")(["--table", str(table), "--config", str(other), "--out", str(tmp_path / "score")])
    assert not (tmp_path / "score").exists()


def test_method_options_reach_every_search_and_belong_to_the_scorings_settings(tool, tmp_path):
    table = _tiny_table(tmp_path)
    out = tmp_path / "score"
    base = ["--table", str(table), "--searches", "1", "--out", str(out), "--device", "cpu", "--max-steps", "2",
            "--method", "random_ws"]
    results = tool("score_search")([*base, "--method-option", "candidates=2", "--method-option", "eval_batches=1"])
    searched = load_checkpoint(out / "searched_0" / "search")["config"]
    assert results["method"] == "random_ws" and searched["method_options"] == {"candidates": 2, "eval_batches": 1}
    assert results["settings"]["method_options"] == {"candidates": 2, "eval_batches": 1}
    with pytest.raises(UserError, match="method_options differ"):  # another scoring, not this one continued
        tool("score_search")([*base, "--method-option", "candidates=3", "--method-option", "eval_batches=1"])


@pytest.mark.parametrize("table_name,method", list_scorings())
def test_every_shipped_scoring_rescores_against_its_shipped_table(table_name, method):
    scoring = load_scoring(table_name, method)
    result = rescore(scoring, load_table(table_name))
    assert result["method"] == method and len(result["searches"]) >= 3
    assert all(0 <= search["percentile"] <= 100 for search in result["searches"])
    assert scoring["provenance"]["code_version"]  # where the figures came from
