"""Figures of a search: op weights, the network-level trellis, the decoded cell and how they
evolved over the epochs.

Every figure function renders off-screen with matplotlib's Agg canvas (no pyplot, no global
backend switch) and returns the picture as a ``uint8`` array ``(H, W, 3)``, ready for
TensorBoard's ``add_image(..., dataformats="HWC")`` or :func:`save_png`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.image
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle
from matplotlib.ticker import MaxNLocator

from autoseg.space.genotype import blocks_from_edges
from autoseg.space.trellis import as_transition_array

PATH_COLOR = "#d62728"
"""Colour of the decoded path and of the figure highlights."""


def _render(figure: Figure) -> np.ndarray:
    """Draw ``figure`` on an Agg canvas and return its RGB pixels."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an ``(H, W, 3)`` uint8 image as PNG (parent folders are created); returns the path.

    Raises:
        ValueError: ``image`` is not an ``(H, W, 3)`` uint8 array.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, image, format="png")
    return path


def cell_edge_labels(num_edges: int) -> list[str]:
    """Labels ``"j->i"`` of the mixed edges of a DARTS cell, in alpha row order.

    Block ``b`` (state ``i = b + 2``) has one edge from every earlier state ``j < i``.

    Raises:
        ValueError: ``num_edges`` is not ``2 + 3 + ... + (B + 1)`` for some number of blocks ``B``.
    """
    return [
        f"{source}->{block + 2}"
        for block in range(blocks_from_edges(num_edges))
        for source in range(block + 2)
    ]


def alpha_heatmap(
    weights: np.ndarray,
    primitives: list[str],
    row_labels: list[str] | None = None,
    title: str = "",
) -> np.ndarray:
    """Annotated heatmap of op weights: one row per edge, one column per op.

    Args:
        weights: ``(E, O)`` array, typically ``softmax(alpha)`` per edge.
        primitives: the ``O`` op names (x axis).
        row_labels: the ``E`` edge names; defaults to :func:`cell_edge_labels` (pass them
            when the rows are not the edges of a DARTS cell).
        title: figure title.

    The strongest op of every row is framed.

    Raises:
        ValueError: shapes and label counts disagree.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != len(primitives):
        raise ValueError(
            f"weights must be (num_edges, {len(primitives)}) to match primitives, "
            f"got {weights.shape}"
        )
    labels = cell_edge_labels(weights.shape[0]) if row_labels is None else list(row_labels)
    if len(labels) != weights.shape[0]:
        raise ValueError(f"{len(labels)} row labels for {weights.shape[0]} rows")
    num_edges, num_ops = weights.shape
    figure = Figure(figsize=(1.0 + 0.95 * num_ops, 1.4 + 0.32 * num_edges), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(weights, cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    axes.set_xticks(range(num_ops), primitives, rotation=35, ha="right", fontsize=8)
    axes.set_yticks(range(num_edges), labels, fontsize=8)
    axes.set_xlabel("operation")
    axes.set_ylabel("edge")
    middle = (np.nanmin(weights) + np.nanmax(weights)) / 2
    for row in range(num_edges):
        for col in range(num_ops):
            value = weights[row, col]
            axes.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="black" if value > middle else "white")
        best = int(np.nanargmax(weights[row]))
        axes.add_patch(
            Rectangle((best - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=PATH_COLOR,
                      linewidth=1.5)
        )
    axes.set_title(title)
    figure.tight_layout()
    return _render(figure)


def _reachable(transitions: np.ndarray) -> np.ndarray:
    """Boolean ``(L, S)``: nodes reached from the stem through non-zero transitions."""
    reached = transitions[0, 0] > 0
    rows = [reached]
    for layer_transitions in transitions[1:]:
        reached = (layer_transitions[reached] > 0).any(axis=0)
        rows.append(reached)
    return np.stack(rows)


def trellis_figure(
    transitions: object, path: list[int] | None = None, title: str = ""
) -> np.ndarray:
    """The trellis: layers on x (stem at -1), levels on y labelled by stride (4, 8, 16, ...).

    Every transition with non-zero probability out of a reachable node is a grey line whose
    width and opacity grow with its probability; nodes are dots, the stem a square, and
    ``path`` (one level per layer, e.g. from :func:`autoseg.space.trellis.viterbi_path`) is drawn
    bold in red.

    Raises:
        ValueError: invalid ``transitions`` or a ``path`` of the wrong length / levels.
    """
    probs = as_transition_array(transitions)
    num_layers, num_levels, _ = probs.shape
    if path is not None and (
        len(path) != num_layers or any(not 0 <= level < num_levels for level in path)
    ):
        raise ValueError(f"path must list {num_layers} levels in [0, {num_levels - 1}]")
    reached = _reachable(probs)
    figure = Figure(figsize=(2.0 + 0.6 * (num_layers + 1), 1.2 + 0.65 * num_levels), dpi=100)
    axes = figure.add_subplot()
    for layer in range(num_layers):
        sources = [0] if layer == 0 else np.flatnonzero(reached[layer - 1])
        for source in sources:
            for target in np.flatnonzero(probs[layer, source] > 0):
                p = min(float(probs[layer, source, target]), 1.0)
                axes.plot([layer - 1, layer], [source, target], color="0.35",
                          linewidth=0.4 + 3.6 * p, alpha=0.25 + 0.75 * p,
                          solid_capstyle="round", zorder=1)
    if path is not None:
        axes.plot(range(-1, num_layers), [0, *path], color=PATH_COLOR, linewidth=3.2,
                  marker="o", markersize=7, zorder=3, label="decoded path")
        axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    layers, levels = np.nonzero(reached)
    axes.scatter(layers, levels, s=36, color="white", edgecolor="0.2", zorder=2)
    axes.scatter([-1], [0], s=70, marker="s", color="0.2", zorder=4)
    axes.set_xticks(range(-1, num_layers), ["stem", *map(str, range(num_layers))], fontsize=8)
    axes.set_yticks(range(num_levels), [str(4 * 2**level) for level in range(num_levels)],
                    fontsize=8)
    axes.set_xlim(-1.5, num_layers - 0.5)
    axes.set_ylim(num_levels - 0.5, -0.5)  # finest level on top
    axes.set_xlabel("layer")
    axes.set_ylabel("output stride")
    axes.set_title(title, loc="left")  # the legend sits on the right, above the plot
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    figure.tight_layout()
    return _render(figure)


BLOCK_GAP = 1.5
"""Vertical distance between blocks in :func:`cell_figure` (data units)."""

BLOCK_X = 4.5
"""Horizontal distance from the inputs to the column of blocks in :func:`cell_figure`."""

INPUT_LABEL_AT = (0.45, 0.8)
"""Fraction of the length of an edge from input state 0 / 1 at which its op label sits.

Different fractions put the two inputs' labels in two separate columns, apart from each other.
"""


def _cell_layout(num_blocks: int) -> dict[int, tuple[float, float]]:
    """Positions of the cell's input and block states: inputs on the left, blocks in a column."""
    top = BLOCK_GAP * (num_blocks - 1) / 2
    positions = {0: (0.0, top / 2 + 1.0), 1: (0.0, -top / 2 - 1.0)}
    for block in range(num_blocks):
        positions[block + 2] = (BLOCK_X, top - BLOCK_GAP * block)
    return positions


def _block_bend(span: int) -> float:
    """arc3 bend of an edge between blocks ``span`` apart: negative bulges a downward edge right."""
    return -0.4 - 0.15 * span


def cell_figure(genotype_edges: list[list[tuple[str, int]]], title: str = "") -> np.ndarray:
    """The decoded cell as a DAG: inputs ``h(l-2)`` (state 0) and ``h(l-1)`` (state 1) on the
    left, blocks 1..B (states 2..B+1) in a column, their concatenation on the right.

    Each edge is an arrow coloured by op and labelled with it. Edges between blocks bend to
    the right of the column, further the more blocks they skip, so they never cross a block.

    Args:
        genotype_edges: ``genotype_edges[b]`` lists the ``(op_name, input_state)`` pairs of
            block ``b``; an input state must be ``< b + 2``.
        title: figure title.

    Raises:
        ValueError: no blocks, or an input state is negative or not earlier than its block.
    """
    num_blocks = len(genotype_edges)
    if num_blocks == 0:
        raise ValueError("a cell needs at least one block")
    for block, edges in enumerate(genotype_edges):
        for _, state in edges:
            if not 0 <= state < block + 2:
                raise ValueError(
                    f"block {block + 1} (state {block + 2}) cannot take input from state {state}"
                )
    positions = _cell_layout(num_blocks)
    spans = [block + 2 - state for block, edges in enumerate(genotype_edges)
             for _, state in edges if state >= 2]
    bulge = max((-_block_bend(span) * span * BLOCK_GAP / 2 for span in spans), default=0.0)
    output = num_blocks + 2
    positions[output] = (BLOCK_X + bulge + 1.6, 0.0)
    ops = sorted({op for edges in genotype_edges for op, _ in edges})
    palette = matplotlib.colormaps["tab10"].colors
    colors = {op: palette[index % len(palette)] for index, op in enumerate(ops)}

    xs, ys = zip(*positions.values())
    width, height = max(xs) - min(xs) + 1.6, max(ys) - min(ys) + 1.4
    figure = Figure(figsize=(0.8 * width, 0.8 * height + 0.4), dpi=100)
    axes = figure.add_axes((0.0, 0.0, 1.0, 0.8 * height / (0.8 * height + 0.4)))
    axes.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    axes.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    axes.set_aspect("equal")  # arc3 bends are computed on screen: keep data and screen alike
    axes.axis("off")
    figure.suptitle(title, y=0.98)

    def arrow(source: int, target: int, color: str, bend: float, linewidth: float) -> None:
        """Draw an arrow between two states, bent by an arc3 ``bend``."""
        axes.add_patch(FancyArrowPatch(
            positions[source], positions[target], connectionstyle=f"arc3,rad={bend}",
            arrowstyle="-|>", mutation_scale=12, color=color, linewidth=linewidth,
            shrinkA=14, shrinkB=14, zorder=1,
        ))

    for block, edges in enumerate(genotype_edges):
        target = block + 2
        arrow(target, output, "0.7", 0.0, 0.8)
        for op, source in edges:
            (x0, y0), (x1, y1) = positions[source], positions[target]
            bend = 0.0 if source < 2 else _block_bend(target - source)
            arrow(source, target, colors[op], bend, 1.6)
            # Input edges: label at the input's fraction of the line; block edges: label on
            # the arc's apex (the midpoint of matplotlib's quadratic arc3 curve).
            t = INPUT_LABEL_AT[source] if source < 2 else 0.5
            label_x = x0 + t * (x1 - x0) + 0.5 * bend * (y1 - y0)
            label_y = y0 + t * (y1 - y0) - 0.5 * bend * (x1 - x0)
            axes.text(label_x, label_y, op, fontsize=8, ha="center", va="center",
                      color=colors[op], zorder=3,
                      bbox={"boxstyle": "round,pad=0.15", "facecolor": "white",
                            "edgecolor": "none", "alpha": 0.9})

    names = {0: "h(l-2)", 1: "h(l-1)", output: "concat\nh(l)"}
    names.update({block + 2: str(block + 1) for block in range(num_blocks)})
    for state, (x, y) in positions.items():
        is_block = 2 <= state < output
        axes.text(x, y, names[state], ha="center", va="center", fontsize=10, zorder=4,
                  fontweight="bold" if is_block else "normal",
                  bbox={"boxstyle": "circle,pad=0.35" if is_block else "round,pad=0.4",
                        "facecolor": "#c6dbef" if is_block else "#fdd0a2",
                        "edgecolor": "0.3"})
    return _render(figure)


def evolution_figure(
    epochs: Sequence[int],
    op_weights: dict[str, np.ndarray],
    primitives: Sequence[str],
    paths: np.ndarray | None = None,
) -> np.ndarray:
    """How a search's architecture evolved, one panel under the other over the same epoch axis.

    Args:
        epochs: the ``T`` epochs (consecutive).
        op_weights: by cell type, a ``(T, O)`` array: the weight of each op in each epoch
            (typically softmax(alpha) averaged over the cell's edges); one panel per cell
            type, one line per op.
        primitives: the ``O`` op names (the legend).
        paths: ``(T, L)`` decoded network paths (a level per layer), drawn as a map of
            layers by epoch coloured by output stride; None for a cell search.

    Raises:
        ValueError: no epochs, or shapes that disagree.
    """
    epochs = np.asarray(epochs)
    if epochs.ndim != 1 or not len(epochs):
        raise ValueError("evolution_figure needs at least one epoch")
    for name, weights in op_weights.items():
        if np.shape(weights) != (len(epochs), len(primitives)):
            raise ValueError(f"op_weights[{name!r}] must be ({len(epochs)}, {len(primitives)}), "
                             f"got {np.shape(weights)}")
    if paths is not None and (np.ndim(paths) != 2 or len(paths) != len(epochs)):
        raise ValueError(f"paths must be ({len(epochs)}, num_layers), got {np.shape(paths)}")
    panels = len(op_weights) + (paths is not None)
    width, height = min(16.0, 6.0 + 0.2 * len(epochs)), 0.7 + 2.6 * panels
    figure = Figure(figsize=(width, height), dpi=100)
    # margins fixed in inches, the same for every panel, so that their epochs line up
    right = 1 - 1.8 / width
    figure.subplots_adjust(left=1.0 / width, right=right, bottom=0.55 / height, top=1 - 0.15 / height,
                           hspace=0.12)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    palette = matplotlib.colormaps["tab10"].colors
    for panel, (name, weights) in zip(axes, op_weights.items()):
        for index, op in enumerate(primitives):
            panel.plot(epochs, np.asarray(weights)[:, index], marker="o", markersize=3,
                       color=palette[index % len(palette)], label=op)
        panel.set_ylabel(f"{name}: mean weight")
        panel.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    if paths is not None:
        paths = np.asarray(paths)
        levels = int(paths.max()) + 1
        panel = axes[-1]
        image = panel.imshow(paths.T, cmap=matplotlib.colormaps["viridis"].resampled(levels), aspect="auto",
                             vmin=-0.5, vmax=levels - 0.5, interpolation="nearest",
                             extent=(epochs[0] - 0.5, epochs[-1] + 0.5, paths.shape[1] - 0.5, -0.5))
        box = panel.get_position()
        bar = figure.colorbar(image, cax=figure.add_axes((right + 0.15 / width, box.y0, 0.15 / width, box.height)),
                              ticks=range(levels))
        bar.ax.set_yticklabels([str(4 * 2**level) for level in range(levels)], fontsize=8)
        bar.set_label("output stride")
        panel.set_yticks(range(paths.shape[1]))
        panel.set_ylabel("layer of the path")
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    return _render(figure)
