"""``shapes``: large shapes whose class is their outline, which only a large receptive field sees.

The second embedded task, of another character than the street scenes of ``synthetic``: each
image holds two or three large shapes (a disc or ellipse, a box, a triangle; each 6-14 % of the
image's area, rotated at random, wholly inside the image, not touching) on a mottled grey
background. All shapes of an image wear the same texture (stripes of one saturated colour,
direction and period), so nothing local tells a disc's pixels from a box's: the class of a pixel
inside a shape is given only by the shape's outline, up to half the shape's width away. The
areas of the three classes are drawn from the same range, so the size tells nothing either.
Telling shape from background is local (colour against grey, stripes against a smooth surface),
telling the shapes apart is not.

Generated like ``synthetic``: deterministic from ``(seed, split, index)``, no file, any size.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from autoseg.data import register_dataset
from autoseg.data.generated import Canvas, GeneratedDataset, finish_image

BACKGROUND, DISC, BOX, TRIANGLE = range(4)
CLASS_NAMES = ["background", "disc", "box", "triangle"]
PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)], dtype=np.uint8)
AREA_RANGE = (0.06, 0.14)
"""Area of each shape, as a fraction of the image's."""
_PLACEMENT_TRIES = 50  # positions tried for a shape before it is left out


def shape_outline(kind: int, centre: tuple[float, float], area: float, angle: float, aspect: float) -> np.ndarray:
    """The corners (``(n, 2)`` float array of x, y) of shape ``kind`` (:data:`DISC`, :data:`BOX` or
    :data:`TRIANGLE`) of ``area`` pixels centred at ``centre``, turned by ``angle`` radians;
    ``aspect`` (<= 1) squeezes a disc into an ellipse and a box into an oblong. A disc is a
    64-gon."""
    if kind == DISC:
        radius = math.sqrt(area / (math.pi * aspect))
        turns = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        points = np.stack([radius * np.cos(turns), aspect * radius * np.sin(turns)], axis=1)
    elif kind == BOX:
        half = math.sqrt(area / (4 * aspect))
        points = np.array([(-half, -aspect * half), (half, -aspect * half), (half, aspect * half),
                           (-half, aspect * half)])
    elif kind == TRIANGLE:
        radius = math.sqrt(area / (3 * math.sqrt(3) / 4))  # the equilateral triangle of that area
        turns = np.array([0, 2 * math.pi / 3, 4 * math.pi / 3])
        points = np.stack([radius * np.cos(turns), radius * np.sin(turns)], axis=1)
    else:
        raise ValueError(f"unknown shape kind {kind}")
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return points @ rotation.T + np.asarray(centre)


def _grey(rng: np.random.Generator) -> np.ndarray:
    """A grey of random brightness with a slight tint: the background's colour."""
    return (rng.uniform(60, 190) + rng.uniform(-12, 12, 3)).astype(np.float32)


def _saturated(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour of random hue: the shapes' colour."""
    hue = np.array([[[rng.integers(180), rng.integers(170, 256), rng.integers(150, 256)]]], dtype=np.uint8)
    return cv2.cvtColor(hue, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _striped(canvas: Canvas, colour: np.ndarray) -> np.ndarray:
    """``colour`` in stripes of a random direction and a period of 4-6 pixels, with some grain: a
    texture a few pixels tell from the smooth background."""
    rng = canvas.rng
    turn, period = rng.uniform(0, math.pi), rng.uniform(4, 6)
    ys, xs = np.mgrid[0:canvas.height, 0:canvas.width].astype(np.float32)
    wave = np.sign(np.sin(2 * math.pi * (xs * math.cos(turn) + ys * math.sin(turn)) / period))
    return canvas.texture(colour, grain=rng.uniform(2, 5), blotch=0) + (rng.uniform(25, 45) * wave)[..., None]


def render_shapes(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of shapes: (RGB uint8 ``HxWx3`` image, uint8 ``HxW`` mask of class ids)."""
    canvas = Canvas(height, width, rng)
    background, foreground = _grey(rng), _saturated(rng)
    everywhere = canvas.blank() + 1
    canvas.paint(everywhere, canvas.texture(background, grain=rng.uniform(2, 5), blotch=rng.uniform(8, 16)),
                 BACKGROUND)
    pixels = _striped(canvas, foreground)
    taken = canvas.blank()
    for kind in rng.choice([DISC, BOX, TRIANGLE], size=int(rng.integers(2, 4)), replace=True):
        area = rng.uniform(*AREA_RANGE) * height * width
        angle, aspect = rng.uniform(0, 2 * math.pi), rng.uniform(0.6, 1.0)
        outline = shape_outline(int(kind), (0.0, 0.0), area, angle, aspect)
        low, high = 1 - outline.min(axis=0), np.array([width - 2, height - 2]) - outline.max(axis=0)
        if (low > high).any():
            continue  # too large for the image
        for _ in range(_PLACEMENT_TRIES):
            # the whole outline inside the image
            corners = np.round(outline + rng.uniform(low, high)).astype(np.int32)
            shape = canvas.blank()
            cv2.fillPoly(shape, [corners], 1)
            # apart by a gap of a few pixels, so that no two shapes merge into one outline
            if not (cv2.dilate(shape, np.ones((5, 5), np.uint8)) & taken).any():
                taken |= shape
                canvas.paint(shape, pixels, int(kind))
                break
    return finish_image(canvas), canvas.mask


@register_dataset("shapes")
class ShapesDataset(GeneratedDataset):
    """Generated images of large shapes (see the module docstring and
    :class:`~autoseg.data.generated.GeneratedDataset` for the options)."""

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    search_config = "shapes"
    retrain_config = "shapes"
    palette = PALETTE

    def render(self, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """An image of shapes (:func:`render_shapes`)."""
        return render_shapes(height, width, rng)
