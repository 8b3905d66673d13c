"""Box overlap (IoU) and greedy non-maximum suppression."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["box_iou", "non_max_suppression"]


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
