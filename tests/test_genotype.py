"""Top-k cell decoding (the DARTS rule) and genotypes."""
import json

import numpy as np
import pytest

from autoseg import GENOTYPES, Genotype, topk_cell
from autoseg.space.genotype import AUTODEEPLAB_CELL, CellGenotype

OPS = ["none", "max_pool_3x3", "sep_conv_3x3", "skip_connect"]


def test_topk_hand_worked_with_none_dominated_edges():
    # B = 2 blocks: block 0 has edges from states 0, 1; block 1 from states 0, 1, 2.
    w = np.array([
        [0.90, 0.02, 0.05, 0.03],   # 0 -> 2: `none` dominates; strongest real op sep_conv (0.05)
        [0.40, 0.10, 0.20, 0.30],   # 1 -> 2: skip_connect 0.30
        [0.10, 0.60, 0.20, 0.10],   # 0 -> 3: max_pool 0.60
        [0.97, 0.01, 0.01, 0.01],   # 1 -> 3: `none` everywhere else, ties -> first op listed
        [0.50, 0.05, 0.40, 0.05],   # 2 -> 3: sep_conv 0.40
    ])
    assert topk_cell(w, OPS) == [
        [("skip_connect", 1), ("sep_conv_3x3", 0)],
        [("max_pool_3x3", 0), ("sep_conv_3x3", 2)],
    ]
    assert topk_cell(w, OPS, k=1) == [[("skip_connect", 1)], [("max_pool_3x3", 0)]]


def test_topk_ties_go_to_the_lower_state():
    w = np.full((5, 4), 0.25)
    assert topk_cell(w, OPS) == [[("max_pool_3x3", 0), ("max_pool_3x3", 1)],
                                 [("max_pool_3x3", 0), ("max_pool_3x3", 1)]]


def test_topk_against_brute_force_on_random_weights():
    rng = np.random.default_rng(0)
    for blocks in (1, 3, 5):
        edges = sum(2 + i for i in range(blocks))
        w = rng.dirichlet(np.ones(len(OPS)), size=edges)
        cell = topk_cell(w, OPS)
        start = 0
        for b in range(blocks):
            rows = w[start:start + 2 + b]
            scores = [(max(rows[s, 1:]), s) for s in range(2 + b)]
            best = sorted(scores, reverse=True)[:2]
            assert [state for _, state in cell[b]] == [s for _, s in best]
            for op, state in cell[b]:
                assert OPS.index(op) == 1 + int(np.argmax(rows[state, 1:]))
            start += 2 + b


@pytest.mark.parametrize("shape,ops", [((5,), OPS), ((6, 4), OPS), ((5, 3), OPS), ((0, 4), OPS)])
def test_topk_rejects_bad_shapes(shape, ops):
    with pytest.raises(ValueError):
        topk_cell(np.zeros(shape), ops)


def test_topk_rejects_bad_k():
    with pytest.raises(ValueError):
        topk_cell(np.full((5, 4), 0.25), OPS, k=3)


def test_genotype_json_round_trip(tmp_path):
    genotype = GENOTYPES["DARTS_V2"]
    path = tmp_path / "genotype.json"
    genotype.to_json(path)
    assert Genotype.from_json(path) == genotype
    assert json.loads(path.read_text())["normal"]["concat"] == [2, 3, 4, 5]


def test_darts_v2_is_the_published_genotype():
    g = GENOTYPES["DARTS_V2"]
    assert [e for block in g.normal.blocks for e in block] == [
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)]
    assert [e for block in g.reduce.blocks for e in block] == [
        ("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]


def test_cell_genotype_rejects_inputs_from_the_future():
    with pytest.raises(ValueError, match="block 0"):
        CellGenotype.from_blocks([[("sep_conv_3x3", 2), ("skip_connect", 0)]])
    assert AUTODEEPLAB_CELL.num_blocks == 5 and AUTODEEPLAB_CELL.concat == (2, 3, 4, 5, 6)

