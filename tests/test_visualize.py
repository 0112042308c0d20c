"""Tests of the figures: each returns a non-blank RGB uint8 image; PNGs are written correctly."""
from __future__ import annotations

from pathlib import Path

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
import torch

from autoseg.space.trellis import transition_probabilities, viterbi_path
from autoseg.analysis.visualize import (
    PATH_COLOR,
    alpha_heatmap,
    cell_edge_labels,
    cell_figure,
    save_png,
    trellis_figure,
)

PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]

AUTODEEPLAB_CELL = [
    [("dil_conv_5x5", 0), ("sep_conv_3x3", 1)],
    [("sep_conv_3x3", 0), ("dil_conv_3x3", 1)],
    [("sep_conv_3x3", 3), ("sep_conv_3x3", 0)],
    [("sep_conv_5x5", 4), ("sep_conv_5x5", 2)],
    [("sep_conv_5x5", 3), ("dil_conv_5x5", 5)],
]


def assert_rgb_picture(image: np.ndarray) -> None:
    """An (H, W, 3) uint8 image with real content: many colours, not a flat background."""
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20
    assert (image < 200).any(axis=-1).mean() > 0.01  # some ink on the white page


def red_pixels(image: np.ndarray) -> int:
    """Number of pixels of the path colour (within a small tolerance)."""
    red = np.array(matplotlib.colors.to_rgb(PATH_COLOR)) * 255
    return int((np.abs(image.astype(float) - red).max(axis=-1) < 12).sum())


def test_cell_edge_labels() -> None:
    assert cell_edge_labels(5) == ["0->2", "1->2", "0->3", "1->3", "2->3"]
    assert len(cell_edge_labels(14)) == 14 and cell_edge_labels(14)[-1] == "4->5"
    for count in (0, 7):
        with pytest.raises(ValueError):
            cell_edge_labels(count)


def test_alpha_heatmap() -> None:
    weights = torch.softmax(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), -1)
    image = alpha_heatmap(weights.numpy(), PRIMITIVES, title="alpha")  # a 2-block cell
    assert_rgb_picture(image)
    labelled = alpha_heatmap(weights[:2].numpy(), PRIMITIVES, row_labels=["a", "b"])
    assert_rgb_picture(labelled)
    assert labelled.shape[0] < image.shape[0]  # height follows the number of edges


def test_alpha_heatmap_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="primitives"):
        alpha_heatmap(np.ones((14, 7)), PRIMITIVES)
    with pytest.raises(ValueError, match="row labels"):
        alpha_heatmap(np.ones((3, 8)), PRIMITIVES, row_labels=["a", "b"])


def test_trellis_figure_draws_the_path_in_red() -> None:
    beta = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(0))
    transitions = transition_probabilities(beta)
    with_path = trellis_figure(transitions, viterbi_path(transitions), title="search")
    without_path = trellis_figure(transitions)
    assert_rgb_picture(with_path)
    assert_rgb_picture(without_path)
    assert red_pixels(with_path) > 1000
    assert red_pixels(without_path) == 0


def test_trellis_figure_single_layer_and_level() -> None:
    assert_rgb_picture(trellis_figure(np.ones((1, 1, 1)), [0]))


@pytest.mark.parametrize("path", [[0, 1], [0, 0, 5]])
def test_trellis_figure_rejects_bad_path(path: list[int]) -> None:
    with pytest.raises(ValueError, match="path"):
        trellis_figure(np.ones((3, 2, 2)), path)


def test_cell_figure() -> None:
    assert_rgb_picture(cell_figure(AUTODEEPLAB_CELL, title="Auto-DeepLab"))
    assert_rgb_picture(cell_figure([[("skip_connect", 1)]]))


@pytest.mark.parametrize("edges", [[], [[("sep_conv_3x3", 2)]], [[("skip_connect", -1)]]])
def test_cell_figure_rejects_bad_cells(edges: list[list[tuple[str, int]]]) -> None:
    with pytest.raises(ValueError):
        cell_figure(edges)


def test_save_png_round_trip(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    path = save_png(image, tmp_path / "figures" / "cell.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = matplotlib.image.imread(path)
    assert loaded.shape[:2] == image.shape[:2]
    np.testing.assert_array_equal((loaded[..., :3] * 255).round().astype(np.uint8), image)


@pytest.mark.parametrize("image", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)])
def test_save_png_rejects_non_rgb_uint8(image: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        save_png(image, tmp_path / "x.png")
