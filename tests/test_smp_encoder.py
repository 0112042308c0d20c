"""The decoded Auto-DeepLab backbone as a segmentation_models_pytorch encoder: feature strides,
channels and contents, every smp decoder that takes it, parameter counts, and retrain.py."""
from __future__ import annotations

import json
from typing import Iterator

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from autoseg.engine.trained import load_trained_model
from autoseg.utils.errors import UserError
from autoseg.space.genotype import GENOTYPES
from autoseg.space.genotype import AUTODEEPLAB_CELL
from autoseg.models import count_parameters, create_model
from autoseg.models.autodeeplab import AutoDeepLabBackbone, autodeeplab_s
from autoseg.models.smp_encoder import AutoDeepLabEncoder, register_autodeeplab_encoder

TINY_CELL = {"blocks": [[["sep_conv_3x3", 0], ["dil_conv_3x3", 1]], [["skip_connect", 2], ["sep_conv_5x5", 1]]],
             "concat": [2, 3]}
AUTODEEPLAB_S_BACKBONE = 7_030_832
"""Parameters of the Auto-DeepLab-S backbone (F = 20): the model's 10,147,427 without its head."""


@pytest.fixture(autouse=True)
def _small_cpu_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Without oneDNN (it compiles kernels for each new conv shape) and on one thread: tiny convs."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _encoder(path, depth=5, output_stride=32) -> AutoDeepLabEncoder:
    torch.manual_seed(0)
    return AutoDeepLabEncoder(path, TINY_CELL, 2, depth=depth, output_stride=output_stride).eval()


@torch.no_grad()
def test_features_are_the_last_cell_of_each_level_at_smps_strides():
    path = [0, 1, 2, 1, 0, 1]  # ends at stride 8, never goes deeper than 16
    encoder = _encoder(path)
    x = torch.randn(2, 3, 64, 96)
    features = encoder(x)
    assert [tuple(f.shape[-2:]) for f in features] == [(64 // 2 ** k, 96 // 2 ** k) for k in range(6)]
    assert [f.shape[1] for f in features] == encoder.out_channels == [3, 64, 4, 8, 16, 16]  # 2 blocks of F * 2**s
    assert features[0] is x
    low_level, final = encoder.backbone(x)  # the backbone's own outputs: last level-0 cell, ReLU of the last cell
    assert torch.equal(features[2], F.relu(low_level)) and torch.equal(features[3], final)
    cells = []
    encoder.backbone.cells[2].register_forward_hook(lambda module, inputs, output: cells.append(output))
    encoder(x)
    assert torch.equal(features[4], F.relu(cells[0]))  # the only level-2 cell
    # Strides the path never reaches: the deepest features, average-pooled.
    assert torch.allclose(features[5], F.avg_pool2d(features[4], 2))


@torch.no_grad()
def test_odd_sizes_round_up_and_a_path_without_level_0_uses_the_stem():
    encoder = _encoder([1, 1, 2])
    features = encoder(torch.randn(1, 3, 37, 45))
    assert [tuple(f.shape[-2:]) for f in features] == [(37, 45), (19, 23), (10, 12), (5, 6), (3, 3), (2, 2)]
    assert encoder.out_channels[2] == 128  # the stem's stride-4 output


@torch.no_grad()
def test_output_stride_of_deeplab_decoders_gives_the_final_output_at_that_stride():
    path = [0, 1, 2, 3, 2, 1]  # reaches stride 32, ends at stride 8 like the published path
    for output_stride in (8, 16):
        encoder = _encoder(path, output_stride=output_stride)
        x = torch.randn(1, 3, 64, 64)
        features = encoder(x)
        _, final = encoder.backbone(x)
        assert encoder.output_stride == output_stride
        assert [tuple(f.shape[-2:]) for f in features] == [(64 // min(2 ** k, output_stride),) * 2 for k in range(6)]
        assert [f.shape[1] for f in features] == encoder.out_channels
        expected = final if output_stride == 8 else F.avg_pool2d(final, 2)
        assert torch.allclose(features[-1], expected)
    with pytest.raises(ValueError, match="16 or 8"):
        _encoder(path, output_stride=4)


@pytest.mark.parametrize("decoder,options", [("Unet", {}), ("FPN", {}), ("DeepLabV3Plus", {"encoder_output_stride": 8}),
                                             ("DeepLabV3Plus", {"encoder_output_stride": 16}),
                                             ("Unet", {"encoder_depth": 4, "decoder_channels": (64, 32, 16, 8)}),
                                             ("DeepLabV3Plus", {"encoder_depth": 3})])
@torch.no_grad()
def test_smp_decoders_build_on_a_searched_backbone(decoder, options):
    name = register_autodeeplab_encoder({"path": [0, 1, 2, 1], "cell": TINY_CELL, "filter_multiplier": 2})
    assert name == register_autodeeplab_encoder({"path": [0, 1, 2, 1], "cell": TINY_CELL, "filter_multiplier": 2})
    torch.manual_seed(0)
    model = smp.create_model(decoder, encoder_name=name, encoder_weights=None, classes=5, **options).eval()
    assert model(torch.randn(2, 3, 64, 96)).shape == (2, 5, 64, 96)
    backbone = AutoDeepLabBackbone([0, 1, 2, 1], AUTODEEPLAB_CELL.from_dict(TINY_CELL), 2)
    assert count_parameters(model.encoder) == count_parameters(backbone)
    assert count_parameters(model) > count_parameters(model.encoder)


def test_the_published_backbones_are_registered_with_the_papers_parameter_count():
    model = smp.create_model("DeepLabV3Plus", encoder_name="autodeeplab-s", encoder_weights=None, classes=19,
                             encoder_output_stride=8)
    assert count_parameters(model.encoder) == AUTODEEPLAB_S_BACKBONE
    # The same parameters as autoseg's own Auto-DeepLab-S backbone: its weights load as they are.
    model.encoder.backbone.load_state_dict(autodeeplab_s(19).backbone.state_dict())
    unet = smp.create_model("Unet", encoder_name="autodeeplab-m", encoder_weights=None, in_channels=1, classes=2)
    assert unet.encoder.backbone.stem.conv0[0].in_channels == 1


def test_depth_must_reach_the_last_cell_and_names_are_checked():
    with pytest.raises(UserError, match="encoder_depth must be between 4 and 5.*stride 16"):
        _encoder([0, 1, 2], depth=3)
    register_autodeeplab_encoder({"path": [0, 1], "cell": TINY_CELL}, name="autodeeplab-test-tiny")
    with pytest.raises(UserError, match="already registered with other settings"):
        register_autodeeplab_encoder({"path": [0, 1, 1], "cell": TINY_CELL}, name="autodeeplab-test-tiny")
    with pytest.raises(UserError, match="fixed filter multiplier"):
        create_model("smp:Unet:autodeeplab-s", 3, filter_multiplier=4)
    with pytest.raises(UserError, match="unknown Auto-DeepLab encoder"):
        create_model("smp:Unet:autodeeplab-xl", 3)
    with pytest.raises(UserError, match="needs the searched architecture"):
        create_model("smp:Unet:autodeeplab-arch", 3)


def _arch_file(tmp_path, path):
    file = tmp_path / "arch.json"
    file.write_text(json.dumps({"path": path, "cell": TINY_CELL, "filter_multiplier": 8}))
    return file


def test_retrain_dry_runs_smp_decoders_on_published_and_searched_backbones(tool, capsys, tmp_path):
    file = _arch_file(tmp_path, [0, 1, 2, 1])
    for arch, name in (("smp:Unet:autodeeplab-paper", "smp:Unet:autodeeplab-paper"),
                       (f"smp:FPN:{file}", "smp:FPN:autodeeplab-arch")):
        tool("retrain")(["--dataset", "synthetic", "--arch", arch, "--dry-run"])  # F = 4, bn momentum 0.1
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["model"] == name and summary["num_classes"] == 6
        spec_arch = {"arch": json.loads(file.read_text())} if "arch" in name else {}
        built = create_model(name, 6, filter_multiplier=4, bn_momentum=0.1, **spec_arch)
        assert summary["params"] == count_parameters(built)
    with pytest.raises(UserError, match="not an arch.json"):
        GENOTYPES["DARTS_V2"].to_json(tmp_path / "genotype.json")
        tool("retrain")(["--dataset", "synthetic", "--arch", f"smp:FPN:{tmp_path / 'genotype.json'}", "--dry-run"])


def test_a_retrained_smp_model_on_a_searched_backbone_reloads_from_its_checkpoint(tool, tmp_path):
    file = _arch_file(tmp_path, [0, 1, 1])
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({"data": {"dataset": "synthetic", "image_size": 32, "crop_size": 32,
                                           "train_length": 4, "val_length": 2, "batch_size": 2,
                                           "eval_batch_size": 2, "scale_range": [1.0, 1.0]},
                                  "model": {"arch": f"smp:FPN:{file}", "filter_multiplier": 2, "bn_momentum": 0.1},
                                  "train": {"iterations": 1, "device": "cpu"}}))
    tool("retrain")(["--config", str(config), "--out", str(tmp_path / "run")])
    file.unlink()  # the checkpoint carries the architecture
    model, meta, _ = load_trained_model(tmp_path / "run")
    assert meta.model_spec["name"] == "smp:FPN:autodeeplab-arch"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 47)).shape == (1, 6, 33, 47)
