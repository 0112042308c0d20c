"""What the generated datasets (``synthetic``, ``shapes``) share: a canvas that paints an image and
its mask together, colour and texture helpers, the final camera-like jitter, and the dataset base
that draws sample ``index`` of a split from ``(seed, split, index)``, so every sample is the same
on every machine and no file is needed.
"""
from __future__ import annotations

import abc

import cv2
import numpy as np

from autoseg.data import SegmentationDataset, registered_name
from autoseg.data.transforms import IGNORE_INDEX, build_transform
from autoseg.utils.errors import UserError

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
"""Part of the random seed: splits never share a sample."""

DEFAULT_LENGTHS = {"train": 200, "val": 50, "test": 50}
MIN_SIZE = 16


class Canvas:
    """An image and its mask, painted together so that they always stay aligned."""

    def __init__(self, height: int, width: int, rng: np.random.Generator) -> None:
        self.height, self.width, self.rng = height, width, rng
        self.image = np.zeros((height, width, 3), dtype=np.float32)
        self.mask = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)

    def blank(self) -> np.ndarray:
        """An empty uint8 layer to draw a shape on with cv2."""
        return np.zeros((self.height, self.width), dtype=np.uint8)

    def noise(self, sigma: float) -> np.ndarray:
        """Unit-variance Gaussian noise smoothed over ``sigma`` pixels (0 = per-pixel grain)."""
        field = self.rng.standard_normal((self.height, self.width), dtype=np.float32)
        if sigma > 0:
            field = cv2.GaussianBlur(field, (0, 0), sigma)
            field /= field.std() + 1e-6
        return field

    def texture(self, colour: np.ndarray, grain: float, blotch: float) -> np.ndarray:
        """``colour`` with fine grain and large blotches of the given amplitudes (grey levels)."""
        shade = grain * self.noise(0) + blotch * self.noise(max(self.height, self.width) / 12)
        return colour[None, None, :] + shade[..., None]

    def paint(self, shape: np.ndarray, pixels: np.ndarray, class_id: int) -> None:
        """Paint ``pixels`` where the layer ``shape`` is set and label those pixels ``class_id``."""
        region = shape.astype(bool)
        self.image[region] = pixels[region] if pixels.ndim == 3 else pixels
        self.mask[region] = class_id


def jitter(rng: np.random.Generator, colour: tuple[int, int, int], spread: float) -> np.ndarray:
    """``colour`` with each channel moved by up to ``spread`` grey levels."""
    return np.asarray(colour, dtype=np.float32) + rng.uniform(-spread, spread, 3).astype(np.float32)


def finish_image(canvas: Canvas) -> np.ndarray:
    """Global brightness/contrast/white-balance jitter, sensor noise and blur; returns uint8."""
    rng = canvas.rng
    image = canvas.image
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.7, 1.3)
    image = image * rng.uniform(0.9, 1.1, 3).astype(np.float32) + rng.uniform(2, 8) * canvas.noise(0)[..., None]
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (3, 3), 0)
    return np.clip(image, 0, 255).astype(np.uint8)


class GeneratedDataset(SegmentationDataset):
    """Base of the generated datasets; ``root`` is ignored. Deterministic from (seed, split, index).

    ``image_size`` is an int (square) or ``(height, width)``; ``length`` defaults to 200 for
    train and 50 for val/test; ``crop_size`` defaults to the shorter image side and ``scale`` to
    1.0. Subclasses set ``num_classes``, ``class_names`` and ``palette`` and implement
    :meth:`render`.
    """

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        augment: bool = True,
        crop_size: int | None = None,
        transform_kind: str | None = None,
        scale: float = 1.0,
        scale_range: tuple[float, float] = (0.5, 2.0),
        image_size: int | tuple[int, int] = 96,
        length: int | None = None,
        seed: int = 0,
    ) -> None:
        name = registered_name(type(self))
        if split not in SPLIT_CODES:
            raise UserError(f"unknown {name} split {split!r}: use one of {', '.join(SPLIT_CODES)}")
        if seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {seed}")
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if min(height, width) < MIN_SIZE:
            raise UserError(f"image_size {image_size} is too small for the {name} dataset: use at least {MIN_SIZE}")
        self.height, self.width = height, width
        self.length = DEFAULT_LENGTHS[split] if length is None else length
        if self.length < 1:
            raise UserError(f"length must be at least 1, got {self.length}")
        self.split, self.seed = split, seed
        crop_size = min(self.height, self.width) if crop_size is None else crop_size
        if augment and crop_size > min(self.height, self.width):
            raise UserError(f"crop_size {crop_size} is larger than the {self.height}x{self.width} images of the "
                            f"{name} dataset: lower crop_size or raise image_size")
        super().__init__(build_transform(augment, transform_kind, crop_size, scale, scale_range))

    def __len__(self) -> int:
        """Number of samples in the split."""
        return self.length

    @abc.abstractmethod
    def render(self, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one sample: (RGB uint8 ``HxWx3`` image, uint8 ``HxW`` mask of class ids)."""

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw sample ``index`` of this split and seed."""
        return self.render(self.height, self.width, np.random.default_rng([self.seed, SPLIT_CODES[self.split], index]))
