"""Pictures of filters, precision-recall curves and detections, and the comparison report.

Every ``plot_*`` function draws on a matplotlib ``Axes`` it is given, so it fits
any figure layout. matplotlib is imported only inside the functions that need
it (it is an optional dependency: ``pip install patternfind[plot]``);
`draw_evaluation` uses OpenCV only.

Colours are the same everywhere: true positives green, false positives red,
missed true boxes blue (dashed in plots), ignored boxes and detections grey.
"""

from __future__ import annotations

import base64
import html
import textwrap
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind.evaluation.metrics import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    Evaluation,
    match_detections,
)
from patternfind.io import atomic_write
from patternfind.layers.features import hog_orientation_weights
from patternfind.layers.network import Conv, Network, ReLU
from patternfind.pixels import as_rgb8, prepare_image, to_grey
from patternfind.structures import Box, Detection, Filter

__all__ = [
    "COLORS",
    "draw_evaluation",
    "hog_glyphs",
    "network_filter_tiles",
    "plot_detections",
    "plot_feature_maps",
    "plot_filter",
    "plot_network_filters",
    "plot_pr_curves",
    "write_report",
]

#: RGB colours (0-255) of the outcomes.
COLORS = {
    "true_positive": (0, 190, 0),
    "false_positive": (230, 0, 0),
    "missed": (30, 110, 255),
    "ignored": (150, 150, 150),
}


def _rgb01(name: str) -> tuple[float, float, float]:
    red, green, blue = COLORS[name]
    return (red / 255, green / 255, blue / 255)


def _display_image(image: NDArray[Any]) -> NDArray[np.float32]:
    """Image as float in [0, 1], grey or RGB (alpha dropped): what the detector sees."""
    return np.clip(prepare_image(image), 0, 1)


# ---------------------------------------------------------------- plots on an Axes


def plot_filter(ax: Any, filter_: Filter, *, subtract_mean: bool = False,
                colorbar: bool = True) -> Any:
    """Draw a filter's weights with a diverging colour map centred on zero.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    filter_ : Filter
        An (h, w) filter is one picture; an (h, w, C) filter shows its C
        channels side by side, on one shared colour scale. A filter over
        ``"hog"`` features is drawn as HOG glyphs instead (`hog_glyphs`): its
        positive weights on the left, its negative weights on the right. A
        filter over ``"cnn"`` features shows its network's first-layer filters
        instead (`plot_network_filters`).
    subtract_mean : bool
        Show the weights minus their mean (over the mask): what a
        normalised cross-correlation ("ncc") score actually matches.
    colorbar : bool
        Add a colour bar beside ``ax``.

    Returns
    -------
    matplotlib.image.AxesImage
        (``subtract_mean`` and ``colorbar`` do not apply to HOG glyphs.)
    """
    if filter_.features == "hog":
        return _plot_hog_filter(ax, filter_)
    if filter_.features == "cnn":
        return plot_network_filters(ax, filter_, colorbar=colorbar)
    weights = np.asarray(filter_.weights, dtype=np.float64)
    if weights.ndim == 2:
        weights = weights[..., None]
    mask = np.ones(weights.shape[:2], dtype=bool) if filter_.mask is None else filter_.mask
    if subtract_mean:
        weights = weights - weights[mask].mean(axis=0)
    weights = np.where(mask[..., None], weights, np.nan)
    height, width, channels = weights.shape
    gap = max(1, width // 8)
    tiled = np.full((height, channels * width + (channels - 1) * gap), np.nan)
    for channel in range(channels):
        start = channel * (width + gap)
        tiled[:, start:start + width] = weights[..., channel]
    limit = float(np.nanmax(np.abs(tiled))) or 1.0
    from matplotlib import colormaps

    colormap = colormaps["RdBu_r"].with_extremes(bad="white")
    picture = ax.imshow(tiled, cmap=colormap, vmin=-limit, vmax=limit, interpolation="nearest")
    if channels > 1:
        names = "RGB" if channels == 3 and filter_.features == "pixels" else None
        centres = [c * (width + gap) + (width - 1) / 2 for c in range(channels)]
        ax.set_xticks(centres, [names[c] if names else f"c{c}" for c in range(channels)])
        ax.tick_params(length=0)
        ax.set_yticks([])
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    kind = filter_.meta.get("kind", "?")
    title = f"{filter_.name} ({kind}, {filter_.weights.shape[1]}×{filter_.weights.shape[0]})"
    ax.set_title(title + ("\nmean removed" if subtract_mean else ""), fontsize=10)
    if colorbar:
        ax.figure.colorbar(picture, ax=ax, fraction=0.046, pad=0.03)
    return picture


def network_filter_tiles(weights: NDArray[Any], *, gap: int = 1) -> NDArray[np.float64]:
    """Lay out a conv layer's filters as one picture, in a near-square grid.

    Parameters
    ----------
    weights : (F, F, C, K) array
        The layer's ``K`` filters.
    gap : int
        Pixels between tiles (NaN: drawn blank).

    Returns
    -------
    (rows·(F + gap) − gap, cols·(F + gap) − gap[, 3]) float64 array
        Grey filters (C ≠ 3) keep their weights (channels summed), on one
        shared scale; colour filters (C = 3) are each stretched to [0, 1] as
        RGB, the lecture's picture of learned edge and colour detectors.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 4:
        msg = f"`weights` must be (F, F, C, K), got shape {weights.shape}"
        raise ValueError(msg)
    size_h, size_w, channels, count = weights.shape
    colour = channels == 3
    columns = int(np.ceil(np.sqrt(count)))
    rows = -(-count // columns)
    shape = (rows * (size_h + gap) - gap, columns * (size_w + gap) - gap)
    tiles = np.full((*shape, 3) if colour else shape, np.nan)
    for index in range(count):
        tile = weights[..., index]
        if colour:
            low, high = tile.min(), tile.max()
            tile = (tile - low) / (high - low) if high > low else np.full_like(tile, 0.5)
        else:
            tile = tile.sum(axis=2)
        top, left = (index // columns) * (size_h + gap), (index % columns) * (size_w + gap)
        tiles[top:top + size_h, left:left + size_w] = tile
    return tiles


def plot_network_filters(ax: Any, filter_: Filter, *, colorbar: bool = True) -> Any:
    """Draw the first conv layer's filters of a ``"cnn"`` filter as small images.

    Grey networks use a diverging colour map centred on zero, colour networks
    show each filter as an RGB picture (`network_filter_tiles`).

    Returns
    -------
    matplotlib.image.AxesImage
    """
    network = Network.from_filter(filter_)
    first = next(layer for layer in network.layers if isinstance(layer, Conv))
    assert first.weights is not None
    tiles = network_filter_tiles(first.weights)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{filter_.name}: first-layer filters ({first.k} of {first.f}×{first.f})",
                 fontsize=10)
    if tiles.ndim == 3:
        return ax.imshow(np.nan_to_num(tiles, nan=1.0), interpolation="nearest")
    from matplotlib import colormaps

    limit = float(np.nanmax(np.abs(tiles))) or 1.0
    picture = ax.imshow(tiles, cmap=colormaps["RdBu_r"].with_extremes(bad="white"),
                        vmin=-limit, vmax=limit, interpolation="nearest")
    if colorbar:
        ax.figure.colorbar(picture, ax=ax, fraction=0.046, pad=0.03)
    return picture


def plot_feature_maps(figure: Any, filter_: Filter, image: NDArray[Any], *,
                      layer: int | None = None) -> Any:
    """Show one image's feature maps: every channel of one layer's output.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        Drawn on with a grid of small axes, one per channel.
    filter_ : Filter
        A ``"cnn"`` filter.
    image : (H, W[, 3]) array
        Any image `patternfind.pixels.prepare_image` accepts.
    layer : int, optional
        Index of the layer whose output is shown; default the first ReLU (the
        first conv layer's rectified responses), else the first layer.

    Returns
    -------
    array of matplotlib.axes.Axes
    """
    network = Network.from_filter(filter_)
    if layer is None:
        layer = next((i for i, item in enumerate(network.layers) if isinstance(item, ReLU)), 0)
    if not 0 <= layer < len(network.layers):
        msg = f"`layer` must be in [0, {len(network.layers) - 1}], got {layer!r}"
        raise ValueError(msg)
    pixels = prepare_image(image)
    if network.channels == 1 and pixels.ndim == 3:
        pixels = to_grey(pixels)
    elif network.channels == 3 and pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    height, width = network.fitted_size(*pixels.shape[:2])  # the rows and columns it uses
    out = pixels.reshape(1, *pixels.shape[:2], network.channels)[:, :height, :width]
    for item in network.layers[:layer + 1]:
        out = item.forward(out)[0]
    maps = out[0]
    columns = int(np.ceil(np.sqrt(maps.shape[2])))
    rows = -(-maps.shape[2] // columns)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for channel, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if channel >= maps.shape[2]:
            ax.axis("off")
            continue
        ax.imshow(maps[..., channel], cmap="gray", interpolation="nearest")
        ax.set_title(f"channel {channel}", fontsize=8)
    figure.suptitle(f"{filter_.name}: output of layer {layer} ({network.layers[layer]!r}), "
                    f"{maps.shape[1]}×{maps.shape[0]}×{maps.shape[2]}", fontsize=10)
    return axes


def hog_glyphs(orientation_weights: NDArray[Any], angles: NDArray[Any], *,
               cell_pixels: int = 21) -> NDArray[np.float32]:
    """Draw HOG weights as glyphs: in every cell, one line per orientation along its edge.

    As Felzenszwalb's and dlib's model pictures and ``skimage.feature.hog(...,
    visualize=True)`` draw them: each line runs through the cell centre
    perpendicular to its gradient direction (that is, along the edge), as bright
    as the orientation's weight. Where lines cross, the brighter one shows.

    Parameters
    ----------
    orientation_weights : (h, w, n) array
        Non-negative weight per cell and orientation, as from
        `patternfind.layers.features.hog_orientation_weights` (clip the sign you want to show).
    angles : (n,) array
        Gradient direction of each orientation in degrees (+x towards +y, downwards).
    cell_pixels : int
        Side of one cell in the picture.

    Returns
    -------
    (h * cell_pixels, w * cell_pixels) float32 array
        The glyphs in [0, 1], scaled so that the largest weight is 1.
    """
    weights = np.asarray(orientation_weights, dtype=np.float64)
    angles = np.asarray(angles, dtype=np.float64)
    if weights.ndim != 3 or angles.shape != (weights.shape[2],):
        msg = (f"`orientation_weights` must be (h, w, n) with n = len(angles) = {angles.size}, "
               f"got {weights.shape}")
        raise ValueError(msg)
    rows, cols, _ = weights.shape
    canvas = np.zeros((rows * cell_pixels, cols * cell_pixels), dtype=np.float32)
    largest = float(weights.max(initial=0.0))
    if largest <= 0:
        return canvas
    edge = np.deg2rad(angles + 90.0)
    radius = (cell_pixels - 1) / 2
    centre = np.array([radius, radius])
    ends = np.stack([np.cos(edge), np.sin(edge)], axis=1) * (radius - 1)  # (n, 2) as (x, y)
    line = np.zeros((cell_pixels, cell_pixels), dtype=np.float32)
    for row, col, orientation in zip(*np.nonzero(weights > 0), strict=True):
        line[:] = 0
        start = np.round(centre - ends[orientation]).astype(int)
        stop = np.round(centre + ends[orientation]).astype(int)
        brightness = float(weights[row, col, orientation] / largest)
        cv2.line(line, tuple(start.tolist()), tuple(stop.tolist()), brightness, 2, cv2.LINE_AA)
        tile = canvas[row * cell_pixels:(row + 1) * cell_pixels,
                      col * cell_pixels:(col + 1) * cell_pixels]
        np.maximum(tile, line, out=tile)
    return canvas


def _plot_hog_filter(ax: Any, filter_: Filter) -> Any:
    """Positive and negative HOG glyphs side by side, on one brightness scale."""
    folded, angles = hog_orientation_weights(filter_.weights, filter_.feature_options)
    largest = float(np.abs(folded).max()) or 1.0
    positive = hog_glyphs(np.clip(folded, 0, None) / largest, angles)
    negative = hog_glyphs(np.clip(-folded, 0, None) / largest, angles)
    # hog_glyphs scales each to its own maximum: put both back on the shared scale
    positive *= np.float32(np.clip(folded, 0, None).max() / largest)
    negative *= np.float32(np.clip(-folded, 0, None).max() / largest)
    height, width = positive.shape
    gap = max(4, width // 12)
    picture = np.full((height, 2 * width + gap), np.nan, dtype=np.float32)
    picture[:, :width] = positive
    picture[:, width + gap:] = negative
    from matplotlib import colormaps

    colormap = colormaps["gray"].with_extremes(bad="white")
    image = ax.imshow(picture, cmap=colormap, vmin=0, vmax=1, interpolation="bilinear")
    ax.set_xticks([(width - 1) / 2, width + gap + (width - 1) / 2],
                  ["positive weights", "negative weights"])
    ax.tick_params(length=0)
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    kind = filter_.meta.get("kind", "?")
    rows, cols = filter_.weights.shape[:2]
    cell = filter_.feature_options.get("cell", "?")
    variant = filter_.feature_options.get("variant", "hog")
    ax.set_title(f"{filter_.name} ({kind}, {cols}×{rows} cells of {cell} px)\n"
                 f"HOG glyphs ({variant})", fontsize=10)
    return image


def plot_pr_curves(ax: Any, evaluations: Sequence[Evaluation],
                   labels: Sequence[str] | None = None) -> None:
    """Draw precision against recall for each evaluation on one plot.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    evaluations : sequence of Evaluation
    labels : sequence of str, optional
        Legend entries; default each evaluation's ``name``. The AP is appended.

    Notes
    -----
    Each curve is drawn as a step in ranking order, from precision 1 at
    recall 0; the dot marks the operating point (precision and recall at the
    evaluation's threshold).
    """
    if labels is None:
        labels = [e.name or f"filter {i + 1}" for i, e in enumerate(evaluations)]
    if len(labels) != len(evaluations):
        msg = f"`labels` must have one entry per evaluation ({len(evaluations)}), got {len(labels)}"
        raise ValueError(msg)
    for evaluation, label in zip(evaluations, labels, strict=True):
        recall = np.concatenate(([0.0], evaluation.recall_curve))
        precision = np.concatenate(([1.0], evaluation.precision_curve))
        ap = "n/a" if not np.isfinite(evaluation.ap) else f"{evaluation.ap:.3f}"
        (line,) = ax.step(recall, precision, where="post", linewidth=2, label=f"{label}  AP {ap}")
        if np.isfinite(evaluation.recall):
            ax.plot(evaluation.recall, evaluation.precision, "o", color=line.get_color())
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    iou = evaluations[0].iou if evaluations else 0.5
    ax.set_title(f"Precision-recall (IoU ≥ {iou:g})", fontsize=11)
    if evaluations:
        # below the axes: inside, it can hide an operating point or a curve's tail
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=9,
                  ncol=min(2, len(evaluations)), frameon=False)


def plot_detections(ax: Any, image: NDArray[Any], detections: Sequence[Detection],
                    ground_truth: Sequence[Box] | None = None, *, iou: float = 0.5,
                    show_scores: bool = True) -> None:
    """Draw an image with its detections, coloured by outcome when ground truth is given.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    image : (H, W) or (H, W, C) array
        Any dtype `patternfind.pixels.to_float_image` accepts.
    detections : sequence of Detection
    ground_truth : sequence of Box, optional
        With it, detections are matched (`patternfind.evaluation.metrics.match_detections`)
        and drawn green (true positive), red (false positive) or grey
        (on an ignore box), and missed boxes dashed blue. Without it, all
        detections are red.
    iou : float
        Overlap for a match.
    show_scores : bool
        Write each detection's score at its corner.
    """
    from matplotlib.patches import Rectangle

    pixels = _display_image(image)
    ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if ground_truth is not None:
        outcome, matched = match_detections(detections, ground_truth, iou=iou)
    else:
        outcome, matched = np.full(len(detections), FALSE_POSITIVE), np.full(len(detections), -1)
    names = {TRUE_POSITIVE: "true_positive", FALSE_POSITIVE: "false_positive", IGNORED: "ignored"}
    found = set(matched[outcome == TRUE_POSITIVE].tolist())
    for index, box in enumerate(ground_truth or ()):
        if index not in found:
            color = _rgb01("ignored" if box.ignore else "missed")
            ax.add_patch(Rectangle((box.x - 0.5, box.y - 0.5), box.w, box.h, fill=False,
                                   edgecolor=color, linewidth=1.5, linestyle="--"))
    for detection, result in zip(detections, outcome, strict=True):
        color = _rgb01(names[int(result)])
        ax.add_patch(Rectangle((detection.x - 0.5, detection.y - 0.5), detection.w, detection.h,
                               fill=False, edgecolor=color, linewidth=1.8))
        if show_scores:
            ax.text(detection.x, detection.y - 1, f"{detection.score:.2f}", color="white",
                    fontsize=7, va="bottom",
                    bbox={"facecolor": color, "edgecolor": "none", "pad": 0.5, "alpha": 0.8})


def draw_evaluation(image: NDArray[Any], detections: Sequence[Detection],
                    ground_truth: Sequence[Box], *, iou: float = 0.5) -> NDArray[np.uint8]:
    """Return the image with true positives, false positives and misses drawn in three colours.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array
    detections : sequence of Detection
    ground_truth : sequence of Box
    iou : float
        Overlap for a match.

    Returns
    -------
    (H, W, 3) uint8 array
        RGB: true positives green, false positives red, missed boxes blue,
        ignored boxes and the detections on them grey.
    """
    canvas = as_rgb8(image)
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    outcome, matched = match_detections(detections, ground_truth, iou=iou)
    found = set(matched[outcome == TRUE_POSITIVE].tolist())

    def rectangle(x: float, y: float, w: float, h: float, name: str) -> None:
        corner0 = (round(x), round(y))
        corner1 = (round(x + w) - 1, round(y + h) - 1)
        cv2.rectangle(canvas, corner0, corner1, COLORS[name], thickness, cv2.LINE_8)

    for index, box in enumerate(ground_truth):
        if index not in found:
            rectangle(box.x, box.y, box.w, box.h, "ignored" if box.ignore else "missed")
    names = {TRUE_POSITIVE: "true_positive", FALSE_POSITIVE: "false_positive", IGNORED: "ignored"}
    for detection, result in zip(detections, outcome, strict=True):
        rectangle(detection.x, detection.y, detection.w, detection.h, names[int(result)])
    return canvas


# ---------------------------------------------------------------- the report


def _metrics_rows(evaluations: Sequence[Evaluation]) -> list[list[str]]:
    def number(value: float | None, digits: int = 3) -> str:
        return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"

    return [
        [e.name or f"filter {i + 1}", e.kind or "?", number(e.precision), number(e.recall),
         number(e.f1), number(e.ap), f"{e.true_positives}/{e.false_positives}/{e.false_negatives}",
         "n/a" if e.seconds_per_image is None else f"{1000 * e.seconds_per_image:.1f}"]
        for i, e in enumerate(evaluations)
    ]


_COLUMNS = ["filter", "kind", "P", "R", "F1", "AP", "TP/FP/FN", "ms/image"]


def write_report(
    path: str | Path,
    evaluations: Sequence[Evaluation],
    filters: Sequence[Filter],
    images: Mapping[str, NDArray[Any]],
    *,
    example: str | None = None,
    score: str | None = None,
    title: str | None = None,
    dpi: int = 90,
) -> str:
    """Write a one-page comparison: the filters, the PR curves, a metrics table, detections.

    Parameters
    ----------
    path : str or Path
        ``.png`` for a picture, ``.html`` for a page holding that picture
        (embedded, so the page is one self-contained file) and the metrics
        as an HTML table. Written atomically.
    evaluations : sequence of Evaluation
        One per filter, as from `patternfind.compare` (in the same order as
        ``filters``).
    filters : sequence of Filter
    images : mapping of str to (H, W[, C]) array
        The evaluated images, keyed as in the evaluations.
    example : str, optional
        Key of the image whose detections are shown for each filter. Default:
        the image with the most true boxes.
    score : str, optional
        The score kind the detections used (default: each filter's own, else
        "ncc"); filters scored by "ncc" are drawn with their mean removed.
    title : str, optional
    dpi : int
        Resolution of the picture.

    Returns
    -------
    str
        The key of the example image.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        msg = f"cannot write report {path}: use a .png or .html file"
        raise ValueError(msg)
    if len(evaluations) != len(filters) or not filters:
        msg = (f"`evaluations` and `filters` must be non-empty and of equal length, "
               f"got {len(evaluations)} and {len(filters)}")
        raise ValueError(msg)
    if example is None:
        first = evaluations[0].images
        example = max(images, key=lambda key: sum(not b.ignore for b in first[key].boxes))
    elif example not in images:
        msg = f"`example` {example!r} is not one of the evaluated images"
        raise ValueError(msg)

    count = len(filters)
    columns = max(count, 2)
    width = max(4.2 * columns, 10.0)
    height_over_width = images[example].shape[0] / images[example].shape[1]
    # wide example images get a whole row each, so that the boxes stay legible
    detection_columns = columns if height_over_width >= 0.75 else max(1, columns // 2)
    detection_rows = -(-count // detection_columns)
    detection_height = (width / detection_columns) * height_over_width + 0.7
    heights = [3.3, 4.3, detection_rows * detection_height]
    figure = Figure(figsize=(width, sum(heights) + 0.5), dpi=dpi, layout="constrained")
    grid = figure.add_gridspec(3, 1, height_ratios=heights)
    filter_axes: Any = grid[0].subgridspec(1, columns).subplots()
    middle: Any = grid[1].subgridspec(1, 2, width_ratios=[1, 1.25]).subplots()
    detection_axes: Any = np.atleast_1d(
        grid[2].subgridspec(detection_rows, detection_columns).subplots()  # type: ignore[arg-type]
    ).ravel()
    for index, filter_ in enumerate(filters):
        kind = score or filter_.score or "ncc"
        plot_filter(filter_axes[index], filter_, subtract_mean=kind == "ncc")
        image_evaluation = evaluations[index].images[example]
        counted = [d for d, keep in zip(image_evaluation.detections, image_evaluation.counted,
                                        strict=True) if keep]
        plot_detections(detection_axes[index], images[example], counted,
                        image_evaluation.boxes, iou=evaluations[index].iou)
        # two short lines, wrapped to the panel: one long line ran into its neighbour
        panel_characters = max(16, int(width / detection_columns * 9))
        name_line = textwrap.shorten(f"{filter_.name} on {example}", panel_characters,
                                     placeholder="…")
        detection_axes[index].set_title(
            f"{name_line}\n{image_evaluation.true_positives} found, "
            f"{image_evaluation.false_positives} wrong, {image_evaluation.false_negatives} missed",
            fontsize=10)
    for unused in range(count, columns):
        filter_axes[unused].axis("off")
    for unused in range(count, len(detection_axes)):
        detection_axes[unused].axis("off")
    plot_pr_curves(middle[0], evaluations)
    _plot_table(middle[1], evaluations)
    figure.suptitle(title or "patternfind compare", fontsize=14, fontweight="bold")

    with atomic_write(path) as temporary:
        if suffix == ".png":
            figure.savefig(temporary, format="png")
        else:
            buffer = BytesIO()
            figure.savefig(buffer, format="png")
            temporary.write_text(_report_html(title, evaluations, buffer.getvalue()), encoding="utf-8")
    return example


def _plot_table(ax: Any, evaluations: Sequence[Evaluation]) -> None:
    ax.axis("off")
    table = ax.table(cellText=_metrics_rows(evaluations), colLabels=_COLUMNS, loc="center",
                     cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.auto_set_column_width(list(range(len(_COLUMNS))))
    table.scale(1.0, 1.8)
    for (row, _), cell in table.get_celld().items():
        if row == 0:
            cell.set_text_props(fontweight="bold")
            cell.set_facecolor("#e8e8e8")
    legend = ("green: true positive   red: false positive   dashed blue: missed   "
              "grey: ignore box\nP, R, F1 at each filter's threshold; AP over all its detections")
    ax.text(0.5, 0.02, legend, ha="center", va="bottom", fontsize=9, transform=ax.transAxes)


def _report_html(title: str | None, evaluations: Sequence[Evaluation], png: bytes) -> str:
    heading = html.escape(title or "patternfind compare")
    header = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in _metrics_rows(evaluations)
    )
    picture = base64.b64encode(png).decode("ascii")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{heading}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:4px 10px;text-align:center}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{heading}</h1><table><tr>{header}</tr>{rows}</table>"
        f"<p><img alt='filters, precision-recall curves and detections' "
        f"src='data:image/png;base64,{picture}'></p></body></html>\n"
    )
