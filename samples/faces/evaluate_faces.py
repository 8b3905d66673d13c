"""Train a HOG detector on samples/faces/train and compare it with a mean-face template.

Both run over the held-out test scenes (other faces, other backgrounds) with
`patternfind.detect`; AP@0.5 comes from `patternfind.evaluation.metrics.evaluate`.

- learned: `patternfind.learn.train_detector` on train.csv (HOG, hard negatives);
  its threshold is the best-F1 detection cut on the training scenes.
- fixed: the mean of the training face crops (resized to 32 × 32), scored
  with NCC over the same pyramid; its threshold is calibrated by the same
  rule (`patternfind.evaluation.detection_threshold` over its detections on
  the training scenes).

AP is given twice: over the whole ranking (every detection above a low floor:
score −3 for the learned filter, NCC 0 for the fixed one), and over the
detections above each filter's own threshold, as ``patternfind compare``
computes it.

Run:  python samples/faces/evaluate_faces.py   (after make_faces.py)

It writes face.npz (learned, seed 0), mean_face.npz (fixed) and report.png,
the page of ``patternfind compare --annotations samples/faces/test.csv
--filter samples/faces/face.npz --filter samples/faces/mean_face.npz
--scales 0.5,2.5 --rank-threshold -3 --rank-threshold 0
--report samples/faces/report.png`` (AP over the whole ranking; P, R and F1
at each filter's threshold).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from patternfind import Filter, compare, detect, evaluate, load_annotations, train_detector
from patternfind.evaluation import detection_threshold
from patternfind.learn.patches import as_image, crop_window
from patternfind.show import write_report

HERE = Path(__file__).resolve().parent
SCALES = (0.5, 2.5)
#: Lowest score kept for the whole-ranking AP (and for the fixed filter's calibration).
FLOORS = {"learned": -3.0, "fixed": 0.0}


def load(split):
    annotations = load_annotations(HERE / f"{split}.csv")
    images = {key: as_image(HERE / key) for key in annotations}
    return images, annotations


def run(filter_, images, boxes, floor):
    """Detections above ``floor``; AP over them, and AP over those above the filter's threshold."""
    detections, seconds = {}, []
    for key, image in images.items():
        start = time.perf_counter()
        detections[key] = detect(image, filter_, threshold=floor, scales=SCALES)
        seconds.append(time.perf_counter() - start)
    ranking = evaluate(detections, boxes, iou=0.5, threshold=filter_.threshold)
    above = {key: [d for d in found if d.score >= filter_.threshold]
             for key, found in detections.items()}
    return ranking, evaluate(above, boxes, iou=0.5).ap, float(np.median(seconds))


def best_f1_detection_threshold(filter_, images, boxes, floor):
    """The detection cut with the best F1 over ``images`` (IoU ≥ 0.5), as train_detector sets it."""
    detections = {key: detect(image, filter_, threshold=floor, scales=SCALES)
                  for key, image in images.items()}
    return detection_threshold(detections, boxes, iou=0.5)


def line(name, ranking, ap_above, seconds):
    return (f"AP@0.5 {ranking.ap:.3f} over the ranking, {ap_above:.3f} above its threshold "
            f"{ranking.threshold:.3f} (P {ranking.precision:.3f} R {ranking.recall:.3f} "
            f"F1 {ranking.f1:.3f}, TP/FP/FN {ranking.true_positives}/"
            f"{ranking.false_positives}/{ranking.false_negatives}), "
            f"detect {1e3 * seconds:.0f} ms per 500×375 image")


def main():
    train_images, train_boxes = load("train")
    test_images, test_boxes = load("test")
    crops = [crop_window(train_images[key], (b.x, b.y, b.w, b.h), (32, 32))
             for key, boxes in train_boxes.items() for b in boxes]
    fixed = Filter(np.mean(crops, axis=0), name="mean-face", score="ncc",
                   meta={"kind": "fixed", "source": "mean of the training face crops"})
    threshold, train_f1 = best_f1_detection_threshold(fixed, train_images, train_boxes,
                                                      FLOORS["fixed"])
    fixed = dataclasses.replace(fixed, threshold=threshold,
                                meta={**fixed.meta, "threshold_rule": "best F1 on the "
                                      "training scenes", "image_f1": train_f1})
    fixed.save(HERE / "mean_face.npz")
    faces = sum(len(b) for b in test_boxes.values())
    print(f"training: {sum(len(b) for b in train_boxes.values())} faces in {len(train_boxes)} "
          f"scenes; held out: {faces} faces in {len(test_boxes)} scenes")
    for seed in (0, 1, 2):
        start = time.perf_counter()
        learned = train_detector(train_images, train_boxes, progress=False, seed=seed,
                                 name="learned")
        seconds = time.perf_counter() - start
        ranking, ap_above, detect_seconds = run(learned, test_images, test_boxes,
                                                FLOORS["learned"])
        print(f"  learned (seed {seed}, trained in {seconds:.1f} s, training-scene F1 "
              f"{learned.meta['image_f1']:.3f}): {line('learned', ranking, ap_above, detect_seconds)}")
        if seed == 0:
            learned.save(HERE / "face.npz")
            face = learned
    ranking, ap_above, detect_seconds = run(fixed, test_images, test_boxes, FLOORS["fixed"])
    print(f"  fixed mean-face NCC (training-scene F1 {train_f1:.3f}): "
          f"{line('fixed', ranking, ap_above, detect_seconds)}")
    filters = [face, fixed]
    evaluations = compare(filters, HERE / "test.csv", scales=SCALES,
                          rank_thresholds=[FLOORS["learned"], FLOORS["fixed"]])
    example = write_report(HERE / "report.png", evaluations, filters, test_images,
                           title="patternfind compare on test.csv")
    print(f"wrote {HERE / 'report.png'} (example image {example})")


if __name__ == "__main__":
    main()
