"""PASCAL VOC 2012 (official and SBD-augmented) and ADE20K loaders on tiny trees written in the
official layouts; their configs; their class names and palettes in evaluate.py and predict.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, write_config
from fakes import write_fake_ade20k, write_fake_voc
from PIL import Image

from autoseg.config import RetrainConfig, SearchConfig, load_config
from autoseg.data import build_dataset, dataset_num_classes
from autoseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from autoseg.utils.errors import UserError

# The devkit's colours of a few classes, restated from VOClabelcolormap.m's output.
VOC_COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 15: (192, 128, 128), 20: (0, 64, 128)}


def _pixels(image: torch.Tensor) -> np.ndarray:
    """A normalised 3xHxW tensor back to HxWx3 pixel values."""
    return np.round((image.permute(1, 2, 0).numpy() * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255)


def _assert_sample(sample: tuple[torch.Tensor, torch.Tensor], image: np.ndarray, mask: np.ndarray) -> None:
    """The loader's image decodes to the file's pixels (within JPEG decoders' rounding) and its
    mask equals ``mask`` exactly."""
    loaded_image, loaded_mask = sample
    assert loaded_mask.dtype == torch.int64 and np.array_equal(loaded_mask.numpy(), mask)
    assert np.abs(_pixels(loaded_image) - image).max() <= 2


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("voc")
    written = write_fake_voc(root, splits={"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"],
                                           "trainval": ["2007_000032", "2007_000039", "2007_000033"]},
                             train_aug=["2007_000039", "2008_000002", "2007_000032"])
    return root, written


def test_voc_reads_the_listed_images_and_palette_masks(voc_root):
    root, written = voc_root
    voc = root / "VOCdevkit" / "VOC2012"
    with Image.open(voc / "SegmentationClass" / "2007_000032.png") as stored:
        assert stored.mode == "P"
    for split, names in (("train", ["2007_000032", "2007_000039"]), ("val", ["2007_000033"]),
                         ("trainval", ["2007_000032", "2007_000039", "2007_000033"])):
        dataset = build_dataset("voc", str(voc), split, augment=False)
        assert len(dataset) == len(names)
        for index, name in enumerate(names):
            _assert_sample(dataset[index], *written["official"][name])
    mask = written["official"]["2007_000032"][1]
    assert {0, 20, 255} <= set(np.unique(mask).tolist())  # borders stay 255: the ignore id


def test_voc_class_names_palette_and_root_variants(voc_root):
    root, _ = voc_root
    assert dataset_num_classes("voc") == dataset_num_classes("voc_aug") == 21
    for given in (root, root / "VOCdevkit", root / "VOCdevkit" / "VOC2012"):
        dataset = build_dataset("voc", str(given), "val", augment=False)
        assert len(dataset) == 1
    assert dataset.class_names[0] == "background" and dataset.class_names[15] == "person"
    assert dataset.class_names[-1] == "tvmonitor" and len(dataset.class_names) == 21
    for class_id, colour in VOC_COLOURS.items():
        assert tuple(dataset.palette[class_id]) == colour


def test_voc_aug_trains_on_the_augmented_list_and_validates_on_the_official_val(voc_root):
    root, written = voc_root
    train = build_dataset("voc_aug", str(root), "train", augment=False)
    names = ["2007_000039", "2008_000002", "2007_000032"]
    assert len(train) == 3
    for index, name in enumerate(names):
        _assert_sample(train[index], *written["aug"][name])
        assert np.array_equal(train.load_mask(index), written["aug"][name][1])
    val = build_dataset("voc_aug", str(root), "val", augment=False)
    _assert_sample(val[0], *written["official"]["2007_000033"])
    assert len(build_dataset("voc", str(root), "train", augment=False)) == 2  # the official list


def test_voc_augmented_samples_have_the_crop_shape_and_valid_ids(voc_root):
    root, _ = voc_root
    dataset = build_dataset("voc_aug", str(root), "train", augment=True, transform_kind="retrain", crop_size=16)
    for index in range(len(dataset)):
        image, mask = dataset[index]
        assert image.shape == (3, 16, 16) and mask.shape == (16, 16)
        assert set(np.unique(mask.numpy()).tolist()) <= set(range(21)) | {255}


def test_voc_errors_name_what_is_missing_or_wrong(tmp_path):
    write_fake_voc(tmp_path, splits={"train": ["a"], "val": ["b"]})
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    with pytest.raises(UserError, match="needs a root folder"):
        build_dataset("voc", None, "train")
    with pytest.raises(UserError, match="no JPEGImages/ folder"):
        build_dataset("voc", str(tmp_path / "elsewhere"), "train")
    with pytest.raises(UserError, match="lists there are: train, val"):
        build_dataset("voc", str(voc), "test")
    with pytest.raises(UserError, match="train_aug.txt not found"):
        build_dataset("voc_aug", str(voc), "train")
    bad = np.full((18, 30), 3, dtype=np.uint8)
    bad[2, 2] = 30
    Image.fromarray(bad).save(voc / "SegmentationClass" / "b.png")
    with pytest.raises(UserError, match="holds class id.*30"):
        build_dataset("voc", str(voc), "val", augment=False)[0]
    Image.fromarray(np.zeros((18, 30, 3), np.uint8)).save(voc / "SegmentationClass" / "b.png")
    with pytest.raises(UserError, match="3 channels"):
        build_dataset("voc", str(voc), "val", augment=False)[0]
    (voc / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(UserError, match="1 file.*are missing, e.g. .*a.jpg"):
        build_dataset("voc", str(voc), "train")


@pytest.mark.parametrize("listed", ["../../../outside", "/etc/passwd", "sub\\..\\x"])
def test_a_voc_list_naming_paths_outside_the_dataset_is_refused(tmp_path, listed):
    write_fake_voc(tmp_path, splits={"train": ["a"], "val": ["b"]})
    lists = tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text(f"a\n{listed}\n")
    with pytest.raises(UserError, match=r"holds 1 id\(s\) that are paths, e.g. .*by their id alone"):
        build_dataset("voc", str(tmp_path), "train")


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ade")
    return root, write_fake_ade20k(root)


def test_ade20k_maps_other_to_ignore_and_classes_down_by_one(ade_root):
    root, written = ade_root
    for split, folder in (("train", "training"), ("val", "validation"), ("validation", "validation")):
        dataset = build_dataset("ade20k", str(root), split, augment=False)
        assert len(dataset) == len(written[folder])
        for index, (_, image, stored) in enumerate(written[folder]):
            expected = np.where(stored == 0, 255, stored.astype(np.int64) - 1)
            _assert_sample(dataset[index], image, expected)
    assert {0, 148, 149, 255} <= set(np.unique(dataset.load_mask(0)).tolist())
    assert dataset_num_classes("ade20k") == 150 == len(dataset.class_names) == len(dataset.palette)
    assert dataset.class_names[:3] == ["wall", "building", "sky"] and dataset.class_names[-1] == "flag"
    assert len({tuple(colour) for colour in dataset.palette}) > 100  # distinct colours
    assert len(build_dataset("ade20k", str(root / "ADEChallengeData2016"), "train", augment=False)) == 3


def test_ade20k_errors_name_what_is_wrong(tmp_path):
    written = write_fake_ade20k(tmp_path, counts={"training": 2})
    base = tmp_path / "ADEChallengeData2016"
    with pytest.raises(UserError, match="splits train and val"):
        build_dataset("ade20k", str(tmp_path), "test")
    with pytest.raises(UserError, match="no \\*.jpg images"):
        build_dataset("ade20k", str(tmp_path), "val")
    stem = written["training"][0][0]
    Image.fromarray(np.full((20, 24), 151, np.uint8)).save(base / "annotations" / "training" / f"{stem}.png")
    with pytest.raises(UserError, match="values above 150"):
        build_dataset("ade20k", str(tmp_path), "train", augment=False)[0]
    (base / "annotations" / "training" / f"{stem}.png").unlink()
    with pytest.raises(UserError, match="annotation.*of training images are missing"):
        build_dataset("ade20k", str(tmp_path), "train")


@pytest.mark.parametrize("name", ["voc", "ade20k"])
def test_configs_of_the_new_datasets_load_and_size_the_model(tool, capsys, name):
    load_config(ROOT / "configs" / "search" / f"{name}.yaml", SearchConfig)
    config = load_config(ROOT / "configs" / "retrain" / f"{name}.yaml", RetrainConfig)
    assert config.data.crop_size == 513 and config.loss.name == "ce"
    tool("retrain")(["--dataset", name, "--dry-run"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_classes"] == {"voc": 21, "ade20k": 150}[name]


def test_a_voc_model_carries_the_voc_names_and_palette_into_evaluate_and_predict(tool, voc_root, tmp_path):
    root, written = voc_root
    config = write_config(tmp_path / "voc.yaml", "retrain/voc",
                          data={"root": str(root), "crop_size": 16, "batch_size": 2, "num_workers": 0},
                          model={"arch": "autodeeplab-paper", "filter_multiplier": 2, "bn_momentum": 0.1},
                          train={"iterations": 1, "device": "cpu"})
    tool("retrain")(["--config", str(config), "--out", str(tmp_path / "run")])
    result = tool("evaluate")([str(tmp_path / "run"), "--device", "cpu"])
    assert result["dataset"] == "voc_aug" and list(result["iou"]) == build_dataset("voc", str(root), "val").class_names
    image = tmp_path / "photo.png"
    Image.fromarray(written["official"]["2007_000033"][0]).save(image)
    tool("predict")([str(tmp_path / "run"), str(image), "--out", str(tmp_path / "out"), "--device", "cpu"])
    with Image.open(tmp_path / "out" / "photo_mask.png") as stored:
        colours = {tuple(c) for c in np.asarray(stored.convert("RGB")).reshape(-1, 3)}
    from autoseg.data.voc import PALETTE
    assert colours <= {tuple(c) for c in PALETTE.tolist()}
