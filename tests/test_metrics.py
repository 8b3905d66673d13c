"""Metrics: matching, P/R/F1 and AP, checked against pycocotools and the VOC devkit formula."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

# A test-only dependency (the "test" extras): the independent AP reference.
from pycocotools import coco as pycocotools_coco
from pycocotools import cocoeval as pycocotools_eval
from pycocotools import mask as pycocotools_mask

from patternfind.evaluation.metrics import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    average_precision,
    box_iou,
    evaluate,
    match_detections,
)
from patternfind.structures import Box, Detection

# ---------------------------------------------------------------- independent references


def voc_devkit_ap(recall, precision):
    """The VOC2010+ devkit's VOCap, transcribed with explicit loops."""
    mrec = [0.0, *list(recall), 1.0]
    mpre = [0.0, *list(precision), 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    total = 0.0
    for i in range(1, len(mrec)):
        if mrec[i] != mrec[i - 1]:
            total += (mrec[i] - mrec[i - 1]) * mpre[i]
    return total


def pycocotools_reference(detections, ground_truth):
    """Run pycocotools at IoU 0.5; return its ranked TP/FP flags, positives and 101-point precision."""

    class PlainIoUCOCOeval(pycocotools_eval.COCOeval):
        """COCOeval whose crowd boxes keep the ordinary IoU, so 'iscrowd' means just 'ignore'.

        The one place our rule departs from COCO's (see `patternfind.evaluation.metrics`):
        COCO scores a crowd region by intersection / detection area.
        """

        def computeIoU(self, imgId, catId):
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
            if not gt and not dt:
                return []
            order = np.argsort([-d["score"] for d in dt], kind="mergesort")
            dt = [dt[i] for i in order]
            return pycocotools_mask.iou(
                [d["bbox"] for d in dt], [g["bbox"] for g in gt], [0] * len(gt)
            )

    keys = list(ground_truth)
    images = [{"id": i + 1, "file_name": key, "width": 1000, "height": 1000}
              for i, key in enumerate(keys)]
    annotations = []
    for i, key in enumerate(keys):
        for box in ground_truth[key]:
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                "bbox": [box.x, box.y, box.w, box.h], "area": box.w * box.h,
                "iscrowd": int(box.ignore),
            })
    results = [
        {"image_id": i + 1, "category_id": 1, "bbox": [d.x, d.y, d.w, d.h], "score": d.score}
        for i, key in enumerate(keys) for d in detections.get(key, [])
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = pycocotools_coco.COCO()
        coco.dataset = {"images": images, "annotations": annotations,
                        "categories": [{"id": 1, "name": "thing"}]}
        coco.createIndex()
        coco_results = coco.loadRes(results)
        evaluator = PlainIoUCOCOeval(coco, coco_results, "bbox")
        evaluator.params.iouThrs = np.array([0.5])
        evaluator.params.areaRng = [[0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.params.maxDets = [100000]
        evaluator.evaluate()
        evaluator.accumulate()
    per_image = [e for e in evaluator.evalImgs if e is not None]
    scores = np.concatenate([e["dtScores"] for e in per_image])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([e["dtMatches"][0] for e in per_image])[order] > 0
    ignored = np.concatenate([e["dtIgnore"][0] for e in per_image])[order].astype(bool)
    positives = int(sum(np.count_nonzero(e["gtIgnore"] == 0) for e in per_image))
    hits = matched[~ignored]
    precision_101 = evaluator.eval["precision"][0, :, 0, 0, 0]
    return hits, positives, precision_101


def random_scene(rng, *, ignore_fraction=0.0):
    """Images with clustered true boxes (so a detection can overlap several) and noisy detections."""
    ground_truth, detections = {}, {}
    for image in range(int(rng.integers(3, 8))):
        boxes, found = [], []
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.uniform(0, 300, size=2)
            w, h = rng.uniform(10, 60, size=2)
            group = [(x, y, w, h)]
            if rng.random() < 0.4:  # a neighbour overlapping the first box
                group.append((x + rng.uniform(-8, 8), y + rng.uniform(-8, 8),
                              w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)))
            for bx, by, bw, bh in group:
                boxes.append(Box(bx, by, bw, bh, ignore=bool(rng.random() < ignore_fraction)))
                for _ in range(int(rng.integers(0, 3))):  # hits, near misses and duplicates
                    jitter = rng.normal(0, 0.15, size=4) * [bw, bh, bw, bh]
                    found.append((bx + jitter[0], by + jitter[1],
                                  max(bw + jitter[2], 1.0), max(bh + jitter[3], 1.0)))
        for _ in range(int(rng.integers(0, 5))):
            found.append((*rng.uniform(0, 300, size=2), *rng.uniform(10, 60, size=2)))
        key = f"image{image}.png"
        ground_truth[key] = boxes
        detections[key] = [
            Detection(float(x), float(y), float(w), float(h), score=float(rng.random()))
            for x, y, w, h in found
        ]
    return detections, ground_truth


# ---------------------------------------------------------------- against pycocotools


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("ignore_fraction", [0.0, 0.3])
def test_ap_matches_pycocotools_matching_and_voc_devkit(seed, ignore_fraction):
    rng = np.random.default_rng(seed)
    detections, ground_truth = random_scene(rng, ignore_fraction=ignore_fraction)
    hits, positives, precision_101 = pycocotools_reference(detections, ground_truth)
    assert positives > 0  # every random scene has true boxes to find

    result = evaluate(detections, ground_truth, iou=0.5)

    true_cumulative = np.cumsum(hits)
    reference_recall = true_cumulative / positives
    reference_precision = true_cumulative / np.arange(1, len(hits) + 1)
    assert result.positives == positives
    assert result.true_positives == int(hits.sum())
    assert result.false_positives == int((~hits).sum())
    np.testing.assert_allclose(result.recall_curve, reference_recall, atol=1e-12)
    np.testing.assert_allclose(result.precision_curve, reference_precision, atol=1e-12)
    assert result.ap == pytest.approx(voc_devkit_ap(reference_recall, reference_precision), abs=1e-6)

    # pycocotools' own 101-point interpolated precision, from our curve
    envelope = np.maximum.accumulate(result.precision_curve[::-1])[::-1]
    indices = np.searchsorted(result.recall_curve, np.linspace(0, 1, 101), side="left")
    ours_101 = np.array([envelope[i] if i < len(envelope) else 0.0 for i in indices])
    np.testing.assert_allclose(ours_101, precision_101, atol=1e-6)


# ---------------------------------------------------------------- textbook cases


def test_perfect_detections_give_ap_one():
    truth = {"a": [Box(0, 0, 10, 10), Box(50, 50, 20, 20)], "b": [Box(5, 5, 8, 8)]}
    found = {key: [Detection(b.x, b.y, b.w, b.h, score=0.9 - i * 0.1) for i, b in enumerate(boxes)]
             for key, boxes in truth.items()}
    result = evaluate(found, truth)
    assert (result.ap, result.precision, result.recall, result.f1) == (1.0, 1.0, 1.0, 1.0)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (3, 0, 0)


def test_no_detections_give_ap_zero():
    truth = {"a": [Box(0, 0, 10, 10)], "b": []}
    result = evaluate({}, truth)
    assert (result.ap, result.precision, result.recall, result.f1) == (0.0, 0.0, 0.0, 0.0)
    assert result.false_negatives == 1
    assert result.recall_curve.shape == (0,)


def test_duplicate_is_a_false_positive_and_lowers_precision():
    truth = {"a": [Box(0, 0, 10, 10)]}
    single = evaluate({"a": [Detection(0, 0, 10, 10, score=0.9)]}, truth)
    double = evaluate({"a": [Detection(0, 0, 10, 10, score=0.9),
                             Detection(1, 0, 10, 10, score=0.8)]}, truth)
    assert single.precision == 1.0
    assert double.precision == 0.5
    assert (double.true_positives, double.false_positives) == (1, 1)
    assert double.ap == 1.0  # the duplicate ranks after the hit


def test_worked_example_ap():
    # ranking hit, miss, hit over 3 true boxes: recall 1/3, 1/3, 2/3 and precision 1, 1/2, 2/3;
    # all-point AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    truth = {"a": [Box(0, 0, 10, 10), Box(100, 0, 10, 10), Box(200, 0, 10, 10)]}
    found = {"a": [Detection(0, 0, 10, 10, score=0.9), Detection(400, 0, 10, 10, score=0.8),
                   Detection(100, 0, 10, 10, score=0.7)]}
    result = evaluate(found, truth)
    assert result.ap == pytest.approx(5 / 9)
    np.testing.assert_allclose(result.precision_curve, [1, 1 / 2, 2 / 3])
    np.testing.assert_allclose(result.recall_curve, [1 / 3, 1 / 3, 2 / 3])
    assert result.f1 == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))


def test_iou_threshold_is_inclusive_and_respected():
    truth = {"a": [Box(0, 0, 10, 10)]}
    half = Detection(0, 0, 20, 10, score=1.0)  # IoU exactly 0.5
    assert evaluate({"a": [half]}, truth, iou=0.5).true_positives == 1
    assert evaluate({"a": [half]}, truth, iou=0.6).true_positives == 0


def test_ignore_box_counts_neither_way():
    truth = {"a": [Box(0, 0, 10, 10), Box(100, 100, 10, 10, ignore=True)]}
    on_ignore = Detection(100, 100, 10, 10, score=0.95)
    hit = Detection(0, 0, 10, 10, score=0.5)
    result = evaluate({"a": [on_ignore, hit]}, truth)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (1, 0, 0)
    assert result.positives == 1
    assert result.precision == 1.0
    assert result.ap == 1.0
    # an ignore box nobody found is not a miss
    assert evaluate({"a": [hit]}, truth).false_negatives == 0


def test_detection_prefers_a_free_real_box_over_an_ignore_box():
    boxes = [Box(0, 0, 10, 10, ignore=True), Box(1, 0, 10, 10)]
    outcome, matched = match_detections([Detection(0, 0, 10, 10, score=1.0)], boxes)
    assert outcome.tolist() == [TRUE_POSITIVE]
    assert matched.tolist() == [1]


def test_second_detection_takes_the_next_free_box():
    # both detections overlap box 0 most; the second still finds box 1 (IoU 0.67)
    boxes = [Box(0, 0, 10, 10), Box(2, 0, 10, 10)]
    found = [Detection(0, 0, 10, 10, score=0.9), Detection(1, 0, 10, 10, score=0.8)]
    outcome, matched = match_detections(found, boxes)
    assert outcome.tolist() == [TRUE_POSITIVE, TRUE_POSITIVE]
    assert matched.tolist() == [0, 1]


def test_matching_is_by_descending_score_not_input_order():
    boxes = [Box(0, 0, 10, 10)]
    found = [Detection(0, 0, 10, 10, score=0.2), Detection(0, 0, 10, 10, score=0.9)]
    outcome, _ = match_detections(found, boxes)
    assert outcome.tolist() == [FALSE_POSITIVE, TRUE_POSITIVE]


def test_detections_on_an_image_without_boxes_are_false_positives():
    truth = {"a": [Box(0, 0, 10, 10)], "empty": []}
    found = {"a": [Detection(0, 0, 10, 10, score=0.5)],
             "empty": [Detection(0, 0, 10, 10, score=0.9)]}
    result = evaluate(found, truth)
    assert result.images["empty"].false_positives == 1
    assert result.images["a"].true_positives == 1
    assert result.precision == 0.5
    assert result.ap == pytest.approx(0.5)  # the first-ranked detection is wrong


def test_threshold_limits_counts_but_not_ap():
    truth = {"a": [Box(0, 0, 10, 10), Box(100, 0, 10, 10)]}
    found = {"a": [Detection(0, 0, 10, 10, score=0.9), Detection(100, 0, 10, 10, score=0.3)]}
    result = evaluate(found, truth, threshold=0.5)
    assert (result.true_positives, result.false_negatives) == (1, 1)
    assert result.recall == 0.5
    assert result.ap == 1.0
    assert [box.x for box in result.images["a"].missed] == [100]


def test_no_true_boxes_gives_nan_recall_and_ap():
    result = evaluate({"a": [Detection(0, 0, 5, 5, score=1.0)]}, {"a": []})
    assert np.isnan(result.recall)
    assert np.isnan(result.ap)
    assert result.precision == 0.0
    assert result.summary()["ap"] is None


def test_ignored_outcome_is_reported():
    outcome, matched = match_detections([Detection(0, 0, 10, 10, score=1.0)],
                                        [Box(0, 0, 10, 10, ignore=True)])
    assert outcome.tolist() == [IGNORED]
    assert matched.tolist() == [0]


def test_box_iou_against_brute_force():
    rng = np.random.default_rng(3)
    first = np.column_stack([rng.uniform(0, 50, (30, 2)), rng.uniform(0, 30, (30, 2))])
    second = np.column_stack([rng.uniform(0, 50, (20, 2)), rng.uniform(0, 30, (20, 2))])
    expected = np.zeros((30, 20))
    for i, (ax, ay, aw, ah) in enumerate(first):
        for j, (bx, by, bw, bh) in enumerate(second):
            inter_w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
            inter_h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
            inter = inter_w * inter_h
            expected[i, j] = inter / (aw * ah + bw * bh - inter)
    np.testing.assert_allclose(box_iou(first, second), expected, atol=1e-12)


def test_average_precision_of_an_empty_ranking_is_zero():
    assert average_precision(np.empty(0), np.empty(0)) == 0.0


@pytest.mark.parametrize("iou", [0.0, -0.1, 1.5])
def test_bad_iou_is_rejected(iou):
    with pytest.raises(ValueError, match="`iou`"):
        evaluate({}, {"a": []}, iou=iou)


def test_detections_for_unknown_image_are_rejected():
    with pytest.raises(ValueError, match=r"without ground truth.*'b'"):
        evaluate({"b": [Detection(0, 0, 1, 1, score=1.0)]}, {"a": []})


def test_non_mapping_is_rejected():
    with pytest.raises(TypeError, match="`detections`"):
        evaluate([Detection(0, 0, 1, 1, score=1.0)], {"a": []})
