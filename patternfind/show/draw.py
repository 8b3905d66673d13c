"""Pictures of detections: boxes drawn on the image, and score heat maps.

Pure array in, array out (uint8 RGB), drawn with OpenCV; writing the files
is the CLI's job (`patternfind.io.save_image`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind.pixels import as_rgb8
from patternfind.structures import Detection

__all__ = ["PALETTE", "draw_detections", "heatmap"]

# Tableau-10 colours (RGB): distinct, legible on photos, one per label.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def draw_detections(
    image: Any,
    detections: Sequence[Detection],
    *,
    color: tuple[int, int, int] | None = None,
    thickness: int | None = None,
    show_labels: bool = True,
) -> NDArray[np.uint8]:
    """Draw boxes with their label and score.

    A detection with an angle (from a rotation search) is drawn as its
    turned rectangle, with a tick from the middle of the filter's top edge
    towards the centre so that the turn reads at a glance (a part turned by
    180° looks the same otherwise).

    Parameters
    ----------
    image : (H, W) or (H, W, 3|4) array
    detections : sequence of Detection
    color : (r, g, b), optional
        One colour for all boxes; default, one colour per label.
    thickness : int, optional
        Line width in pixels (default scales with the image size).
    show_labels : bool
        Write "label score" above each box.

    Returns
    -------
    (H, W, 3) uint8 array
    """
    canvas = as_rgb8(image)
    thickness = thickness or max(1, round(max(canvas.shape[:2]) / 400))
    labels = sorted({d.label for d in detections})
    font_scale = max(0.35, max(canvas.shape[:2]) / 1400)
    for detection in detections:
        box_color = color or PALETTE[labels.index(detection.label) % len(PALETTE)]
        x0, y0, x1, y1 = (round(v) for v in detection.xyxy)
        if detection.angle:
            x0, y0 = _draw_turned(canvas, detection, box_color, thickness)
        else:
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), box_color, thickness, cv2.LINE_AA)
        if show_labels:
            _put_label(canvas, f"{detection.label} {detection.score:.2f}", (x0, y0), box_color,
                       font_scale)
    return canvas


def _draw_turned(canvas: NDArray[np.uint8], detection: Detection,
                 color: tuple[int, int, int], thickness: int) -> tuple[int, int]:
    """The turned rectangle and its top-edge tick; returns where the label goes (top-left)."""
    # pixel centres: the box edge x sits half a pixel left of pixel x's centre
    corners = np.array(detection.corners) - 0.5
    cv2.polylines(canvas, [np.round(corners).astype(np.int32)], True, color, thickness, cv2.LINE_AA)
    top_middle = (corners[0] + corners[1]) / 2
    centre = corners.mean(axis=0)
    tick_end = top_middle + (centre - top_middle) * 0.3
    cv2.line(canvas, tuple(int(v) for v in np.round(top_middle)),
             tuple(int(v) for v in np.round(tick_end)), color, thickness + 1, cv2.LINE_AA)
    left, top = corners.min(axis=0)
    return max(round(left), 0), max(round(top), 0)


def _put_label(
    canvas: NDArray[np.uint8], text: str, corner: tuple[int, int],
    color: tuple[int, int, int], font_scale: float,
) -> None:
    """Text on a filled tab above the box (inside it when the box touches the top)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (width, height), baseline = cv2.getTextSize(text, font, font_scale, 1)
    x, y = corner
    top = y - height - baseline - 2 if y - height - baseline - 2 >= 0 else y
    cv2.rectangle(canvas, (x, top), (x + width + 2, top + height + baseline + 2), color, -1)
    cv2.putText(canvas, text, (x + 1, top + height + 1), font, font_scale, (255, 255, 255), 1,
                cv2.LINE_AA)


def heatmap(
    shape: tuple[int, ...],
    level_maps: Sequence[Any],
    *,
    value_range: tuple[float, float] | None = None,
) -> NDArray[np.uint8]:
    """The best score at every input pixel, over all levels and filters, colour-mapped.

    Each window's score is painted at the window's centre, so a bright spot
    marks where an object's centre would be.

    Parameters
    ----------
    shape : tuple
        The input image's shape; only (H, W) is used.
    level_maps : sequence of `patternfind.detection.detector.LevelMap`
    value_range : (low, high), optional
        Scores mapped to the ends of the colour map (default: the scores'
        own range; (−1, 1) suits ncc).

    Returns
    -------
    (H, W, 3) uint8 RGB array
        Viridis colours; pixels no window centre reaches get the lowest colour.
    """
    height, width = shape[:2]
    best = np.full((height, width), -np.inf, np.float32)
    for level in level_maps:
        rows, cols = level.scores.shape
        size = (max(1, round(cols * level.step * level.scale_x)),
                max(1, round(rows * level.step * level.scale_y)))
        resized = cv2.resize(level.scores, size, interpolation=cv2.INTER_LINEAR)
        top, left = round(level.window[0] / 2), round(level.window[1] / 2)
        region = best[top : top + size[1], left : left + size[0]]
        np.maximum(region, resized[: region.shape[0], : region.shape[1]], out=region)
    finite = np.isfinite(best)
    if not finite.any():
        return np.zeros((height, width, 3), np.uint8)
    low, high = value_range or (float(best[finite].min()), float(best[finite].max()))
    scaled = (np.where(finite, best, low) - low) / max(high - low, 1e-12)
    grey = np.clip(scaled * 255 + 0.5, 0, 255).astype(np.uint8)
    coloured = cv2.applyColorMap(grey, cv2.COLORMAP_VIRIDIS)
    return cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)
