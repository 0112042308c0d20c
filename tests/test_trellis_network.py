"""The hierarchical supernet: its nodes, channels, forward/backward, and the stacked cell runs."""
import copy

import pytest
import torch

from autoseg.config import CollapseGuardSettings
from autoseg.layers.ops import FactorizedReduce, ReLUConvBN
from autoseg.search.trellis_network import TrellisSearchNetwork, Upsample
from autoseg.space.trellis import predecessors, trellis_nodes, viterbi_path


@pytest.mark.parametrize("layers,levels,free", [(1, 1, True), (3, 2, True), (5, 4, False), (12, 4, True),
                                                (6, 5, True)])
def test_node_set_and_channels(layers, levels, free):
    net = TrellisSearchNetwork(3, layers=layers, levels=levels, blocks=2, filter_multiplier=3, free_first_step=free)
    expected = trellis_nodes(layers, levels, free)
    assert sorted(net.nodes) == sorted(f"{l}_{s}" for l, s in expected)
    for layer, level in expected:
        node = net.nodes[f"{layer}_{level}"]
        assert node.out_channels == 2 * 3 * 2 ** level  # B * F * s / 4
        assert node.sources == predecessors(layer, level, levels, free)
        for source, module in node.inputs.items():
            kind = FactorizedReduce if int(source) < level else Upsample if int(source) > level else ReLUConvBN
            assert isinstance(module, kind)
        # the same-level state two layers back feeds the cell when it exists (the stem is layer -1)
        has_prev_prev = (layer - 2, level) in expected or (layer == 1 and level == 0)
        assert (node.preprocess0 is not None) == has_prev_prev
    assert set(net.heads) == {str(s) for l, s in expected if l == layers - 1}
    assert net.betas.shape == (layers, levels, 3)
    assert net.alphas.shape == (2 + 3, 8)


def test_paper_size_trellis_has_45_nodes_and_aspp_rates_96_over_s():
    net = TrellisSearchNetwork(19)
    assert len(net.nodes) == 2 + 3 + 4 * 10
    rates = [net.heads[str(level)].aspp.branches[1][0].dilation[0] for level in range(4)]
    assert rates == [24, 12, 6, 3]


def test_forward_backward_at_odd_size():
    torch.manual_seed(0)
    net = TrellisSearchNetwork(4, layers=4, levels=3, blocks=2, filter_multiplier=2, aspp_channels=8)
    x = torch.randn(2, 3, 37, 45)
    logits = net(x)
    assert logits.shape == (2, 4, 37, 45)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 4, (2, 37, 45))).backward()
    assert net.alphas.grad is not None and net.alphas.grad.abs().sum() > 0
    valid = net.betas.grad[torch.tensor([[[s > 0, True, s < 2] for s in range(3)]] * 4)]
    assert (valid != 0).any()
    assert all(p.grad is not None for p in net.weight_parameters() if p.requires_grad)


def _node_by_transition(node, prev, prev_prev, probs, weights, size, edge_weights=None):
    """Reference: run the node's cell once per incoming transition, as the paper writes it."""
    total = 0
    s0 = node.preprocess0(prev_prev) if node.preprocess0 is not None else None
    for source in node.sources:
        module = node.inputs[str(source)]
        s1 = module(prev[source], size) if source > node.level else module(prev[source])
        total = total + probs[source] * node.cell(s1 if s0 is None else s0, s1, weights, edge_weights)
    return total


@pytest.mark.parametrize("guards", [None, CollapseGuardSettings(partial_channels=2, edge_normalization=True,
                                                                  auxiliary_skip=0.5)],
                         ids=["plain", "collapse-guards"])
def test_stacked_cell_runs_equal_one_run_per_transition(guards):
    torch.manual_seed(0)
    net = TrellisSearchNetwork(3, layers=3, levels=3, blocks=3, filter_multiplier=2, guards=guards)
    node = net.nodes["2_1"]  # three incoming transitions and a state two layers back
    assert node.sources == [0, 1, 2] and node.preprocess0 is not None
    reference = copy.deepcopy(node)
    prev = {0: torch.randn(2, 6, 12, 12, requires_grad=True), 1: torch.randn(2, 12, 6, 6, requires_grad=True),
            2: torch.randn(2, 24, 3, 3, requires_grad=True)}
    prev_prev = torch.randn(2, 12, 6, 6, requires_grad=True)
    probs = torch.softmax(torch.randn(3), 0)
    weights = torch.softmax(torch.randn(9, 8), -1)
    edge_weights = torch.rand(9) if guards is not None else None
    size = torch.Size((6, 6))
    out = node(prev, prev_prev, probs, weights, size, edge_weights)
    expected = _node_by_transition(reference, prev, prev_prev, probs, weights, size, edge_weights)
    assert torch.allclose(out, expected, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), [prev[0], prev[2], prev_prev])
    expected_grads = torch.autograd.grad(expected.square().sum(), [prev[0], prev[2], prev_prev])
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, atol=1e-4)
    for (name, buffer), (_, ref) in zip(node.named_buffers(), reference.named_buffers()):
        assert torch.allclose(buffer.float(), ref.float(), atol=1e-5), name
    node.eval(), reference.eval()
    with torch.no_grad():
        assert torch.allclose(node(prev, prev_prev, probs, weights, size, edge_weights),
                              _node_by_transition(reference, prev, prev_prev, probs, weights, size, edge_weights),
                              atol=1e-5)


def test_cell_checkpointing_gives_the_same_gradients_and_statistics():
    torch.manual_seed(0)
    plain = TrellisSearchNetwork(3, layers=3, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8)
    checkpointed = copy.deepcopy(plain)
    checkpointed.checkpoint_cells = True
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    for net in (plain, checkpointed):
        torch.nn.functional.cross_entropy(net(x), y).backward()
    for p, q in zip(plain.parameters(), checkpointed.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)
    # the recomputation in backward does not count the batch a second time
    for (name, b), (_, c) in zip(plain.named_buffers(), checkpointed.named_buffers()):
        assert torch.allclose(b.float(), c.float(), atol=1e-6), name


def test_decode_is_the_viterbi_path_of_the_beta_transitions():
    torch.manual_seed(1)
    net = TrellisSearchNetwork(3, layers=5, levels=3, blocks=2, filter_multiplier=2)
    with torch.no_grad():
        net.betas.normal_()
    arch = net.decode()
    assert list(arch.path) == viterbi_path(net.transition_probabilities().detach().numpy())
    assert arch.layers == 5 and arch.levels == 3 and arch.blocks == 2 and arch.filter_multiplier == 2
    assert len(arch.step_probabilities) == 5 and all(0 < p <= 1 for p in arch.step_probabilities)
    assert [len(block) for block in arch.cell.blocks] == [2, 2]


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError):
        TrellisSearchNetwork(3, layers=0)


def test_second_order_architect_runs_on_the_trellis():
    from autoseg.search.architect import Architect
    torch.manual_seed(0)
    net = TrellisSearchNetwork(3, layers=2, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-3, weight_decay=1e-3)
    batch = (torch.randn(2, 3, 24, 24), torch.randint(0, 3, (2, 24, 24)))
    betas = net.betas.detach().clone()
    Architect(net, criterion, a_opt, w_opt, unrolled=True).step(batch, batch, xi=0.025)
    assert not torch.equal(betas, net.betas) and torch.isfinite(net.betas).all()


def test_bfloat16_autocast_forward_backward():
    torch.manual_seed(0)
    net = TrellisSearchNetwork(3, layers=2, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8)
    x, y = torch.randn(2, 3, 24, 24), torch.randint(0, 3, (2, 24, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(x)
    assert logits.dtype == torch.bfloat16
    torch.nn.functional.cross_entropy(logits.float(), y).backward()
    assert torch.isfinite(net.alphas.grad).all() and net.alphas.grad.abs().sum() > 0
