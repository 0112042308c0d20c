"""The pre-flight data check: every bad file at once, cached by path, size and mtime, and the
training tools refusing to start on bad data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRELLIS, load_tool, write_config
from fakes import write_fake_ade20k, write_fake_cityscapes, write_fake_folder, write_fake_voc
from PIL import Image

from autoseg.cli import run_tool
from autoseg.data import build_dataset, check, dataset_task, list_datasets
from autoseg.data.check import CACHE_NAME, LAYOUTS, WITHOUT_FILES, cache_file, check_dataset, check_split
from autoseg.data.folder import read_image
from autoseg.utils.errors import UserError

SIZES = ((20, 30), (32, 24), (16, 16), (18, 22), (24, 20), (16, 24))  # train_000 .. train_005; odd ones are JPEGs


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_bad_folder(root: Path) -> dict[str, Path]:
    """A folder dataset (3 classes) with one problem per file named in the returned dict."""
    write_fake_folder(root, num_classes=3, sizes=SIZES, splits=("train",))
    images, masks = root / "train" / "images", root / "train" / "masks"
    bad = {"corrupt image": images / "train_000.png", "truncated image": images / "train_002.png",
           "mask of the wrong size": masks / "train_001.png", "class id out of range": masks / "train_003.png",
           "colour mask": masks / "train_004.png", "image without a mask": images / "train_005.jpg",
           "mask without an image": masks / "orphan.png"}
    bad["corrupt image"].write_bytes(b"this is no PNG")
    _truncate(bad["truncated image"])
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(bad["mask of the wrong size"])
    Image.fromarray(np.full((18, 22), 7, dtype=np.uint8)).save(bad["class id out of range"])
    Image.fromarray(np.zeros((24, 20, 3), dtype=np.uint8)).save(bad["colour mask"])
    (masks / "train_005.png").unlink()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(bad["mask without an image"])
    return bad


def test_folder_check_lists_every_problem_at_once(tmp_path: Path) -> None:
    bad = write_bad_folder(tmp_path)
    report = check_split("folder", tmp_path, "train", num_classes=3)
    assert len(report.problems) == len(bad)
    for kind, path in bad.items():
        assert sum(str(path) in problem for problem in report.problems) == 1, kind
    expected = ["cannot identify image file", "image file is truncated", "is 5x5 (HxW) but image",
                "class id(s) 7 but num_classes=3", "has 3 channels", "has no mask", "has no image of the same stem"]
    assert all(any(text in problem for problem in report.problems) for text in expected)
    assert report.samples == 5 and report.files == report.files_read == 10


def test_cityscapes_check_lists_every_problem_at_once(tmp_path: Path) -> None:
    labels = write_fake_cityscapes(tmp_path, splits=("train",))["train"]
    Image.fromarray(np.full((24, 48), 40, dtype=np.uint8)).save(labels[0])
    labels[1].unlink()
    _truncate(labels[2])
    city = labels[3].parent.name
    image = tmp_path / "leftImg8bit" / "train" / city / labels[3].name.replace("_gtFine_labelIds", "_leftImg8bit")
    assert image.is_file()
    Image.fromarray(np.zeros((20, 48, 3), dtype=np.uint8)).save(image)
    problems = check_split("cityscapes", tmp_path, "train").problems
    assert len(problems) == 4
    assert f"{labels[1]} is missing" in problems[0]
    assert any(f"{labels[0]} holds label id(s) [40] that Cityscapes does not define" in p for p in problems)
    assert any(f"cannot read mask {labels[2]}" in p for p in problems)
    assert any(f"mask {labels[3]} is 24x48 (HxW) but image {image} is 20x48" in p for p in problems)


def test_cityscapes_loader_raises_what_the_check_reports(tmp_path: Path) -> None:
    labels = write_fake_cityscapes(tmp_path, splits=("val",), cities=("lindau",), images_per_city=1)["val"]
    Image.fromarray(np.full((24, 48), 40, dtype=np.uint8)).save(labels[0])
    dataset = build_dataset("cityscapes", str(tmp_path), "val", augment=False)
    with pytest.raises(UserError) as raised:
        dataset[0]
    assert check_dataset(dataset) == [str(raised.value)]


def test_second_check_reads_no_file_and_a_changed_file_is_read_again(tmp_path: Path, monkeypatch) -> None:
    bad = write_bad_folder(tmp_path)
    first = check_split("folder", tmp_path, "train", num_classes=3)
    assert (tmp_path / CACHE_NAME).is_file()
    decoded: list[Path] = []
    read_mask = check.read_mask
    monkeypatch.setattr(check, "read_mask", lambda path: decoded.append(path) or read_mask(path))
    second = check_split("folder", tmp_path, "train", num_classes=3)
    assert second.problems == first.problems and second.files_read == 0 and decoded == []
    stricter = check_split("folder", tmp_path, "train", num_classes=2)  # the ids are cached, not the verdict
    assert len(stricter.problems) > len(first.problems) and decoded == []
    fixed = bad["mask of the wrong size"]
    Image.fromarray(np.zeros((32, 24), dtype=np.uint8)).save(fixed)
    third = check_split("folder", tmp_path, "train", num_classes=3)
    assert decoded == [fixed] and third.files_read == 1
    assert len(third.problems) == len(first.problems) - 1 and not any(str(fixed) in p for p in third.problems)


def test_cache_lives_next_to_the_data_else_in_cache_dir_else_in_the_user_cache(tmp_path: Path, monkeypatch) -> None:
    assert cache_file(tmp_path) == tmp_path / CACHE_NAME
    monkeypatch.setattr(check.os, "access", lambda path, mode: False)  # a read-only data folder
    assert cache_file(tmp_path, tmp_path / "run").parent == tmp_path / "run"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    assert cache_file(tmp_path).parent == tmp_path / "user" / "autoseg"
    write_fake_folder(tmp_path / "data", num_classes=3, splits=("train",))
    check_split("folder", tmp_path / "data", "train", num_classes=3)
    assert not (tmp_path / "data" / CACHE_NAME).exists()
    assert check_split("folder", tmp_path / "data", "train", num_classes=3).files_read == 0


def test_check_data_tool_prints_every_problem_and_exits_2(tmp_path: Path, tool, capsys) -> None:
    bad = write_bad_folder(tmp_path / "bad")
    check_data = load_tool("check_data")
    with pytest.raises(SystemExit) as exited:
        run_tool(check_data.main, ["--dataset", "folder", "--data-root", str(tmp_path / "bad"),
                                              "--split", "train", "--num-classes", "3"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert err == (f"error: {len(bad)} problem(s) in the folder data, listed above: fix or replace those files, "
                   "then check again\n")
    assert all(str(path) in out for path in bad.values())
    write_fake_folder(tmp_path / "good", num_classes=3)
    reports = tool("check_data")(["--dataset", "folder", "--data-root", str(tmp_path / "good"), "--num-classes", "3"])
    assert [(r.split, r.samples, r.problems) for r in reports] == [("train", 3, []), ("val", 3, [])]
    assert "folder val: 3 sample(s), 0 problem(s)" in capsys.readouterr().out


def test_search_refuses_bad_data_before_creating_the_run_directory(tool, tmp_path: Path) -> None:
    write_fake_folder(tmp_path / "data", num_classes=3, sizes=((32, 32),) * 4)
    masks = tmp_path / "data" / "val" / "masks"
    Image.fromarray(np.full((32, 32), 9, dtype=np.uint8)).save(masks / "val_001.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(masks / "val_002.png")
    config = write_config(tmp_path / "folder.yaml", "search/folder",
                          data={"root": str(tmp_path / "data"), "num_classes": 3, "crop_size": 32, "num_workers": 0},
                          model=TINY_TRELLIS, train={"epochs": 2, "warmup_epochs": 1})
    with pytest.raises(UserError, match=r"^2 problems in the folder data \(autoseg check_data --dataset "
                                        r"folder --data-root .* --split train val --num-classes 3 lists them all\): "
                                        r"mask .*val_001.png holds class id\(s\) 9.*; mask .*val_002.png is 8x8"):
        tool("search")(["--config", str(config), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def _save_rotated_jpeg(pixels: np.ndarray, path: Path) -> None:
    """Save ``pixels`` as a JPEG whose EXIF orientation tag says "rotate 90 degrees clockwise"
    (as cameras tag portrait photos)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)


def test_an_exif_rotated_jpeg_is_read_as_stored_by_the_check_and_the_loader(tmp_path: Path) -> None:
    write_fake_folder(tmp_path, num_classes=3, sizes=((20, 30),), splits=("train",))
    image = tmp_path / "train" / "images" / "train_000.jpg"
    (tmp_path / "train" / "images" / "train_000.png").unlink()
    stored = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    _save_rotated_jpeg(stored, image)
    with Image.open(image) as decoded:
        expected = np.asarray(decoded.convert("RGB"))  # PIL ignores the tag, as it does for the mask
    assert check_split("folder", tmp_path, "train", num_classes=3).problems == []
    loaded, mask = build_dataset("folder", str(tmp_path), "train", augment=False, num_classes=3).load(0)
    assert loaded.shape == (20, 30, 3) and mask.shape == (20, 30)
    assert np.array_equal(loaded, expected) and np.array_equal(read_image(image), expected)


def test_a_truncated_jpeg_is_found_by_the_check_and_refused_by_the_loader(tmp_path: Path) -> None:
    write_fake_folder(tmp_path, num_classes=3, sizes=((16, 16), (64, 96)), splits=("train",))
    jpeg = tmp_path / "train" / "images" / "train_001.jpg"
    _truncate(jpeg)
    problems = check_split("folder", tmp_path, "train", num_classes=3).problems
    assert len(problems) == 1 and f"cannot read image {jpeg} (image file is truncated" in problems[0]
    with pytest.raises(UserError, match="image file is truncated"):
        build_dataset("folder", str(tmp_path), "train", augment=False, num_classes=3)[1]


@pytest.mark.parametrize("name", list_datasets())
def test_every_registered_dataset_has_a_file_check_or_no_files(name: str) -> None:
    if dataset_task(name) == "segmentation" and name not in WITHOUT_FILES:
        assert name in LAYOUTS, f"check_data has no FileLayout for the {name} dataset"
    assert (name in LAYOUTS) != (name in WITHOUT_FILES)


def test_voc_and_ade20k_checks_list_every_problem(tmp_path: Path) -> None:
    write_fake_voc(tmp_path / "voc", splits={"train": ["a", "b", "c"]}, train_aug=["a", "b"])
    voc = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    Image.fromarray(np.full((18, 30), 30, dtype=np.uint8)).save(voc / "SegmentationClass" / "a.png")
    (voc / "JPEGImages" / "b.jpg").unlink()
    _truncate(voc / "JPEGImages" / "c.jpg")
    problems = check_split("voc", tmp_path / "voc", "train").problems
    assert len(problems) == 3
    assert any("b.jpg is missing (a file listed in the train split)" in p for p in problems)
    assert any("a.png holds class id(s) 30" in p for p in problems)
    assert any(p.startswith("cannot read image") and "c.jpg" in p for p in problems)
    aug = check_split("voc_aug", tmp_path / "voc", "train")
    assert aug.samples == 1 and len(aug.problems) == 1 and "b.jpg is missing" in aug.problems[0]
    written = write_fake_ade20k(tmp_path / "ade", counts={"training": 2})
    stem = written["training"][1][0]
    annotation = tmp_path / "ade" / "ADEChallengeData2016" / "annotations" / "training" / f"{stem}.png"
    Image.fromarray(np.full((20, 24), 200, np.uint8)).save(annotation)
    ade = check_split("ade20k", tmp_path / "ade", "train")
    assert ade.samples == 2 and len(ade.problems) == 1 and "values above 150" in ade.problems[0]
    assert check_split("ade20k", tmp_path / "ade", "train").files_read == 0


def test_check_data_of_voc_reads_every_file(tmp_path: Path, tool, capsys) -> None:
    write_fake_voc(tmp_path)
    reports = tool("check_data")(["--dataset", "voc", "--data-root", str(tmp_path)])
    assert [(r.split, r.samples, r.files, r.problems) for r in reports] == [("train", 2, 4, []), ("val", 1, 2, [])]
    assert "nothing to check" not in capsys.readouterr().out
