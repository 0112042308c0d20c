"""``autoseg gpu_check``: its plan, its refusal without a GPU, its report's schema, and the runner end to
end on the CPU for cheap sections at tiny sizes (the GPU itself is what the command measures)."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from autoseg.utils.errors import UserError
from autoseg.tools import gpu_check
from autoseg.tools.gpu_check import (REPORT_FIELDS, SECTION_FIELDS, TOTAL_BUDGET_S, check_report, goals, plan,
                                     section_record, select)


def test_the_plan_covers_the_issue_within_eight_minutes():
    sections = plan()
    names = [s.name for s in sections]
    assert len(set(names)) == len(names)
    assert sum(s.budget_s for s in sections) <= TOTAL_BUDGET_S == 480
    assert names[0] == "environment" and names[1] == "hierarchical/fp32"  # what the goals need, first
    for variant in ("fp32", "amp-bf16", "amp-fp16", "selective_checkpoint", "checkpoint_cells", "partial_channels-4",
                    "compile-default", "compile-reduce-overhead"):
        assert f"hierarchical/{variant}" in names
    fp32 = sections[1].settings["argv"]
    assert "--crop-size" not in fp32 and "--layers" not in fp32  # the benchmark's defaults: the paper's setting
    assert {"cifar/first-order", "cifar/second-order", "end_to_end/synthetic", "torchrun/nccl",
            "profile/autodeeplab", "exactness/compile"} <= set(names)
    assert [s.name for s in sections if s.needs_cuda] == ["torchrun/nccl"]
    tiny = plan(tiny=True, budget_scale=2)
    assert [s.name for s in tiny] == names and "--crop-size" in tiny[1].settings["argv"]
    assert [s.budget_s for s in tiny] == [2 * s.budget_s for s in sections]


def test_sections_are_chosen_by_name_or_group_and_unknown_ones_are_refused():
    sections = plan()
    assert [s.name for s in select(sections, ["cifar", "environment"])] == \
        ["environment", "cifar/first-order", "cifar/second-order"]
    with pytest.raises(UserError, match="unknown section.*hierarchy/fp32.*choose from environment"):
        select(sections, ["hierarchy/fp32"])


def test_plan_prints_and_runs_nothing(tool, capsys, tmp_path):
    listed = tool("gpu_check")(["--plan", "--sections", "exactness", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert [s["name"] for s in listed["sections"]] == [s.name for s in select(plan(), ["exactness"])]
    assert "exactness/amp-bf16" in printed and "total budget" in printed and not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_it_is_one_line_and_writes_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "autoseg.cli", "gpu_check", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and done.stderr.startswith("error: no CUDA device is visible")
    assert done.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_goals_are_measured_only_from_what_ran():
    fp32 = plan()[1]
    ran = [section_record(fp32, "ok", result={"paper_search_hours": 6.5, "peak_memory_mb": 9000.0,
                                              "weight_step_s": 0.5})]
    hours, memory, peer = goals(ran, 81559, 2.0)
    assert (hours["measured"], hours["met"]) == ("6.5 h", True)
    assert memory["met"] is True and "9,000 MB of 81,559 MB" in memory["measured"]
    assert peer["met"] is True and peer["measured"].endswith("0.25x")
    assert [g["met"] for g in goals(ran, None, None)] == [True, None, None]  # no card, no peer: not measured
    failed = [section_record(fp32, "failed", "OutOfMemoryError: ...")]
    assert [g["measured"] for g in goals(failed, 81559, 2.0)] == [None, None, None]


def test_a_report_with_missing_fields_or_a_bad_status_is_named():
    record = section_record(plan()[0], "ok")
    assert check_report({**dict.fromkeys(REPORT_FIELDS), "sections": [record]}) == []
    bad = {**record, "status": "done"}
    del bad["reason"]
    problems = check_report({"schema": gpu_check.SCHEMA, "sections": [bad]})
    assert "field goals: missing" in problems and "section environment: field reason" in problems
    assert "section environment: status 'done'" in problems


def test_cheap_sections_run_end_to_end_on_the_cpu(tool, tmp_path):
    out = tmp_path / "check"
    # the budgets are for a GPU machine; this shared CPU starts each section's process more slowly
    report = tool("gpu_check")(["--device", "cpu", "--tiny", "--budget-scale", "6", "--out", str(out),
                                "--sections", "hierarchical/fp32", "exactness/selective_checkpoint",
                                "torchrun"])
    written = json.loads((out / "gpu_check.json").read_text())
    assert written == report and check_report(written) == []
    assert set(REPORT_FIELDS) == set(written) and set(SECTION_FIELDS) == set(written["sections"][0])
    status = {r["name"]: (r["status"], r["reason"]) for r in written["sections"]}
    assert status == {"hierarchical/fp32": ("ok", None),
                      "exactness/selective_checkpoint": ("ok", None),
                      "torchrun/nccl": ("skipped", "needs a CUDA device")}
    steps, exact = written["sections"][0]["result"], written["sections"][1]["result"]
    assert steps["weight_step_s"] > 0 and steps["device"] == "cpu" and steps["crop_size"] == 16
    assert exact["bitwise"] and exact["passed"]
    assert written["environment"] is None  # its section was not chosen
    summary = (out / "gpu_check.md").read_text()
    assert "| `hierarchical/fp32` | ok |" in summary and "needs a CUDA device" in summary
    assert "weight step s" in summary and (out / "logs" / "hierarchical__fp32.log").read_text().startswith("{")


def test_a_failing_section_is_recorded_and_the_next_runs(monkeypatch, tmp_path):
    section = plan(tiny=True)[1]

    def broken(*_):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setitem(gpu_check.RUNNERS, "benchmark", broken)
    record = gpu_check.run_worker(section, torch.device("cpu"), tmp_path)
    assert (record["status"], record["reason"]) == ("failed", "RuntimeError: CUDA error: an illegal memory access "
                                                              "was encountered")
    assert json.loads((tmp_path / "sections" / "hierarchical__fp32.json").read_text()) == record


def test_a_section_past_its_budget_is_killed_and_skipped(tmp_path):
    record = gpu_check.run_section(plan(tiny=True)[0], ["--out", str(tmp_path), "--device", "cpu"], tmp_path, 0.5)
    assert (record["status"], record["reason"]) == ("skipped", "ran out of its 0 s budget")
