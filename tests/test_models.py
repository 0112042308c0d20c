"""Tests of the retrain models: parameter counts, shapes on odd sizes, the registry, smp baselines."""
from __future__ import annotations

from typing import Iterator

import pytest
import torch
from torch import nn

from autoseg.utils.errors import UserError
from autoseg.space.genotype import AUTODEEPLAB_CELL, CellGenotype, get_genotype
from autoseg.models import (AutoDeepLab, DartsCifarNetwork, autodeeplab_from_arch, count_parameters, create_model,
                            list_models, register_model)
from autoseg.models.autodeeplab import BN_EPS, BN_MOMENTUM
from autoseg.models.deeplab_head import aspp_rates
from autoseg.models.fixed_cell import drop_path
from autoseg.layers.ops import PRIMITIVES, build_op

DARTS_V2_PARAMS = 3_349_342
"""Reference NetworkCIFAR(36, 10, 20, auxiliary, DARTS_V2) without auxiliary head ("3.35 MB")."""

DARTS_V2_AUX_PARAMS = 476_426
"""Its AuxiliaryHeadCIFAR for 10 classes."""

SMALL_CELL = CellGenotype.from_blocks([
    [("dil_conv_3x3", 0), ("skip_connect", 1)],
    [("max_pool_3x3", 0), ("avg_pool_3x3", 2)],
])


@pytest.fixture(autouse=True)
def _small_cpu_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run these tests without oneDNN, which compiles kernels for every new conv shape on first
    use (seconds each on a small CPU) while these tests run many tiny one-off shapes, and on one
    thread: tiny convs gain nothing from more, and waiting threads stall on a shared CPU."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_count_parameters_excludes_by_name() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert count_parameters(model) == 16 + 10
    assert count_parameters(model, exclude="1.") == 16


def test_darts_v2_parameter_count_matches_reference() -> None:
    model = create_model("darts-cifar", 10, auxiliary=True)
    assert isinstance(model, DartsCifarNetwork)
    assert count_parameters(model, exclude="auxiliary") == DARTS_V2_PARAMS
    assert count_parameters(model.auxiliary_head) == DARTS_V2_AUX_PARAMS
    assert count_parameters(create_model("darts-cifar", 10)) == DARTS_V2_PARAMS


def test_darts_network_outputs_and_reductions() -> None:
    torch.manual_seed(0)
    model = create_model("darts-cifar", 10, genotype=get_genotype("DARTS_V2"), C=4, layers=5, auxiliary=True)
    assert [cell.reduction for cell in model.cells] == [False, True, False, True, False]
    x = torch.randn(2, 3, 32, 32)
    logits, aux = model(x)
    assert logits.shape == aux.shape == (2, 10)
    model.eval()
    assert model(x).shape == (2, 10)


def test_darts_genotype_by_name_object_or_json(tmp_path) -> None:
    genotype = get_genotype("DARTS_V2")
    genotype.to_json(tmp_path / "genotype.json")
    counts = {count_parameters(create_model("darts-cifar", 10, genotype=g, C=4, layers=3))
              for g in ("DARTS_V2", genotype, tmp_path / "genotype.json", str(tmp_path / "genotype.json"))}
    assert len(counts) == 1
    with pytest.raises(UserError, match="unknown genotype"):
        create_model("darts-cifar", 10, genotype="NO_SUCH_GENOTYPE")


def test_darts_drop_path_only_in_training() -> None:
    torch.manual_seed(0)
    model = create_model("darts-cifar", 10, C=4, layers=3)
    x = torch.randn(4, 3, 16, 16)
    reference = model(x)
    model.drop_path_prob = 0.5
    assert not torch.allclose(model(x), reference)
    model.eval()
    evaluated = model(x)
    model.drop_path_prob = 0.0
    assert torch.equal(model(x), evaluated)


def test_drop_path_drops_whole_samples_and_rescales() -> None:
    torch.manual_seed(0)
    out = drop_path(torch.ones(64, 2, 3, 3), 0.5)
    per_sample = out.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])
    assert set(per_sample[:, 0].tolist()) == {0.0, 2.0}
    x = torch.randn(2, 3)
    assert drop_path(x, 0.0) is x


@pytest.mark.parametrize("name, params, millions", [
    ("autodeeplab-s", 10_147_427, 10.15),
    ("autodeeplab-m", 21_622_451, 21.62),
    ("autodeeplab-l", 44_424_691, 44.42),
])
def test_autodeeplab_presets_reproduce_paper_counts(name: str, params: int, millions: float) -> None:
    model = create_model(name, 19)
    assert count_parameters(model) == params
    assert round(count_parameters(model) / 1e6, 2) == millions


def test_autodeeplab_paper_preset_structure() -> None:
    model = create_model("autodeeplab-paper", 19)
    assert count_parameters(model) == 10_147_427
    assert model.backbone.output_stride == 8
    assert [branch[0].dilation[0] for branch in model.head.aspp.branches[1:4]] == [12, 24, 36]
    assert model.backbone.low_level_channels == 5 * 20
    assert [cell.out_channels for cell in model.backbone.cells] == [5 * 20 * 2 ** s for s in model.backbone.path]
    assert all(bn.eps == BN_EPS and bn.momentum == BN_MOMENTUM and bn.affine
               for bn in model.modules() if isinstance(bn, nn.BatchNorm2d))
    biased = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert biased == ["head.classifier"]
    smaller = create_model("autodeeplab-paper", 19, filter_multiplier=8, bn_momentum=0.1, bn_eps=1e-5)
    assert count_parameters(smaller) < 10_147_427
    assert all(bn.eps == 1e-5 and bn.momentum == 0.1 for bn in smaller.modules() if isinstance(bn, nn.BatchNorm2d))


def test_aspp_rates_follow_output_stride() -> None:
    assert aspp_rates(8) == (12, 24, 36)
    assert aspp_rates(16) == (6, 12, 18)
    assert aspp_rates(32) == (3, 6, 9)
    assert aspp_rates(4) == (24, 48, 72)


def test_autodeeplab_ops_are_the_official_retrain_ops() -> None:
    for name in PRIMITIVES:
        build_op(name, 8, 2, family="autodeeplab")
    atrous = build_op("dil_conv_5x5", 8, 1, family="autodeeplab")
    assert count_parameters(atrous) == 5 * 5 * 8 * 8 + 2 * 8
    x = torch.randn(2, 8, 13, 10)
    assert atrous(x).shape == x.shape
    for name in ("dil_conv_3x3", "sep_conv_5x5", "skip_connect", "max_pool_3x3"):
        assert build_op(name, 8, 2, family="autodeeplab")(x).shape == (2, 8, 7, 5)
    sep = build_op("sep_conv_3x3", 8, 1, family="autodeeplab")
    assert count_parameters(sep) == 2 * (3 * 3 * 8 + 8 * 8 + 2 * 8)


@pytest.mark.parametrize("path", [
    [0, 0, 1, 2, 1, 0],
    [1, 2, 3, 3, 2, 1],
    [1, 0, 1],
    [0],
    [1],
])
@pytest.mark.parametrize("cell", [AUTODEEPLAB_CELL, SMALL_CELL], ids=["published", "small"])
def test_autodeeplab_from_arch_any_path_odd_sizes(path: list[int], cell: CellGenotype) -> None:
    torch.manual_seed(0)
    model = autodeeplab_from_arch({"path": path, "cell": cell.to_dict(), "filter_multiplier": 4}, 3)
    assert isinstance(model, AutoDeepLab)
    assert model.backbone.output_stride == 4 * 2 ** path[-1]
    blocks = cell.num_blocks
    assert [c.out_channels for c in model.backbone.cells] == [blocks * 4 * 2 ** s for s in path]
    assert model.backbone.low_level_channels == (blocks * 4 if 0 in path else 128)
    assert model(torch.randn(2, 3, 33, 47)).shape == (2, 3, 33, 47)


def test_autodeeplab_published_network_keeps_odd_input_size() -> None:
    model = create_model("autodeeplab-paper", 19, filter_multiplier=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 129)).shape == (1, 19, 97, 129)


def test_autodeeplab_from_arch_options_and_errors() -> None:
    arch = {"path": [0, 1], "cell": SMALL_CELL.to_dict(), "filter_multiplier": 4}
    assert autodeeplab_from_arch(arch, 3, filter_multiplier=6).backbone.cells[0].out_channels == 2 * 6
    assert autodeeplab_from_arch({"path": [0], "cell": SMALL_CELL}, 3).backbone.cells[0].out_channels == 2 * 20
    for bad_path in ([], [2, 3], [0, 2], [0, -1]):
        with pytest.raises(UserError, match="path"):
            autodeeplab_from_arch({**arch, "path": bad_path}, 3)
    with pytest.raises(UserError, match="lacks path"):
        autodeeplab_from_arch({"cell": arch["cell"]}, 3)
    with pytest.raises(UserError, match="cell genotype"):
        autodeeplab_from_arch({**arch, "cell": {"concat": [2]}}, 3)


def test_list_models_and_unknown_name() -> None:
    assert list_models("autodeeplab-?") == ["autodeeplab-l", "autodeeplab-m", "autodeeplab-s"]
    assert {"autodeeplab-paper", "darts-cifar"} <= set(list_models())
    with pytest.raises(UserError, match="known models: .*autodeeplab-s.*darts-cifar"):
        create_model("resnet-imaginary", 10)


def test_register_model_rejects_duplicates_and_smp_prefix() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("darts-cifar")(lambda num_classes: nn.Identity())
    with pytest.raises(ValueError, match="reserved"):
        register_model("smp:Mine:encoder")(lambda num_classes: nn.Identity())


def test_smp_baseline_any_input_size() -> None:
    torch.manual_seed(0)
    model = create_model("smp:DeepLabV3Plus:resnet18", 4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 47)).shape == (1, 4, 33, 47)


def test_smp_baseline_errors(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="not in the local Hugging Face cache"):
        create_model("smp:Unet:resnet18", 2, encoder_weights="imagenet")
    with pytest.raises(UserError, match="unknown smp architecture"):
        create_model("smp:NoSuchNet:resnet18", 2)
    with pytest.raises(UserError, match="unknown smp encoder"):
        create_model("smp:Unet:no-such-encoder", 2)
    with pytest.raises(UserError, match="must look like"):
        create_model("smp:Unet", 2)
