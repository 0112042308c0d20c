"""``synthetic``: procedurally drawn street scenes, the default dataset (no files needed).

Each sample is drawn on the fly from ``(seed, split, index)``: a sky gradient with clouds, a
grainy asphalt road with perspective lane markings, buildings with window grids, leafy
trees, cars with windows and wheels, and people. Colours are jittered per object and per
image and every region carries its own texture, so colour alone does not give the class
(cars can be grey like the road or green like the trees) but a small CNN learns the scenes
quickly. Classes and colours follow the matching Cityscapes classes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from autoseg.data import register_dataset
from autoseg.data.generated import Canvas, GeneratedDataset, finish_image, jitter

SKY, ROAD, BUILDING, VEGETATION, CAR, PERSON = range(6)
CLASS_NAMES = ["sky", "road", "building", "vegetation", "car", "person"]
PALETTE = np.array(
    [(70, 130, 180), (128, 64, 128), (70, 70, 70), (107, 142, 35), (0, 0, 142), (220, 20, 60)], dtype=np.uint8
)
# any hue, including the road's greys and the trees' greens
_CAR_COLOURS = [(180, 30, 30), (30, 60, 160), (230, 230, 230), (30, 30, 35), (110, 110, 115), (60, 120, 60)]


def _pick(rng: np.random.Generator, colours: list[tuple[int, int, int]], spread: float) -> np.ndarray:
    """One of ``colours``, jittered."""
    return jitter(rng, colours[rng.integers(len(colours))], spread)


def _draw_sky(canvas: Canvas, horizon: int) -> None:
    """Vertical gradient (blue, overcast or dusk) with soft clouds, above the horizon."""
    rng = canvas.rng
    top, bottom = [
        ((60, 110, 200), (170, 200, 235)),
        ((150, 155, 165), (205, 205, 210)),
        ((70, 80, 150), (235, 170, 120)),
    ][rng.integers(3)]
    ramp = np.linspace(0.0, 1.0, canvas.height, dtype=np.float32)[:, None, None]
    gradient = jitter(rng, top, 20) * (1 - ramp) + jitter(rng, bottom, 20) * ramp
    clouds = np.clip(canvas.noise(canvas.width / 10) - 0.6, 0, None)[..., None] * rng.uniform(20, 60)
    shape = canvas.blank()
    shape[:horizon] = 1
    canvas.paint(shape, np.broadcast_to(gradient, canvas.image.shape) + clouds + 2 * canvas.noise(0)[..., None], SKY)


def _draw_road(canvas: Canvas, horizon: int) -> None:
    """Grainy asphalt below the horizon with dashed lane markings converging to a vanishing point."""
    rng, height, width = canvas.rng, canvas.height, canvas.width
    shape = canvas.blank()
    shape[horizon:] = 1
    asphalt = jitter(rng, (100, 100, 104), 25)
    canvas.paint(shape, canvas.texture(asphalt, grain=rng.uniform(8, 16), blotch=6), ROAD)
    vanish_x = width * rng.uniform(0.3, 0.7)
    paint = _pick(rng, [(235, 235, 230), (230, 200, 60)], 15)
    for bottom_x in (vanish_x + rng.uniform(-0.1, 0.1) * width, -0.2 * width, 1.2 * width):
        marks = canvas.blank()
        # dashes between every other pair of parameters along the line vanishing point -> bottom,
        # spaced geometrically so that they shrink towards the horizon
        stops = np.geomspace(0.04, 1.0, 9)
        xs = np.round(vanish_x + (bottom_x - vanish_x) * stops).astype(int).tolist()
        ys = np.round(horizon + (height - horizon) * stops).astype(int).tolist()
        for i in range(0, len(stops) - 1, 2):
            cv2.line(marks, (xs[i], ys[i]), (xs[i + 1], ys[i + 1]), 1, max(1, round(stops[i + 1] * width / 40)))
        canvas.paint(marks, paint + 4 * canvas.noise(0)[..., None], ROAD)


def _draw_buildings(canvas: Canvas, horizon: int) -> None:
    """A row of facades standing on the horizon, with gaps, each with a grid of windows."""
    rng, height, width = canvas.rng, canvas.height, canvas.width
    x = -rng.uniform(0, 0.1) * width
    while x < width:
        facade_width = rng.uniform(0.12, 0.3) * width
        if rng.random() < 0.75:
            left, right = round(x), round(x + facade_width)
            top = round(horizon - rng.uniform(0.12, 0.45) * height)
            bottom = round(horizon + rng.uniform(0.01, 0.05) * height)
            shape = canvas.blank()
            cv2.rectangle(shape, (left, top), (right, bottom), 1, -1)
            wall = _pick(rng, [(200, 180, 150), (150, 90, 70), (130, 130, 135), (210, 205, 195)], 25)
            pixels = canvas.texture(wall, grain=4, blotch=rng.uniform(4, 12))
            _draw_windows(rng, pixels, (left, top, right, bottom), height)
            canvas.paint(shape, pixels, BUILDING)
        x += facade_width


def _draw_windows(rng: np.random.Generator, pixels: np.ndarray, box: tuple[int, int, int, int], height: int) -> None:
    """Draw a regular grid of dark or lit windows into the facade ``pixels`` inside ``box``."""
    left, top, right, bottom = box
    size = max(2, round(height * rng.uniform(0.025, 0.045)))
    step = size * 2
    glass = _pick(rng, [(40, 50, 70), (70, 90, 110), (230, 210, 140)], 15)
    for y in range(top + size, bottom - 2 * size, step):
        for x in range(left + size, right - size, step):
            cv2.rectangle(pixels, (x, y), (x + size - 1, y + size - 1), glass.tolist(), -1)


def _draw_trees(canvas: Canvas, horizon: int) -> None:
    """A few trees: a trunk and a crown of overlapping circles with a leafy, ragged outline."""
    rng, height, width = canvas.rng, canvas.height, canvas.width
    for _ in range(rng.integers(1, 4)):
        base_x = rng.uniform(0, width)
        base_y = horizon + rng.uniform(0.02, 0.25) * (height - horizon)
        size = rng.uniform(0.08, 0.16) * height * (0.6 + (base_y - horizon) / (height - horizon))
        shape = canvas.blank()
        trunk_top = base_y - 1.6 * size
        trunk = round(size / 8)
        cv2.rectangle(shape, (round(base_x) - trunk, round(trunk_top)), (round(base_x) + trunk, round(base_y)), 1, -1)
        for _ in range(rng.integers(4, 8)):
            centre = (
                round(base_x + rng.normal(0, size * 0.5)),
                round(trunk_top - size * 0.3 + rng.normal(0, size * 0.4)),
            )
            cv2.circle(shape, centre, max(2, round(size * rng.uniform(0.4, 0.7))), 1, -1)
        ragged = cv2.GaussianBlur(shape.astype(np.float32), (0, 0), max(1.0, size / 6)) * (1 + 0.4 * canvas.noise(1))
        leaves = _pick(rng, [(60, 120, 40), (90, 140, 50), (40, 90, 45)], 20)
        canvas.paint(ragged > 0.5, canvas.texture(leaves, grain=rng.uniform(18, 30), blotch=10), VEGETATION)


def _rounded_box(shape: np.ndarray, box: tuple[int, int, int, int], radius: int) -> None:
    """Fill a rectangle with rounded corners into the layer ``shape``."""
    left, top, right, bottom = box
    radius = max(0, min(radius, (right - left) // 2, (bottom - top) // 2))
    cv2.rectangle(shape, (left + radius, top), (right - radius, bottom), 1, -1)
    cv2.rectangle(shape, (left, top + radius), (right, bottom - radius), 1, -1)
    for x in (left + radius, right - radius):
        for y in (top + radius, bottom - radius):
            cv2.circle(shape, (x, y), radius, 1, -1)


def _ground_point(rng: np.random.Generator, depth: float, horizon: int, height: int, width: int) -> tuple[float, float]:
    """A random (x, y) on the road at ``depth`` (0 at the horizon, 1 at the bottom edge)."""
    return rng.uniform(0.05, 0.95) * width, horizon + depth * (height - horizon - 1)


def _draw_car(canvas: Canvas, horizon: int, depth: float) -> None:
    """A car on the road at ``depth``: rounded body, cabin with dark windows, two black wheels."""
    rng, height, width = canvas.rng, canvas.height, canvas.width
    x, ground = _ground_point(rng, depth, horizon, height, width)
    car_width = max(8.0, depth * rng.uniform(0.3, 0.45) * width)
    car_height = car_width * rng.uniform(0.45, 0.6)
    left, right = round(x - car_width / 2), round(x + car_width / 2)
    wheel = max(2, round(car_height * 0.2))
    body_bottom, body_top = round(ground - wheel * 0.6), round(ground - car_height * 0.6)
    top = round(ground - car_height)
    inset = round(car_width * rng.uniform(0.15, 0.25))
    body, cabin, wheels = canvas.blank(), canvas.blank(), canvas.blank()
    _rounded_box(body, (left, body_top, right, body_bottom), round(car_height * 0.15))
    _rounded_box(cabin, (left + inset, top, right - inset, body_top + 1), round(car_height * 0.12))
    for wheel_x in (left + round(car_width * 0.22), right - round(car_width * 0.22)):
        cv2.circle(wheels, (wheel_x, round(ground - wheel)), wheel, 1, -1)
    paint = _pick(rng, _CAR_COLOURS, 25)
    shine = np.linspace(25, -15, height, dtype=np.float32)[:, None, None]
    canvas.paint(body, canvas.texture(paint, grain=2, blotch=3) + shine, CAR)
    canvas.paint(cabin, canvas.texture(jitter(rng, (45, 55, 70), 10), grain=2, blotch=6), CAR)
    canvas.paint(wheels, canvas.texture(jitter(rng, (20, 20, 22), 5), grain=3, blotch=0), CAR)


def _draw_person(canvas: Canvas, horizon: int, depth: float) -> None:
    """A pedestrian at ``depth``: legs, a torso in a random shirt colour, and a round head."""
    rng, height, width = canvas.rng, canvas.height, canvas.width
    x, ground = _ground_point(rng, depth, horizon, height, width)
    tall = max(8.0, depth * rng.uniform(0.25, 0.4) * height)
    half = max(1, round(tall * 0.12))
    hip, shoulder = round(ground - tall * 0.45), round(ground - tall * 0.8)
    legs, torso, head = canvas.blank(), canvas.blank(), canvas.blank()
    stride = round(tall * rng.uniform(0.0, 0.12))
    for foot in (round(x) - stride, round(x) + stride):
        cv2.line(legs, (round(x), hip), (foot, round(ground)), 1, max(1, half))
    cv2.rectangle(torso, (round(x) - half, shoulder), (round(x) + half, hip), 1, -1)
    head_axes = (max(1, round(half * 0.8)), max(1, round(tall * 0.1)))
    cv2.ellipse(head, (round(x), round(ground - tall * 0.9)), head_axes, 0, 0, 360, 1, -1)
    canvas.paint(legs, canvas.texture(_pick(rng, [(40, 40, 60), (70, 60, 50), (20, 20, 20)], 15), 4, 0), PERSON)
    canvas.paint(torso, canvas.texture(rng.uniform(30, 230, 3).astype(np.float32), 4, 0), PERSON)
    canvas.paint(head, canvas.texture(_pick(rng, [(230, 190, 160), (190, 140, 100), (120, 80, 60)], 15), 3, 0), PERSON)


def render_scene(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene: (RGB uint8 ``HxWx3`` image, uint8 ``HxW`` mask of class ids)."""
    canvas = Canvas(height, width, rng)
    horizon = round(height * rng.uniform(0.38, 0.55))
    _draw_sky(canvas, horizon)
    _draw_road(canvas, horizon)
    _draw_buildings(canvas, horizon)
    _draw_trees(canvas, horizon)
    for draw in (_draw_car, _draw_person):
        # far to near, so that nearer objects hide farther ones; people last so none is hidden
        for depth in np.sort(rng.uniform(0.15, 1.0, rng.integers(1, 4))):
            draw(canvas, horizon, float(depth))
    return finish_image(canvas), canvas.mask


@register_dataset("synthetic")
class SyntheticStreetDataset(GeneratedDataset):
    """Generated street scenes (see :class:`~autoseg.data.generated.GeneratedDataset` for the options)."""

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    search_config = "synthetic"
    retrain_config = "synthetic"
    palette = PALETTE

    def render(self, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A street scene (:func:`render_scene`)."""
        return render_scene(height, width, rng)


def write_sample_images(out_dir: str | Path, count: int, image_size: int = 64, split: str = "test",
                        seed: int = 0) -> list[Path]:
    """Write ``count`` scenes of ``split`` as PNG files (``scene_000.png``, ...), e.g. to try
    ``tools/predict.py``; returns their paths. Masks are not written."""
    dataset = SyntheticStreetDataset(split=split, augment=False, image_size=image_size, length=count, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image, _ = dataset.load(index)
        path = out / f"scene_{index:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths
