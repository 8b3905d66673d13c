"""The shape score: how well gradient *directions* agree, not grey values.

A filter's shape model is its strongest edge points, each with the unit
direction of the filter's gradient there. At a position in the image, the
score is the mean cosine between each model point's direction and the
image's gradient direction under it (MVTec Halcon's shape-based matching,
LINEMOD). Only directions count, so the score survives gamma, uneven
lighting and clutter; with ``polarity="ignore"`` the absolute cosine is
taken, so a dark-on-light part also matches light-on-dark.

Definitions (pixel values in [0, 1]):

- gradients are 3×3 Scharr derivatives divided by 32 (pixel range per
  pixel; Scharr's kernel estimates directions more evenly than Sobel's;
  OpenCV's border: reflect-101);
- an image gradient weaker than ``min_contrast`` counts as no edge: its
  cosine is 0, so flat regions score 0 and the score lies in [−1, 1];
- between pixels the image gradient is interpolated bilinearly, then
  normalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind._validation import one_of
from patternfind.pixels import prepare_image, to_grey
from patternfind.structures import Filter

__all__ = [
    "DEFAULT_MIN_CONTRAST",
    "DEFAULT_SHAPE_THRESHOLDS",
    "POLARITIES",
    "ShapeModel",
    "gradients",
    "orientations",
    "pad_gradients",
    "shape_model",
    "shape_score_grid",
    "shape_score_map",
    "shape_scores_at",
    "shape_scores_nearest",
]

#: Weakest gradient (pixel range per pixel) that counts as an edge, by default.
DEFAULT_MIN_CONTRAST = 0.02
#: Default thresholds: random textures score about 0 with polarity, but
#: 2/π ≈ 0.64 on their edges when the sign is ignored.
DEFAULT_SHAPE_THRESHOLDS = {"use": 0.7, "ignore": 0.85}
POLARITIES = ("use", "ignore")


@dataclass(frozen=True)
class ShapeModel:
    """A filter's edge points and gradient directions, relative to the filter's centre.

    Attributes
    ----------
    offsets : (n, 2) float64 array
        ``(dx, dy)`` of each point from the filter's centre ``((w − 1)/2, (h − 1)/2)``.
    directions : (n, 2) float64 array
        Unit gradient directions ``(ux, uy)`` (x right, y down).
    size : (height, width) of int
        The filter's size.
    """

    offsets: NDArray[np.float64]
    directions: NDArray[np.float64]
    size: tuple[int, int]

    def rotated(self, angle: float) -> ShapeModel:
        """The model turned ``angle`` degrees counter-clockwise on screen about its centre."""
        radians = math.radians(angle)
        cos, sin = math.cos(radians), math.sin(radians)
        # y points down, so a counter-clockwise turn on screen is x' = c·x + s·y, y' = −s·x + c·y
        rotation = np.array([[cos, sin], [-sin, cos]])
        return ShapeModel(self.offsets @ rotation.T, self.directions @ rotation.T, self.size)


def gradients(image: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Scharr gradients ``(gx, gy)`` of a grey image, in pixel range per pixel.

    Parameters
    ----------
    image : (H, W) float32 array

    Returns
    -------
    gx, gy : (H, W) float32 arrays
    """
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=cv2.FILTER_SCHARR, scale=1 / 32)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=cv2.FILTER_SCHARR, scale=1 / 32)
    return gx, gy


def orientations(
    image: NDArray[np.float32], min_contrast: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Unit gradient directions of a grey image; (0, 0) where weaker than ``min_contrast``.

    Parameters
    ----------
    image : (H, W) float32 array
    min_contrast : float

    Returns
    -------
    vx, vy : (H, W) float32 arrays
    """
    gx, gy = gradients(image)
    magnitude = cv2.magnitude(gx, gy)
    weak = magnitude < min_contrast
    magnitude[weak] = 1
    np.divide(gx, magnitude, out=gx)
    np.divide(gy, magnitude, out=gy)
    gx[weak] = 0
    gy[weak] = 0
    return gx, gy


def shape_model(filter_: Filter, *, min_contrast: float = DEFAULT_MIN_CONTRAST,
                weights: NDArray[np.float32] | None = None,
                mask: NDArray[np.bool_] | None = None) -> ShapeModel:
    """The shape model of a pixel filter: its strongest edge points.

    Points are the filter's pixels whose 3×3 neighbourhood lies inside the
    filter (and its mask) with a gradient of at least ``min_contrast``; of
    those, the strongest quarter of the filter's pixels at most.

    Parameters
    ----------
    filter_ : Filter
        A pixel filter (colour filters are converted to grey).
    min_contrast : float
    weights, mask : arrays, optional
        Use these instead of the filter's own (e.g. the filter shrunk for a
        coarse pyramid level); the filter then only names the error.

    Raises
    ------
    ValueError
        If no edge reaches ``min_contrast``.
    """
    weights = filter_.weights if weights is None else weights
    mask = filter_.mask if mask is None and weights is filter_.weights else mask
    grey = np.ascontiguousarray(to_grey(weights) if weights.ndim == 3 else weights, np.float32)
    height, width = grey.shape
    gx, gy = gradients(grey)
    magnitude = np.hypot(gx, gy)
    inside = np.zeros((height, width), bool)
    inside[1:-1, 1:-1] = True  # Scharr reads one pixel around: the border would see outside
    if mask is not None:
        inside &= cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8),
                            borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    strong = inside & (magnitude >= min_contrast)
    rows, cols = np.nonzero(strong)
    if not rows.size:
        strongest = float(magnitude[inside].max()) if inside.any() else 0.0
        msg = (
            f"filter {filter_.name!r} has no edges to match; lower min_contrast or use ncc "
            f"(its strongest gradient is {strongest:.3g}, min_contrast={min_contrast:g})"
        )
        raise ValueError(msg)
    strength = magnitude[rows, cols]
    keep = max(4, (height * width) // 4)
    if rows.size > keep:
        # strongest first; ties by raster order so the model is deterministic
        order = np.lexsort((np.arange(rows.size), -strength))[:keep]
        order.sort()
        rows, cols, strength = rows[order], cols[order], strength[order]
    offsets = np.stack([cols - (width - 1) / 2, rows - (height - 1) / 2], axis=1).astype(np.float64)
    directions = np.stack([gx[rows, cols], gy[rows, cols]], axis=1).astype(np.float64)
    directions /= strength.astype(np.float64)[:, None]
    return ShapeModel(offsets, directions, (height, width))


def shape_score_map(
    image: Any,
    filter_: Filter,
    *,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
    polarity: str = "use",
) -> NDArray[np.float32]:
    """The shape score of an upright filter at every position where it fits.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array
        Any dtype `patternfind.pixels.prepare_image` accepts; colour is
        converted to grey.
    filter_ : Filter
        A pixel filter with edges of at least ``min_contrast``.
    min_contrast : float
    polarity : {"use", "ignore"}

    Returns
    -------
    (H − h + 1, W − w + 1) float32 array
        Entry (i, j) scores the filter with its top-left pixel at (row i, column j).
    """
    one_of(polarity, "polarity", POLARITIES)
    pixels = prepare_image(image)
    grey = np.ascontiguousarray(to_grey(pixels) if pixels.ndim == 3 else pixels, np.float32)
    model = shape_model(filter_, min_contrast=min_contrast)
    vx, vy = orientations(grey, min_contrast)
    return shape_score_grid(vx, vy, model, polarity=polarity)


def shape_score_grid(
    vx: NDArray[np.float32],
    vy: NDArray[np.float32],
    model: ShapeModel,
    *,
    polarity: str = "use",
) -> NDArray[np.float32]:
    """The shape score at every pixel, with model points rounded to whole pixels (fast, coarse).

    Entry (i, j) scores the model centred at ``(j + (w − 1)/2, i + (h − 1)/2)``,
    i.e. the unrotated filter with its top-left corner at (row i, column j);
    the map has the shape of an upright filter's score map. Points falling
    outside the image count as no edge.

    Parameters
    ----------
    vx, vy : (H, W) float32 arrays
        From `orientations`.
    model : ShapeModel
    polarity : {"use", "ignore"}

    Returns
    -------
    (H − h + 1, W − w + 1) float32 array
    """
    height, width = model.size
    rows_out, cols_out = vx.shape[0] - height + 1, vx.shape[1] - width + 1
    total = np.zeros((rows_out, cols_out), np.float32)
    if rows_out <= 0 or cols_out <= 0:
        return total
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    whole = np.rint(model.offsets + centre).astype(int)  # point position from the top-left
    pad = int(max(0, -whole.min(), whole[:, 0].max() - width + 1, whole[:, 1].max() - height + 1))
    if pad:
        vx = cv2.copyMakeBorder(vx, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        vy = cv2.copyMakeBorder(vy, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    term = np.empty_like(total)
    scratch = np.empty_like(total)
    for (dx, dy), (ux, uy) in zip(whole.tolist(), model.directions.astype(np.float32).tolist(),
                                  strict=True):
        top, left = dy + pad, dx + pad
        np.multiply(vx[top : top + rows_out, left : left + cols_out], np.float32(ux), out=term)
        np.multiply(vy[top : top + rows_out, left : left + cols_out], np.float32(uy), out=scratch)
        term += scratch
        if polarity == "ignore":
            np.abs(term, out=term)
        total += term
    total /= np.float32(len(model.offsets))
    return total


def shape_scores_nearest(
    vx: NDArray[np.float32],
    vy: NDArray[np.float32],
    model: ShapeModel,
    top_lefts: NDArray[np.intp],
    *,
    polarity: str = "use",
) -> NDArray[np.float32]:
    """`shape_score_grid` at a few positions only (model points rounded to whole pixels).

    Parameters
    ----------
    vx, vy : (H, W) float32 arrays
        From `orientations`.
    model : ShapeModel
    top_lefts : (P, 2) int array
        ``(row, column)`` of the unrotated filter's top-left corner.
    polarity : {"use", "ignore"}

    Returns
    -------
    (P,) float32 array
    """
    height, width = model.size
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    whole = np.rint(model.offsets + centre).astype(np.intp)
    cols = top_lefts[:, 1, None] + whole[None, :, 0]
    rows = top_lefts[:, 0, None] + whole[None, :, 1]
    inside = (rows >= 0) & (rows < vx.shape[0]) & (cols >= 0) & (cols < vx.shape[1])
    rows, cols = np.clip(rows, 0, vx.shape[0] - 1), np.clip(cols, 0, vx.shape[1] - 1)
    directions = model.directions.astype(np.float32)
    cosine = vx[rows, cols] * directions[:, 0] + vy[rows, cols] * directions[:, 1]
    cosine[~inside] = 0
    if polarity == "ignore":
        np.abs(cosine, out=cosine)
    return cosine.mean(axis=1, dtype=np.float32)


def pad_gradients(
    gx: NDArray[np.float32], gy: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``gx`` and ``gy`` with a border of one zero pixel (for `shape_scores_at`)."""
    return (cv2.copyMakeBorder(gx, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0),
            cv2.copyMakeBorder(gy, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0))


def shape_scores_at(
    gx: NDArray[np.float32],
    gy: NDArray[np.float32],
    model: ShapeModel,
    centres: NDArray[np.float64],
    *,
    min_contrast: float,
    polarity: str = "use",
    padded: bool = False,
) -> NDArray[np.float64]:
    """The shape score of ``model`` centred at each of ``centres`` (any real positions).

    The image gradient is interpolated bilinearly at each model point, then
    normalised; points outside the image, or weaker than ``min_contrast``, add 0.

    Parameters
    ----------
    gx, gy : (H, W) float32 arrays
        From `gradients`.
    model : ShapeModel
    centres : (P, 2) float array
        ``(x, y)`` of the model's centre, in pixels.
    min_contrast : float
    polarity : {"use", "ignore"}
    padded : bool
        ``gx`` and ``gy`` already have a border of one zero pixel (added with
        `pad_gradients`, to save the copy when scoring many times); positions
        still refer to the image without it.

    Returns
    -------
    (P,) float64 array
    """
    centres = np.asarray(centres, np.float64).reshape(-1, 2)
    points = centres[:, None, :] + model.offsets[None, :, :]  # (P, n, 2)
    x, y = points[..., 0], points[..., 1]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    # A zero border of one pixel: clipping a tap outside the image onto it reads 0.
    padded_x, padded_y = (gx, gy) if padded else pad_gradients(gx, gy)
    height, width = padded_x.shape[0] - 2, padded_x.shape[1] - 2
    cols0 = np.clip(x0.astype(np.intp) + 1, 0, width + 1)
    rows0 = np.clip(y0.astype(np.intp) + 1, 0, height + 1)
    cols1 = np.clip(x0.astype(np.intp) + 2, 0, width + 1)
    rows1 = np.clip(y0.astype(np.intp) + 2, 0, height + 1)
    sample_x = np.zeros(x.shape)
    sample_y = np.zeros(x.shape)
    for rows, cols, weight in ((rows0, cols0, (1 - fx) * (1 - fy)), (rows0, cols1, fx * (1 - fy)),
                               (rows1, cols0, (1 - fx) * fy), (rows1, cols1, fx * fy)):
        sample_x += padded_x[rows, cols] * weight
        sample_y += padded_y[rows, cols] * weight
    magnitude = np.hypot(sample_x, sample_y)
    strong = magnitude >= min_contrast
    cosine = (sample_x * model.directions[:, 0] + sample_y * model.directions[:, 1])
    cosine = np.divide(cosine, magnitude, out=np.zeros_like(cosine), where=strong)
    if polarity == "ignore":
        cosine = np.abs(cosine)
    return cosine.mean(axis=1)
