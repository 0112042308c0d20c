"""Writers of small fake datasets and retrain checkpoints in the real on-disk formats, for the tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from autoseg.config import DataConfig, RetrainConfig, from_dict, to_dict
from autoseg.engine.trained import TrainedModelMeta
from autoseg.models.spec import build_model, model_spec

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CITYSCAPES_LABEL_IDS = list(range(34))  # every official label id; 255 stands for -1 (license plate)


def _write_pickle(path: Path, content: dict) -> None:
    """Pickle ``content`` to ``path`` (CIFAR's python files are plain pickled dicts)."""
    with open(path, "wb") as file:
        pickle.dump(content, file)


def _cifar_batch(rng: np.random.Generator, count: int, first: int, name: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """One batch in CIFAR's format: ``data`` (count, 3072) uint8 as planes R, G, B; ``labels`` list."""
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(first, first + count) * 7 + 3) % 10
    batch = {
        "batch_label": name,
        "labels": labels.tolist(),
        "data": images.transpose(0, 3, 1, 2).reshape(count, 3072),
        "filenames": [f"fake_{first + i}.png" for i in range(count)],
    }
    return batch, images, labels


def write_fake_cifar10(
    root: str | Path, num_train: int = 50, num_test: int = 20, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``ROOT/cifar-10-batches-py`` (data_batch_1..5, test_batch, batches.meta).

    Returns ``{"train": (images NxHxWx3, labels N), "test": (...)}`` in file order.
    """
    folder = Path(root) / CIFAR_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    train_parts = []
    for number, part in enumerate(np.array_split(np.arange(num_train), 5), start=1):
        first = int(part[0]) if len(part) else 0
        batch, images, labels = _cifar_batch(rng, len(part), first, f"training batch {number} of 5")
        _write_pickle(folder / f"data_batch_{number}", batch)
        train_parts.append((images, labels))
    written["train"] = tuple(np.concatenate(parts) for parts in zip(*train_parts))
    batch, images, labels = _cifar_batch(rng, num_test, 0, "testing batch 1 of 1")
    _write_pickle(folder / "test_batch", batch)
    written["test"] = (images, labels)
    meta = {"label_names": CIFAR_LABEL_NAMES, "num_cases_per_batch": 10000, "num_vis": 3072}
    _write_pickle(folder / "batches.meta", meta)
    return written


def _cityscapes_label_map(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Random label ids, with a first row holding every id 0..33 and 255 at least once."""
    height, width = size
    every = np.array([*CITYSCAPES_LABEL_IDS, 255], dtype=np.uint8)
    if width < len(every):
        raise ValueError(f"fake Cityscapes images need a width of at least {len(every)}")
    labels = rng.choice(every, size=(height, width)).astype(np.uint8)
    labels[0, : len(every)] = every
    return labels


def write_fake_cityscapes(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "val"),
    cities: tuple[str, ...] = ("aachen", "bochum"),
    images_per_city: int = 2,
    size: tuple[int, int] = (24, 48),
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Write the official layout with RGB images and labelIds PNGs (every id in every image).

    Also writes ``_gtFine_instanceIds.png`` decoys, which the loader must not read.
    Returns the labelIds paths per split, sorted.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for split in splits:
        written[split] = []
        for city in cities:
            image_dir = root / "leftImg8bit" / split / city
            label_dir = root / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            for number in range(images_per_city):
                name = f"{city}_{number:06d}_000019"
                image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(image).save(image_dir / f"{name}_leftImg8bit.png")
                label_path = label_dir / f"{name}_gtFine_labelIds.png"
                Image.fromarray(_cityscapes_label_map(rng, size)).save(label_path)
                Image.fromarray(np.full(size, 7, dtype=np.uint8)).save(label_dir / f"{name}_gtFine_instanceIds.png")
                written[split].append(label_path)
        written[split].sort()
    return written


def write_fake_folder(
    root: str | Path,
    num_classes: int,
    sizes: tuple[tuple[int, int], ...] = ((20, 30), (32, 24), (16, 16)),
    splits: tuple[str, ...] = ("train", "val"),
    seed: int = 0,
) -> dict[str, list[str]]:
    """Write ``ROOT/{split}/images/*.png|jpg`` and ``masks/*.png`` with valid ids (and some 255).

    One image per entry of ``sizes``; odd-numbered images are JPEGs. Returns the stems per split.
    """
    rng = np.random.default_rng(seed)
    stems: dict[str, list[str]] = {}
    for split in splits:
        image_dir = Path(root) / split / "images"
        mask_dir = Path(root) / split / "masks"
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        stems[split] = []
        for number, (height, width) in enumerate(sizes):
            stem = f"{split}_{number:03d}"
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(image).save(image_dir / f"{stem}{'.jpg' if number % 2 else '.png'}")
            mask = rng.integers(0, num_classes, (height, width), dtype=np.uint8)
            mask[0, 0] = 255
            Image.fromarray(mask).save(mask_dir / f"{stem}.png")
            stems[split].append(stem)
    return stems


def write_retrain_checkpoint(
    path: str | Path,
    arch_name: str,
    num_classes: int,
    task: str,
    dataset: str,
    class_names: list[str],
    palette: list[list[int]],
    config_data: dict,
    **model_kwargs,
) -> nn.Module:
    """Save a checkpoint in the format of ``tools/retrain.py`` holding a freshly initialised
    ``model_spec(arch_name, **model_kwargs)`` model; returns that model in eval mode.

    ``config_data`` is the ``data`` section of the saved config (the other sections get their
    defaults); the parent folders of ``path`` are created.
    """
    spec = model_spec(arch_name, **model_kwargs)
    model = build_model(spec, num_classes)
    config = RetrainConfig(data=from_dict(DataConfig, config_data, "config_data"))
    state = {
        "kind": "retrain",
        "meta": TrainedModelMeta(task, dataset, num_classes, spec, list(class_names),
                                 [list(colour) for colour in palette]).to_dict(),
        "model": model.state_dict(),
        "config": to_dict(config),
        "epoch": 1,
        "global_step": 1,
        "best": {"metric": "miou" if task == "segmentation" else "acc", "value": 0.0},
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return model.eval()


def _palette_png(ids: np.ndarray, palette: np.ndarray, path: Path) -> None:
    """Save ``ids`` as a PIL mode "P" PNG whose palette is ``palette`` (as VOC stores its masks)."""
    image = Image.fromarray(ids.astype(np.uint8)).convert("P")
    image.putpalette(np.resize(palette.astype(np.uint8), (256, 3)).flatten().tolist())
    image.save(path)


def _class_map(rng: np.random.Generator, size: tuple[int, int], values: list[int]) -> np.ndarray:
    """Random ids drawn from ``values``, with every one of them in the first row."""
    ids = rng.choice(np.array(values), size=size).astype(np.uint8)
    ids[0, : len(values)] = values
    return ids


def write_fake_voc(
    root: str | Path,
    splits: dict[str, list[str]] | None = None,
    train_aug: list[str] | None = None,
    size: tuple[int, int] = (18, 30),
    seed: int = 0,
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Write ``ROOT/VOCdevkit/VOC2012`` in the official layout: JPEG images, palette-PNG masks
    (ids 0..20 and the 255 border) and ``ImageSets/Segmentation/<split>.txt``; plus, for
    ``train_aug``, grayscale masks in ``SegmentationClassAug`` and ``train_aug.txt``.

    Returns ``{"official" | "aug": {id: (RGB image as decoded by PIL, mask ids)}}``.
    """
    from autoseg.data.voc import voc_palette

    splits = splits or {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", lists):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {"official": {}, "aug": {}}
    every_id = sorted({name for names in splits.values() for name in names} | set(train_aug or []))
    for name in every_id:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        with Image.open(voc / "JPEGImages" / f"{name}.jpg") as stored:
            image = np.asarray(stored.convert("RGB"))
        mask = _class_map(rng, size, [*range(21), 255])
        _palette_png(mask, voc_palette(256), voc / "SegmentationClass" / f"{name}.png")
        written["official"][name] = (image, mask)
        if train_aug is not None and name in train_aug:
            (voc / "SegmentationClassAug").mkdir(exist_ok=True)
            aug_mask = _class_map(rng, size, [*range(21), 255])
            Image.fromarray(aug_mask).save(voc / "SegmentationClassAug" / f"{name}.png")
            written["aug"][name] = (image, aug_mask)
    for split, names in {**splits, **({"train_aug": train_aug} if train_aug is not None else {})}.items():
        (lists / f"{split}.txt").write_text("".join(f"{name}\n" for name in names))
    return written


def write_fake_ade20k(
    root: str | Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (20, 24), seed: int = 0
) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """Write ``ROOT/ADEChallengeData2016`` in the official layout: ``images/<folder>/*.jpg`` and
    grayscale ``annotations/<folder>/*.png`` holding 0 (other) and class numbers 1..150 (with 1
    and 150 in every annotation). Returns ``{folder: [(stem, RGB image as decoded by PIL,
    stored annotation), ...]}`` sorted by stem."""
    counts = counts or {"training": 3, "validation": 2}
    base = Path(root) / "ADEChallengeData2016"
    rng = np.random.default_rng(seed)
    written: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for folder, count in counts.items():
        (base / "images" / folder).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        written[folder] = []
        for number in range(1, count + 1):
            stem = f"ADE_{'train' if folder == 'training' else 'val'}_{number:08d}"
            image_path = base / "images" / folder / f"{stem}.jpg"
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(image_path)
            with Image.open(image_path) as stored:
                image = np.asarray(stored.convert("RGB"))
            annotation = _class_map(rng, size, [0, 1, 2, 75, 149, 150])
            Image.fromarray(annotation).save(base / "annotations" / folder / f"{stem}.png")
            written[folder].append((stem, image, annotation))
    return written
