"""Box overlap (IoU) and greedy non-maximum suppression."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


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
    if not 0 <= iou_threshold <= 1:
        msg = f"`iou_threshold` must be in [0, 1], got {iou_threshold!r}"
        raise ValueError(msg)
    if labels is not None:
        labels = np.asarray(labels)
        kept = [
            np.flatnonzero(labels == label)[
                non_max_suppression(boxes[labels == label], scores[labels == label],
                                    iou_threshold=iou_threshold)
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
        overlap = box_iou(boxes[best], boxes[order[1:]])[0]
        order = order[1:][overlap <= iou_threshold]
    return np.asarray(kept_indices, dtype=np.intp)
