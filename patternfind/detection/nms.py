"""Box overlap (IoU) and greedy non-maximum suppression."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "box_iou",
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
    if labels is not None:
        labels = np.asarray(labels)
        kept = [
            np.flatnonzero(labels == label)[
                non_max_suppression(boxes[labels == label], scores[labels == label],
                                    iou_threshold=iou_threshold,
                                    containment_threshold=containment_threshold)
            ]
            for label in np.unique(labels)
        ]
        merged = np.concatenate(kept) if kept else np.zeros(0, np.intp)
        return merged[np.lexsort((merged, -scores[merged]))]
    order = np.lexsort((np.arange(len(scores)), -scores))
    kept_indices = []
    while order.size:
        best = order[0]
        kept_indices.append(best)
        rest = order[1:]
        keep = box_iou(boxes[best], boxes[rest])[0] <= iou_threshold
        if containment_threshold is not None:
            keep &= _fraction_inside(boxes[rest], boxes[best]) <= containment_threshold
        order = rest[keep]
    return np.asarray(kept_indices, dtype=np.intp)


def _fraction_inside(boxes: NDArray[np.float64], container: NDArray[np.float64]) -> NDArray[np.float64]:
    """Fraction of each (x, y, w, h) box's area that lies inside ``container``."""
    width = np.clip(np.minimum(boxes[:, 0] + boxes[:, 2], container[0] + container[2])
                    - np.maximum(boxes[:, 0], container[0]), 0, None)
    height = np.clip(np.minimum(boxes[:, 1] + boxes[:, 3], container[1] + container[3])
                     - np.maximum(boxes[:, 1], container[1]), 0, None)
    area = boxes[:, 2] * boxes[:, 3]
    return np.divide(width * height, area, out=np.zeros_like(area), where=area > 0)


# ---------------------------------------------------------------- turned boxes


def rotated_box_iou(boxes_a: Any, boxes_b: Any) -> NDArray[np.float64]:
    """Intersection over union of every pair of turned boxes ``(x, y, w, h, angle)``.

    Each box is the upright ``(x, y, w, h)`` turned ``angle`` degrees
    (counter-clockwise on screen) about its centre, as `patternfind.Detection`
    has it. The intersections are OpenCV's (`cv2.rotatedRectangleIntersection`).

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
    import cv2

    centres_a = a[:, :2] + a[:, 2:4] / 2
    centres_b = b[:, :2] + b[:, 2:4] / 2
    reach = np.hypot(a[:, 2], a[:, 3])[:, None] / 2 + np.hypot(b[:, 2], b[:, 3])[None, :] / 2
    distance = np.hypot(centres_a[:, None, 0] - centres_b[None, :, 0],
                        centres_a[:, None, 1] - centres_b[None, :, 1])
    result = np.zeros((len(a), len(b)))
    for i, j in zip(*np.nonzero(distance < reach), strict=True):
        if a[i, 2] <= 0 or a[i, 3] <= 0 or b[j, 2] <= 0 or b[j, 3] <= 0:
            continue
        # OpenCV's RotatedRect angle turns clockwise on screen: the opposite of ours
        first = (tuple(centres_a[i]), (a[i, 2], a[i, 3]), -a[i, 4])
        second = (tuple(centres_b[j]), (b[j, 2], b[j, 3]), -b[j, 4])
        kind, points = cv2.rotatedRectangleIntersection(first, second)
        if kind != cv2.INTERSECT_NONE and points is not None and len(points) > 2:
            hull = cv2.convexHull(points.astype(np.float32))
            result[i, j] = min(float(cv2.contourArea(hull)), a[i, 2] * a[i, 3], b[j, 2] * b[j, 3])
    return result


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
