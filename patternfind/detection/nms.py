"""Box overlap (IoU) and greedy non-maximum suppression, with an optional containment rule."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "box_iou",
    "convex_intersection_area",
    "non_max_suppression",
    "non_max_suppression_rotated",
    "rotated_box_iou",
]


def box_iou(boxes_a: Any, boxes_b: Any) -> NDArray[np.float64]:
    """Intersection over union of every pair of ``(x, y, w, h)`` boxes.

    Parameters
    ----------
    boxes_a : (N, 4) array
    boxes_b : (M, 4) array

    Returns
    -------
    (N, M) float64 array
        0 where a box has no area.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    bottom = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    intersection = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def non_max_suppression(
    boxes: Any,
    scores: Any,
    *,
    iou_threshold: float = 0.3,
    containment_threshold: float | None = None,
    labels: Any = None,
) -> NDArray[np.intp]:
    """Greedy NMS: keep the best box, drop those overlapping it by more than ``iou_threshold``.

    Parameters
    ----------
    boxes : (N, 4) array
        ``(x, y, w, h)`` boxes.
    scores : (N,) array
    iou_threshold : float
        Boxes whose IoU with a kept, better box exceeds this are dropped.
    containment_threshold : float, optional
        Also drop a box when more than this fraction of its own area lies
        inside a kept, better box. IoU alone lets a small box inside a
        found object survive (a half-size box inside has IoU 0.25), and
        a template does match parts of its own smooth copy.
    labels : (N,) array, optional
        If given, only boxes with the same label suppress each other.

    Returns
    -------
    (K,) int array
        Indices of the kept boxes, best score first (ties: lower index first).

    Notes
    -----
    The answer is exactly the textbook loop's (and, without the containment
    rule, `cv2.dnn.NMSBoxes`'s), but computed without a Python loop over
    boxes: only pairs whose x-ranges meet are compared, and the greedy order
    is resolved by a vectorised fixed-point iteration. benchmarks/bench_nms.py
    times it against OpenCV.

    Examples
    --------
    >>> boxes = [(0, 0, 10, 10), (1, 1, 10, 10), (30, 0, 10, 10)]
    >>> non_max_suppression(boxes, [0.9, 0.8, 0.7], iou_threshold=0.3).tolist()
    [0, 2]
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        msg = f"`boxes` has {len(boxes)} rows but `scores` has {len(scores)}"
        raise ValueError(msg)
    for name, value in (("iou_threshold", iou_threshold),
                        ("containment_threshold", containment_threshold)):
        if value is not None and not 0 <= value <= 1:
            msg = f"`{name}` must be in [0, 1], got {value!r}"
            raise ValueError(msg)
    # Rank 0 is the best box (ties: lower index first); from here on boxes are in rank order.
    order = np.argsort(-scores, kind="stable")
    columns = _Columns(boxes[order])
    same_label = None if labels is None else np.asarray(labels).reshape(-1)[order]
    rules = (iou_threshold, containment_threshold, same_label)
    if len(order) <= _DENSE:  # few boxes: every pair at once
        better, worse = np.nonzero(_dense_suppression(columns, rules))
        return order[_greedy_survivors(len(order), better, worse)]
    alive = np.ones(len(order), dtype=bool)
    for start in range(0, len(order), _BLOCK):
        block = np.arange(start, min(start + _BLOCK, len(order)))
        # First the block's boxes that a box kept from an earlier block suppresses ...
        _, worse = _pairs_between(columns, np.flatnonzero(alive[:start]), block, rules)
        alive[worse] = False
        block = block[alive[block]]
        # ... then greedy NMS among the survivors, which only suppress each other.
        better, worse = _pairs_within(columns, block, rules)
        alive[block] = _greedy_survivors(len(order), better, worse)[block]
    return order[alive]


#: Up to this many boxes, every pair is compared in one (N, N) array.
_DENSE = 64

#: Beyond that, boxes are resolved in blocks of this many, in rank order: each
#: block is checked against the boxes kept so far, then against itself, so a
#: crowd of boxes costs small comparisons, never all N² pairs.
_BLOCK = 1024

_TINY = np.finfo(np.float64).smallest_subnormal

#: Rounds of the vectorised fixed-point iteration before the plain greedy loop takes over.
_MAX_ROUNDS = 8


#: (iou_threshold, containment_threshold, labels in rank order or None)
_Rules = tuple[float, "float | None", "NDArray[Any] | None"]


class _Columns:
    """Box edges and areas as separate contiguous arrays (gathers of 1-D arrays are cheap)."""

    def __init__(self, boxes: NDArray[np.float64]) -> None:
        self.left, self.top, self.width, self.height = boxes.T.copy()
        # x + w and w * h exactly as `box_iou` (and OpenCV) compute them, so results match
        self.right, self.bottom = self.left + self.width, self.top + self.height
        self.area = self.width * self.height
        # A divisor that is never 0: where an area is 0 so is every intersection with it,
        # and max(area, the smallest float) leaves every positive area unchanged.
        self.divisor_area = np.maximum(self.area, _TINY)


def _suppresses(
    intersection: NDArray[np.float64],
    area_better: NDArray[np.float64],
    area_worse: NDArray[np.float64],
    divisor_area_worse: NDArray[np.float64],
    iou_threshold: float,
    containment_threshold: float | None,
) -> NDArray[np.bool_]:
    """Whether the better box suppresses the worse one, given their common area (≥ 0)."""
    union = area_better + area_worse
    union -= intersection
    # union ≥ intersection; where union is 0 so is the intersection: 0 / tiny = 0, not 0 / 0
    ratio = np.divide(intersection, np.maximum(union, _TINY, out=union), out=union)
    suppress = ratio > iou_threshold
    if containment_threshold is not None:
        suppress |= intersection / divisor_area_worse > containment_threshold
    return suppress


def _dense_suppression(boxes: _Columns, rules: _Rules) -> NDArray[np.bool_]:
    """(N, N) bool: box i suppresses box j (i better than j), every pair at once."""
    iou_threshold, containment_threshold, labels = rules
    # The same arithmetic as `box_iou` (and OpenCV), so that results match exactly.
    width = np.minimum(boxes.right[:, None], boxes.right)
    width -= np.maximum(boxes.left[:, None], boxes.left)
    height = np.minimum(boxes.bottom[:, None], boxes.bottom)
    height -= np.maximum(boxes.top[:, None], boxes.top)
    intersection = np.maximum(width, 0, out=width)
    intersection *= np.maximum(height, 0, out=height)
    suppress = _suppresses(intersection, boxes.area[:, None], boxes.area, boxes.divisor_area,
                           iou_threshold, containment_threshold)
    if labels is not None:
        suppress &= labels[:, None] == labels
    suppress &= _better_first(len(suppress))
    return suppress


@functools.cache
def _better_first(count: int) -> NDArray[np.bool_]:
    """(count, count) bool, True above the diagonal: where box i ranks before box j."""
    upper = np.triu(np.ones((count, count), dtype=bool), k=1)
    upper.flags.writeable = False
    return upper


def _pairs_within(
    boxes: _Columns, members: NDArray[np.intp], rules: _Rules
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Rank pairs (better, worse) of ``members`` where the better box suppresses the worse one.

    A sweep over the members sorted by their left edge pairs each box only with
    the boxes that start inside its x-range, so scattered boxes cost about
    N log N, not N².
    """
    left = boxes.left[members]
    by_left = np.argsort(left, kind="stable")
    members, left = members[by_left], left[by_left]
    stop = np.searchsorted(left, boxes.right[members], side="left")
    first = np.arange(1, len(members) + 1)
    return _sweep(boxes, members, first, stop, members, rules, within=True)


def _pairs_between(
    boxes: _Columns, suppressors: NDArray[np.intp], candidates: NDArray[np.intp], rules: _Rules
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Rank pairs (suppressor, candidate) where the suppressor, a better box, suppresses the candidate."""
    if not suppressors.size:
        empty = np.zeros(0, np.intp)
        return empty, empty
    left = boxes.left[suppressors]
    by_left = np.argsort(left, kind="stable")
    suppressors, left = suppressors[by_left], left[by_left]
    widest = float(boxes.width[suppressors].max())
    # Suppressors whose left edge lies in (candidate left − widest, candidate right) may meet it.
    first = np.searchsorted(left, boxes.left[candidates] - widest, side="right")
    stop = np.searchsorted(left, boxes.right[candidates], side="left")
    return _sweep(boxes, candidates, first, stop, suppressors, rules, within=False)


#: Candidate pairs judged at once: bounds the sweep's memory (a few arrays of this many).
_MAX_PAIRS = 1 << 22


def _sweep(
    boxes: _Columns, owners: NDArray[np.intp], first: NDArray[np.intp], stop: NDArray[np.intp],
    targets: NDArray[np.intp], rules: _Rules, *, within: bool,
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Judge the pairs (owners[k], targets[j]) for j in first[k]:stop[k], a chunk at a time."""
    counts = np.maximum(stop - first, 0)
    ends = np.cumsum(counts)
    found: list[tuple[NDArray[np.intp], NDArray[np.intp]]] = []
    start = 0
    while start < len(owners):
        done = int(ends[start - 1]) if start else 0
        end = max(int(np.searchsorted(ends, done + _MAX_PAIRS, side="right")), start + 1)
        chunk = slice(start, end)
        total = int(ends[end - 1]) - done
        offsets = np.arange(total) - np.repeat(ends[chunk] - counts[chunk] - done, counts[chunk])
        one = np.repeat(owners[chunk], counts[chunk])
        other = targets[np.repeat(first[chunk], counts[chunk]) + offsets]
        if within:  # x-ranges meet (or one box has no width); the better box ranks first
            found.append(_judge(boxes, np.minimum(one, other), np.maximum(one, other), rules))
        else:  # targets are better boxes; the window above leaves some that end too soon
            meet = boxes.left[one] < boxes.right[other]
            found.append(_judge(boxes, other[meet], one[meet], rules))
        start = end
    if len(found) == 1:
        return found[0]
    if not found:
        empty = np.zeros(0, np.intp)
        return empty, empty
    return (np.concatenate([better for better, _ in found]),
            np.concatenate([worse for _, worse in found]))


def _judge(
    boxes: _Columns, better: NDArray[np.intp], worse: NDArray[np.intp], rules: _Rules
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The pairs among (better, worse), whose x-ranges meet, in which the better box suppresses the worse."""
    iou_threshold, containment_threshold, labels = rules
    # Only boxes with a common area can suppress: reject the rest on a cheap test first.
    maybe = (boxes.top[better] < boxes.bottom[worse]) & (boxes.top[worse] < boxes.bottom[better])
    if labels is not None:
        maybe &= labels[better] == labels[worse]
    better, worse = better[maybe], worse[maybe]
    width = np.minimum(boxes.right[better], boxes.right[worse]) - np.maximum(
        boxes.left[better], boxes.left[worse])
    height = np.minimum(boxes.bottom[better], boxes.bottom[worse]) - np.maximum(
        boxes.top[better], boxes.top[worse])
    suppress = _suppresses(width * height, boxes.area[better], boxes.area[worse],
                           boxes.divisor_area[worse], iou_threshold, containment_threshold)
    return better[suppress], worse[suppress]


def _greedy_survivors(
    count: int, better: NDArray[np.intp], worse: NDArray[np.intp]
) -> NDArray[np.bool_]:
    """Which of ``count`` ranked boxes greedy NMS keeps, given that each ``better[k]`` suppresses ``worse[k]``.

    A box survives when no surviving better box suppresses it. Iterating that
    rule from "all survive" settles at least one more link of every
    suppression chain per round, and the rule has a single fixed point: greedy
    NMS's answer (Cluster-NMS, Zheng et al. 2021). Long chains fall back to
    the plain greedy loop.
    """
    survives = np.ones(count, dtype=bool)
    survives[worse] = False  # the first round, from "all survive"
    for _ in range(_MAX_ROUNDS):
        following = np.ones(count, dtype=bool)
        following[worse[survives[better]]] = False
        if np.array_equal(following, survives):
            return survives
        survives = following
    by_better = np.argsort(better, kind="stable")
    better, worse = better[by_better], worse[by_better]
    bounds = np.searchsorted(better, np.arange(count + 1))
    survives[:] = True
    for box in np.unique(better).tolist():  # in rank order
        if survives[box]:
            survives[worse[bounds[box] : bounds[box + 1]]] = False
    return survives


# ---------------------------------------------------------------- turned boxes


def rotated_box_iou(boxes_a: Any, boxes_b: Any) -> NDArray[np.float64]:
    """Intersection over union of every pair of turned boxes ``(x, y, w, h, angle)``.

    Each box is the upright ``(x, y, w, h)`` turned ``angle`` degrees
    (counter-clockwise on screen) about its centre, as `patternfind.Detection`
    has it. The intersections are computed in float64 (`convex_intersection_area`),
    to about 1e-12 of the boxes' area; OpenCV's `cv2.rotatedRectangleIntersection`
    works in float32 (about 1e-4 of the area).

    Parameters
    ----------
    boxes_a : (N, 5) array
    boxes_b : (M, 5) array

    Returns
    -------
    (N, M) float64 array
        0 where a box has no area.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 5)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 5)
    intersection = _rotated_intersections(a, b)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def _rotated_intersections(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """(N, M) intersection areas of turned boxes; pairs too far apart to touch are skipped."""
    centres_a = a[:, :2] + a[:, 2:4] / 2
    centres_b = b[:, :2] + b[:, 2:4] / 2
    reach = np.hypot(a[:, 2], a[:, 3])[:, None] / 2 + np.hypot(b[:, 2], b[:, 3])[None, :] / 2
    distance = np.hypot(centres_a[:, None, 0] - centres_b[None, :, 0],
                        centres_a[:, None, 1] - centres_b[None, :, 1])
    has_area_a = (a[:, 2] > 0) & (a[:, 3] > 0)
    has_area_b = (b[:, 2] > 0) & (b[:, 3] > 0)
    first, second = np.nonzero((distance < reach) & has_area_a[:, None] & has_area_b[None, :])
    result = np.zeros((len(a), len(b)))
    for start in range(0, len(first), _MAX_POLYGON_PAIRS):  # bounded scratch memory
        chunk = slice(start, start + _MAX_POLYGON_PAIRS)
        result[first[chunk], second[chunk]] = convex_intersection_area(
            _corners(a[first[chunk]]), _corners(b[second[chunk]]))
    return result


#: Pairs of turned boxes intersected at once (each takes a few hundred float64s).
_MAX_POLYGON_PAIRS = 1 << 14


def _corners(boxes: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n, 4, 2) corners of turned boxes ``(x, y, w, h, angle)``, counter-clockwise on screen
    as `patternfind.structures.rotated_corners` gives them."""
    centre_x = boxes[:, 0] + boxes[:, 2] / 2
    centre_y = boxes[:, 1] + boxes[:, 3] / 2
    radians = np.radians(boxes[:, 4])
    cos, sin = np.cos(radians)[:, None], np.sin(radians)[:, None]
    dx = boxes[:, 2:3] / 2 * np.array([-1.0, 1.0, 1.0, -1.0])
    dy = boxes[:, 3:4] / 2 * np.array([-1.0, -1.0, 1.0, 1.0])
    # y points down: a counter-clockwise turn on screen is x' = c·x + s·y, y' = −s·x + c·y
    return np.stack([centre_x[:, None] + cos * dx + sin * dy,
                     centre_y[:, None] - sin * dx + cos * dy], axis=-1)


def convex_intersection_area(first: NDArray[np.float64], second: NDArray[np.float64]
                             ) -> NDArray[np.float64]:
    """Areas of the intersections of pairs of convex quadrilaterals, in float64.

    The intersection of two convex polygons is the convex hull of the corners
    of each that lie in the other and the crossings of their edges; those
    points, sorted by angle about their mean, give the area by the shoelace
    formula. Everything is vectorised over the pairs.

    Parameters
    ----------
    first, second : (n, 4, 2) float64 arrays
        The corners of each quadrilateral in order around it (either direction).

    Returns
    -------
    (n,) float64 array
    """
    count = len(first)
    if not count:
        return np.zeros(0)
    # about a corner of the first: far from the origin, products of coordinates would
    # cancel away the digits of the area
    origin = first[:, :1, :]
    first, second = first - origin, second - origin
    scale = np.maximum(np.abs(first).max(axis=(1, 2)), np.abs(second).max(axis=(1, 2)))
    tolerance = (1e-12 * np.maximum(scale, 1.0) ** 2)[:, None]
    inside_first = _inside(second, first, tolerance)  # corners of `second` in `first`
    inside_second = _inside(first, second, tolerance)
    # every edge of one against every edge of the other: p + t·r = q + u·s
    p = first[:, :, None, :]
    r = np.roll(first, -1, axis=1)[:, :, None, :] - p
    q = second[:, None, :, :]
    s = np.roll(second, -1, axis=1)[:, None, :, :] - q
    denominator = _cross(r, s)
    parallel = np.abs(denominator) <= tolerance[:, :, None]
    safe = np.where(parallel, 1.0, denominator)
    t = _cross(q - p, s) / safe
    u = _cross(q - p, r) / safe
    crosses = ~parallel & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    crossings = (p + t[..., None] * r).reshape(count, 16, 2)
    points = np.concatenate([first, second, crossings], axis=1)  # (n, 24, 2)
    valid = np.concatenate([inside_second, inside_first, crosses.reshape(count, 16)], axis=1)
    enough = valid.sum(axis=1) >= 3
    mean = (points * valid[..., None]).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)[:, None]
    angle = np.arctan2(points[..., 1] - mean[:, None, 1], points[..., 0] - mean[:, None, 0])
    order = np.argsort(np.where(valid, angle, np.inf), axis=1, kind="stable")
    points = np.take_along_axis(points, order[..., None], axis=1)
    valid = np.take_along_axis(valid, order, axis=1)
    # points that are not corners of the intersection repeat its first corner: edges of length 0
    points = np.where(valid[..., None], points, points[:, :1, :])
    area = 0.5 * np.abs(_cross(points, np.roll(points, -1, axis=1)).sum(axis=1))
    return np.where(enough, area, 0.0)


def _cross(u: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.float64]:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _inside(points: NDArray[np.float64], polygon: NDArray[np.float64],
            tolerance: NDArray[np.float64]) -> NDArray[np.bool_]:
    """(n, k) bool: which of ``points`` (n, k, 2) lie in the convex ``polygon`` (n, 4, 2),
    edges included."""
    edges = np.roll(polygon, -1, axis=1) - polygon  # (n, 4, 2)
    side = _cross(edges[:, None, :, :], points[:, :, None, :] - polygon[:, None, :, :])  # (n, k, 4)
    orientation = np.sign(_cross(edges[:, 0], edges[:, 1]))[:, None, None]
    return np.all(side * orientation >= -tolerance[:, :, None], axis=2)


def non_max_suppression_rotated(
    boxes: Any,
    scores: Any,
    *,
    iou_threshold: float = 0.3,
    containment_threshold: float | None = None,
    labels: Any = None,
) -> NDArray[np.intp]:
    """`non_max_suppression` for turned boxes ``(x, y, w, h, angle)`` (see `rotated_box_iou`).

    Parameters
    ----------
    boxes : (N, 5) array
    scores : (N,) array
    iou_threshold, containment_threshold, labels
        As for `non_max_suppression`.

    Returns
    -------
    (K,) int array
        Indices of the kept boxes, best score first (ties: lower index first).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        msg = f"`boxes` has {len(boxes)} rows but `scores` has {len(scores)}"
        raise ValueError(msg)
    for name, value in (("iou_threshold", iou_threshold),
                        ("containment_threshold", containment_threshold)):
        if value is not None and not 0 <= value <= 1:
            msg = f"`{name}` must be in [0, 1], got {value!r}"
            raise ValueError(msg)
    order = np.lexsort((np.arange(len(scores)), -scores))
    same_label = (np.ones((len(boxes), len(boxes)), bool) if labels is None
                  else np.equal.outer(np.asarray(labels), np.asarray(labels)))
    kept_indices = []
    while order.size:
        best = order[0]
        kept_indices.append(best)
        rest = order[1:]
        intersection = _rotated_intersections(boxes[best : best + 1], boxes[rest])[0]
        area_best = boxes[best, 2] * boxes[best, 3]
        area_rest = boxes[rest, 2] * boxes[rest, 3]
        union = area_best + area_rest - intersection
        iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
        drop = iou > iou_threshold
        if containment_threshold is not None:
            inside = np.divide(intersection, area_rest, out=np.zeros_like(intersection),
                               where=area_rest > 0)
            drop |= inside > containment_threshold
        order = rest[~(drop & same_label[best, rest])]
    return np.asarray(kept_indices, dtype=np.intp)
