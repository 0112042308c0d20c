"""tools/search.py and tools/decode.py as a user runs them: dry runs, short searches, resume, errors."""
import json
import subprocess
import sys

import pytest
from conftest import ROOT, TINY_TRELLIS, assert_same, write_tiny_cifar_search_config, write_search_config

from autoseg.engine.checkpoint import load_checkpoint


def _last_json_line(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _darts_search_params(c: int = 16, layers: int = 8, classes: int = 10) -> int:
    """Weight parameters of the reference DARTS search network, counted op by op by hand."""
    sep = lambda k, ch: 2 * (k * k * ch + ch * ch)  # noqa: E731  (dw kxk + pw 1x1) twice, BN affine-free
    dil = lambda k, ch: k * k * ch + ch * ch  # noqa: E731
    total = 3 * (3 * c) * 9 + 2 * (3 * c)  # stem conv + affine BN
    c_pp, c_p, c_cur, reduction_prev = 3 * c, 3 * c, c, False
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c_cur = 2 * c_cur if reduction else c_cur
        total += c_pp * c_cur if not reduction_prev else 2 * c_pp * (c_cur // 2)  # preprocess0
        total += c_p * c_cur  # preprocess1
        for block in range(4):
            for state in range(2 + block):
                total += sep(3, c_cur) + sep(5, c_cur) + dil(3, c_cur) + dil(5, c_cur)
                if reduction and state < 2:
                    total += c_cur * c_cur  # skip_connect is a FactorizedReduce
        c_pp, c_p, reduction_prev = c_p, 4 * c_cur, reduction
    return total + c_p * classes + classes


def test_cifar_dry_run_counts_the_reference_search_network(tool, capsys):
    tool("search")(["--dataset", "cifar10", "--dry-run"])
    summary = _last_json_line(capsys)
    assert summary == {"model": "DartsSearchNetwork", "params": _darts_search_params(), "arch_params": 2 * 14 * 8,
                       "method": "darts"}
    assert summary["params"] == 1_930_618


def test_hierarchical_dry_run_at_paper_size(tool, capsys):
    tool("search")(["--dataset", "cityscapes", "--dry-run"])
    summary = _last_json_line(capsys)
    assert summary["model"] == "TrellisSearchNetwork"
    assert summary["trellis_nodes"] == 45
    assert summary["arch_params"] == 20 * 8 + 12 * 4 * 3  # alpha (B=5: 20 edges x 8 ops) + beta (L x S x 3)
    tool("search")(["--dataset", "cityscapes", "--dry-run", "--layers", "6", "--filter-multiplier", "4"])
    smaller = _last_json_line(capsys)
    assert smaller["trellis_nodes"] == 2 + 3 + 4 * 4 and smaller["params"] < summary["params"]


def test_cifar_search_resume_reproduces_the_uninterrupted_run(tool, tmp_path):
    config = write_tiny_cifar_search_config(tmp_path)
    search = tool("search")
    genotype = search(["--config", str(config), "--out", str(tmp_path / "full"), "--device", "cpu"])
    saved = json.loads((tmp_path / "full" / "genotype.json").read_text())
    assert saved == genotype and set(saved) == {"normal", "reduce"}
    search(["--config", str(config), "--out", str(tmp_path / "cut"), "--device", "cpu", "--max-steps", "6"])  # epoch 2
    stopped = load_checkpoint(tmp_path / "cut")
    assert (stopped["epoch"], stopped["step_in_epoch"], stopped["global_step"]) == (1, 2, 6)
    assert [h["epoch"] for h in stopped["history"]] == [1]  # the stop mid-epoch added no record...
    assert stopped["stop_record"]["global_step"] == 6 and "acc" in stopped["stop_record"]["valid"]  # ...but evaluated
    search(["--resume", str(tmp_path / "cut")])
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    assert resumed["global_step"] == full["global_step"] == 8
    assert [h["epoch"] for h in full["history"]] == [1, 2]
    assert_same(full, resumed)  # weights, alphas, optimisers, RNG, history (the training figures too)
    assert (tmp_path / "cut" / "genotype.json").read_text() == (tmp_path / "full" / "genotype.json").read_text()
    assert (tmp_path / "full" / "config.yaml").is_file() and any((tmp_path / "full" / "tensorboard").iterdir())


def test_synthetic_search_writes_arch_and_decode_reproduces_it(tool, tiny_synthetic_config, tmp_path, capsys):
    run = tmp_path / "run"
    arch = tool("search")(["--config", str(tiny_synthetic_config), "--out", str(run)])
    written = json.loads((run / "arch.json").read_text())
    assert written == arch
    assert len(arch["path"]) == 3 and arch["path"][0] in (0, 1)
    assert {"cell", "filter_multiplier", "blocks", "layers", "primitives", "step_probabilities"} <= set(arch)
    state = load_checkpoint(run)
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert all("miou" in h["valid"] for h in state["history"])
    capsys.readouterr()
    (run / "arch.json").unlink()
    decoded = tool("decode")([str(run)])
    assert decoded == written
    assert json.loads((run / "arch.json").read_text()) == written
    assert (run / "arch_trellis.png").stat().st_size > 0 and (run / "arch_cell.png").stat().st_size > 0
    assert "network path (level per layer)" in capsys.readouterr().out


def test_hierarchical_search_resume_reproduces_the_uninterrupted_run(tool, tiny_synthetic_config, tmp_path, capsys):
    search = tool("search")
    search(["--config", str(tiny_synthetic_config), "--out", str(tmp_path / "full")])
    search(["--config", str(tiny_synthetic_config), "--out", str(tmp_path / "cut"), "--max-steps", "5"])
    assert [h["epoch"] for h in load_checkpoint(tmp_path / "cut")["history"]] == [1]
    at_stop = json.loads((tmp_path / "cut" / "arch.json").read_text())  # the architecture of the stop
    assert tool("decode")([str(tmp_path / "cut"), "--out", str(tmp_path / "decoded")]) == at_stop
    search(["--resume", str(tmp_path / "cut")])
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    assert_same(full, resumed)  # alpha, beta, weights, optimisers, history
    assert (tmp_path / "cut" / "arch.json").read_text() == (tmp_path / "full" / "arch.json").read_text()
    capsys.readouterr()
    assert search(["--resume", str(tmp_path / "full")]) == json.loads((tmp_path / "full" / "arch.json").read_text())
    assert "the search had already finished: its architecture is" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "full")["global_step"] == full["global_step"]  # nothing trained again


def test_epochs_follow_the_shorter_half_when_the_halves_differ(tool, tmp_path):
    # 15 images: half A (weights) gets 8 = 4 batches of 2, half B (architecture) 7 = 3 batches
    config = write_search_config(tmp_path / "odd.yaml",
                                 data={"image_size": 32, "crop_size": 32, "train_length": 15, "val_length": 2,
                                       "batch_size": 2, "eval_batch_size": 2},
                                 model=TINY_TRELLIS, train={"epochs": 2, "warmup_epochs": 1})
    tool("search")(["--config", str(config), "--out", str(tmp_path / "run")])
    state = load_checkpoint(tmp_path / "run")
    assert [h["global_step"] for h in state["history"]] == [3, 6]


def test_existing_run_directory_is_never_overwritten(tool, tiny_synthetic_config, tmp_path):
    from autoseg.utils.errors import UserError
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="already exists"):
        tool("search")(["--config", str(tiny_synthetic_config), "--out", str(tmp_path / "run")])
    assert (tmp_path / "run" / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("args,message", [
    (["--dataset", "cityscapes", "--data-root", "{tmp}/nowhere"], "Cityscapes"),
    (["--resume", "{tmp}/nothing"], "cannot resume"),
    (["--dataset", "folder", "--data-root", "{tmp}"], "num_classes"),
    (["--dataset", "cifar10", "--filter-multiplier", "4"], "hierarchical search only"),
    (["--batch-size", "1"], "at least 2"),
    (["--batch-size", "200"], "fewer than one batch"),
])
def test_bad_input_is_a_user_error_and_leaves_no_run_directory(tool, tmp_path, args, message):
    from autoseg.utils.errors import UserError
    with pytest.raises(UserError, match=message):
        tool("search")([a.format(tmp=tmp_path) for a in args] + ["--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,message", [
    (["--dataset", "cifar10", "--data-root", "{tmp}/nowhere"], "CIFAR-10 not found"),
    (["--config", "{tmp}/bad.yaml"], "unknown key(s) learning_rate"),
])
def test_bad_input_gives_one_line_error_and_exit_2(tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("mode: hierarchical\noptimizer:\n  learning_rate: 0.1\n")
    args = [a.format(tmp=tmp_path) for a in args]
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "search.py"), *args, "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
