"""Random architectures from a search space (autoseg.sample_architecture, autoseg sample): valid,
uniform over network paths and cells, reproducible, and retrainable as written."""
import itertools
import json
from collections import Counter

import numpy as np
import pytest
from conftest import ROOT
from scipy.stats import chisquare

import autoseg
from autoseg.space.architecture import NetworkArch, read_architecture
from autoseg.config import SearchConfig, TrellisModelConfig, load_config
from autoseg.utils.errors import UserError
from autoseg.space.genotype import Genotype
from autoseg.space.sampling import path_completions, sample_architectures, sample_cell, sample_path
from autoseg.space.trellis import count_paths

SYNTHETIC = ROOT / "configs" / "search" / "synthetic.yaml"
CIFAR = ROOT / "configs" / "search" / "cifar10.yaml"
OPS = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]


def _all_paths(layers: int, levels: int, free_first_step: bool) -> list[tuple[int, ...]]:
    """Every valid path, by brute force over all level sequences (independent of autoseg.space.trellis)."""
    first = (0, 1) if free_first_step else (0,)
    return [p for p in itertools.product(range(levels), repeat=layers)
            if p[0] in first and all(abs(b - a) <= 1 for a, b in zip(p, p[1:]))]


@pytest.mark.parametrize("layers,levels,free", [(4, 3, True), (4, 3, False), (6, 4, True), (1, 3, True),
                                                (5, 1, False), (8, 4, True)])
def test_completions_count_every_path(layers, levels, free):
    assert sum(path_completions(layers, levels, free)[0].values()) == len(_all_paths(layers, levels, free))


def test_completions_count_the_paths_of_the_paper_trellis():
    assert sum(path_completions(12, 4)[0].values()) == count_paths(12, 4) == 75025


def _random_walk(layers: int, levels: int, free: bool, rng: np.random.Generator) -> tuple[int, ...]:
    """The biased sampler: each step uniform among the allowed moves."""
    path, level = [], 0
    for layer in range(layers):
        allowed = [lv for lv in (level - 1, level, level + 1)
                   if 0 <= lv < levels and (lv <= layer + int(free))]
        level = allowed[rng.integers(len(allowed))]
        path.append(level)
    return tuple(path)


@pytest.mark.parametrize("free", [True, False])
def test_paths_are_uniform_over_all_valid_paths(free):
    paths = _all_paths(4, 3, free)  # 29 paths with the free first step, 12 without
    rng = np.random.default_rng(0)
    draws = 200 * len(paths)
    counts = Counter(sample_path(4, 3, rng, free) for _ in range(draws))
    assert set(counts) == set(paths)  # only valid paths, and every one of them
    observed = [counts[p] for p in paths]
    assert chisquare(observed).pvalue > 0.001
    assert max(abs(c / draws - 1 / len(paths)) for c in observed) < 0.3 / len(paths)
    # the same test rejects a per-step uniform random walk, which favours some paths
    walk = Counter(_random_walk(4, 3, free, np.random.default_rng(0)) for _ in range(draws))
    assert chisquare([walk[p] for p in paths]).pvalue < 1e-6


def test_cells_take_two_distinct_earlier_states_and_never_none():
    rng = np.random.default_rng(1)
    cells = [sample_cell(4, OPS, rng) for _ in range(3000)]
    for cell in cells:
        assert cell.num_blocks == 4 and cell.concat == (2, 3, 4, 5)
        for i, block in enumerate(cell.blocks):
            states = [state for _, state in block]
            assert len(block) == 2 and len(set(states)) == 2 and all(0 <= s < i + 2 for s in states)
    # inputs uniform over the 10 pairs of the 5 states before the last block, ops over the 3 non-none ops
    pairs = Counter(tuple(s for _, s in cell.blocks[3]) for cell in cells)
    assert sorted(pairs) == list(itertools.combinations(range(5), 2))
    assert chisquare(list(pairs.values())).pvalue > 0.001
    ops = Counter(op for cell in cells for block in cell.blocks for op, _ in block)
    assert set(ops) == {"max_pool_3x3", "skip_connect", "sep_conv_3x3"}
    assert chisquare(list(ops.values())).pvalue > 0.001


def test_hierarchical_architecture_matches_the_search_space_of_the_config():
    config = load_config(SYNTHETIC, SearchConfig)
    m = config.model
    for seed in range(20):
        arch = autoseg.sample_architecture(config, seed)
        assert isinstance(arch, NetworkArch)
        assert (arch.layers, arch.blocks, arch.levels) == (m.layers, m.blocks, m.levels)
        assert (arch.filter_multiplier, arch.primitives, arch.free_first_step) == (
            m.filter_multiplier, tuple(m.primitives), m.free_first_step)
        assert "none" not in arch.cell.ops()
        assert arch.path in _all_paths(m.layers, m.levels, m.free_first_step)
        assert NetworkArch.from_dict(arch.to_dict()) == arch  # validates
    pinned = TrellisModelConfig(layers=5, levels=3, blocks=2, free_first_step=False)
    assert all(autoseg.sample_architecture(pinned, seed).path[0] == 0 for seed in range(20))


def test_cifar_architecture_is_a_darts_genotype():
    config = load_config(CIFAR, SearchConfig)
    genotype = autoseg.sample_architecture(config, 0)
    assert isinstance(genotype, Genotype)
    for cell in (genotype.normal, genotype.reduce):
        assert cell.num_blocks == config.model.blocks == 4
        assert cell.concat == (2, 3, 4, 5)  # the last `multiplier` (4) states, as DARTS decodes
        assert all(len(block) == 2 and block[0][1] != block[1][1] for block in cell.blocks)
        assert "none" not in cell.ops()
    assert genotype.normal != genotype.reduce
    config.model.multiplier = 2
    assert autoseg.sample_architecture(config, 0).normal.concat == (4, 5)


def test_draws_are_reproducible_and_differ_between_seeds():
    config = load_config(SYNTHETIC, SearchConfig)
    assert autoseg.sample_architecture(config, 7) == autoseg.sample_architecture(config, 7)
    assert autoseg.sample_architecture(config, np.random.default_rng(7)) == autoseg.sample_architecture(config, 7)
    assert autoseg.sample_architecture(config, 0) != autoseg.sample_architecture(config, 1)
    five = sample_architectures(config, 5, seed=3)
    assert sample_architectures(config, 3, seed=3) == five[:3] and len(set(five)) == 5
    assert sample_architectures(config, 3, seed=4) != five[:3]


def test_an_op_set_of_none_only_is_a_user_error():
    with pytest.raises(UserError, match="no op besides none"):
        sample_cell(2, ["none"], 0)


def test_sample_tool_writes_files_that_retrain_takes_unchanged(tool, tmp_path, capsys):
    archs = tool("sample")(["--config", str(SYNTHETIC), "-n", "3", "--seed", "5", "--out", str(tmp_path / "r")])
    config = load_config(SYNTHETIC, SearchConfig)
    assert [NetworkArch.from_dict(a) for a in archs] == sample_architectures(config, 3, seed=5)
    for i, arch in enumerate(archs):
        file = tmp_path / "r" / f"random_{i}" / "arch.json"
        assert json.loads(file.read_text()) == arch
        capsys.readouterr()
        tool("retrain")(["--dataset", "synthetic", "--arch", str(file), "--dry-run"])
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["model"] == "autodeeplab-arch" and summary["params"] > 0
    genotypes = tool("sample")(["--dataset", "cifar10", "-n", "1", "--out", str(tmp_path / "c")])
    file = tmp_path / "c" / "random_0" / "genotype.json"
    assert read_architecture(file) == Genotype.from_dict(genotypes[0])
    capsys.readouterr()
    tool("retrain")(["--dataset", "cifar10", "--arch", str(file), "--dry-run"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model"] == "darts-cifar"


def test_sample_tool_extends_but_never_overwrites(tool, tmp_path):
    out = tmp_path / "r"
    first = tool("sample")(["-n", "2", "--seed", "0", "--out", str(out)])
    assert tool("sample")(["-n", "4", "--seed", "0", "--out", str(out)])[:2] == first
    assert (out / "random_3" / "arch.json").is_file()
    before = (out / "random_0" / "arch.json").read_text()
    with pytest.raises(UserError, match="already holds another architecture"):
        tool("sample")(["-n", "1", "--seed", "1", "--out", str(out)])
    assert (out / "random_0" / "arch.json").read_text() == before
