"""Detection metrics: matching to ground truth, precision, recall, F1 and average precision.

The definitions are those of the detection benchmarks:

- **Matching** is greedy in descending score within each image. A detection
  takes the still-unmatched true box it overlaps most, if that overlap
  (intersection over union) is at least ``iou``; it is then a true positive.
  A detection that overlaps no unmatched box enough, including a second
  detection of an already found object (a duplicate), is a false positive.
  A detection whose only match is an *ignore* box (VOC ``difficult``, dlib
  ``ignore``, COCO ``iscrowd``) counts as neither, and ignore boxes that are
  not found are not misses; one ignore box may absorb many detections. This
  is the COCO evaluation's rule (``pycocotools``) with one difference: an
  ignore box is overlapped by ordinary IoU, where COCO divides the
  intersection with a crowd region by the detection's area alone. The tests
  check the matching against pycocotools with its crowd overlap swapped for
  IoU.
- **Average precision** is VOC's all-point interpolated AP: the area under
  the precision-recall curve after precision is made non-increasing in
  recall, over the full ranking of detections across all images.

Class labels are not compared: evaluate one class at a time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from patternfind._validation import finite_float
from patternfind.detection.nms import (
    box_iou,  # re-exported: metrics users need it too
    rotated_box_iou,
)
from patternfind.structures import Box, Detection

__all__ = [
    "FALSE_POSITIVE",
    "IGNORED",
    "TRUE_POSITIVE",
    "Evaluation",
    "ImageEvaluation",
    "angle_error",
    "average_precision",
    "box_iou",
    "evaluate",
    "match_detections",
]

#: Outcomes of a detection in `match_detections`.
TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1


@dataclass(frozen=True)
class ImageEvaluation:
    """Matching result for one image.

    Attributes
    ----------
    detections : tuple of Detection
        The image's detections, best score first.
    boxes : tuple of Box
        The image's true boxes, in annotation order.
    outcome : (D,) int8 array
        Per detection: `TRUE_POSITIVE` (1), `FALSE_POSITIVE` (0) or `IGNORED` (-1).
    matched_box : (D,) int array
        Index into ``boxes`` of the box each detection matched, or -1.
    counted : (D,) bool array
        True for detections at or above the evaluation's threshold.
    true_positives, false_positives, false_negatives : int
        Counts at the threshold. False negatives are non-ignore boxes that no
        counted detection found.
    """

    detections: tuple[Detection, ...]
    boxes: tuple[Box, ...]
    outcome: NDArray[np.int8]
    matched_box: NDArray[np.intp]
    counted: NDArray[np.bool_]
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def missed(self) -> list[Box]:
        """The non-ignore boxes no counted detection found."""
        found = set(self.matched_box[self.counted & (self.outcome == TRUE_POSITIVE)].tolist())
        return [box for index, box in enumerate(self.boxes) if not box.ignore and index not in found]


@dataclass(frozen=True)
class Evaluation:
    """Result of `evaluate`.

    Attributes
    ----------
    precision, recall, f1 : float
        At the operating ``threshold``. Precision is 0 when no detection is
        counted; recall is NaN when there is no (non-ignore) true box, and so
        is F1 then.
    ap : float
        VOC all-point interpolated average precision over all detections
        (NaN when there is no true box).
    recall_curve, precision_curve, score_curve : (N,) float arrays
        The precision-recall curve: after the k best of the N non-ignored
        detections, recall and precision are ``recall_curve[k-1]`` and
        ``precision_curve[k-1]``, and ``score_curve[k-1]`` is the k-th score.
    true_positives, false_positives, false_negatives : int
        Totals at the threshold.
    positives : int
        Number of non-ignore true boxes.
    images : dict of str to ImageEvaluation
        Per-image matching and counts.
    threshold : float or None
        Detections scoring below it were left out of precision, recall, F1
        and the counts (not of AP). None: every detection counts.
    iou : float
        Overlap needed for a match.
    name, kind : str or None
        Filter name and kind ("fixed"/"learned"), set by `patternfind.compare`.
    seconds_per_image : float or None
        Mean detection time per image, set by `patternfind.compare`.
    mean_centre_error : float or None
        Mean distance in pixels between the centres of the counted true
        positives and of their true boxes; None without true positives.
    mean_angle_error : float or None
        Mean absolute angle difference in degrees (the shorter way round)
        over the counted true positives whose true box has an angle; None
        when there is none.
    """

    precision: float
    recall: float
    f1: float
    ap: float
    recall_curve: NDArray[np.float64]
    precision_curve: NDArray[np.float64]
    score_curve: NDArray[np.float64]
    true_positives: int
    false_positives: int
    false_negatives: int
    positives: int
    images: Mapping[str, ImageEvaluation] = field(repr=False)
    threshold: float | None = None
    iou: float = 0.5
    name: str | None = None
    kind: str | None = None
    seconds_per_image: float | None = None
    mean_centre_error: float | None = None
    mean_angle_error: float | None = None

    def summary(self) -> dict[str, Any]:
        """Plain dict of the scalar results and per-image counts (JSON-ready; NaN becomes None)."""
        def number(value: float | None) -> float | None:
            return None if value is None or not np.isfinite(value) else float(value)

        return {
            "name": self.name,
            "kind": self.kind,
            "precision": number(self.precision),
            "recall": number(self.recall),
            "f1": number(self.f1),
            "ap": number(self.ap),
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "positives": self.positives,
            "threshold": self.threshold,
            "iou": self.iou,
            "seconds_per_image": number(self.seconds_per_image),
            "mean_centre_error": number(self.mean_centre_error),
            "mean_angle_error": number(self.mean_angle_error),
            "images": {
                key: {
                    "true_positives": image.true_positives,
                    "false_positives": image.false_positives,
                    "false_negatives": image.false_negatives,
                }
                for key, image in self.images.items()
            },
        }


def match_detections(
    detections: Sequence[Detection], boxes: Sequence[Box], *, iou: float = 0.5
) -> tuple[NDArray[np.int8], NDArray[np.intp]]:
    """Match one image's detections to its true boxes, greedily by descending score.

    Parameters
    ----------
    detections : sequence of Detection
        In any order; they are matched best score first (ties keep input order).
    boxes : sequence of Box
        The true boxes; ``Box.ignore`` marks boxes that count neither way.
    iou : float
        Minimum intersection over union for a match. When a box or a
        detection has an angle, the overlap is that of the turned
        rectangles (`patternfind.detection.nms.rotated_box_iou`); a box
        without an angle is upright.

    Returns
    -------
    outcome : (D,) int8 array
        Per detection, in input order: `TRUE_POSITIVE`, `FALSE_POSITIVE` or `IGNORED`.
    matched_box : (D,) intp array
        Index of the matched box, or -1.
    """
    count = len(detections)
    outcome = np.full(count, FALSE_POSITIVE, dtype=np.int8)
    matched_box = np.full(count, -1, dtype=np.intp)
    if count == 0 or not boxes:
        return outcome, matched_box
    if any(b.angle for b in boxes) or any(d.angle for d in detections):
        overlaps = rotated_box_iou(
            np.array([(d.x, d.y, d.w, d.h, d.angle) for d in detections], dtype=np.float64),
            np.array([(b.x, b.y, b.w, b.h, b.angle or 0.0) for b in boxes], dtype=np.float64),
        )
    else:
        overlaps = box_iou(
            np.array([(d.x, d.y, d.w, d.h) for d in detections], dtype=np.float64),
            np.array([(b.x, b.y, b.w, b.h) for b in boxes], dtype=np.float64),
        )
    ignore = np.array([box.ignore for box in boxes], dtype=bool)
    taken = np.zeros(len(boxes), dtype=bool)
    order = np.argsort([-d.score for d in detections], kind="stable")
    for index in order:
        row = overlaps[index]
        # a free real box first; ignore boxes absorb detections that match nothing else
        free = np.where(~ignore & ~taken & (row >= iou), row, -1.0)
        best = int(np.argmax(free))
        if free[best] >= 0:
            outcome[index], matched_box[index] = TRUE_POSITIVE, best
            taken[best] = True
            continue
        absorbed = np.where(ignore & (row >= iou), row, -1.0)
        best = int(np.argmax(absorbed))
        if absorbed[best] >= 0:
            outcome[index], matched_box[index] = IGNORED, best
    return outcome, matched_box


def angle_error(first: float, second: float) -> float:
    """Absolute difference of two angles in degrees, the shorter way round: in [0, 180]."""
    difference = abs(float(first) - float(second)) % 360
    return min(difference, 360 - difference)


def _pose_errors(images: Mapping[str, ImageEvaluation]) -> tuple[float | None, float | None]:
    """Mean centre error (pixels) and mean angle error (degrees) over counted true positives."""
    centre_errors, angle_errors = [], []
    for image in images.values():
        for detection, outcome, box_index, counted in zip(
            image.detections, image.outcome, image.matched_box, image.counted, strict=True
        ):
            if outcome != TRUE_POSITIVE or not counted:
                continue
            box = image.boxes[box_index]
            centre_errors.append(math.hypot(detection.x + detection.w / 2 - box.x - box.w / 2,
                                            detection.y + detection.h / 2 - box.y - box.h / 2))
            if box.angle is not None:
                angle_errors.append(angle_error(detection.angle, box.angle))
    centre = float(np.mean(centre_errors)) if centre_errors else None
    angle = float(np.mean(angle_errors)) if angle_errors else None
    return centre, angle


def average_precision(recall: NDArray[Any], precision: NDArray[Any]) -> float:
    """VOC all-point interpolated average precision.

    Parameters
    ----------
    recall : (N,) array
        Non-decreasing recall after each ranked detection.
    precision : (N,) array
        Precision after each ranked detection.

    Returns
    -------
    float
        Sum over recall steps of the step times the best precision at that
        recall or beyond; 0 for an empty ranking.
    """
    recall = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64)))
    precision = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64)))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))


def evaluate(
    detections: Mapping[str, Sequence[Detection]],
    ground_truth: Mapping[str, Sequence[Box]],
    *,
    iou: float = 0.5,
    threshold: float | None = None,
) -> Evaluation:
    """Score detections against ground truth: precision, recall, F1, AP and counts.

    Parameters
    ----------
    detections : mapping of str to sequence of Detection
        Image key to that image's detections. Images of ``ground_truth``
        missing here have no detections.
    ground_truth : mapping of str to sequence of Box
        Image key to true boxes, as from `patternfind.load_annotations`.
        Images with no boxes are valid: their detections are false positives.
    iou : float
        Minimum intersection over union for a detection to match a box, in (0, 1].
    threshold : float, optional
        Operating threshold for precision, recall, F1 and the counts;
        detections below it are left out of those (AP always uses every
        detection). Default: every detection counts.

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        If ``iou`` is outside (0, 1], or ``detections`` has an image that
        ``ground_truth`` lacks (it cannot be scored).
    """
    iou = finite_float(iou, "iou")
    if not 0 < iou <= 1:
        msg = f"`iou` must be in (0, 1], got {iou!r}"
        raise ValueError(msg)
    if threshold is not None:
        threshold = finite_float(threshold, "threshold")
    for mapping, name in ((detections, "detections"), (ground_truth, "ground_truth")):
        if not isinstance(mapping, Mapping):
            msg = f"`{name}` must be a mapping of image to a list, got {type(mapping).__name__}"
            raise TypeError(msg)
    unknown = [key for key in detections if key not in ground_truth]
    if unknown:
        msg = f"`detections` has {len(unknown)} image(s) without ground truth, e.g. {unknown[0]!r}"
        raise ValueError(msg)

    images: dict[str, ImageEvaluation] = {}
    ranked_scores, ranked_outcomes = [], []
    for key, boxes in ground_truth.items():
        image_detections = sorted(detections.get(key, ()), key=lambda d: -d.score)
        outcome, matched_box = match_detections(image_detections, boxes, iou=iou)
        scores = np.array([d.score for d in image_detections], dtype=np.float64)
        counted = np.ones(len(scores), dtype=bool) if threshold is None else scores >= threshold
        true_positives = int(np.sum(counted & (outcome == TRUE_POSITIVE)))
        positives = sum(not box.ignore for box in boxes)
        images[key] = ImageEvaluation(
            detections=tuple(image_detections),
            boxes=tuple(boxes),
            outcome=outcome,
            matched_box=matched_box,
            counted=counted,
            true_positives=true_positives,
            false_positives=int(np.sum(counted & (outcome == FALSE_POSITIVE))),
            false_negatives=positives - true_positives,
        )
        ranked_scores.append(scores)
        ranked_outcomes.append(outcome)

    scores = np.concatenate([np.empty(0), *ranked_scores])
    outcome = np.concatenate([np.empty(0, dtype=np.int8), *ranked_outcomes])
    order = np.argsort(-scores, kind="stable")  # ties: image order, then score order
    scores, outcome = scores[order], outcome[order]
    kept = outcome != IGNORED
    scores, hits = scores[kept], outcome[kept] == TRUE_POSITIVE
    positives = sum(not box.ignore for boxes in ground_truth.values() for box in boxes)
    true_cumulative = np.cumsum(hits, dtype=np.float64)
    precision_curve = true_cumulative / np.arange(1, len(hits) + 1)
    if positives:
        recall_curve = true_cumulative / positives
        ap = average_precision(recall_curve, precision_curve)
    else:
        recall_curve = np.full(len(hits), np.nan)
        ap = float("nan")

    true_positives = sum(image.true_positives for image in images.values())
    false_positives = sum(image.false_positives for image in images.values())
    counted_total = true_positives + false_positives
    precision = true_positives / counted_total if counted_total else 0.0
    recall = true_positives / positives if positives else float("nan")
    if not positives:
        f1 = float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    mean_centre_error, mean_angle_error = _pose_errors(images)
    return Evaluation(
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        ap=ap,
        recall_curve=recall_curve,
        precision_curve=precision_curve,
        score_curve=scores,
        true_positives=true_positives,
        false_positives=false_positives,
        false_negatives=positives - true_positives,
        positives=positives,
        images=images,
        threshold=threshold,
        iou=iou,
        mean_centre_error=mean_centre_error,
        mean_angle_error=mean_angle_error,
    )


def best_f1_threshold(scores: NDArray[np.floating], positive: NDArray[np.bool_], *,
                      total_positives: int | None = None) -> tuple[float, float]:
    """The score cut with the best F1 for ``score ≥ threshold`` ⇒ positive.

    Parameters
    ----------
    scores : (N,) array
    positive : (N,) bool array
        True for the samples that should score above the threshold.
    total_positives : int, optional
        Number of positives in all, if some are missing from ``scores``
        (objects the detector never reported); default ``positive.sum()``.

    Returns
    -------
    threshold : float
        Midway between the lowest score accepted at the best cut and the next
        lower score (just below the lowest score when every sample is
        accepted). Among equally good cuts, the highest is taken.
    f1 : float
        F1 at that threshold.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_positive = scores[order], positive[order]
    true_positives = np.cumsum(sorted_positive)
    accepted = np.arange(1, len(scores) + 1)
    total = positive.sum() if total_positives is None else total_positives
    f1 = 2 * true_positives / (accepted + total)
    # a cut can only fall between distinct scores
    valid = np.append(sorted_scores[1:] < sorted_scores[:-1], True)
    f1 = np.where(valid, f1, -1)
    k = int(np.argmax(f1))  # first maximum: the highest cut
    if k + 1 < len(scores):
        threshold = 0.5 * (sorted_scores[k] + sorted_scores[k + 1])
    else:
        threshold = sorted_scores[k] - max(1e-6, 1e-6 * abs(sorted_scores[k]))
    return float(threshold), float(f1[k])


def detection_threshold(
    detections: Mapping[str, Sequence[Detection]],
    ground_truth: Mapping[str, Sequence[Box]],
    *,
    iou: float = 0.5,
) -> tuple[float | None, float]:
    """The detection score cut with the best F1 over whole images.

    Every detection is matched to the true boxes of its image as `evaluate`
    does; the cut is then `best_f1_threshold` over the matched flags, with
    every true box not found counted as a miss.

    Parameters
    ----------
    detections : mapping of image key to list of Detection
        Detections ranked below any plausible threshold (so that the cut
        has room to move).
    ground_truth : mapping of image key to list of Box
        True boxes; ignore boxes are neither hits nor misses.
    iou : float
        Overlap a detection needs with a true box to count.

    Returns
    -------
    threshold : float or None
        None when no detection hits a true box.
    f1 : float
        F1 at that threshold (0 when there is none).
    """
    scores: list[float] = []
    hits: list[bool] = []
    total = 0
    for key, boxes in ground_truth.items():
        found = list(detections.get(key, ()))
        outcome, _ = match_detections(found, boxes, iou=iou)
        scores.extend(d.score for d in found)
        hits.extend(outcome == TRUE_POSITIVE)
        total += sum(not box.ignore for box in boxes)
    if not any(hits):
        return None, 0.0
    return best_f1_threshold(np.array(scores), np.array(hits), total_positives=total)
