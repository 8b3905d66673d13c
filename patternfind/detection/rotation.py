"""Rotation search: find a filter at any angle, with the angle of each find.

Angles are in degrees, counter-clockwise as seen on screen (y down), about
the filter's centre ``((w − 1)/2, (h − 1)/2)``: the convention of
``cv2.getRotationMatrix2D``.

A filter rotated by θ is resampled (bilinearly) onto the smallest canvas
that holds it; the corners the canvas adds lie outside the rotated filter's
**mask** and never count. At 0° the canvas is the filter itself, so the
score is exactly today's.

The search is coarse to fine (as MVTec Halcon's ``find_shape_model``):

1. score every coarse angle on the image shrunk by a factor ``k`` (so the
   filter keeps at least `MIN_COARSE_SIZE` pixels a side), where the angle
   step can be ``k`` times larger;
2. keep the local maxima of the best score over angles that reach the
   threshold less a margin (at most `MAX_CANDIDATES` of them);
3. around each, at full resolution, score the fine angles within one coarse
   step and the positions within ``k + 1`` pixels;
4. fit a parabola through the best fine angle's score and its neighbours'
   for a sub-step angle, score that angle once more around the best
   position, and (with ``subpixel``) fit the position too.

The default angle step moves the filter's outermost pixel by about one
pixel: ``atan(1 / r)`` with ``r`` the filter's half-diagonal (Halcon's rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind._validation import finite_float
from patternfind.detection.parallel import map_in_threads
from patternfind.detection.peaks import find_peaks
from patternfind.detection.scores import FLAT_VARIANCE, score_pixels
from patternfind.detection.shape import (
    ShapeModel,
    gradients,
    orientations,
    pad_gradients,
    shape_model,
    shape_score_grid,
    shape_scores_at,
    shape_scores_nearest,
)
from patternfind.pixels import to_grey
from patternfind.structures import Filter

__all__ = [
    "MAX_CANDIDATES",
    "MIN_COARSE_SIZE",
    "PoseSearch",
    "angle_grid",
    "angle_range",
    "default_angle_step",
    "rotate_filter",
    "rotated_score_map",
    "search_poses",
]

#: The coarse level keeps at least this many filter pixels on its shorter side.
MIN_COARSE_SIZE = 12
#: Candidates refined per filter and pyramid level, best first (Halcon's "greediness").
MAX_CANDIDATES = 100
# Coarse scores are lower than fine ones (angle and position between samples):
# a candidate needs threshold − margin at the coarse stage.
_COARSE_MARGIN = 0.2
_FINE_MARGIN = 0.1
# Shape-model points used while searching around a candidate (all of them for the final pose).
_SEARCH_POINTS = 256


def angle_range(angles: Any) -> tuple[float, float]:
    """``(start, extent)`` in degrees of an ``(start, stop)`` range.

    ``stop < start`` is a range through 0° (``(350, 10)`` is 20° wide) when
    both lie in [0, 360]; any other ``start > stop`` is an error. The extent
    is at most 360 (a full turn).
    """
    if not isinstance(angles, (tuple, list, np.ndarray)) or len(angles) != 2:
        msg = f"`angles` must be a pair (start, stop) in degrees, got {angles!r}"
        raise ValueError(msg)
    start, stop = (finite_float(value, "angles") for value in angles)
    if start > stop:
        if not 0 <= stop < start <= 360:
            msg = (
                f"`angles` must be (start, stop) with start <= stop, got {tuple(angles)!r} "
                "(a range through 0°, such as (350, 10), is written with both ends in [0, 360])"
            )
            raise ValueError(msg)
        stop += 360
    extent = stop - start
    if extent > 360:
        msg = f"`angles` must span at most 360 degrees, got {tuple(angles)!r}"
        raise ValueError(msg)
    return start, extent


def check_angle_step(angle_step: Any, extent: float) -> float | None:
    """The validated step (None stays None): positive and no larger than the range."""
    if angle_step is None:
        return None
    step = finite_float(angle_step, "angle_step")
    if step <= 0 or step > max(extent, 0.0) or (extent == 0 and step > 0):
        msg = (
            f"`angle_step` must be positive and at most the range of `angles` "
            f"({extent:g} degrees), got {angle_step!r}"
        )
        raise ValueError(msg)
    return step


def default_angle_step(height: float, width: float) -> float:
    """Degrees that move the filter's outermost pixel by about one pixel: atan(1 / r)."""
    radius = max(0.5 * math.hypot(height, width), 1.0)
    return math.degrees(math.atan(1.0 / radius))


def angle_grid(start: float, extent: float, step: float) -> tuple[NDArray[np.float64], bool]:
    """Evenly spaced angles covering the range, no further apart than ``step``.

    Returns
    -------
    angles : (n,) float64 array
    full_turn : bool
        True when the range is a whole turn: the grid then wraps around
        (its last angle's neighbour is its first) and 360° is not repeated.
    """
    if extent >= 360 - 1e-9:
        count = math.ceil(360 / step - 1e-9)
        return np.asarray(start + np.arange(count) * (360 / count), np.float64), True
    if extent == 0:
        return np.array([start]), False
    count = math.ceil(extent / step - 1e-9)
    return np.asarray(start + np.arange(count + 1) * (extent / count), np.float64), False


def rotate_filter(
    weights: NDArray[np.float32], mask: NDArray[np.bool_] | None, angle: float
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """The filter turned ``angle`` degrees, on the smallest canvas that holds it.

    The canvas keeps the parity of the filter's sides, so the filter's
    centre stays on the same pixel grid: the canvas is ``(H − h)/2`` rows
    and ``(W − w)/2`` columns larger on each side.

    Parameters
    ----------
    weights : (h, w) or (h, w, C) float32 array
    mask : (h, w) bool array or None
    angle : float
        Degrees, counter-clockwise on screen.

    Returns
    -------
    weights : (H, W) or (H, W, C) float32 array
        Zero outside the mask.
    mask : (H, W) bool array
        The rotated mask: canvas pixels whose centre falls inside the
        rotated filter (and its own mask).
    """
    height, width = weights.shape[:2]
    coverage_in = np.ones((height, width), np.float32) if mask is None else mask.astype(np.float32)
    if angle % 360 == 0:
        return weights, coverage_in.astype(bool)
    radians = math.radians(angle)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    canvas_width = _same_parity(width * cos + height * sin, width)
    canvas_height = _same_parity(width * sin + height * cos, height)
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    matrix[0, 2] += (canvas_width - width) / 2
    matrix[1, 2] += (canvas_height - height) / 2
    size = (canvas_width, canvas_height)
    masked = weights * (coverage_in if weights.ndim == 2 else coverage_in[..., None])
    warp = {"flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    spread = cv2.warpAffine(masked, matrix, size, **warp)
    coverage = cv2.warpAffine(coverage_in, matrix, size, **warp)
    rotated_mask = coverage >= 0.5
    # Divide by the coverage so that the filter's edge pixels are not darkened
    # by the zeros beyond it (normalised interpolation).
    safe = np.where(rotated_mask, coverage, 1).astype(np.float32)
    rotated = spread / (safe if spread.ndim == 2 else safe[..., None])
    rotated[~rotated_mask] = 0
    return np.ascontiguousarray(rotated, np.float32), rotated_mask


def _same_parity(extent: float, reference: int) -> int:
    size = max(math.ceil(extent - 1e-6), reference if extent >= reference - 1e-6 else 1)
    return size + 1 if (size - reference) % 2 else size


def rotated_score_map(
    pixels: NDArray[np.float32], filter_: Filter, angle: float, *, score: str = "ncc"
) -> NDArray[np.float32]:
    """The score of ``filter_`` turned by ``angle`` at every position of an image.

    Parameters
    ----------
    pixels : (H, W) or (H, W, C) float32 array
        An image the filter can score (grey for grey filters).
    filter_ : Filter
        A pixel filter.
    angle : float
        Degrees, counter-clockwise on screen.
    score : {"ncc", "dot", "cosine"}

    Returns
    -------
    (H − H_r + 1, W − W_r + 1) float32 array
        Entry (i, j) scores the rotated filter's canvas (``H_r × W_r``,
        see `rotate_filter`) with its top-left pixel at (row i, column j).
        At 0° this is exactly `patternfind.detection.scores.score_map`.
    """
    if angle % 360 == 0:
        return score_pixels(pixels, filter_, score)
    weights, mask = rotate_filter(filter_.weights, filter_.mask, angle)
    turned = Filter(weights, bias=filter_.bias, name=filter_.name, mask=mask)
    return score_pixels(pixels, turned, score)


# ---------------------------------------------------------------- the search


@dataclass(frozen=True)
class PoseSearch:
    """One filter's rotation search, with every option resolved.

    Attributes
    ----------
    filter : Filter
        A pixel filter.
    score : {"ncc", "dot", "cosine", "shape"}
    threshold : float
    start, extent : float
        The angle range in degrees (`angle_range`); extent 0 searches ``start`` only.
    angle_step : float, optional
        Fine step in degrees; default `default_angle_step`.
    polarity : {"use", "ignore"}
    min_contrast : float
    subpixel : bool
    """

    filter: Filter
    score: str
    threshold: float
    start: float = 0.0
    extent: float = 0.0
    angle_step: float | None = None
    polarity: str = "use"
    min_contrast: float = 0.02
    subpixel: bool = False


def search_poses(
    view: NDArray[np.float32], search: PoseSearch, *, workers: int = 1
) -> tuple[NDArray[np.float64], NDArray[np.float32], tuple[float, float]]:
    """Every pose of one filter in one image (one pyramid level).

    Parameters
    ----------
    view : (H, W) or (H, W, C) float32 array
        The image as the filter scores it (grey for a grey filter).
    search : PoseSearch
    workers : int
        Threads for the coarse angles and the candidates.

    Returns
    -------
    poses : (n, 4) float64 array
        ``cx, cy, angle, score``: the filter's centre in ``view`` pixels, the
        angle in degrees (within the searched range) and the score, for every
        refined candidate scoring at least the threshold.
    coarse_map : (M, N) float32 array
        The best coarse score over angles; entry (i, j) is the unrotated
        filter with its top-left corner at coarse pixel (i, j).
    coarse_scale : (float, float)
        ``view`` pixels per coarse pixel (rows, columns).
    """
    filter_ = search.filter
    height, width = filter_.weights.shape[:2]
    fine_step = search.angle_step or default_angle_step(height, width)
    fine_angles, full_turn = angle_grid(search.start, search.extent, fine_step)
    fine_step = float(fine_angles[1] - fine_angles[0]) if len(fine_angles) > 1 else fine_step
    # A turned filter's canvas is larger than the filter: near the border it leaves the
    # image although the turned filter (its mask) does not. The image is padded so that
    # every canvas fits, and a pose counts only if its mask lies on the image.
    pad = _border_pad(height, width) if search.score != "shape" else 0
    original_shape = view.shape[:2]
    if pad:
        view = cv2.copyMakeBorder(view, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    inside = (pad, pad, pad + original_shape[0], pad + original_shape[1]) if pad else None
    fine = _scorer(view, filter_.weights, filter_.mask, search, inside)
    factor = _coarse_factor(height, width, search.score)
    coarse: _Scorer = fine
    if factor > 1:
        # at the coarse level, the image's edge is known to a coarse pixel: keep what may be on it
        coarse_inside = None if inside is None else (
            pad // factor, pad // factor, -(-(pad + original_shape[0]) // factor),
            -(-(pad + original_shape[1]) // factor))
        try:
            coarse = _scorer(*_shrink(view, filter_, factor), search, coarse_inside)
        except ValueError:  # the shrunken filter lost its edges (shape): search at full size
            factor = 1
    coarse_factor_rows = view.shape[0] / coarse.shape[0]
    coarse_factor_cols = view.shape[1] / coarse.shape[1]
    if factor > 1:
        coarse_step = max(fine_step, default_angle_step(*coarse.filter_size))
        coarse_angles, _ = angle_grid(search.start, search.extent, coarse_step)
    else:
        coarse_step, coarse_angles = fine_step, fine_angles
    best, best_angle = _best_over_angles(coarse, coarse_angles, workers)
    margin = (_COARSE_MARGIN if factor > 1 else _FINE_MARGIN) if search.score != "dot" else 0.0
    filled = np.where(np.isfinite(best), best, np.float32(-3)).astype(np.float32)
    rows, cols, values = find_peaks(filled, search.threshold - margin)
    order = np.argsort(-values, kind="stable")[:MAX_CANDIDATES]
    coarse_height, coarse_width = coarse.filter_size
    starts = []
    for row, col in zip(rows[order].astype(int), cols[order].astype(int), strict=True):
        centre_x = (col + (coarse_width - 1) / 2 + 0.5) * coarse_factor_cols - 0.5
        centre_y = (row + (coarse_height - 1) / 2 + 0.5) * coarse_factor_rows - 0.5
        top_left = (round(centre_y - (height - 1) / 2), round(centre_x - (width - 1) / 2))
        starts.append((top_left, float(coarse_angles[best_angle[row, col]])))
    # two coarse steps either way: at a coarse pixel beside the true centre, the best
    # coarse angle can be a step further off
    span = 2 * math.ceil(coarse_step / fine_step - 1e-9) if factor > 1 else 1
    radius = factor + 1

    def refine(start: tuple[tuple[int, int], float]) -> tuple[float, float, float, float] | None:
        return _refine(fine, start, fine_angles, full_turn, search, span, radius)

    refined = map_in_threads(refine, starts, workers)
    poses = np.array([pose for pose in refined if pose is not None], np.float64).reshape(-1, 4)
    poses[:, :2] -= pad
    if pad:  # the map of the image itself, without the padding's positions
        skip_rows, skip_cols = round(pad / coarse_factor_rows), round(pad / coarse_factor_cols)
        rows_kept = max(round(original_shape[0] / coarse_factor_rows) - coarse_height + 1, 0)
        cols_kept = max(round(original_shape[1] / coarse_factor_cols) - coarse_width + 1, 0)
        filled = np.ascontiguousarray(filled[skip_rows : skip_rows + rows_kept,
                                             skip_cols : skip_cols + cols_kept])
    return poses, filled, (coarse_factor_rows, coarse_factor_cols)


def _border_pad(height: int, width: int) -> int:
    """Pixels of padding on each side so that every turned canvas of an (height, width) filter
    fits wherever its mask lies on the image: half the diagonal's excess over the shorter
    side (the most a canvas, or the upright box, reaches beyond a turned filter), rounded up
    to a multiple of 8 (the largest coarse factor), so the coarse level keeps whole pixels."""
    excess = math.ceil((math.hypot(height, width) - min(height, width)) / 2) + 1
    return 8 * math.ceil(excess / 8)


def _coarse_factor(height: int, width: int, score: str) -> int:
    """The largest power of 2 (at most 8) that leaves the filter `MIN_COARSE_SIZE` pixels a side."""
    if score == "dot":  # a raw dot product changes scale with the level: no margin to trust
        return 1
    factor = 1
    while factor < 8 and min(height, width) / (factor * 2) >= MIN_COARSE_SIZE:
        factor *= 2
    return factor


def _shrink(
    view: NDArray[np.float32], filter_: Filter, factor: int
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_] | None]:
    """The image and the filter shrunk ``factor`` times (area averaging)."""
    height, width = view.shape[:2]
    small = cv2.resize(view, (max(1, round(width / factor)), max(1, round(height / factor))),
                       interpolation=cv2.INTER_AREA)
    filter_height, filter_width = filter_.weights.shape[:2]
    size = (max(3, round(filter_width / factor)), max(3, round(filter_height / factor)))
    weights = cv2.resize(filter_.weights, size, interpolation=cv2.INTER_AREA)
    mask = None
    if filter_.mask is not None:
        mask = cv2.resize(filter_.mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5
        if not mask.any():
            mask = None
    return small, weights, mask


def _best_over_angles(
    scorer: _Scorer, angles: NDArray[np.float64], workers: int
) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    """The best score over ``angles`` at every position, and the index of its angle."""
    chunks = [chunk for chunk in np.array_split(np.arange(len(angles)), max(1, workers)) if chunk.size]

    def run(chunk: NDArray[np.intp]) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        best = np.full(scorer.map_shape, -np.inf, np.float32)
        index = np.zeros(scorer.map_shape, np.intp)
        for position in chunk:
            scores = scorer.grid(float(angles[position]))
            better = scores > best
            best[better] = scores[better]
            index[better] = position
        return best, index

    parts = map_in_threads(run, chunks, workers)
    best, index = parts[0]
    for other_best, other_index in parts[1:]:
        better = other_best > best
        best[better] = other_best[better]
        index[better] = other_index[better]
    return best, index


def _refine(
    scorer: _Scorer,
    start: tuple[tuple[int, int], float],
    angles: NDArray[np.float64],
    full_turn: bool,
    search: PoseSearch,
    span: int,
    radius: int,
) -> tuple[float, float, float, float] | None:
    """Fine angle and position around one coarse candidate: ``(cx, cy, angle, score)`` or None."""
    (top, left), coarse_angle = start
    count = len(angles)
    step = float(angles[1] - angles[0]) if count > 1 else 0.0
    nearest = round((coarse_angle - angles[0]) / step) if step else 0
    nearest = nearest % count if full_turn else min(max(nearest, 0), count - 1)

    def around(centre: int, reach: int) -> NDArray[np.intp]:
        offsets = np.arange(-reach, reach + 1)
        if full_turn:
            return np.asarray((centre + offsets) % count, np.intp)
        return np.unique(np.clip(centre + offsets, 0, count - 1))

    # position first, at the fine angle nearest the coarse one (turning about the
    # centre barely moves the best position), then the angles around that position
    start_map = scorer.local(float(angles[nearest]), top, left, radius)
    if not np.isfinite(start_map).any():
        return None
    if search.score != "dot" and not start_map.max() >= search.threshold - _COARSE_MARGIN:
        return None  # as weak at full size as it was coarse: not worth the angle scan
    row, col = np.unravel_index(int(np.argmax(start_map)), start_map.shape)
    top, left = top + int(row) - radius, left + int(col) - radius
    indices = around(nearest, span)
    if span > 1:
        # the coarse angle may have been far enough off to misplace the position: scan
        # the angles over a wider neighbourhood, search the position again at the best
        # angle, then the nearby angles once more
        scan = [scorer.local(float(angles[i]), top, left, 2) for i in indices]
        best_index = int(indices[int(np.argmax([m.max() for m in scan]))])
        again = scorer.local(float(angles[best_index]), top, left, 3)
        row, col = np.unravel_index(int(np.argmax(again)), again.shape)
        top, left = top + int(row) - 3, left + int(col) - 3
        indices = around(best_index, 2)
    maps = [scorer.local(float(angles[i]), top, left, 1) for i in indices]
    fine = scorer.fine or scorer.local
    # Each angle's score at its sub-pixel peak near this position: at whole pixels a
    # fraction of a pixel costs as much score as a fraction of a step, which would skew the fit.
    per_angle = np.array([_peak_value(local) for local in maps], np.float64)
    if not per_angle.max() >= search.threshold - _FINE_MARGIN:
        return None  # not worth the exact score of the final pose
    best = int(np.argmax(per_angle))
    angle = float(angles[indices[best]])
    if 0 < best < len(indices) - 1 and step:
        if scorer.fine is not None:  # the scan was approximate: score the three precisely
            for neighbour in (best - 1, best, best + 1):
                maps[neighbour] = scorer.fine(float(angles[indices[neighbour]]), top, left, 1)
                per_angle[neighbour] = _peak_value(maps[neighbour])
        angle += step * _parabola_vertex(*per_angle[best - 1 : best + 2])
        # once more at half the spacing around the estimate: the score is not quite a
        # parabola over a whole step
        half = step / 2
        if scorer.at is not None:  # scored at the sub-pixel position itself
            local = fine(angle, top, left, 1)
            row, col = np.unravel_index(int(np.argmax(local)), local.shape)
            if row == 1 and col == 1:
                y = top + _parabola_vertex(*local[:, 1])
                x = left + _parabola_vertex(*local[1, :])
                closer = [scorer.at(turn, y, x) for turn in (angle - half, angle, angle + half)]
                angle += half * _parabola_vertex(*closer)
        else:
            closer = [_peak_value(fine(turn, top, left, 1))
                      for turn in (angle - half, angle, angle + half)]
            angle += half * _parabola_vertex(*closer)
    if not full_turn:
        angle = min(max(angle, search.start), search.start + search.extent)
    row, col = np.unravel_index(int(np.argmax(maps[best])), maps[best].shape)
    top, left = top + int(row) - 1, left + int(col) - 1
    final = (scorer.exact or scorer.fine or scorer.local)(angle, top, left, 2)
    row, col = np.unravel_index(int(np.argmax(final)), final.shape)
    score = float(final[row, col])
    if not score >= search.threshold:
        return None
    y, x = float(top + int(row) - 2), float(left + int(col) - 2)
    if search.subpixel and 0 < row < 4 and 0 < col < 4:
        y += _parabola_vertex(*final[row - 1 : row + 2, col])
        x += _parabola_vertex(*final[row, col - 1 : col + 2])
    height, width = search.filter.weights.shape[:2]
    angle = (angle - search.start) % 360 + search.start if full_turn else angle
    if angle >= 360:
        angle -= 360
    return x + (width - 1) / 2, y + (height - 1) / 2, angle, score


def _peak_value(scores: NDArray[np.float32]) -> float:
    """The highest value of the parabolas through a 3×3 map's centre row and column.

    Offsets are limited to half a pixel; an axis that is not curved down adds nothing.
    """
    centre = float(scores[1, 1])
    if not np.isfinite(scores).all():
        return float(np.max(scores))
    value = centre
    for before, after in ((scores[1, 0], scores[1, 2]), (scores[0, 1], scores[2, 1])):
        curvature = (float(before) + float(after) - 2 * centre) / 2
        slope = (float(after) - float(before)) / 2
        if curvature < 0:
            offset = min(max(-slope / (2 * curvature), -0.5), 0.5)
            value += curvature * offset * offset + slope * offset
    return value


def _parabola_vertex(before: float, centre: float, after: float) -> float:
    """Offset in [−0.5, 0.5] of the vertex of the parabola through (−1, 0, +1); 0 if not a peak."""
    curvature = float(before) - 2 * float(centre) + float(after)
    if not np.isfinite(curvature) or curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (float(before) - float(after)) / curvature, -0.5, 0.5))


# ---------------------------------------------------------------- scorers


@dataclass
class _Scorer:
    """Scores of one filter on one image: on the whole grid (coarse) or around a position (fine).

    ``grid(angle)`` has the shape of an upright filter's score map: entry
    (i, j) is the filter centred where the unrotated filter with its top-left
    corner at (i, j) is centred; positions where the rotated filter does not
    fit score −inf. ``local(angle, top, left, radius)`` is the same for the
    (2·radius + 1)² top-left corners around (top, left).
    """

    shape: tuple[int, int]
    filter_size: tuple[int, int]
    grid: Callable[[float], NDArray[np.float32]] = field(repr=False)
    local: Callable[[float, int, int, int], NDArray[np.float32]] = field(repr=False)
    #: `local` precise enough to tell neighbouring angles apart (default: `local`)
    fine: Callable[[float, int, int, int], NDArray[np.float32]] | None = field(
        default=None, repr=False)
    #: `local` at the score's full precision, for the final pose (default: `fine`)
    exact: Callable[[float, int, int, int], NDArray[np.float32]] | None = field(
        default=None, repr=False)
    #: the score with the filter's top-left corner at a sub-pixel (row, column), if possible
    at: Callable[[float, float, float], float] | None = field(default=None, repr=False)

    @property
    def map_shape(self) -> tuple[int, int]:
        return (max(self.shape[0] - self.filter_size[0] + 1, 0),
                max(self.shape[1] - self.filter_size[1] + 1, 0))


def _scorer(
    view: NDArray[np.float32], weights: NDArray[np.float32], mask: NDArray[np.bool_] | None,
    search: PoseSearch, inside: tuple[int, int, int, int] | None = None,
) -> _Scorer:
    if search.score == "shape":
        return _shape_scorer(view, weights, mask, search)
    return _pixel_scorer(view, weights, mask, search, inside)


def _pixel_scorer(
    view: NDArray[np.float32], weights: NDArray[np.float32], mask: NDArray[np.bool_] | None,
    search: PoseSearch, inside: tuple[int, int, int, int] | None = None,
) -> _Scorer:
    """Scores of a pixel filter; with ``inside`` (top, left, bottom, right: the image within a
    padded ``view``), −inf wherever the turned filter's mask leaves that rectangle."""
    score, bias = search.score, search.filter.bias
    height, width = weights.shape[:2]
    # ncc ignores the image's mean: removing it keeps the float32 window sums accurate
    image = view - np.float32(view.mean(dtype=np.float64)) if score == "ncc" else view
    cache: dict[float, _RotatedTemplate] = {}
    lazy: dict[str, Any] = {}

    def template(angle: float) -> _RotatedTemplate:
        if angle not in cache:
            cache[angle] = _RotatedTemplate.build(weights, mask, angle, score)
        return cache[angle]

    def grid(angle: float) -> NDArray[np.float32]:
        rotated = template(angle)
        result = np.full((view.shape[0] - height + 1, view.shape[1] - width + 1), -np.inf, np.float32)
        canvas_height, canvas_width = rotated.mask.shape
        if canvas_height > view.shape[0] or canvas_width > view.shape[1]:
            return result
        if "planes" not in lazy:
            lazy["planes"] = _planes(image)
        scores = rotated.scores(image, bias, lazy["planes"])
        top, left = (canvas_height - height) // 2, (canvas_width - width) // 2
        result[top : top + scores.shape[0], left : left + scores.shape[1]] = scores
        return off_image(result, rotated, 0, 0)

    def off_image(result: NDArray[np.float32], rotated: _RotatedTemplate, first_row: int,
                  first_col: int) -> NDArray[np.float32]:
        """−inf where the mask leaves ``inside``; result[0, 0] is the upright top-left
        (first_row, first_col)."""
        if inside is None:
            return result
        canvas_height, canvas_width = rotated.mask.shape
        # upright top-left (i, j) puts the canvas at (i − margin, j − margin)
        top = first_row - (canvas_height - height) // 2
        left = first_col - (canvas_width - width) // 2
        (mask_top, mask_bottom), (mask_left, mask_right) = rotated.mask_span
        rows = np.arange(result.shape[0]) + top
        cols = np.arange(result.shape[1]) + left
        result[(rows + mask_top < inside[0]) | (rows + mask_bottom >= inside[2]), :] = -np.inf
        result[:, (cols + mask_left < inside[1]) | (cols + mask_right >= inside[3])] = -np.inf
        return result

    def local(angle: float, top: int, left: int, radius: int) -> NDArray[np.float32]:
        rotated = template(angle)
        canvas_height, canvas_width = rotated.mask.shape
        # canvas top-left = filter top-left − the canvas margin
        row0 = top - radius - (canvas_height - height) // 2
        col0 = left - radius - (canvas_width - width) // 2
        size = 2 * radius + 1
        result = np.full((size, size), -np.inf, np.float32)
        r0, c0 = max(row0, 0), max(col0, 0)
        r1 = min(row0 + size - 1 + canvas_height, view.shape[0])
        c1 = min(col0 + size - 1 + canvas_width, view.shape[1])
        if r1 - r0 < canvas_height or c1 - c0 < canvas_width:
            return result
        block = view[r0:r1, c0:c1]
        if radius <= 1 and block.ndim == 2:  # a few positions: gather their windows, exactly
            scores = rotated.window_scores(block, bias)
        else:
            if score == "ncc":  # the block's own mean keeps its window sums accurate
                block = block - np.float32(block.mean(dtype=np.float64))
            scores = rotated.scores(np.ascontiguousarray(block), bias)
        result[r0 - row0 : r0 - row0 + scores.shape[0], c0 - col0 : c0 - col0 + scores.shape[1]] = scores
        return off_image(result, rotated, top - radius, left - radius)

    return _Scorer(view.shape[:2], (height, width), grid, local)


@dataclass(frozen=True)
class _RotatedTemplate:
    """A rotated pixel filter made ready for `cv2.matchTemplate` (masked, centred for ncc)."""

    template: NDArray[np.float32]
    mask: NDArray[np.bool_]
    mask_float: NDArray[np.float32]
    count: float
    norm_squared: float
    score: str
    #: the mask's first and last row, and first and last column, on the canvas
    mask_span: tuple[tuple[int, int], tuple[int, int]]

    @classmethod
    def build(cls, weights: NDArray[np.float32], mask: NDArray[np.bool_] | None, angle: float,
              score: str) -> _RotatedTemplate:
        rotated, rotated_mask = rotate_filter(weights, mask, angle)
        mask_float = rotated_mask.astype(np.float32)
        count = float(mask_float.sum())
        template = rotated.astype(np.float32, copy=True)
        inside = rotated_mask if template.ndim == 2 else rotated_mask[..., None]
        if score == "ncc":
            channels = template.reshape(-1, 1 if template.ndim == 2 else template.shape[2])
            means = channels[rotated_mask.reshape(-1)].mean(axis=0, dtype=np.float64)
            template -= (means[0] if template.ndim == 2 else means).astype(np.float32)
        template = np.where(inside, template, 0).astype(np.float32)
        norm_squared = float(np.square(template, dtype=np.float64).sum())
        rows, cols = np.flatnonzero(rotated_mask.any(axis=1)), np.flatnonzero(rotated_mask.any(axis=0))
        span = ((int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))) if rows.size else (
            (0, rotated_mask.shape[0] - 1), (0, rotated_mask.shape[1] - 1))
        return cls(template, rotated_mask, mask_float, count, norm_squared, score, span)

    def window_scores(self, block: NDArray[np.float32], bias: float) -> NDArray[np.float32]:
        """The score at every canvas position of a small ``block``, exactly (float64 sums).

        For the few positions around a candidate, gathering the mask's pixels of
        every window costs less than three correlations, and needs no care
        about cancellation.
        """
        height, width = self.mask.shape
        rows, cols = block.shape[0] - height + 1, block.shape[1] - width + 1
        # the mask's pixels of each window: (rows, cols, n[, C])
        inside = np.stack([
            np.stack([block[i : i + height, j : j + width][self.mask] for j in range(cols)])
            for i in range(rows)
        ]).astype(np.float64)
        template = self.template[self.mask].astype(np.float64)
        numerator = np.tensordot(inside, template, axes=template.ndim)
        if self.score == "dot":
            return (numerator + bias).astype(np.float32)
        if self.norm_squared / self.count < FLAT_VARIANCE:
            return np.zeros(numerator.shape, np.float32)
        spread = np.square(inside).sum(axis=2)
        if self.score == "ncc":
            spread -= np.square(inside.sum(axis=2)) / self.count
        if spread.ndim == 3:
            spread = spread.sum(axis=2)
        flat = spread < FLAT_VARIANCE * self.count
        denominator = np.sqrt(np.maximum(spread, 0) * self.norm_squared)
        result = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=~flat)
        return np.clip(result, -1, 1).astype(np.float32)

    def scores(self, image: NDArray[np.float32], bias: float,
               planes: list[tuple[NDArray[np.float32], NDArray[np.float32]]] | None = None,
               ) -> NDArray[np.float32]:
        """The score at every canvas position of ``image`` (float32 window sums).

        ``planes`` (each channel and its square, from `_planes`) saves
        recomputing them when one image is scored at many angles.
        """
        numerator = cv2.matchTemplate(image, self.template, cv2.TM_CCORR)
        if self.score == "dot":
            return numerator + np.float32(bias) if bias else numerator
        if self.norm_squared / self.count < FLAT_VARIANCE:
            return np.zeros_like(numerator)
        spread = np.zeros_like(numerator)
        for channel, square in planes or _planes(image):
            window_square = cv2.matchTemplate(square, self.mask_float, cv2.TM_CCORR)
            if self.score == "ncc":
                window_sum = cv2.matchTemplate(channel, self.mask_float, cv2.TM_CCORR)
                window_square -= window_sum * window_sum / np.float32(self.count)
            spread += window_square
        flat = spread < FLAT_VARIANCE * self.count
        np.maximum(spread, 0, out=spread)
        spread *= np.float32(self.norm_squared)
        np.sqrt(spread, out=spread)
        spread[flat] = np.inf
        np.divide(numerator, spread, out=numerator)
        numerator[flat] = 0
        np.clip(numerator, -1, 1, out=numerator)
        return numerator


def _planes(image: NDArray[np.float32]) -> list[tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """Each channel of ``image`` with its square (the window sums' inputs)."""
    channels = [image] if image.ndim == 2 else cv2.split(image)
    return [(channel, np.square(channel)) for channel in channels]


def _shape_scorer(
    view: NDArray[np.float32], weights: NDArray[np.float32], mask: NDArray[np.bool_] | None,
    search: PoseSearch,
) -> _Scorer:
    grey = np.ascontiguousarray(to_grey(view) if view.ndim == 3 else view, np.float32)
    model = shape_model(search.filter, min_contrast=search.min_contrast, weights=weights, mask=mask)
    height, width = weights.shape[:2]
    lazy: dict[str, Any] = {}
    # The fine search scores many poses per candidate: an evenly spread subset of the
    # points suffices there; the final pose is scored with every point.
    spread = np.unique(np.linspace(0, len(model.offsets) - 1, _SEARCH_POINTS).round().astype(int))
    sparse = ShapeModel(model.offsets[spread], model.directions[spread], model.size)
    models: dict[tuple[float, bool], ShapeModel] = {}

    def turned(angle: float, *, every_point: bool = False) -> ShapeModel:
        key = (angle, every_point)
        if key not in models:
            models[key] = (model if every_point else sparse).rotated(angle)
        return models[key]

    def unit() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        if "unit" not in lazy:
            lazy["unit"] = orientations(grey, search.min_contrast)
        return lazy["unit"]  # type: ignore[no-any-return]

    def grid(angle: float) -> NDArray[np.float32]:
        vx, vy = unit()
        return shape_score_grid(vx, vy, turned(angle, every_point=True), polarity=search.polarity)

    def positions(top: int, left: int, radius: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        steps = np.arange(-radius, radius + 1)
        return np.meshgrid(top + steps, left + steps, indexing="ij")

    def local(angle: float, top: int, left: int, radius: int) -> NDArray[np.float32]:
        vx, vy = unit()
        rows, cols = positions(top, left, radius)
        values = shape_scores_nearest(vx, vy, turned(angle),
                                      np.stack([rows.ravel(), cols.ravel()], axis=1),
                                      polarity=search.polarity)
        return values.reshape(rows.shape)

    def padded_gradients() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        if "gradients" not in lazy:
            lazy["gradients"] = pad_gradients(*gradients(grey))
        return lazy["gradients"]  # type: ignore[no-any-return]

    def bilinear(angle: float, top: int, left: int, radius: int, *,
                 every_point: bool) -> NDArray[np.float32]:
        gx, gy = padded_gradients()
        rows, cols = positions(top, left, radius)
        centres = np.stack([cols.ravel() + (width - 1) / 2, rows.ravel() + (height - 1) / 2], axis=1)
        values = shape_scores_at(gx, gy, turned(angle, every_point=every_point), centres,
                                 min_contrast=search.min_contrast, polarity=search.polarity,
                                 padded=True)
        return values.reshape(rows.shape).astype(np.float32)

    def fine(angle: float, top: int, left: int, radius: int) -> NDArray[np.float32]:
        return bilinear(angle, top, left, radius, every_point=False)

    def exact(angle: float, top: int, left: int, radius: int) -> NDArray[np.float32]:
        return bilinear(angle, top, left, radius, every_point=True)

    def at(angle: float, top: float, left: float) -> float:
        gx, gy = padded_gradients()
        centre = np.array([[left + (width - 1) / 2, top + (height - 1) / 2]])
        return float(shape_scores_at(gx, gy, turned(angle, every_point=True), centre,
                                     min_contrast=search.min_contrast,
                                     polarity=search.polarity, padded=True)[0])

    return _Scorer(grey.shape, (height, width), grid, local, fine, exact, at)
