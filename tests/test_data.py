"""Tests of the data package: registry, loaders on fake trees in the real formats, transforms."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import CIFAR_FOLDER, write_fake_cifar10, write_fake_cityscapes, write_fake_folder
from PIL import Image
from torch.utils.data import DataLoader, Subset

from autoseg.data import build_dataset, dataset_num_classes, list_datasets, split_in_halves
from autoseg.data.cifar10 import CIFAR_MEAN, CIFAR_STD, Cutout
from autoseg.data.check import check_split
from autoseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, search_transform
from autoseg.utils.errors import UserError

# Label id -> train id, restated from docs/DESIGN.md §5 (independent of the library's table).
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                        24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def reference_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map label ids pixel by pixel with the table above; anything else becomes 255."""
    out = np.full(label_ids.shape, 255, dtype=np.int64)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        out[label_ids == label_id] = train_id
    return out


def unnormalise(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """A normalised 3xHxW tensor back to HxWx3 uint8 pixel values."""
    pixels = image.permute(1, 2, 0).numpy() * np.array(std) + np.array(mean)
    return np.round(pixels * 255).astype(np.int64)


# ----------------------------------------------------------------------------- registry


def test_registry_lists_the_builtin_datasets() -> None:
    assert list_datasets() == ["ade20k", "cifar10", "cityscapes", "folder", "shapes", "synthetic", "voc", "voc_aug"]


def test_unknown_dataset_lists_the_known_names() -> None:
    with pytest.raises(UserError, match="unknown dataset .kitti.*ade20k, cifar10, cityscapes, folder, shapes, synth"):
        build_dataset("kitti", None, "train")


def test_unknown_option_names_the_accepted_ones() -> None:
    with pytest.raises(UserError, match="does not take option.*cutout.*image_size"):
        build_dataset("synthetic", None, "train", cutout=16)


def test_num_classes_is_checked_against_fixed_datasets() -> None:
    assert dataset_num_classes("cityscapes") == 19
    assert dataset_num_classes("folder", 4) == 4
    assert len(build_dataset("synthetic", None, "val", augment=False, num_classes=6, length=2)) == 2
    with pytest.raises(UserError, match="has 19 classes but num_classes=5"):
        dataset_num_classes("cityscapes", 5)
    with pytest.raises(UserError, match="has 6 classes but num_classes=3"):
        build_dataset("synthetic", None, "train", num_classes=3)
    with pytest.raises(UserError, match="needs num_classes"):
        dataset_num_classes("folder")


# ----------------------------------------------------------------------------- transforms


def test_search_transform_resizes_masks_nearest_and_pads_with_ignore() -> None:
    image = np.full((20, 12, 3), 200, dtype=np.uint8)
    mask = np.zeros((20, 12), dtype=np.uint8)
    mask[:, 5:] = 3  # the boundary falls inside a downscaled pixel
    out_image, out_mask = search_transform(crop_size=16, scale=0.5)(image=image, mask=mask).values()
    assert out_image.shape == (3, 16, 16) and out_image.dtype == torch.float32
    assert out_mask.shape == (16, 16)
    assert set(np.unique(out_mask.numpy())) == {0, 3, 255}  # nearest: no blended ids; pad: 255
    padded = out_mask.numpy() == 255
    image_pad = unnormalise(out_image, IMAGENET_MEAN, IMAGENET_STD)[padded]
    assert np.all(image_pad == 0)
    assert np.all(unnormalise(out_image, IMAGENET_MEAN, IMAGENET_STD)[~padded] == 200)


# ----------------------------------------------------------------------------- cityscapes


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("cityscapes")
    return root, write_fake_cityscapes(root)


def test_cityscapes_masks_equal_the_reference_mapping(cityscapes_root: tuple[Path, dict[str, list[Path]]]) -> None:
    root, labels = cityscapes_root
    dataset = build_dataset("cityscapes", str(root), "train", augment=False)
    assert [label for _, label in dataset.samples] == labels["train"]
    seen_label_ids: set[int] = set()
    for index, (image_path, label_path) in enumerate(dataset.samples):
        image, mask = dataset[index]
        label_ids = np.asarray(Image.open(label_path))
        seen_label_ids |= set(np.unique(label_ids).tolist())
        assert mask.dtype == torch.int64 and mask.shape == label_ids.shape
        np.testing.assert_array_equal(mask.numpy(), reference_train_ids(label_ids))
        rgb = np.asarray(Image.open(image_path)).astype(np.int64)
        np.testing.assert_array_equal(unnormalise(image, IMAGENET_MEAN, IMAGENET_STD), rgb)
    assert seen_label_ids == set(range(34)) | {255}
    assert (dataset.num_classes, len(dataset.class_names), dataset.palette.shape) == (19, 19, (19, 3))
    assert dataset.class_names[0] == "road" and dataset.palette[0].tolist() == [128, 64, 128]


@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_cityscapes_augmented_samples_have_crop_shape_and_valid_ids(
    cityscapes_root: tuple[Path, dict[str, list[Path]]], kind: str
) -> None:
    root, _ = cityscapes_root
    # ``seed`` is a run-wide option: datasets read from disk take no seed and leave it out
    dataset = build_dataset("cityscapes", str(root), "train", crop_size=20, transform_kind=kind, seed=3)
    valid = set(range(19)) | {255}
    for index in range(len(dataset)):
        image, mask = dataset[index]
        assert image.shape == (3, 20, 20) and mask.shape == (20, 20) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= valid


def test_cityscapes_errors_name_what_is_missing(
    tmp_path: Path, cityscapes_root: tuple[Path, dict[str, list[Path]]]
) -> None:
    with pytest.raises(UserError, match=f"{tmp_path / 'nowhere'} not found.*cityscapes-dataset.com"):
        build_dataset("cityscapes", str(tmp_path / "nowhere"), "train")
    root, _ = cityscapes_root
    with pytest.raises(UserError, match=r"leftImg8bit/test not found.*registered download"):
        build_dataset("cityscapes", str(root), "test")
    write_fake_cityscapes(tmp_path, splits=("val",), cities=("lindau",), images_per_city=2)
    (tmp_path / "gtFine" / "val" / "lindau" / "lindau_000001_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(UserError, match="1 image.*no label file.*lindau_000001_000019_gtFine_labelIds.png"):
        build_dataset("cityscapes", str(tmp_path), "val")
    (tmp_path / "gtFine" / "val" / "lindau").rename(tmp_path / "moved")
    (tmp_path / "gtFine" / "val").rmdir()
    with pytest.raises(UserError, match=r"gtFine/val not found"):
        build_dataset("cityscapes", str(tmp_path), "val")


# ----------------------------------------------------------------------------- folder


def test_folder_loads_pairs_exactly(tmp_path: Path) -> None:
    stems = write_fake_folder(tmp_path, num_classes=4)
    assert check_split("folder", tmp_path, "train", 4).problems == []
    dataset = build_dataset("folder", str(tmp_path), "train", augment=False, num_classes=4)
    assert [image.stem for image, _ in dataset.samples] == stems["train"]
    assert dataset.class_names == ["class_0", "class_1", "class_2", "class_3"]
    assert dataset.palette.shape == (4, 3) and dataset.palette.dtype == np.uint8
    assert len({tuple(colour) for colour in dataset.palette.tolist()}) == 4
    for index, (_, mask_path) in enumerate(dataset.samples):
        image, mask = dataset[index]
        stored = np.asarray(Image.open(mask_path))
        assert image.shape == (3, *stored.shape)
        np.testing.assert_array_equal(mask.numpy(), stored)
    augmented = build_dataset("folder", str(tmp_path), "val", crop_size=24, num_classes=4, transform_kind="retrain")
    assert augmented[0][0].shape == (3, 24, 24)


def test_folder_reports_unmatched_stems_both_ways(tmp_path: Path) -> None:
    write_fake_folder(tmp_path, num_classes=3)
    masks = tmp_path / "train" / "masks"
    (masks / "train_000.png").unlink()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(masks / "orphan.png")
    with pytest.raises(UserError, match=r"2 problems in .*train \(autoseg check_data lists them all\): image "
                                         r".*train_000.png has no mask .*; mask .*orphan.png has no image"):
        build_dataset("folder", str(tmp_path), "train", num_classes=3, crop_size=8)


def _replace_mask(root: Path, stem: str, mask: np.ndarray) -> Path:
    path = root / "train" / "masks" / f"{stem}.png"
    Image.fromarray(mask).save(path)
    return path


@pytest.mark.parametrize(
    ("bad_mask", "message"),
    [
        (np.zeros((5, 5), dtype=np.uint8), r"is 5x5 \(HxW\) but image .*train_001.jpg is 32x24"),
        (np.full((32, 24), 2, dtype=np.uint8) + np.eye(32, 24, dtype=np.uint8) * 5,
         r"class id\(s\) 7 but num_classes=3"),
        (np.zeros((32, 24, 3), dtype=np.uint8), "has 3 channels: masks must be single-channel"),
    ],
    ids=["size-mismatch", "id-out-of-range", "multi-channel"],
)
def test_folder_rejects_bad_masks_when_loading_and_checking(tmp_path: Path, bad_mask: np.ndarray, message: str) -> None:
    write_fake_folder(tmp_path, num_classes=3)
    path = _replace_mask(tmp_path, "train_001", bad_mask)
    dataset = build_dataset("folder", str(tmp_path), "train", augment=False, num_classes=3)
    dataset[0]  # the other samples are fine
    with pytest.raises(UserError, match=message) as raised:
        dataset[1]
    assert str(path) in str(raised.value)
    assert check_split("folder", tmp_path, "train", 3).problems == [str(raised.value)]  # the check says the same


def test_folder_needs_num_classes_and_its_folders(tmp_path: Path) -> None:
    write_fake_folder(tmp_path, num_classes=3, splits=("train",))
    with pytest.raises(UserError, match="needs num_classes: set it in the config or pass --num-classes"):
        build_dataset("folder", str(tmp_path), "train")
    with pytest.raises(UserError, match=r"split folder .*val not found: create .*val/images and .*val/masks"):
        build_dataset("folder", str(tmp_path), "val", num_classes=3)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_per_seed_split_and_index() -> None:
    def sample(split: str, seed: int, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return build_dataset("synthetic", None, split, augment=False, seed=seed, image_size=48)[index]

    first_image, first_mask = sample("train", 0)
    again_image, again_mask = sample("train", 0)
    assert torch.equal(first_image, again_image) and torch.equal(first_mask, again_mask)
    for other in (sample("train", 1), sample("val", 0), sample("train", 0, index=1)):
        assert not torch.equal(first_image, other[0])


def test_synthetic_shapes_lengths_and_classes() -> None:
    train = build_dataset("synthetic", None, "train", augment=False, image_size=(48, 64))
    assert len(train) == 200 and len(build_dataset("synthetic", None, "val")) == 50
    present: set[int] = set()
    for index in range(5):
        image, mask = train[index]
        assert image.shape == (3, 48, 64) and image.dtype == torch.float32
        assert mask.shape == (48, 64) and mask.dtype == torch.int64
        present |= set(mask.unique().tolist())
    assert present == set(range(train.num_classes))  # every class, and no ignore pixel
    assert train.class_names == ["sky", "road", "building", "vegetation", "car", "person"]
    assert train.palette.shape == (6, 3) and train.ignore_index == 255
    image, mask = build_dataset("synthetic", None, "train", crop_size=32, seed=2)[0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
    with pytest.raises(IndexError):
        train[200]


def test_augmentation_is_a_function_of_seed_epoch_and_index() -> None:
    dataset = build_dataset("synthetic", None, "train", crop_size=24, image_size=64, transform_kind="retrain")
    in_process = [image for image, _ in DataLoader(Subset(dataset, [0, 1, 0]), batch_size=1)]
    in_workers = [image for image, _ in DataLoader(Subset(dataset, [0, 1, 0]), batch_size=1, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(in_process, in_workers))  # workers change nothing
    assert torch.equal(in_process[0], in_process[2])  # nor what was loaded before
    assert not torch.equal(in_process[0], in_process[1])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0][0], in_process[0][0])  # a new epoch draws new crops


# ----------------------------------------------------------------------------- shapes


def test_shapes_are_deterministic_and_told_apart_only_by_their_outline() -> None:
    from autoseg.data.shapes import AREA_RANGE, BACKGROUND, CLASS_NAMES

    train = build_dataset("shapes", None, "train", augment=False, image_size=64)
    assert len(train) == 200 and len(build_dataset("shapes", None, "val")) == 50
    assert train.class_names == CLASS_NAMES == ["background", "disc", "box", "triangle"] and train.num_classes == 4
    again = build_dataset("shapes", None, "train", augment=False, image_size=64)
    other_seed = build_dataset("shapes", None, "train", augment=False, image_size=64, seed=1)
    present: set[int] = set()
    for index in range(12):
        image, mask = train.load(index)
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
        assert all(np.array_equal(a, b) for a, b in zip((image, mask), again.load(index)))
        assert not np.array_equal(image, other_seed.load(index)[0])
        assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3}  # every pixel labelled, none ignored
        assert not mask[0].any() and not mask[-1].any() and not mask[:, 0].any() and not mask[:, -1].any()
        shapes = [c for c in np.unique(mask).tolist() if c != BACKGROUND]
        assert 1 <= len(shapes) <= 3
        for shape_class in shapes:  # large: at least one shape's area (less the rounding of its outline)
            assert AREA_RANGE[0] * 64 * 64 * 0.8 <= (mask == shape_class).sum()
        # one texture for every shape of an image: the classes' mean colours agree within a few grey levels
        foreground = [image[mask == c].mean(axis=0) for c in shapes]
        assert all(np.abs(f - foreground[0]).max() < 20 for f in foreground)
        present |= set(shapes)
    assert present == {1, 2, 3}
    tensor_image, tensor_mask = build_dataset("shapes", None, "train", crop_size=48, image_size=64,
                                              transform_kind="retrain")[0]
    assert tensor_image.shape == (3, 48, 48) and tensor_mask.shape == (48, 48)


def test_shapes_have_configs_and_pass_the_data_check(tool, capsys) -> None:
    from autoseg.cli import default_config
    from autoseg.config import RetrainConfig, SearchConfig, load_config

    assert load_config(default_config("search", "shapes"), SearchConfig).data.dataset == "shapes"
    assert load_config(default_config("retrain", "shapes"), RetrainConfig).data.dataset == "shapes"
    tool("check_data")(["--dataset", "shapes"])
    assert "shapes train: 200 sample(s), 0 problem(s); nothing to check beyond building it" in capsys.readouterr().out
    with pytest.raises(UserError, match="image_size 8 is too small for the shapes dataset"):
        build_dataset("shapes", None, "val", image_size=8)


# ----------------------------------------------------------------------------- cifar10


def test_cifar10_reads_the_pickle_format(tmp_path: Path) -> None:
    written = write_fake_cifar10(tmp_path, num_train=30, num_test=12)
    train = build_dataset("cifar10", str(tmp_path), "train")
    test = build_dataset("cifar10", str(tmp_path), "val", augment=False)
    assert (len(train), len(test)) == (30, 12)
    assert train.num_classes == 10 and train.class_names[0] == "airplane"
    image, label = train[7]
    assert image.shape == (3, 32, 32) and isinstance(label, int) and label == written["train"][1][7]
    image, label = test[5]
    assert label == written["test"][1][5]
    np.testing.assert_array_equal(unnormalise(image, CIFAR_MEAN, CIFAR_STD), written["test"][0][5])


def test_cifar10_missing_files_say_where_to_get_them(tmp_path: Path) -> None:
    expected = (f"CIFAR-10 not found in {tmp_path / CIFAR_FOLDER}: download and extract cifar-10-python.tar.gz "
                f"from https://www.cs.toronto.edu/~kriz/cifar.html into {tmp_path}")
    with pytest.raises(UserError, match=expected):
        build_dataset("cifar10", str(tmp_path), "train")
    write_fake_cifar10(tmp_path, num_train=10, num_test=2)
    (tmp_path / CIFAR_FOLDER / "data_batch_3").unlink()
    with pytest.raises(UserError, match="missing data_batch_3"):
        build_dataset("cifar10", str(tmp_path), "test")
    with pytest.raises(UserError, match="unknown CIFAR-10 split 'dev'"):
        build_dataset("cifar10", str(tmp_path), "dev")


def test_cutout_zeroes_one_square() -> None:
    torch.manual_seed(0)
    out = Cutout(16)(torch.ones(3, 32, 32))
    zeroed = (out == 0).all(dim=0)
    rows, cols = zeroed.any(dim=1).sum().item(), zeroed.any(dim=0).sum().item()
    assert 8 <= rows <= 16 and 8 <= cols <= 16 and zeroed.sum().item() == rows * cols


# ----------------------------------------------------------------------------- split_in_halves


def test_split_in_halves_is_disjoint_covering_and_seeded() -> None:
    dataset = list(range(11))
    half_a, half_b = split_in_halves(dataset, seed=3)  # type: ignore[arg-type]
    assert (len(half_a), len(half_b)) == (6, 5)
    assert sorted(half_a.indices + half_b.indices) == dataset
    assert split_in_halves(dataset, seed=3)[0].indices == half_a.indices  # type: ignore[arg-type]
    assert split_in_halves(dataset, seed=4)[0].indices != half_a.indices  # type: ignore[arg-type]
    with pytest.raises(UserError, match="at least 2"):
        split_in_halves([0], seed=0)  # type: ignore[arg-type]


def test_write_sample_images_writes_the_test_scenes(tmp_path) -> None:
    from PIL import Image

    from autoseg.data.synthetic import SyntheticStreetDataset, write_sample_images
    paths = write_sample_images(tmp_path, 3, image_size=40)
    assert [p.name for p in paths] == ["scene_000.png", "scene_001.png", "scene_002.png"]
    expected, _ = SyntheticStreetDataset(split="test", augment=False, image_size=40, length=3).load(2)
    assert np.array_equal(np.asarray(Image.open(paths[2]).convert("RGB")), expected)
