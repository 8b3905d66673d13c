"""Rotation search for feature filters (HOG, gradients, networks): the image turns, not the filter.

A learned feature filter cannot be turned like a pixel filter: its weights
live on a grid of cells and orientation bins. So, as the issue asks, the
*image* is turned instead. For every searched angle θ the pyramid level is
turned by −θ onto a canvas large enough to hold all of it (`turn_image`),
the features are computed on that canvas once and scored by every feature
filter with the detector's upright machinery (the same feature maps and
correlations as `patternfind.detect` without angles), and each peak maps
back to the level through the inverse turn: its window's centre, the angle
θ, and so the turned box's corners.

Only windows that lie wholly inside the image count. The canvas's corners
come from outside the image: they are filled by mirroring the image (so that
the features of windows next to them see a natural continuation, not a hard
edge), but a window covering any canvas pixel whose centre lies outside the
image is never a detection.

The score of a window falls fast as the cell grid slides off the part, so
every angle is scored with the grid at four phases (moved half a cell right,
down, and both).

Refinement: around each peak (the best `MAX_CANDIDATES` per filter and
level, one per object), small patches of the level are turned about the
part's estimated centre and scored with the window centred on it:

1. the centre at the coarse angle, over half-cell shifts and then whole
   pixels (a parabola along each axis);
2. the angle, a quarter step apart over one step either way (each angle's
   best score within a cell), with a parabola through the best and its
   neighbours, then the centre again at that angle;
3. the angle again at an eighth of a step, and the centre.

The default step follows Halcon's rule on the feature grid: the turn that
moves the window's outermost point by about one *cell*, ``atan(cell / r)``
with ``r`` the window's half-diagonal. Features pool gradients over cells (and
orientations over 20° bins for HOG's default 9 unsigned bins), so a turn
that moves the window's corners by less than a cell barely changes them: a
finer step costs more turned images and finds nothing more. A 54-pixel face
window with 6-pixel cells gets 8.9°, a 64 × 128 pedestrian window with
8-pixel cells 6.4°.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind.detection.parallel import map_in_threads
from patternfind.detection.peaks import find_peaks
from patternfind.detection.rotation import MAX_CANDIDATES, angle_grid

__all__ = [
    "FeatureTarget",
    "ScoreImage",
    "TurnedImage",
    "default_feature_angle_step",
    "search_turned_features",
    "turn_image",
    "valid_windows",
]

#: Cells of search space on each side of a candidate in a refinement patch.
_SEARCH_CELLS = 1
#: Cells of context beyond that, so the window's features (gradients, block
#: normalisation over neighbouring cells) are those the whole image gives.
_CONTEXT_CELLS = 2
#: Refinement angles: this many quarter steps either side of the coarse angle.
_FINE_REACH = 4

#: Scores every filter of a feature kind on one image: for each filter its
#: score map (None if it does not fit) and the map's step in pixels.
ScoreImage = Callable[[NDArray[np.float32]], list[tuple[NDArray[np.float32] | None, int]]]


@dataclass(frozen=True)
class FeatureTarget:
    """One feature filter searched with turned images.

    Attributes
    ----------
    index : int
        The filter's position in the detector's list.
    window : (height, width) of int
        Pixels a score map entry covers (at the level's scale).
    cell : int
        Pixels per feature map entry.
    threshold : float
    """

    index: int
    window: tuple[int, int]
    cell: int
    threshold: float


@dataclass(frozen=True)
class TurnedImage:
    """An image turned by −θ, so that a part turned by θ stands upright in it.

    Attributes
    ----------
    pixels : (H', W') or (H', W', C) float32 array
        Canvas pixels from outside the image mirror the image.
    to_image : (2, 3) float64 array
        Affine map of canvas pixel coordinates ``(x', y', 1)`` to image ones.
    image_shape : (H, W)
        The size of the turned image.
    """

    pixels: NDArray[np.float32]
    to_image: NDArray[np.float64]
    image_shape: tuple[int, int]

    @property
    def valid(self) -> NDArray[np.bool_]:
        """(H', W') bool array: canvas pixels whose centre lies on the image (within half a pixel)."""
        grid = np.indices(self.pixels.shape[:2], dtype=np.float64)
        x, y = _to_image(self, grid[1], grid[0])
        return _on_image(self, x, y)


def default_feature_angle_step(window: tuple[int, int], cell: int) -> float:
    """Degrees that move the window's outermost point by about one cell: atan(cell / r)."""
    radius = max(0.5 * math.hypot(*window), 1.0)
    return math.degrees(math.atan(min(cell, radius) / radius))


def turn_image(
    image: NDArray[np.float32],
    angle: float,
    *,
    centre: tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    shift: int = 0,
) -> TurnedImage:
    """Turn ``image`` by −``angle`` degrees, onto a canvas that holds it all or a patch.

    Parameters
    ----------
    image : (H, W) or (H, W, C) float32 array
    angle : float
        Degrees, counter-clockwise on screen: a part turned by ``angle`` in
        ``image`` stands upright on the canvas.
    centre : (x, y) of float, optional
        Turn about this point (pixel-centre coordinates) and return the patch
        of ``size`` centred on it. Default: the whole image on the smallest
        canvas that holds it, turned about its centre.
    size : (height, width) of int, optional
        The patch's size; needed with ``centre``.
    shift : int
        Whole image only: move it this many pixels right and down on a canvas
        as much larger, so that a grid of cells falls on it at another phase.

    Returns
    -------
    TurnedImage
        At a whole turn without ``centre``, the image itself (every pixel valid).
    """
    height, width = image.shape[:2]
    if centre is None:
        if angle % 360 == 0 and not shift:
            return TurnedImage(image, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (height, width))
        radians = math.radians(angle)
        cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
        size = (math.ceil(width * sin + height * cos - 1e-6) + shift,
                math.ceil(width * cos + height * sin - 1e-6) + shift)
        centre = ((width - 1) / 2, (height - 1) / 2)
    assert size is not None
    canvas_height, canvas_width = size
    forward = cv2.getRotationMatrix2D(centre, -angle, 1.0)
    forward[:, 2] += ((canvas_width - 1 + shift) / 2 - centre[0],
                      (canvas_height - 1 + shift) / 2 - centre[1])
    pixels = cv2.warpAffine(image, forward, (canvas_width, canvas_height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT_101)
    return TurnedImage(np.ascontiguousarray(pixels, np.float32),
                       cv2.invertAffineTransform(forward).astype(np.float64), (height, width))


def valid_windows(turned: TurnedImage, map_shape: tuple[int, int], step: int,
                  window: tuple[int, int]) -> NDArray[np.bool_]:
    """Which entries of a score map on a turned image cover only pixels of the image.

    Parameters
    ----------
    turned : TurnedImage
    map_shape : (M, N)
        Entry (i, j) covers the ``window`` whose top-left pixel is ``(i · step, j · step)``.
    step : int
    window : (height, width) of int

    Returns
    -------
    (M, N) bool array
        True where every pixel of the window has its centre on the image
        (`TurnedImage.valid`). The image and a window are convex, so that
        holds when it holds for the window's four corner pixels.
    """
    rows = np.arange(map_shape[0], dtype=np.float64)[:, None] * step
    cols = np.arange(map_shape[1], dtype=np.float64)[None, :] * step
    inside = np.ones(map_shape, bool)
    for down in (0, window[0] - 1):
        for right in (0, window[1] - 1):
            inside &= _on_image(turned, *_to_image(turned, cols + right, rows + down))
    return inside


def _to_image(turned: TurnedImage, x: NDArray[np.float64], y: NDArray[np.float64]
              ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    (a, b, c), (d, e, f) = turned.to_image
    return a * x + b * y + c, d * x + e * y + f


def _on_image(turned: TurnedImage, x: NDArray[np.float64], y: NDArray[np.float64]
              ) -> NDArray[np.bool_]:
    # a hair of tolerance: a whole turn maps pixel centres onto pixel centres up to rounding
    height, width = turned.image_shape
    tolerance = 0.5 + 1e-6
    return ((x >= -tolerance) & (x <= width - 1 + tolerance)
            & (y >= -tolerance) & (y <= height - 1 + tolerance))


def _window_centres(turned: TurnedImage, rows: NDArray[np.float64], cols: NDArray[np.float64],
                    step: int, window: tuple[int, int]) -> NDArray[np.float64]:
    """(n, 2) image coordinates (x, y) of the centres of the windows at map (rows, cols)."""
    x = cols * step + (window[1] - 1) / 2
    y = rows * step + (window[0] - 1) / 2
    return np.column_stack([x, y, np.ones_like(x)]) @ turned.to_image.T


def _masked_scores(turned: TurnedImage, scores: NDArray[np.float32], step: int,
                   window: tuple[int, int]) -> NDArray[np.float32]:
    """``scores`` with −inf where the window covers a pixel from outside the image."""
    keep = valid_windows(turned, scores.shape, step, window)
    return np.where(keep, scores, np.float32(-np.inf)).astype(np.float32)


def search_turned_features(
    level: NDArray[np.float32],
    targets: Sequence[FeatureTarget],
    score_image: ScoreImage,
    *,
    start: float,
    extent: float,
    angle_step: float | None,
    subpixel: bool,
    workers: int = 1,
    keep_maps: bool = False,
) -> tuple[list[NDArray[np.float64]], list[NDArray[np.float32] | None]]:
    """Every pose of the feature filters in one pyramid level.

    Parameters
    ----------
    level : (H, W) or (H, W, C) float32 array
    targets : sequence of FeatureTarget
        The filters ``score_image`` scores, in its order.
    score_image : callable
        ``score_image(pixels)`` scores every target on an image: the
        detector's upright feature maps and correlations.
    start, extent : float
        The angle range in degrees (`patternfind.detection.rotation.angle_range`).
    angle_step : float, optional
        Degrees between turned images; default the finest
        `default_feature_angle_step` of the targets.
    subpixel : bool
        Locate the coarse peaks between cells (a parabola through the cell
        grid's scores). Refined poses are found to a fraction of a pixel
        either way: they are not on any grid.
    workers : int
        Threads over the angles and the candidates.
    keep_maps : bool
        Also return each target's best score over the angles.

    Returns
    -------
    poses : list of (n, 4) float64 arrays, one per target
        ``cx, cy, angle, score``: the window's centre in level pixels
        (pixel-centre coordinates), its angle in degrees and its score.
    maps : list of (M, N) float32 arrays or None, one per target
        With ``keep_maps``, entry (i, j) is the best score over the coarse
        angles of the window centred where the upright window with its
        top-left pixel at ``(i · cell, j · cell)`` is centred (the map's
        lowest score where no turned window there lies on the image); else None.
    """
    step = angle_step or min(default_feature_angle_step(t.window, t.cell) for t in targets)
    angles, full_turn = angle_grid(start, extent, step)
    step = float(angles[1] - angles[0]) if len(angles) > 1 else step

    # The score of a window falls fast as the cell grid slides off the part (a learned
    # face filter lost 1.5 of its 2.5 to a 3-pixel shift), so each angle is also scored
    # with the grid moved half a cell right, down and both: no part is then more than a
    # quarter cell from a grid point, a shift that costs a fraction of that.
    half = min(target.cell for target in targets) // 2
    phases = [0] if extent == 0 or not half else [0, half]
    shifts = [(row, col) for row in phases for col in phases]
    poses_and_phases = [(float(angle), shift) for angle in angles for shift in shifts]

    def scan_angle(pose: tuple[float, tuple[int, int]]
                   ) -> list[tuple[NDArray[np.float64], NDArray[np.float32] | None]]:
        angle, (down, right) = pose
        turned = _phase(turn_image(level, angle, shift=max(down, right)), down, right)
        found: list[tuple[NDArray[np.float64], NDArray[np.float32] | None]] = []
        for target, (scores, cell) in zip(targets, score_image(turned.pixels), strict=True):
            if scores is None:
                found.append((np.zeros((0, 4)), None))
                continue
            scores = _masked_scores(turned, scores, cell, target.window)
            rows, cols, values = find_peaks(scores, target.threshold, subpixel=subpixel)
            centres = _window_centres(turned, rows, cols, cell, target.window)
            upright = _upright_map(turned, scores, cell, target.window) if keep_maps else None
            found.append((np.column_stack([centres, np.full(len(values), angle), values]), upright))
        return found

    per_angle = map_in_threads(scan_angle, poses_and_phases, workers)
    maps: list[NDArray[np.float32] | None] = []
    for position in range(len(targets)):
        upright_maps = [upright for found in per_angle
                        if (upright := found[position][1]) is not None]
        maps.append(_floored(np.maximum.reduce(upright_maps)) if upright_maps else None)
    results = []
    for position, target in enumerate(targets):
        candidates = np.concatenate([found[position][0] for found in per_angle]).reshape(-1, 4)
        if extent == 0:  # the upright search itself: every peak, as `detect` without angles
            results.append(candidates)
            continue
        candidates = _one_per_object(candidates, target.window)
        patch = _Patch(level, target, position, score_image)

        def refine(candidate: NDArray[np.float64], patch: _Patch = patch) -> NDArray[np.float64]:
            return _refine(patch, candidate, step, start, extent, full_turn)

        refined = map_in_threads(refine, list(candidates), workers)
        results.append(np.array([pose for pose in refined if np.isfinite(pose[3])]).reshape(-1, 4))
    return results, maps


def _floored(scores: NDArray[np.float32]) -> NDArray[np.float32]:
    """``scores`` with the positions no turned window reaches set to the lowest score
    (−inf would turn into NaN where a heat map interpolates it)."""
    finite = np.isfinite(scores)
    floor = np.float32(scores[finite].min()) if finite.any() else np.float32(0)
    return np.where(finite, scores, floor).astype(np.float32)


def _phase(turned: TurnedImage, down: int, right: int) -> TurnedImage:
    """``turned`` (shifted by ``max(down, right)`` both ways) cut so it is shifted (down, right)."""
    shift = max(down, right)
    top, left = shift - down, shift - right
    if not top and not left:
        return turned
    moved = turned.to_image.copy()
    moved[:, 2] += turned.to_image[:, :2] @ [left, top]  # canvas (x', y') was (x' + left, y' + top)
    return TurnedImage(np.ascontiguousarray(turned.pixels[top:, left:]), moved, turned.image_shape)


def _upright_map(turned: TurnedImage, scores: NDArray[np.float32], cell: int,
                 window: tuple[int, int]) -> NDArray[np.float32]:
    """A turned image's score map resampled on the image's own grid of windows (nearest entry).

    Entry (i, j) of the result is the entry of ``scores`` whose window centre
    is nearest the centre of the upright window at ``(i · cell, j · cell)``.
    """
    height, width = turned.image_shape
    shape = ((height - window[0]) // cell + 1, (width - window[1]) // cell + 1)
    if min(shape) < 1:
        return np.full((max(shape[0], 0), max(shape[1], 0)), -np.inf, np.float32)
    offset = np.array([(window[1] - 1) / 2, (window[0] - 1) / 2])
    # map index (j, i) -> image centre -> canvas centre -> map index of the turned scores
    to_canvas = cv2.invertAffineTransform(turned.to_image)
    linear = to_canvas[:, :2]
    translation = (to_canvas[:, 2] + linear @ offset - offset) / cell
    resample = np.column_stack([linear, translation]).astype(np.float64)
    return cv2.warpAffine(scores, resample, (shape[1], shape[0]),
                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=-np.inf)


def _one_per_object(candidates: NDArray[np.float64], window: tuple[int, int]) -> NDArray[np.float64]:
    """The best candidates, at most `MAX_CANDIDATES`, no two closer than half the window.

    One object scores at neighbouring angles and cells: only its best peak is refined.
    """
    order = np.argsort(-candidates[:, 3], kind="stable")
    candidates = candidates[order]
    reach = min(window) / 2
    kept: list[int] = []
    alive = np.ones(len(candidates), bool)
    for index in range(len(candidates)):
        if not alive[index]:
            continue
        kept.append(index)
        if len(kept) == MAX_CANDIDATES:
            break
        distance = np.hypot(*(candidates[index + 1 :, :2] - candidates[index, :2]).T)
        alive[index + 1 :] &= distance >= reach
    return candidates[kept]


class _Patch:
    """Scores of one target in small turned patches of a level (the refinement)."""

    def __init__(self, level: NDArray[np.float32], target: FeatureTarget, position: int,
                 score_image: ScoreImage) -> None:
        self.level, self.target, self.position, self.score_image = level, target, position, score_image
        self.margin = (_SEARCH_CELLS + _CONTEXT_CELLS) * target.cell
        self.size = (target.window[0] + 2 * self.margin, target.window[1] + 2 * self.margin)

    def scores(self, angle: float, centre: tuple[float, float]
               ) -> tuple[TurnedImage, NDArray[np.float32], int] | None:
        """The target's masked score map on the patch turned by ``angle`` about ``centre``."""
        turned = turn_image(self.level, angle, centre=centre, size=self.size)
        scores, cell = self.score_image(turned.pixels)[self.position]
        if scores is None:
            return None
        return turned, _masked_scores(turned, scores, cell, self.target.window), cell

    def centred(self, angle: float, centre: tuple[float, float]) -> float:
        """The score of the window centred exactly on ``centre`` (−inf if it leaves the image)."""
        result = self.scores(angle, centre)
        if result is None:
            return -math.inf
        _, scores, cell = result
        middle = self.margin // cell
        if middle >= scores.shape[0] or middle >= scores.shape[1]:
            return -math.inf
        return float(scores[middle, middle])

    def centre_at(self, angle: float, centre: tuple[float, float]) -> tuple[float, float]:
        """The centre within a pixel of ``centre`` where the window scores best.

        Scores the window centred on the 3 × 3 whole-pixel offsets, then fits a
        parabola along each axis (offsets within half a pixel).
        """
        offsets = (-1.0, 0.0, 1.0)
        grid = np.array([[self.centred(angle, (centre[0] + dx, centre[1] + dy)) for dx in offsets]
                         for dy in offsets])
        if not np.isfinite(grid[1, 1]):
            return centre
        row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
        x, y = centre[0] + offsets[col], centre[1] + offsets[row]
        if row == 1 and col == 1:
            x += _vertex(*grid[1, :])
            y += _vertex(*grid[:, 1])
        return x, y

    def peak(self, angle: float, centre: tuple[float, float]) -> float:
        """The best score of a window within a cell of ``centre`` at ``angle``.

        The peak of the parabolas through the best entry and its neighbours
        (where they curve down), so that neighbouring angles compare their
        scores at the peak, not at the nearest cell.
        """
        result = self.scores(angle, centre)
        if result is None:
            return -math.inf
        _, scores, _ = result
        if not np.isfinite(scores).any():
            return -math.inf
        row, col = np.unravel_index(int(np.argmax(scores)), scores.shape)
        peak = float(scores[row, col])
        value = peak
        for before, after in _neighbours(scores, int(row), int(col)):
            curvature = before + after - 2 * peak
            if np.isfinite(curvature) and curvature < 0:
                offset = min(max(0.5 * (before - after) / curvature, -0.5), 0.5)
                value += 0.5 * (after - before) * offset + 0.5 * curvature * offset * offset
        return value


def _neighbours(scores: NDArray[np.float32], row: int, col: int) -> list[tuple[float, float]]:
    """The scores before and after (row, col) along rows, then columns (−inf off the map)."""
    def at(r: int, c: int) -> float:
        inside = 0 <= r < scores.shape[0] and 0 <= c < scores.shape[1]
        return float(scores[r, c]) if inside else -math.inf

    return [(at(row - 1, col), at(row + 1, col)), (at(row, col - 1), at(row, col + 1))]


def _refine(patch: _Patch, candidate: NDArray[np.float64], step: float, start: float,
            extent: float, full_turn: bool) -> NDArray[np.float64]:
    """``(cx, cy, angle, score)`` refined around one coarse candidate (score −inf if lost).

    Features pool over a cell grid, so a window's score depends on where that
    grid falls on the part as much as on the angle: angle and position are
    refined in turns, each time with the window centred on the best estimate.
    """
    centre = (float(candidate[0]), float(candidate[1]))
    angle = float(candidate[2])
    # 1. the position at the coarse angle: the peak's cell is known to half a cell, and
    # rotating about a point off the part's centre would move the part as the angle changes
    half = patch.target.cell / 2
    shifts = [(centre[0] + dx, centre[1] + dy) for dy in (-half, 0, half) for dx in (-half, 0, half)]
    values = [patch.centred(angle, shifted) for shifted in shifts]
    if not np.isfinite(values).any():
        return np.array([*centre, angle, -np.inf])
    centre = patch.centre_at(angle, shifts[int(np.argmax(values))])
    # 2. the angle, a quarter step apart, one step either way, then the position there
    quarter = step / 4
    turns = angle + quarter * np.arange(-_FINE_REACH, _FINE_REACH + 1)
    if not full_turn:
        turns = np.unique(np.clip(turns, start, start + extent))
    values = [patch.peak(float(turn), centre) for turn in turns]
    best = int(np.argmax(values))
    angle = float(turns[best])
    if 0 < best < len(turns) - 1:
        angle += float(turns[best + 1] - turns[best]) * _vertex(*values[best - 1 : best + 2])
    centre = patch.centre_at(angle, centre)
    # 3. the angle again about that centre, an eighth of a step apart, and the position
    if len(turns) > 1:
        eighth = quarter / 2
        closer = [patch.centred(turn, centre) for turn in (angle - eighth, angle, angle + eighth)]
        angle += eighth * _vertex(*closer)
        if not full_turn:
            angle = min(max(angle, start), start + extent)
        centre = patch.centre_at(angle, centre)
    score = patch.centred(angle, centre)
    if not score >= patch.target.threshold:
        return np.array([*centre, angle, -np.inf])
    angle = (angle - start) % 360 + start if full_turn else angle
    if angle >= 360:
        angle -= 360
    return np.array([*centre, angle, score])


def _vertex(before: float, centre: float, after: float) -> float:
    """Offset in [−0.5, 0.5] of the vertex of the parabola through (−1, 0, +1); 0 if not a peak."""
    curvature = before - 2 * centre + after
    if not np.isfinite(curvature) or curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5))
