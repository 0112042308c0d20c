"""Runs of several processes (torchrun, Gloo on the CPU): the same batches and updates as one process."""
import json
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ROOT, TINY_TRELLIS, assert_same, write_config, write_search_config
from torch import nn
from torch.nn import functional as F

from autoseg.engine.checkpoint import load_checkpoint
from autoseg.engine.epoch_data import epoch_batches, epoch_order
from autoseg.utils.process import average_
from autoseg.search.architect import Architect

PROCESSES = 2
BATCH = 4


class TinyBilevelModel(nn.Module):
    """A batch-norm-free model with architecture parameters: a softmax(alpha)-weighted mix of
    two nonlinear branches, so that the second-order update has a non-trivial Hessian term."""

    def __init__(self):
        super().__init__()
        self.branches = nn.ModuleList([nn.Linear(3, 4), nn.Linear(3, 4)])
        self.head = nn.Linear(4, 2)
        self.alpha = nn.Parameter(torch.tensor([0.3, -0.2]))

    def arch_parameters(self):
        return [self.alpha]

    def weight_parameters(self):
        return (p for name, p in self.named_parameters() if name != "alpha")

    def forward(self, x):
        w = torch.softmax(self.alpha, 0)
        return self.head(w[0] * torch.tanh(self.branches[0](x)) + w[1] * torch.sigmoid(self.branches[1](x)))


def _problem():
    """Model, optimisers and one batch of training and validation data, the same in every process."""
    torch.manual_seed(0)
    model = TinyBilevelModel().double()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    F.cross_entropy(model(torch.randn(5, 3, dtype=torch.float64)), torch.randint(0, 2, (5,))).backward()
    w_opt.step()  # momentum buffers exist, as in a running search
    w_opt.zero_grad()
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=3e-3)
    data = [(torch.randn(BATCH, 3, dtype=torch.float64), torch.randint(0, 2, (BATCH,))) for _ in range(2)]
    return model, w_opt, a_opt, data


def _shard(batch, rank):
    share = BATCH // PROCESSES
    return tuple(t[rank * share:(rank + 1) * share] for t in batch)


def _worker(rank: int, init_file: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=PROCESSES)
    try:
        model, w_opt, a_opt, (train, valid) = _problem()
        architect = Architect(model, F.cross_entropy, a_opt, w_opt, unrolled=True)
        _, gradient = architect.unrolled_gradient(_shard(train, rank), _shard(valid, rank), xi=0.1)
        average_(gradient)  # what Architect.step does before applying it
        loader = epoch_batches(list(range(10)), BATCH, seed=7, skip_batches=0)
        queue.put((rank, [g.tolist() for g in gradient], [batch.tolist() for batch in loader]))
    finally:
        dist.destroy_process_group()


def test_processes_share_each_batch_and_average_the_second_order_update(tmp_path):
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_worker, args=(rank, str(tmp_path / "init"), queue))
                 for rank in range(PROCESSES)]
    for process in processes:
        process.start()
    results = {rank: (gradient, batches)
               for rank, gradient, batches in (queue.get(timeout=120) for _ in processes)}
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    # each process loads its half of every batch of the one-process order, skipping the same ones
    order = epoch_order(10, seed=7)
    for step in range(10 // BATCH):
        together = results[0][1][step] + results[1][1][step]
        assert together == order[step * BATCH:(step + 1) * BATCH]
    # the averaged second-order gradient is the one-process gradient of the whole batch
    model, w_opt, a_opt, (train, valid) = _problem()
    _, expected = Architect(model, F.cross_entropy, a_opt, w_opt, unrolled=True).unrolled_gradient(train, valid, 0.1)
    for rank in range(PROCESSES):
        assert torch.allclose(torch.tensor(results[rank][0][0], dtype=torch.float64), expected[0], atol=1e-9)


def _torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={PROCESSES}", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def distributed_search(tmp_path_factory):
    """A two-process hierarchical search of 2 epochs (4 steps each) on tiny synthetic scenes."""
    tmp = tmp_path_factory.mktemp("distributed_search")
    config = write_search_config(tmp / "tiny.yaml",
                                 data={"image_size": 32, "crop_size": 32, "train_length": 32, "val_length": 4,
                                       "batch_size": BATCH, "eval_batch_size": 2},
                                 model=TINY_TRELLIS, train={"epochs": 2, "warmup_epochs": 1, "device": "cpu"})
    result = _torchrun("tools/search.py", "--config", str(config), "--out", str(tmp / "run"))
    return tmp, config, result


def test_a_two_process_search_writes_one_run_directory(distributed_search, tool):
    tmp, _, result = distributed_search
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("searching (hierarchical, method darts)") == 1 and "x 2 process(es)" in result.stdout
    state = load_checkpoint(tmp / "run")
    assert [h["global_step"] for h in state["history"]] == [4, 8]
    assert len(state["rng"]) == PROCESSES
    arch = json.loads((tmp / "run" / "arch.json").read_text())
    (tmp / "run" / "arch.json").unlink()
    assert tool("decode")([str(tmp / "run")]) == arch


def test_a_two_process_search_stopped_mid_epoch_resumes_to_the_uninterrupted_run(distributed_search, tmp_path):
    tmp, config, result = distributed_search
    assert result.returncode == 0, result.stderr[-2000:]
    stopped = _torchrun("tools/search.py", "--config", str(config), "--out", str(tmp_path / "cut"), "--max-steps", "6")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    state = load_checkpoint(tmp_path / "cut")
    assert (state["global_step"], [h["epoch"] for h in state["history"]]) == (6, [1])  # no record of the stop
    assert len(state["running"]) == PROCESSES  # each process's figures of the epoch so far
    resumed = _torchrun("tools/search.py", "--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same(load_checkpoint(tmp / "run"), load_checkpoint(tmp_path / "cut"))  # history, weights, RNG, ...


def test_a_run_resumes_with_the_number_of_processes_it_started_with(distributed_search, tool):
    from autoseg.utils.errors import UserError
    tmp, _, _ = distributed_search
    with pytest.raises(UserError, match="2 process"):
        tool("search")(["--resume", str(tmp / "run"), "--max-steps", "9"])


def test_bad_input_stops_every_process_with_one_error_each(distributed_search):
    tmp, config, _ = distributed_search
    result = _torchrun("tools/search.py", "--config", str(config), "--out", str(tmp / "run"))  # exists already
    assert result.returncode != 0
    assert result.stderr.count("error: run directory") == PROCESSES
    result = _torchrun("tools/search.py", "--config", str(config), "--out", str(tmp / "odd"), "--batch-size", "3")
    assert result.returncode != 0
    assert result.stderr.count("error: batch size 3 cannot be split over 2 processes") == PROCESSES
    assert not (tmp / "odd").exists() or not any((tmp / "odd").iterdir())


def test_a_two_process_retrain_evaluates_like_one_process(tmp_path, tool):
    config = write_config(tmp_path / "retrain.yaml", "retrain/synthetic",
                          data={"image_size": 32, "crop_size": 32, "train_length": 16, "val_length": 5,
                                "batch_size": BATCH, "eval_batch_size": 2},
                          model={"filter_multiplier": 2}, train={"epochs": 2, "eval_every": 1, "device": "cpu"})
    result = _torchrun("tools/retrain.py", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-2000:]
    state = load_checkpoint(tmp_path / "run")
    assert [h["global_step"] for h in state["history"]] == [4, 8]
    # the validation split sharded over two processes (3 + 2 images) scores like one process on all 5
    last = state["history"][-1]["valid"]
    evaluated = tool("evaluate")([str(tmp_path / "run" / "checkpoint.pt"), "--device", "cpu", "--json"])
    assert evaluated["images"] == 5
    assert evaluated["miou"] == pytest.approx(last["miou"], abs=1e-6)
    assert evaluated["pixel_acc"] == pytest.approx(last["pixel_acc"], abs=1e-6)


def test_a_one_process_torchrun_launch_joins_a_process_group(monkeypatch):
    # torchrun --nproc_per_node 1 sets WORLD_SIZE=1: the run still goes through the process group (NCCL on a
    # GPU, which is how one GPU exercises it), where a plain start stays a single process without one
    from autoseg.engine import distributed
    from autoseg.utils.process import is_distributed
    assert distributed.setup("cpu") == torch.device("cpu") and not is_distributed()
    for name, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29517"}.items():
        monkeypatch.setenv(name, value)
    try:
        distributed.setup("cpu")
        assert is_distributed() and dist.get_backend() == "gloo" and dist.get_world_size() == 1
    finally:
        distributed.teardown()
    assert not is_distributed()
