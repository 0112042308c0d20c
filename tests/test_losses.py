"""autoseg.losses: the ignore label in every loss, OHEM against a by-hand selection, median-frequency
weights against a hand count, and the loss section of a retrain run."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_config
from torch import nn

from autoseg import losses
from autoseg.config import LossConfig, RetrainConfig, from_dict, load_config
from autoseg.utils.errors import UserError
from autoseg.losses import OhemCrossEntropy, build_loss, resolve_class_weights, training_criterion

CLASSES = 4
WEIGHTS = [0.5, 2.0, 1.0, 1.5]


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (2, 4, 6, 7) and targets with every class and about a quarter of pixels ignored."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, CLASSES, 6, 7, generator=generator) * 2
    target = torch.randint(0, CLASSES, (2, 6, 7), generator=generator)
    target[torch.rand(2, 6, 7, generator=generator) < 0.25] = 255
    target[0, 0, :CLASSES] = torch.arange(CLASSES)
    return logits, target


def _loss_and_gradient(loss: nn.Module, logits: torch.Tensor, target: torch.Tensor):
    logits = logits.clone().requires_grad_(True)
    value = loss(logits, target)
    value.backward()
    return value.detach(), logits.grad


def test_ce_is_exactly_torch_cross_entropy_with_ignore_index():
    logits, target = _batch()
    loss = build_loss(LossConfig(), CLASSES)
    assert type(loss) is nn.CrossEntropyLoss and loss.ignore_index == 255 and loss.weight is None
    assert torch.equal(loss(logits, target), nn.CrossEntropyLoss(ignore_index=255)(logits, target))
    weighted = build_loss(LossConfig(), CLASSES, class_weights=WEIGHTS)
    expected = nn.CrossEntropyLoss(weight=torch.tensor(WEIGHTS), ignore_index=255)(logits, target)
    assert torch.equal(weighted(logits, target), expected)


def _by_hand_ohem(logits, target, threshold, min_kept, weights=None):
    """Per pixel: cross-entropy and true-class probability; keep the labelled pixels below the
    threshold, or the min_kept of lowest probability; weighted mean of their cross-entropy."""
    probability = logits.softmax(1)
    kept, values, pixel_weights = [], [], []
    for n, y, x in np.ndindex(*target.shape):
        label = int(target[n, y, x])
        if label == 255:
            continue
        p = float(probability[n, label, y, x])
        ce = -float(torch.log_softmax(logits[n, :, y, x], 0)[label])
        kept.append(p)
        values.append(ce)
        pixel_weights.append(1.0 if weights is None else weights[label])
    order = np.argsort(kept, kind="stable")
    below = [i for i in order if kept[i] < threshold]
    chosen = below if len(below) >= min_kept else list(order[:min_kept])
    total = sum(pixel_weights[i] * values[i] for i in chosen)
    return total / sum(pixel_weights[i] for i in chosen), len(chosen)


@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_ohem_keeps_the_hard_pixels_and_at_least_min_kept(weights):
    logits, target = _batch(1)
    labelled = int((target != 255).sum())
    cross_entropy = nn.CrossEntropyLoss(weight=None if weights is None else torch.tensor(weights), ignore_index=255)
    everything = OhemCrossEntropy(threshold=1.0, min_kept=0, weight=None if weights is None else torch.tensor(weights))
    assert int(everything.kept(logits, target).sum()) == labelled
    assert torch.allclose(everything(logits, target), cross_entropy(logits, target), rtol=1e-6)
    for threshold, min_kept in ((0.3, 5), (0.3, 40), (1e-9, 17), (0.7, labelled + 10)):
        ohem = OhemCrossEntropy(threshold, min_kept, weight=None if weights is None else torch.tensor(weights))
        expected, count = _by_hand_ohem(logits, target, threshold, min_kept, weights)
        kept = ohem.kept(logits, target)
        assert int(kept.sum()) == count >= min(min_kept, labelled)
        assert not kept[target == 255].any()
        assert ohem(logits, target).item() == pytest.approx(expected, rel=1e-5)


class _Masks(torch.utils.data.Dataset):
    """A stand-in segmentation dataset that only has masks."""

    def __init__(self, masks):
        self.masks = [np.array(mask, dtype=np.uint8) for mask in masks]

    def __len__(self):
        return len(self.masks)

    def load_mask(self, index):
        return self.masks[index]


MASKS = [[[0, 0, 1], [1, 255, 255]], [[0, 2], [2, 2]]]


def test_median_frequency_weights_match_a_hand_count():
    # class 0: 3 pixels in images of 6 + 4 pixels -> 0.3; class 1: 2 / 6; class 2: 3 / 4; class 3 absent.
    frequencies = [0.3, 2 / 6, 3 / 4]
    median = 2 / 6
    weights = losses.median_frequency_weights(_Masks(MASKS), 4)
    assert np.allclose(weights, [median / f for f in frequencies] + [0.0])


def test_median_frequency_weights_are_cached_in_the_run_directory(tmp_path, monkeypatch):
    config = LossConfig(class_weights="median_frequency")
    first = resolve_class_weights(config, _Masks(MASKS), 4, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "class_weights.json").read_text())["weights"] == first

    def fail(*args):
        raise AssertionError("the cached weights must be read back, not recomputed")

    monkeypatch.setattr(losses, "median_frequency_weights", fail)
    assert resolve_class_weights(config, _Masks(MASKS), 4, tmp_path / "run") == first
    assert resolve_class_weights(LossConfig(class_weights=WEIGHTS), None, 4) == WEIGHTS
    assert resolve_class_weights(LossConfig(), None, 4) is None


def test_loss_config_and_bad_settings_are_user_errors():
    config = from_dict(RetrainConfig, {"loss": {"name": "ohem", "class_weights": "median_frequency",
                                                "options": {"threshold": 0.6, "min_kept": 1000}}})
    assert config.loss == LossConfig("ohem", {"threshold": 0.6, "min_kept": 1000}, "median_frequency")
    assert losses.loss_options(config.loss) == losses.OhemOptions(threshold=0.6, min_kept=1000)
    assert from_dict(RetrainConfig, {"loss": {"class_weights": [1, 2]}}).loss.class_weights == [1.0, 2.0]
    with pytest.raises(UserError, match="unknown key"):
        from_dict(RetrainConfig, {"loss": {"gamma": 2}})
    with pytest.raises(UserError, match="unknown loss.name 'iou'"):
        build_loss(LossConfig(name="iou"), CLASSES)
    with pytest.raises(UserError, match="4 non-negative numbers"):
        build_loss(LossConfig(), CLASSES, class_weights=[1.0, 2.0])
    with pytest.raises(UserError, match="lovasz loss takes no class weights"):
        build_loss(LossConfig(name="lovasz"), CLASSES, class_weights=WEIGHTS)
    with pytest.raises(UserError, match="must be null, a list"):
        resolve_class_weights(LossConfig(class_weights="inverse"), None, CLASSES)
    with pytest.raises(UserError, match="applies to segmentation"):
        training_criterion(LossConfig(name="dice"), "classification", None, 10)
    assert type(training_criterion(LossConfig(), "classification", None, 10)) is nn.CrossEntropyLoss


@pytest.mark.parametrize("loss,message", [
    ({"name": "ohem", "options": {"threshold": 0.0}}, r"loss.options.threshold must be in \(0, 1\], got 0.0"),
    ({"name": "ohem", "options": {"min_kept": -1}}, "loss.options.min_kept must be at least 0, got -1"),
    ({"name": "ohem", "options": {"min_kept": 2.5}}, "loss.options.min_kept must be an integer, got 2.5"),
    ({"name": "focal", "options": {"threshold": 0.5}}, "unknown key.*threshold in loss.options; valid keys: gamma"),
    ({"name": "ce", "options": {"gamma": 2.0}}, "unknown key.*gamma in loss.options"),
    ({"name": "lovasz", "class_weights": "median_frequency"}, "lovasz loss takes no class weights"),
    ({"name": "iou"}, "unknown loss.name 'iou': choose one of ce, ohem, dice, focal, lovasz"),
])
def test_bad_loss_options_are_one_line_errors_before_the_run_directory(tool, tmp_path, loss, message):
    config = write_config(tmp_path / "bad.yaml", "retrain/synthetic", loss=loss)
    with pytest.raises(UserError, match=message) as error:
        tool("retrain")(["--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()


def test_flat_loss_settings_of_earlier_configs_and_saved_runs_become_the_loss_options(tmp_path):
    # a saved run's config.yaml held every flat key; those of the other losses never had an effect
    saved = {"class_weights": None, "ohem_threshold": 0.6, "ohem_min_kept": 500, "focal_gamma": 3.0}
    assert from_dict(LossConfig, {"name": "ohem", **saved}) == LossConfig("ohem", {"threshold": 0.6, "min_kept": 500})
    assert from_dict(LossConfig, {"name": "focal", **saved}) == LossConfig("focal", {"gamma": 3.0})
    assert from_dict(LossConfig, saved) == LossConfig("ce", {})
    resumed = load_config(write_config(tmp_path / "config.yaml", "retrain/synthetic", loss={"name": "ohem", **saved}),
                          RetrainConfig)  # how --resume reads a run directory's config.yaml
    assert resumed.loss == LossConfig("ohem", {"threshold": 0.6, "min_kept": 500})
    assert losses.loss_options(from_dict(LossConfig, {"name": "focal", **saved})).gamma == 3.0
    with pytest.raises(UserError, match="sets gamma twice, as focal_gamma and as options.gamma"):
        from_dict(LossConfig, {"name": "focal", "focal_gamma": 1.0, "options": {"gamma": 2.0}})


def test_focal_loss_with_gamma_zero_is_one_vs_rest_binary_cross_entropy():
    logits, target = _batch(2)
    focal = build_loss(LossConfig(name="focal", options={"gamma": 0.0}), CLASSES)
    labelled = target != 255
    per_class = [F.binary_cross_entropy_with_logits(logits[:, c][labelled], (target[labelled] == c).float())
                 for c in range(CLASSES)]
    assert focal(logits, target).item() == pytest.approx(torch.stack(per_class).mean().item(), rel=1e-5)


def test_retrain_with_ohem_and_median_frequency_weights(tool, tmp_path):
    config = write_config(tmp_path / "ohem.yaml", "retrain/synthetic",
                          data={"image_size": 32, "crop_size": 32, "train_length": 8, "val_length": 2,
                                "batch_size": 4, "eval_batch_size": 2},
                          model={"filter_multiplier": 2}, train={"epochs": 1},
                          loss={"name": "ohem", "class_weights": "median_frequency", "options": {"min_kept": 256}})
    record = tool("retrain")(["--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"])
    weights = json.loads((tmp_path / "run" / "class_weights.json").read_text())["weights"]
    assert len(weights) == 6 and all(w > 0 for w in weights)
    assert np.isfinite(record["train"]["loss"]) and np.isfinite(record["valid"]["loss"])
