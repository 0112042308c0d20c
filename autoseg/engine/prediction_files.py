"""The files ``tools/predict.py`` reads and writes: input images from one or more sources, and
one output file per image and requested format.

Formats, for an input ``<stem>.<ext>``:

- ``color``: ``<stem>_mask.png``, every pixel in the colour of its class (the model's palette).
- ``overlay``: ``<stem>_overlay.png``, the image blended with the colour mask.
- ``trainid``: ``<stem>_trainIds.png``, single-channel 8-bit PNG of the predicted class indices
  (the ids the model was trained on), for any dataset.
- ``labelid``: Cityscapes models only: ``<city>_<seq>_<frame>_labelIds.png``, single-channel
  8-bit PNG of Cityscapes label ids (train ids mapped back through the official table), the
  submission format of the Cityscapes benchmark. Its evaluation script
  (``cityscapesscripts/evaluation/evalPixelLevelSemanticLabeling.py``) finds the prediction of
  ``<city>_<seq>_<frame>_leftImg8bit.png`` as the one file matching
  ``<city>_<seq>_<frame>*.png`` anywhere below the results folder, so that folder must hold
  nothing else of that name: ``labelid`` is written alone, into a folder without other
  predictions of the same images.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from autoseg.data.cityscapes import train_ids_to_label_ids
from autoseg.engine.inference import blend, colorize, list_images
from autoseg.utils.errors import UserError
from autoseg.analysis.visualize import save_png

OUTPUT_FORMATS = ("color", "overlay", "trainid", "labelid")
DEFAULT_FORMATS = ("color", "overlay")
RESULT_KEYS = {"color": "masks", "overlay": "overlays", "trainid": "trainids", "labelid": "labelids"}
"""Format -> key of the list of written files in ``tools/predict.py``'s result."""

_SUFFIXES = {"color": "_mask.png", "overlay": "_overlay.png", "trainid": "_trainIds.png"}
_CITYSCAPES_NAME = re.compile(r"^(?P<city>[^_]+)_(?P<sequence>\d+)_(?P<frame>\d+)(?:_|$)")


def collect_images(sources: list[str | Path]) -> list[Path]:
    """The images of every source (a file, or the images directly inside a folder; see
    :func:`autoseg.engine.inference.list_images`), in the order given.

    Raises:
        UserError: a source has no image, or two images share a stem (their outputs would
            overwrite each other).
    """
    images = [path for source in sources for path in list_images(source)]
    clashes = [stem for stem, count in Counter(path.stem for path in images).items() if count > 1]
    if clashes:
        paths = [str(path) for path in images if path.stem == clashes[0]]
        raise UserError(f"{' and '.join(paths)} share the stem {clashes[0]!r}, so their outputs would overwrite each "
                        "other: predict them into different --out folders")
    return images


def cityscapes_prefix(image: Path) -> str:
    """``<city>_<seq>_<frame>`` of a Cityscapes image name such as ``aachen_000000_000019_leftImg8bit.png``.

    Raises:
        UserError: the name does not start that way.
    """
    match = _CITYSCAPES_NAME.match(image.name)
    if match is None:
        raise UserError(f"{image.name} is not a Cityscapes image name: --format labelid needs the official names "
                        "<city>_<seq>_<frame>_leftImg8bit.png, which the benchmark matches predictions by")
    return f"{match['city']}_{match['sequence']}_{match['frame']}"


def output_path(image: Path, out: Path, output_format: str) -> Path:
    """Where ``output_format`` of ``image`` is written inside ``out``."""
    if output_format == "labelid":
        return out / f"{cityscapes_prefix(image)}_labelIds.png"
    return out / f"{image.stem}{_SUFFIXES[output_format]}"


def check_request(formats: list[str], dataset: str, images: list[Path], out: Path) -> None:
    """Refuse requests whose output would be wrong: into the folder of an input image (an
    output could overwrite an input, and a later run would segment the outputs); ``labelid`` of
    a model not trained on Cityscapes, of images without Cityscapes names, together with other
    formats, or into a folder that already holds another prediction of one of the images (the
    benchmark takes exactly one ``<city>_<seq>_<frame>*.png`` per image).
    """
    inside = [image for image in images if image.resolve().parent == out.resolve()]
    if inside:
        raise UserError(f"--out {out} holds the input image {inside[0]}: predictions written there could overwrite "
                        "inputs (an input named like an output, e.g. photo_mask.png) and would be taken for inputs "
                        "next time; give a folder without input images")
    unknown = sorted(set(formats) - set(OUTPUT_FORMATS))
    if unknown:
        raise UserError(f"unknown --format {', '.join(unknown)}: choose from {', '.join(OUTPUT_FORMATS)}")
    if "labelid" not in formats:
        return
    if dataset != "cityscapes":
        raise UserError(f"--format labelid writes Cityscapes label ids, but this model was trained on {dataset}: "
                        "use --format trainid for its class indices")
    if len(set(formats)) > 1:
        raise UserError("--format labelid writes a benchmark submission folder, which must hold one "
                        "<city>_<seq>_<frame>*.png per image: ask for labelid alone and write the other formats "
                        "into another --out")
    expected = {cityscapes_prefix(image): output_path(image, out, "labelid").name for image in images}
    if out.is_dir():
        for path in sorted(out.rglob("*.png")):
            match = _CITYSCAPES_NAME.match(path.name)
            prefix = None if match is None else f"{match['city']}_{match['sequence']}_{match['frame']}"
            if prefix in expected and (path.parent != out or path.name != expected[prefix]):
                raise UserError(f"{path} is another prediction of {prefix} and the benchmark takes exactly one "
                                f"{prefix}*.png: write the submission into an empty --out")


def save_ids(ids: np.ndarray, path: Path) -> Path:
    """Write an ``HxW`` array of ids in 0..255 as a single-channel 8-bit PNG (parent folders are
    created); returns the path."""
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ValueError(f"ids must be in 0..255 to fit an 8-bit PNG, got {ids.min()}..{ids.max()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8)).save(path)
    return path


def write_outputs(image_path: Path, image: np.ndarray, classes: np.ndarray, out: Path, formats: list[str],
                  palette: np.ndarray, alpha: float) -> dict[str, Path]:
    """Write the requested formats of one image (RGB uint8 ``image``, its predicted ``classes``
    ``HxW``); returns format -> written path, in the order of ``formats``."""
    colors = colorize(classes, palette) if {"color", "overlay"} & set(formats) else None
    written: dict[str, Path] = {}
    for output_format in formats:
        path = output_path(image_path, out, output_format)
        if output_format == "color":
            written[output_format] = save_png(colors, path)
        elif output_format == "overlay":
            written[output_format] = save_png(blend(image, colors, alpha), path)
        elif output_format == "trainid":
            written[output_format] = save_ids(classes, path)
        else:
            written[output_format] = save_ids(train_ids_to_label_ids(classes), path)
    return written
