"""The collapse guards (PC-DARTS, DARTS-, P-DARTS): off = the plain computation, on = the papers' rules."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_TRELLIS, write_tiny_cifar_search_config, write_search_config

from autoseg import topk_cell
from autoseg.config import (BOUNDS, CollapseGuardsConfig, CollapseGuardSettings, SearchConfig, TrellisModelConfig,
                            validate_config)
from autoseg.engine.checkpoint import load_checkpoint
from autoseg.engine.search_setup import build_search_network
from autoseg.utils.errors import UserError
from autoseg.space.genotype import num_edges
from autoseg.layers.ops import PRIMITIVES
from autoseg.search.arch_decoding import decode_darts, decode_hierarchical
from autoseg.search.architect import Architect
from autoseg.search.collapse_guards import CollapseGuards, channel_shuffle, edge_normalization_weights
from autoseg.search.darts_network import DartsSearchCell, DartsSearchNetwork
from autoseg.search.mixed_op import MixedCell, MixedEdges
from autoseg.search.trellis_network import TrellisSearchNetwork
from autoseg.search.weighted_sum import weighted_sum
from autoseg.search.wide_ops import EdgeInput
from autoseg.space.trellis import transition_probabilities

ALL_ON = {"partial_channels": 2, "edge_normalization": True, "auxiliary_skip": 1.0, "skip_dropout": 0.3,
          "max_skip_connect": 1}
SKIP = PRIMITIVES.index("skip_connect")


def guards(**settings) -> CollapseGuards:
    """The runtime guards of ``settings`` (the other guards off), at the start of a search."""
    return CollapseGuards(CollapseGuardSettings(**settings))


# -- the settings: one value, checked against the config's ranges ----------------------------------

OUT_OF_RANGE = {"partial_channels": (0, "partial_channels must be at least 1, got 0"),
                "auxiliary_skip": (-0.5, "auxiliary_skip must be at least 0, got -0.5"),
                "skip_dropout": (1.0, "skip_dropout must be in [0, 1), got 1.0"),
                "max_skip_connect": (-1, "max_skip_connect must be at least 0, got -1")}


@pytest.mark.parametrize("mode", SearchConfig.MODEL_TYPES)
@pytest.mark.parametrize("key", OUT_OF_RANGE)
def test_guard_settings_reject_a_value_out_of_range_as_the_config_does(key, mode):
    value, message = OUT_OF_RANGE[key]
    with pytest.raises(UserError) as from_value:
        CollapseGuardSettings(**{key: value})
    assert str(from_value.value) == message
    with pytest.raises(UserError) as from_config:
        validate_config(SearchConfig(mode=mode, model=SearchConfig.MODEL_TYPES[mode](**{key: value})))
    assert str(from_config.value).startswith(f"model.{message} (fix the config file")


def test_the_config_checks_the_guards_against_the_settings_own_ranges():
    assert set(CollapseGuardSettings.BOUNDS) == set(OUT_OF_RANGE)  # every numeric guard has its range
    for model_type in SearchConfig.MODEL_TYPES.values():
        assert issubclass(model_type, CollapseGuardsConfig)
        assert all(BOUNDS[model_type][key] is bounds for key, bounds in CollapseGuardSettings.BOUNDS.items())


def test_a_model_section_gives_its_flat_guard_keys_as_one_immutable_settings_value():
    # the keys a config file writes are the value's settings, with the same types and defaults
    assert ([(f.name, f.type, f.default) for f in dataclasses.fields(CollapseGuardsConfig)]
            == [(f.name, f.type, f.default) for f in dataclasses.fields(CollapseGuardSettings)])
    settings = TrellisModelConfig(filter_multiplier=4, **ALL_ON).collapse_guards()
    assert settings == CollapseGuardSettings(**ALL_ON)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.skip_dropout = 0.0


# -- guards off: the computation before the guards existed ---------------------------------------

def plain_mixed_edges(self, x, weights, edge_weights=None):
    """``MixedEdges.forward`` without the collapse guards."""
    assert edge_weights is None
    inputs = EdgeInput(x)
    return weighted_sum(weights[:, self.columns], [op(inputs) for op in self.ops])


def plain_mixed_cell(self, s0, s1, weights, edge_weights=None):
    """``MixedCell.forward`` as it was before the collapse guards."""
    assert edge_weights is None
    states = [s0, s1]
    blocks = [None] * self.num_blocks
    fan_out_weights = weights[self.rows].split([len(targets) for targets in self.targets])
    for state, (fan_out, targets, rows) in enumerate(zip(self.fan_outs, self.targets, fan_out_weights)):
        out = fan_out(states[state], rows)
        for slot, block in enumerate(targets):
            blocks[block] = out[:, slot] if blocks[block] is None else blocks[block] + out[:, slot]
        if state >= 1:
            states.append(blocks[state - 1])
    return torch.cat(states[-self.multiplier:], dim=1)


def plain_darts_cell(self, s0, s1, weights, edge_weights=None):
    """``DartsSearchCell.forward`` as it was before the collapse guards."""
    assert edge_weights is None
    return self.dag(self.preprocess0(s0), self.preprocess1(s1), weights)


def plain_darts_network(self, x):
    """``DartsSearchNetwork.forward`` as it was before the collapse guards."""
    s0 = s1 = self.stem(x)
    normal = F.softmax(self.alphas_normal, dim=-1)
    reduce = F.softmax(self.alphas_reduce, dim=-1)
    for cell in self.cells:
        s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
    return self.classifier(self.global_pooling(s1).flatten(1))


PLAIN = {MixedEdges: plain_mixed_edges, MixedCell: plain_mixed_cell, DartsSearchCell: plain_darts_cell,
         DartsSearchNetwork: plain_darts_network}


def _outputs_and_gradients(build, x, monkeypatch=None):
    torch.manual_seed(0)
    net = build()
    if monkeypatch is not None:
        for cls, forward in PLAIN.items():
            monkeypatch.setattr(cls, "forward", forward)
    torch.manual_seed(1)  # the same random state for whatever the forward pass draws
    out = net(x)
    out.square().mean().backward()
    if monkeypatch is not None:
        monkeypatch.undo()
    grads = {name: p.grad for name, p in net.named_parameters()}
    return out, grads, net.state_dict()


@pytest.mark.parametrize("build", [
    lambda: DartsSearchNetwork(3, init_channels=4, layers=3, num_blocks=2, multiplier=2),
    lambda: DartsSearchNetwork(3, init_channels=4, layers=3, num_blocks=2, multiplier=2, guards=CollapseGuardSettings(
        partial_channels=1, edge_normalization=False, auxiliary_skip=0.0, skip_dropout=0.0, max_skip_connect=None)),
    lambda: TrellisSearchNetwork(3, layers=3, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8),
    lambda: TrellisSearchNetwork(3, layers=3, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8,
                                 checkpoint_cells=True),
], ids=["darts", "darts-explicit-off", "trellis", "trellis-checkpointed"])
def test_guards_off_is_exactly_the_plain_computation(build, monkeypatch):
    x = torch.randn(2, 3, 17, 17)
    out, grads, state = _outputs_and_gradients(build, x)
    plain_out, plain_grads, plain_state = _outputs_and_gradients(build, x, monkeypatch)
    assert torch.equal(out, plain_out)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():  # alpha, beta and every weight
        assert torch.equal(grad, plain_grads[name]), name
    for name, value in state.items():  # batch-norm running statistics
        assert torch.equal(value, plain_state[name]), name


def test_guards_off_add_no_parameter():
    darts = DartsSearchNetwork(3, init_channels=4, layers=3, num_blocks=2, multiplier=2)
    trellis = TrellisSearchNetwork(3, layers=2, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8)
    assert darts.arch_parameters() == [darts.alphas_normal, darts.alphas_reduce]
    assert trellis.arch_parameters() == [trellis.alphas, trellis.betas]
    for net in (darts, trellis):
        names = [name for name, _ in net.named_parameters()] + list(net.state_dict())
        assert not [name for name in names if "edge_betas" in name or "auxiliary" in name or "bypass" in name]


# -- PC-DARTS partial channel connections --------------------------------------------------------

def test_channel_shuffle_is_the_pc_darts_permutation():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    # two groups of four and four groups of two: channel g * C/K + j moves to j * K + g
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    y = torch.randn(3, 12, 5, 5)
    shuffled = channel_shuffle(y, 4)
    assert sorted(shuffled.sum(dim=(0, 2, 3)).tolist()) == sorted(y.sum(dim=(0, 2, 3)).tolist())
    assert torch.equal(channel_shuffle(shuffled, 3), y)  # K groups, then C/K groups: the inverse
    # the (N, edges, C, H, W) form used by the mixed ops shuffles each edge the same way
    stacked = torch.randn(2, 3, 8, 4, 4)
    assert torch.equal(channel_shuffle(stacked, 4, dim=2)[:, 1], channel_shuffle(stacked[:, 1], 4))


@pytest.mark.parametrize("stride,size", [(1, 8), (2, 8), (2, 9)])
def test_partial_channels_send_one_kth_through_the_ops_and_shuffle_the_rest_in(stride, size):
    channels, k, edges = 8, 4, 3
    torch.manual_seed(0)
    partial = MixedEdges(channels, edges, stride, PRIMITIVES, guards(partial_channels=k))
    plain = MixedEdges(channels // k, edges, stride, PRIMITIVES)  # the ops on C/K channels, no guards
    plain.load_state_dict(partial.state_dict())
    x = torch.randn(2, channels, size, size, requires_grad=True)
    weights = torch.softmax(torch.randn(edges, len(PRIMITIVES)), -1)
    out = partial(x, weights)
    reduced = (size + 1) // 2 if stride == 2 else size
    assert out.shape == (2, edges, channels, reduced, reduced)
    rest = x[:, channels // k:]
    if stride == 2:  # the bypassing channels are max-pooled 2x2 (ceil mode on odd sizes)
        rest = F.max_pool2d(rest, 2, 2, ceil_mode=True)
    expected = torch.cat([plain(x[:, :channels // k], weights), rest.unsqueeze(1).expand(-1, edges, -1, -1, -1)], 2)
    assert torch.allclose(out, channel_shuffle(expected, k, dim=2), atol=1e-6)
    # by hand: the mixed op lands on every K-th channel and only reads the first C/K channels
    mixed = out[:, :, ::k]
    grad, = torch.autograd.grad(mixed.sum(), x)
    assert grad[:, channels // k:].abs().max() == 0 and grad[:, :channels // k].abs().max() > 0
    if stride == 1:
        assert torch.equal(out[:, 0, 1::k], x[:, channels // k:channels // k + channels // k])


def test_partial_channels_must_divide_the_channels():
    with pytest.raises(ValueError, match="partial_channels 3 must divide"):
        MixedEdges(8, 2, 1, PRIMITIVES, guards(partial_channels=3))
    cfg = SearchConfig(mode="hierarchical", model=TrellisModelConfig(filter_multiplier=4, partial_channels=3))
    with pytest.raises(UserError, match="partial_channels 3"):
        build_search_network(cfg, 3)


# -- PC-DARTS edge normalisation -----------------------------------------------------------------

def test_edge_normalization_weights_are_a_softmax_over_each_blocks_incoming_edges():
    logits = torch.tensor([0.0, math.log(3.0), 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, math.log(5.0)])
    weights = edge_normalization_weights(logits, 3)
    assert torch.allclose(weights, torch.tensor([0.25, 0.75, 1 / 3, 1 / 3, 1 / 3, 0.125, 0.125, 0.125, 0.625]))
    with pytest.raises(ValueError, match="expected 5 edge logits"):
        edge_normalization_weights(torch.zeros(4), 2)


def test_edge_weights_scale_each_edge_of_a_block():
    torch.manual_seed(0)
    cell = MixedCell(4, num_blocks=1, multiplier=1, primitives=PRIMITIVES)  # one block = edge 0 + edge 1
    s0, s1 = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    weights = torch.softmax(torch.randn(2, len(PRIMITIVES)), -1)
    only = [cell(s0, s1, weights, torch.tensor(e)) for e in ([1.0, 0.0], [0.0, 1.0])]
    assert torch.allclose(cell(s0, s1, weights, torch.tensor([0.3, 0.7])), 0.3 * only[0] + 0.7 * only[1], atol=1e-6)
    assert torch.equal(cell(s0, s1, weights, torch.ones(2)), cell(s0, s1, weights))


@pytest.mark.parametrize("unrolled", [False, True])
def test_edge_parameters_are_architecture_parameters_that_get_gradients_and_updates(unrolled):
    torch.manual_seed(0)
    on = CollapseGuardSettings(edge_normalization=True)
    darts = DartsSearchNetwork(3, init_channels=4, layers=3, num_blocks=2, multiplier=2, guards=on)
    trellis = TrellisSearchNetwork(3, layers=2, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8, guards=on)
    for net, edge_names, x, target in (
            (darts, ["edge_betas_normal", "edge_betas_reduce"], torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])),
            (trellis, ["edge_betas"], torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16)))):
        edges = [getattr(net, name) for name in edge_names]
        assert net.arch_parameters()[-len(edges):] == edges
        assert all(e.shape == (num_edges(2),) for e in edges)
        assert not {id(e) for e in edges} & {id(p) for p in net.weight_parameters()}
        assert set(edge_names) <= set(net.state_dict())  # saved in checkpoints
        before = [e.detach().clone() for e in edges]
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.01)
        Architect(net, torch.nn.CrossEntropyLoss(), a_opt, w_opt, unrolled=unrolled).step((x, target), (x, target),
                                                                                          0.01)
        for e, b in zip(edges, before):
            assert e.grad is not None and e.grad.abs().sum() > 0
            assert not torch.equal(e.detach(), b)


OPS = ["none", "max_pool_3x3", "sep_conv_3x3", "skip_connect"]
UNIFORM_TRANSITIONS = transition_probabilities(torch.zeros(2, 2, 3)).numpy()


def test_decoding_scores_edges_with_their_edge_weights():
    # block 1 (states 0, 1, 2): by alpha alone states 0 and 1 win; edge weights 1/6, 1/6, 2/3 make state 2 first
    w = [[0.1, 0.2, 0.6, 0.1],
         [0.1, 0.5, 0.2, 0.2],
         [0.1, 0.7, 0.1, 0.1],    # 0 -> 3: max_pool 0.7 -> 0.7 / 6 = 0.117
         [0.1, 0.1, 0.2, 0.6],    # 1 -> 3: skip 0.6 -> 0.6 / 6 = 0.100
         [0.4, 0.1, 0.3, 0.2]]    # 2 -> 3: sep 0.3 -> 0.3 * 2/3 = 0.200
    edge_betas = torch.tensor([0.0, 0.0, 0.0, 0.0, math.log(4.0)])
    plain = decode_hierarchical(np.asarray(w), UNIFORM_TRANSITIONS, OPS, 4).to_dict()
    normalised = decode_hierarchical(np.asarray(w), UNIFORM_TRANSITIONS, OPS, 4, edge_betas=edge_betas).to_dict()
    assert plain["cell"]["blocks"] == [[["sep_conv_3x3", 0], ["max_pool_3x3", 1]],
                                       [["max_pool_3x3", 0], ["skip_connect", 1]]]
    assert normalised["cell"]["blocks"] == [[["sep_conv_3x3", 0], ["max_pool_3x3", 1]],
                                            [["sep_conv_3x3", 2], ["max_pool_3x3", 0]]]
    assert normalised["edge_weights"] == pytest.approx([0.5, 0.5, 1 / 6, 1 / 6, 2 / 3], abs=1e-6)
    assert "edge_weights" not in plain and "max_skip_connect" not in plain
    genotype = decode_darts(np.asarray(w), np.asarray(w), OPS, 2, 2, edge_betas, edge_betas)
    assert [list(map(list, block)) for block in genotype.reduce.blocks] == normalised["cell"]["blocks"]
    assert genotype.normal == genotype.reduce


# -- DARTS- auxiliary skip connection ------------------------------------------------------------

def test_auxiliary_skip_coefficient_decays_linearly_to_zero():
    decaying = guards(auxiliary_skip=0.8, skip_dropout=0.4)
    assert decaying.current_auxiliary_skip == 0.8 and decaying.current_skip_dropout == 0.4  # before any progress
    epochs = 5
    seen = []
    for epoch in range(epochs):  # the search loop's call at the start of every epoch
        decaying.set_progress(epoch / epochs)
        seen.append(decaying.current_auxiliary_skip)
    assert seen == pytest.approx([0.8, 0.64, 0.48, 0.32, 0.16])
    decaying.set_progress(1.0)
    assert decaying.current_auxiliary_skip == 0.0 and decaying.current_skip_dropout == 0.0
    assert decaying.settings == CollapseGuardSettings(auxiliary_skip=0.8, skip_dropout=0.4)  # the settings stay
    with pytest.raises(ValueError, match="fraction"):
        decaying.set_progress(1.5)
    net = TrellisSearchNetwork(3, layers=2, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8,
                               guards=CollapseGuardSettings(auxiliary_skip=1.0))
    net.set_search_progress(0.25)
    assert all(m.guards.current_auxiliary_skip == 0.75 for m in net.modules() if isinstance(m, MixedEdges))


@pytest.mark.parametrize("stride", [1, 2])
def test_auxiliary_skip_adds_beta_times_a_skip_of_the_input_on_every_edge(stride):
    torch.manual_seed(0)
    decaying = guards(auxiliary_skip=0.5)
    aux = MixedEdges(4, 3, stride, PRIMITIVES, decaying)
    torch.manual_seed(0)
    plain = MixedEdges(4, 3, stride, PRIMITIVES)
    x = torch.randn(2, 4, 8, 8)
    weights = torch.softmax(torch.randn(3, len(PRIMITIVES)), -1)
    if stride == 1:  # the identity: no parameters
        assert not list(aux.auxiliary.parameters())
        skip = x.unsqueeze(1)
    else:  # a FactorizedReduce per edge, as in the DARTS- code
        assert aux.auxiliary.conv_1.shape == (3, 2, 4)
        skip = aux.auxiliary(EdgeInput(x))
    assert torch.allclose(aux(x, weights), plain(x, weights) + 0.5 * skip, atol=1e-6)
    decaying.set_progress(1.0)
    assert torch.equal(aux(x, weights), plain(x, weights))


# -- P-DARTS skip dropout ------------------------------------------------------------------------

def test_skip_dropout_drops_the_identity_of_each_edge_independently_in_training_only():
    torch.manual_seed(0)
    edges = MixedEdges(4, 3, 1, PRIMITIVES, guards(skip_dropout=0.5))
    x = torch.randn(2, 4, 16, 16)
    only_skip = torch.eye(len(PRIMITIVES))[SKIP].expand(3, -1)
    out = edges(x, only_skip)
    kept = out != 0
    assert torch.allclose(out[kept], (2 * x.unsqueeze(1).expand_as(out))[kept])  # inverted dropout: x / (1 - p)
    assert 0.4 < kept.float().mean() < 0.6
    assert not torch.equal(kept[:, 0], kept[:, 1])  # a mask per edge
    edges.eval()
    assert torch.equal(edges(x, only_skip), x.unsqueeze(1).expand_as(out))


@pytest.mark.parametrize("reduction", [False, True])
def test_skip_dropout_at_rate_zero_or_in_eval_mode_or_on_strided_edges_changes_nothing(reduction):
    torch.manual_seed(0)
    decaying = guards(skip_dropout=0.3)
    guarded = MixedCell(4, 2, 2, PRIMITIVES, reduction, decaying)
    torch.manual_seed(0)
    plain = MixedCell(4, 2, 2, PRIMITIVES, reduction)
    s0, s1 = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    weights = torch.softmax(torch.randn(num_edges(2), len(PRIMITIVES)), -1)
    guarded.eval(), plain.eval()
    assert torch.equal(guarded(s0, s1, weights), plain(s0, s1, weights))
    guarded.train(), plain.train()
    decaying.set_progress(1.0)  # the rate has decayed to 0
    assert torch.equal(guarded(s0, s1, weights), plain(s0, s1, weights))
    decaying.set_progress(0.0)
    # stride-2 edges have no identity to drop (P-DARTS drops out the identity only)
    fan_out, rows = guarded.fan_outs[0], weights[:len(guarded.targets[0])]
    assert (fan_out.dropout_op is None) == reduction
    torch.manual_seed(2)
    a = fan_out(s0, rows)
    torch.manual_seed(2)
    b = plain.fan_outs[0](s0, rows)
    assert torch.equal(a, b) == reduction


def test_skip_dropout_masks_are_redrawn_identically_when_cells_are_recomputed():
    x, target = torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        net = TrellisSearchNetwork(3, layers=3, levels=2, blocks=2, filter_multiplier=2, aspp_channels=8,
                                   checkpoint_cells=checkpointed, guards=CollapseGuardSettings(skip_dropout=0.5))
        torch.manual_seed(1)
        F.cross_entropy(net(x), target).backward()
        grads.append([p.grad for p in net.parameters()])
    for plain, recomputed in zip(*grads):
        assert torch.allclose(plain, recomputed, atol=1e-6)


# -- P-DARTS decode-time cap on skip_connect -----------------------------------------------------

CAP_WEIGHTS = np.array([
    # block 0 (states 0, 1)
    [0.00, 0.10, 0.20, 0.70],   # 0 -> 2: skip 0.70; without skip: sep_conv 0.20
    [0.00, 0.35, 0.05, 0.60],   # 1 -> 2: skip 0.60; without skip: max_pool 0.35
    # block 1 (states 0, 1, 2)
    [0.00, 0.05, 0.15, 0.80],   # 0 -> 3: skip 0.80; without skip: sep_conv 0.15
    [0.60, 0.05, 0.30, 0.05],   # 1 -> 3: `none` 0.60 is never taken: sep_conv 0.30
    [0.00, 0.50, 0.10, 0.40],   # 2 -> 3: max_pool 0.50
    # block 2 (states 0 .. 3)
    [0.00, 0.10, 0.10, 0.55],   # 0 -> 4: skip 0.55; without skip: max_pool 0.10 (tie, listed first)
    [0.00, 0.30, 0.20, 0.50],   # 1 -> 4: skip 0.50; without skip: max_pool 0.30
    [0.90, 0.02, 0.03, 0.05],   # 2 -> 4: skip 0.05
    [0.00, 0.45, 0.25, 0.30],   # 3 -> 4: max_pool 0.45
])


@pytest.mark.parametrize("cap,expected", [
    (None, [[("skip_connect", 0), ("skip_connect", 1)], [("skip_connect", 0), ("max_pool_3x3", 2)],
            [("skip_connect", 0), ("skip_connect", 1)]]),
    (5, [[("skip_connect", 0), ("skip_connect", 1)], [("skip_connect", 0), ("max_pool_3x3", 2)],
         [("skip_connect", 0), ("skip_connect", 1)]]),
    # the weakest skip (1 -> 4, 0.50) goes; that edge now scores 0.30 and gives its place to 3 -> 4
    (4, [[("skip_connect", 0), ("skip_connect", 1)], [("skip_connect", 0), ("max_pool_3x3", 2)],
         [("skip_connect", 0), ("max_pool_3x3", 3)]]),
    # then 0 -> 4 (0.55) and 1 -> 2 (0.60): the two strongest skips (0.80, 0.70) stay
    (2, [[("skip_connect", 0), ("max_pool_3x3", 1)], [("skip_connect", 0), ("max_pool_3x3", 2)],
         [("max_pool_3x3", 3), ("max_pool_3x3", 1)]]),
    (0, [[("max_pool_3x3", 1), ("sep_conv_3x3", 0)], [("max_pool_3x3", 2), ("sep_conv_3x3", 1)],
         [("max_pool_3x3", 3), ("max_pool_3x3", 1)]]),
])
def test_skip_cap_by_hand(cap, expected):
    assert topk_cell(CAP_WEIGHTS, OPS, max_skip_connect=cap) == expected


def test_skip_cap_also_caps_a_skip_that_takes_the_place_of_a_removed_one():
    w = np.array([[0.0, 0.3, 0.1, 0.6],
                  [0.0, 0.1, 0.2, 0.7],
                  [0.0, 0.05, 0.05, 0.9],
                  [0.0, 0.2, 0.1, 0.45],    # 1 -> 3: a skip behind 2 -> 3 ...
                  [0.0, 0.4, 0.1, 0.5]])    # ... which loses its skip (0.5) first and falls to 0.4
    assert topk_cell(w, OPS) == [[("skip_connect", 1), ("skip_connect", 0)],
                                 [("skip_connect", 0), ("skip_connect", 2)]]
    assert topk_cell(w, OPS, max_skip_connect=3) == [[("skip_connect", 1), ("skip_connect", 0)],
                                                     [("skip_connect", 0), ("max_pool_3x3", 2)]]


def test_skip_cap_ties_keep_the_earlier_edges():
    w = np.tile([0.0, 0.1, 0.2, 0.7], (5, 1))
    assert topk_cell(w, OPS, max_skip_connect=2) == [[("skip_connect", 0), ("skip_connect", 1)],
                                                     [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]]
    assert topk_cell(w, OPS, max_skip_connect=3) == [[("skip_connect", 0), ("skip_connect", 1)],
                                                     [("skip_connect", 0), ("sep_conv_3x3", 1)]]


def _pdarts_refinement(w: np.ndarray, ops: list[str], max_skip: int) -> list[set[tuple[str, int]]]:
    """The P-DARTS code's skip-connect refinement, written independently over probabilities: `none` zeroed,
    then while there are too many skips, the selected skip of lowest probability is zeroed and the two
    strongest edges of each block (by their best op) are selected again."""
    probs = w.copy()
    probs[:, ops.index("none")] = 0.0
    skip = ops.index("skip_connect")
    blocks = 0
    while num_edges(blocks) < len(w):
        blocks += 1

    def select(probs):
        kept = {}
        for block in range(blocks):
            rows = list(range(num_edges(block), num_edges(block + 1)))
            for row in sorted(rows, key=lambda r: probs[r].max())[-2:]:
                kept[row] = int(probs[row].argmax())
        return kept

    kept = select(probs)
    while sum(op == skip for op in kept.values()) > max_skip:
        weakest = min((row for row, op in kept.items() if op == skip), key=lambda row: probs[row, skip])
        probs[weakest, skip] = 0.0
        kept = select(probs)
    return [{(ops[op], row - num_edges(block)) for row, op in kept.items()
             if num_edges(block) <= row < num_edges(block + 1)} for block in range(blocks)]


def test_skip_cap_against_the_pdarts_procedure_on_random_weights():
    rng = np.random.default_rng(0)
    ops = list(PRIMITIVES)
    for trial in range(200):
        blocks = 2 + trial % 4
        alpha = rng.normal(size=(num_edges(blocks), len(ops)))
        alpha[:, SKIP] += 1.5  # a collapsing search: skips everywhere
        w = np.exp(alpha) / np.exp(alpha).sum(axis=1, keepdims=True)
        cap = int(rng.integers(0, 5))
        cell = topk_cell(w, ops, max_skip_connect=cap)
        assert sum(op == "skip_connect" for block in cell for op, _ in block) <= cap
        assert all(op != "none" for block in cell for op, _ in block)
        assert [set(block) for block in cell] == _pdarts_refinement(w, ops, cap)


def test_skip_cap_rejects_what_it_cannot_do():
    w = np.full((5, 2), 0.5)
    with pytest.raises(ValueError, match="other than 'none' and 'skip_connect'"):
        topk_cell(w, ["none", "skip_connect"], max_skip_connect=1)
    with pytest.raises(ValueError, match="0 or more"):
        topk_cell(np.full((5, 4), 0.25), OPS, max_skip_connect=-1)
    assert topk_cell(np.full((5, 3), 1 / 3), ["none", "max_pool_3x3", "sep_conv_3x3"], max_skip_connect=0) == \
        topk_cell(np.full((5, 3), 1 / 3), ["none", "max_pool_3x3", "sep_conv_3x3"])  # no skip_connect: no cap


def test_darts_decoding_caps_the_normal_cell_only():
    w = np.tile([0.0, 0.1, 0.2, 0.7], (num_edges(2), 1))
    genotype = decode_darts(np.asarray(w), np.asarray(w), OPS, 2, 2, max_skip_connect=1)
    assert sum(op == "skip_connect" for block in genotype.normal.blocks for op, _ in block) == 1
    assert all(op == "skip_connect" for block in genotype.reduce.blocks for op, _ in block)


# -- decoding a checkpoint reproduces the search, guards on --------------------------------------

def test_hierarchical_search_with_guards_decodes_the_same_from_its_checkpoint(tool, tmp_path):
    config = write_search_config(tmp_path / "guarded.yaml",
                                 data={"image_size": 32, "crop_size": 32, "train_length": 16, "val_length": 4,
                                       "batch_size": 2, "eval_batch_size": 4},
                                 model={**TINY_TRELLIS, **ALL_ON}, train={"epochs": 2, "warmup_epochs": 1})
    run = tmp_path / "run"
    arch = tool("search")(["--config", str(config), "--out", str(run)])
    state = load_checkpoint(run)
    assert state["config"]["model"]["partial_channels"] == 2 and "edge_betas" in state["model"]
    assert arch["max_skip_connect"] == 1 and len(arch["edge_weights"]) == num_edges(2)
    assert sum(op == "skip_connect" for block in arch["cell"]["blocks"] for op, _ in block) <= 1
    (run / "arch.json").unlink()
    assert tool("decode")([str(run)]) == arch == json.loads((run / "arch.json").read_text())


def test_cifar_search_with_guards_resumes_exactly_and_decodes_the_same_from_its_checkpoint(tool, tmp_path):
    config = write_tiny_cifar_search_config(tmp_path, **ALL_ON)
    search = tool("search")
    genotype = search(["--config", str(config), "--out", str(tmp_path / "full"), "--device", "cpu"])
    search(["--config", str(config), "--out", str(tmp_path / "cut"), "--max-steps", "6"])  # stops mid-epoch 2
    search(["--resume", str(tmp_path / "cut")])
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    for key in ("alphas_normal", "alphas_reduce", "edge_betas_normal", "edge_betas_reduce"):
        assert torch.equal(full["model"][key], resumed["model"][key])
    (tmp_path / "full" / "genotype.json").unlink()
    assert tool("decode")([str(tmp_path / "full")]) == genotype == full["arch"]
