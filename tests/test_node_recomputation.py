"""The memory options of the trellis supernet recompute activations in backward without
changing anything: outputs, gradients and batch-norm running statistics equal the plain run."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from autoseg.config import CollapseGuardSettings, SearchConfig, TrellisModelConfig, validate_config
from autoseg.utils.errors import UserError
from autoseg.analysis.profiling import saved_activation_bytes
from autoseg.search.architect import Architect
from autoseg.search.trellis_network import TrellisSearchNetwork

SMALL = {"layers": 3, "levels": 2, "blocks": 2, "filter_multiplier": 4, "aspp_channels": 8}
GUARDS = {
    "no guards": None,
    "skip dropout": CollapseGuardSettings(skip_dropout=0.5),
    "partial channels, edge normalisation, auxiliary skip": CollapseGuardSettings(
        partial_channels=2, edge_normalization=True, auxiliary_skip=0.5),
}
OPTIONS = ("checkpoint_cells", "selective_checkpoint")


def _run(net: TrellisSearchNetwork, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One training forward and backward pass from a fixed random state (for the dropout masks)."""
    torch.manual_seed(1)
    out = net(x)
    F.cross_entropy(out, target).backward()
    return out.detach()


@pytest.mark.parametrize("guards", GUARDS.values(), ids=GUARDS.keys())
@pytest.mark.parametrize("option", OPTIONS)
def test_recomputing_equals_the_plain_computation(option, guards):
    torch.manual_seed(0)
    plain = TrellisSearchNetwork(3, **SMALL, guards=guards)
    recomputing = copy.deepcopy(plain)
    setattr(recomputing, option, True)
    x, target = torch.randn(2, 3, 24, 24), torch.randint(0, 3, (2, 24, 24))
    for step in range(2):  # the second step runs on the running statistics and weights the first left
        outputs = [_run(net, x, target) for net in (plain, recomputing)]
        assert torch.equal(*outputs)
        for (name, p), q in zip(plain.named_parameters(), recomputing.parameters()):  # weights, alpha, beta
            assert torch.equal(p.grad, q.grad), name
        # the recomputation does not count the batch in the running statistics a second time
        for (name, b), c in zip(plain.named_buffers(), recomputing.buffers()):
            assert torch.equal(b, c), name
        for net in (plain, recomputing):
            with torch.no_grad():
                for p in net.parameters():
                    p -= 0.1 * p.grad
                    p.grad = None


@pytest.mark.parametrize("option", OPTIONS)
def test_second_order_architecture_gradient_equals_the_plain_one(option):
    # the architect evaluates the loss with swapped-in weights (w', w +- eps v): the recomputation
    # must run on those, not on the network's own
    torch.manual_seed(0)
    plain = TrellisSearchNetwork(3, **SMALL)
    recomputing = copy.deepcopy(plain)
    setattr(recomputing, option, True)
    train = (torch.randn(2, 3, 24, 24), torch.randint(0, 3, (2, 24, 24)))
    valid = (torch.randn(2, 3, 24, 24), torch.randint(0, 3, (2, 24, 24)))
    gradients = []
    for net in (plain, recomputing):
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-3)
        architect = Architect(net, torch.nn.CrossEntropyLoss(), a_opt, w_opt, unrolled=True)
        gradients.append(architect.gradient(train, valid, xi=0.025))
    (plain_loss, plain_grads), (loss, grads) = gradients
    assert torch.equal(plain_loss, loss)
    for p, q in zip(plain_grads, grads):
        assert torch.equal(p, q)


def test_selective_checkpointing_keeps_fewer_activations_than_the_plain_run_but_more_than_cells():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    saved = {}
    for option in (None, *OPTIONS):
        net = TrellisSearchNetwork(3, **SMALL, **({option: True} if option else {}))
        saved[option] = saved_activation_bytes(lambda: net(x))
    assert saved["checkpoint_cells"] < saved["selective_checkpoint"] < 0.8 * saved[None]


def test_saved_activations_count_what_a_checkpoint_keeps():
    def region(x):
        return torch.mm(x, x).exp().exp()  # mm saves x (twice), each exp its output

    leaf = torch.randn(4, 4, requires_grad=True)

    def run(checkpointed):
        x = leaf * 2  # 64 bytes, made inside the forward pass (a product with a number saves nothing)
        return (checkpoint(region, x, use_reentrant=False) if checkpointed else region(x)).sum()

    # plain: x and the two exp outputs; checkpointed: only x, the region's input, which the checkpoint holds
    assert saved_activation_bytes(lambda: run(False)) == 3 * 64
    assert saved_activation_bytes(lambda: run(True)) == 64


def test_the_two_recomputations_together_are_refused():
    config = SearchConfig(mode="hierarchical", model=TrellisModelConfig(checkpoint_cells=True,
                                                                         selective_checkpoint=True))
    with pytest.raises(UserError, match="model.checkpoint_cells and model.selective_checkpoint are both on"):
        validate_config(config)
    with pytest.raises(ValueError, match="turn on one of them"):
        TrellisSearchNetwork(3, **SMALL, checkpoint_cells=True, selective_checkpoint=True)


def test_memory_options_are_off_by_default():
    model = TrellisModelConfig()
    assert not model.checkpoint_cells and not model.selective_checkpoint


def test_benchmark_reports_selective_checkpointing(tool):
    args = ["--layers", "2", "--levels", "2", "--blocks", "2", "--filter-multiplier", "2", "--crop-size", "16",
            "--steps", "0", "--warmup", "0", "--device", "cpu"]
    plain, selective = tool("benchmark")(args), tool("benchmark")([*args, "--selective-checkpoint"])
    assert selective["selective_checkpoint"] and not plain["selective_checkpoint"]
    assert selective["saved_activations_mb"] < plain["saved_activations_mb"]
