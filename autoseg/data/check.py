"""Pre-flight check of a dataset's files: every problem at once, before a long run starts.

A bad file otherwise surfaces only when the loader first touches it, which in a long run can
be hours in. The check reads what it needs of every image and mask of a split:

- each image decoded once by the reader training uses (:func:`~autoseg.data.folder.read_image`,
  which reads the pixels as stored, ignoring an EXIF orientation tag): its size, and whether it
  is truncated or damaged anywhere (a JPEG cut short, which other decoders fill with grey),
- each mask decoded once: its size, and the ids it holds, judged by the same rules the loader
  applies (``folder``: ``0..num_classes-1`` or 255; ``cityscapes``: the official label ids;
  ``voc``/``voc_aug``: 0..20 or 255; ``ade20k``: 0..150),
- files that cannot be paired (an image without a mask, ...).

What it learns about a file is cached in a JSON file keyed by the file's path, size and
modification time, so a second check reads only the files that changed. The cache lives next to
the data (``ROOT/.autoseg-data-check.json``) when that folder is writable, else in ``cache_dir``
(e.g. a run directory) when given, else in the user's cache folder
(``$XDG_CACHE_HOME/autoseg`` or ``~/.cache/autoseg``).

Datasets with files to check declare a :class:`FileLayout` in :data:`LAYOUTS`; the others,
listed in :data:`WITHOUT_FILES` (``synthetic`` and ``shapes`` are generated, ``cifar10`` is read
whole when it is built), need no more check than building them.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from autoseg.data import ade20k, build_dataset, cityscapes, folder, registered_name, voc
from autoseg.data.folder import check_same_size, read_image, read_mask
from autoseg.utils.files import atomic_write
from autoseg.utils.errors import UserError, problems_error

CACHE_NAME = ".autoseg-data-check.json"
_CACHE_VERSION = 2  # 2: images decoded whole (version 1 read their headers)
_THREADS = min(8, os.cpu_count() or 1)  # decoding images releases the GIL

Pair = tuple[Path, Path]
MaskRule = Callable[[np.ndarray, Path], None]
"""Raises UserError unless the ids (an array of them, in the mask's dtype) are allowed."""


@dataclass(frozen=True)
class FileLayout:
    """The per-dataset hook: how the check finds a split's files and judges a mask's ids.

    ``match_pairs(root, split)`` returns the (image, mask) pairs and one problem per file that
    cannot be paired, raising UserError when the split cannot be listed at all;
    ``mask_rule(num_classes)`` gives the rule the dataset's loader applies to mask ids.
    """

    match_pairs: Callable[[str | Path, str], tuple[list[Pair], list[str]]]
    mask_rule: Callable[[int | None], MaskRule]


def _folder_rule(num_classes: int | None) -> MaskRule:
    """The folder loader's rule for mask ids: ``0..num_classes-1`` or 255."""
    classes = folder.checked_num_classes(num_classes)
    return lambda ids, path: folder.check_mask_ids(ids, classes, path)


LAYOUTS: dict[str, FileLayout] = {
    "folder": FileLayout(folder.match_pairs, _folder_rule),
    "cityscapes": FileLayout(cityscapes.match_pairs, lambda num_classes: cityscapes.check_label_ids),
    "voc": FileLayout(voc.match_pairs, lambda num_classes: voc.check_class_ids),
    "voc_aug": FileLayout(voc.aug_match_pairs, lambda num_classes: voc.check_class_ids),
    "ade20k": FileLayout(ade20k.match_pairs, lambda num_classes: ade20k.check_annotation_values),
}

WITHOUT_FILES: dict[str, str] = {"synthetic": "generated", "shapes": "generated",
                                  "cifar10": "read whole when it is built"}
"""The registered datasets that have no image files to check, and why."""


@dataclass
class CheckReport:
    """The outcome of checking one split: how many samples, how many of their files were checked
    and how many of those had to be read (the others were known from the cache), and every
    problem found, one line each."""

    dataset: str
    split: str
    samples: int
    files: int = 0
    files_read: int = 0
    problems: list[str] = field(default_factory=list)


def image_facts(path: Path) -> dict[str, Any]:
    """``{"hw": [height, width]}`` of an image decoded as training decodes it, or ``{"error":
    message}`` when it cannot be decoded whole."""
    try:
        return {"hw": list(read_image(path).shape[:2])}
    except UserError as error:
        return {"error": str(error)}


def mask_facts(path: Path) -> dict[str, Any]:
    """``{"hw", "dtype", "ids"}`` of a decoded mask (the ids it holds, sorted), or ``{"error":
    message}`` when it cannot be read or is not single-channel."""
    try:
        mask = read_mask(path)
    except UserError as error:
        return {"error": str(error)}
    ids = np.flatnonzero(np.bincount(mask.ravel(), minlength=256)) if mask.dtype == np.uint8 else np.unique(mask)
    return {"hw": list(mask.shape), "dtype": mask.dtype.name, "ids": ids.tolist()}


def cache_file(root: Path, cache_dir: str | Path | None = None) -> Path:
    """Where the facts about the files under ``root`` are cached (see the module docstring)."""
    if os.access(root, os.W_OK):
        return root / CACHE_NAME
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autoseg"
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(cache_dir or user_cache) / f"data-check-{digest}.json"


class FactCache:
    """Facts about files under ``root``, each valid while the file keeps its size and
    modification time, stored as JSON in ``path``."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path, self.root = path, root
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        fresh = isinstance(stored, dict) and stored.get("version") == _CACHE_VERSION
        self.entries: dict[str, dict[str, Any]] = stored["files"] if fresh else {}

    def _key(self, kind: str, path: Path) -> str:
        try:
            return f"{kind}:{path.relative_to(self.root).as_posix()}"
        except ValueError:
            return f"{kind}:{path.absolute().as_posix()}"

    def get(self, kind: str, path: Path, stat: os.stat_result) -> dict[str, Any] | None:
        """The cached facts of ``path``, or None when unknown or the file changed since."""
        entry = self.entries.get(self._key(kind, path))
        if entry is None or (entry["size"], entry["mtime_ns"]) != (stat.st_size, stat.st_mtime_ns):
            return None
        return entry["facts"]

    def put(self, kind: str, path: Path, stat: os.stat_result, facts: dict[str, Any]) -> None:
        """Remember the facts of ``path`` as it is now."""
        self.entries[self._key(kind, path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "facts": facts}

    def save(self) -> None:
        """Write the cache atomically; a location that cannot be written only costs a warning."""
        text = json.dumps({"version": _CACHE_VERSION, "files": self.entries})
        try:
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))
        except OSError as error:
            warnings.warn(f"could not save the data check cache {self.path} ({error}); the next check reads every "
                          "file again", stacklevel=2)


def _pair_problems(pair: Pair, image: dict[str, Any], mask: dict[str, Any], rule: MaskRule) -> list[str]:
    """The problems of one image/mask pair, from the facts about its two files."""
    image_path, mask_path = pair
    problems = [facts["error"] for facts in (image, mask) if "error" in facts]
    if "error" in mask:
        return problems
    checks = [lambda: rule(np.array(mask["ids"], dtype=mask["dtype"]), mask_path)]
    if "error" not in image:
        checks.append(lambda: check_same_size(image["hw"], mask["hw"], image_path, mask_path))
    for check in checks:
        try:
            check()
        except UserError as error:
            problems.append(str(error))
    return problems


def check_pairs(pairs: list[Pair], rule: MaskRule, cache: FactCache) -> tuple[list[str], int]:
    """The problems of every pair, and how many files had to be read (not found in ``cache``)."""
    kinds = {"image": image_facts, "mask": mask_facts}
    files = [(kind, path) for pair in pairs for kind, path in zip(kinds, pair)]
    stats = {path: path.stat() for _, path in files}
    facts = {path: cache.get(kind, path, stats[path]) for kind, path in files}
    todo = [(kind, path) for kind, path in files if facts[path] is None]
    with ThreadPoolExecutor(_THREADS) as pool:
        for (kind, path), found in zip(todo, pool.map(lambda item: kinds[item[0]](item[1]), todo)):
            facts[path] = found
            cache.put(kind, path, stats[path], found)
    if todo:
        cache.save()
    problems = [problem for image, mask in pairs for problem in _pair_problems((image, mask), facts[image],
                                                                                facts[mask], rule)]
    return problems, len(todo)


def check_split(dataset: str, root: str | Path | None, split: str, num_classes: int | None = None,
                cache_dir: str | Path | None = None) -> CheckReport:
    """Check every file of ``split`` of the registered dataset ``dataset`` (see the module
    docstring). A dataset without a :class:`FileLayout` is checked by building it. Raises
    UserError only when the split cannot be listed (a missing folder, a missing num_classes)."""
    layout = LAYOUTS.get(dataset)
    if layout is None:
        try:
            built = build_dataset(dataset, root, split, augment=False, num_classes=num_classes)
        except UserError as error:
            return CheckReport(dataset, split, 0, problems=[str(error)])
        return CheckReport(dataset, split, len(built))
    pairs, problems = layout.match_pairs(root, split)
    rule = layout.mask_rule(num_classes)
    cache = FactCache(cache_file(Path(root), cache_dir), Path(root))
    file_problems, files_read = check_pairs(pairs, rule, cache)
    return CheckReport(dataset, split, len(pairs), 2 * len(pairs), files_read, problems + file_problems)


def _source(dataset: Dataset) -> Dataset:
    """The dataset a (possibly nested) Subset takes its samples from."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def check_dataset(dataset: Dataset, cache_dir: str | Path | None = None) -> list[str]:
    """Every problem of the files behind a built dataset (a Subset: of the whole dataset it takes
    from); none for datasets without files to check (see :data:`LAYOUTS`)."""
    source = _source(dataset)
    name = registered_name(type(source))
    if name not in LAYOUTS:
        return []
    return check_split(name, source.root, source.split, source.num_classes, cache_dir).problems


def require_valid_data(datasets: Iterable[Dataset], cache_dir: str | Path | None = None) -> None:
    """Check the files of ``datasets`` (each split once) before training; raise one UserError
    with the count and the first problems, naming the ``autoseg check_data`` command that lists
    them all."""
    sources = {id(source): source for source in map(_source, datasets)}.values()
    checked = [source for source in sources if registered_name(type(source)) in LAYOUTS]
    problems = [problem for source in checked for problem in check_dataset(source, cache_dir)]
    if problems:
        first = checked[0]
        name = registered_name(type(first))
        classes = f" --num-classes {first.num_classes}" if name == "folder" else ""
        splits = " ".join(dict.fromkeys(source.split for source in checked))
        raise problems_error(problems, f"in the {name} data (autoseg check_data --dataset {name} "
                                       f"--data-root {first.root} --split {splits}{classes} lists them all)")
