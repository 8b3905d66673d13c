"""Train a HOG detector on samples/faces/train and compare it with a mean-face template.

Both run over the held-out test scenes (other faces, other backgrounds) with
`patternfind.detect`; AP@0.5 comes from `patternfind.metrics.evaluate`.

- learned: `patternfind.learn.train_detector` on train.csv (HOG, hard negatives);
- fixed: the mean of the training face crops (resized to 32 × 32), scored
  with NCC over the same pyramid.

Run:  python samples/faces/evaluate_faces.py   (after make_faces.py)

It writes face.npz (learned, seed 0) and mean_face.npz (fixed), so that
``patternfind compare --annotations samples/faces/test.csv --filter
samples/faces/face.npz --filter samples/faces/mean_face.npz`` shows the table.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from patternfind.annotations import load_annotations
from patternfind.detection import detect
from patternfind.learn import train_detector
from patternfind.metrics import evaluate
from patternfind.patches import as_image, crop_window
from patternfind.structures import Filter

HERE = Path(__file__).resolve().parent


def load(split):
    annotations = load_annotations(HERE / f"{split}.csv")
    images = {key: as_image(HERE / key) for key in annotations}
    return images, annotations


def run(filter_, images, boxes, threshold):
    detections, seconds = {}, []
    for key, image in images.items():
        start = time.perf_counter()
        detections[key] = detect(image, filter_, threshold=threshold, scales=(0.5, 2.5))
        seconds.append(time.perf_counter() - start)
    return evaluate(detections, boxes, iou=0.5).ap, float(np.median(seconds)), detections


def draw(image, detections, path, count):
    picture = cv2.cvtColor(np.round(image * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    for d in detections[:count]:
        cv2.rectangle(picture, (round(d.x), round(d.y)), (round(d.x + d.w), round(d.y + d.h)),
                      (0, 0, 255), 2)
    cv2.imwrite(str(path), picture)


def main():
    train_images, train_boxes = load("train")
    test_images, test_boxes = load("test")
    crops = [crop_window(train_images[key], (b.x, b.y, b.w, b.h), (32, 32))
             for key, boxes in train_boxes.items() for b in boxes]
    fixed = Filter(np.mean(crops, axis=0), name="mean-face", score="ncc", threshold=0.3,
                   meta={"kind": "fixed", "source": "mean of the training face crops"})
    fixed.save(HERE / "mean_face.npz")
    faces = sum(len(b) for b in test_boxes.values())
    print(f"training: {sum(len(b) for b in train_boxes.values())} faces in {len(train_boxes)} "
          f"scenes; held out: {faces} faces in {len(test_boxes)} scenes")
    first = next(iter(test_images))
    for seed in (0, 1, 2):
        start = time.perf_counter()
        learned = train_detector(train_images, train_boxes, progress=False, seed=seed,
                                 name="learned")
        seconds = time.perf_counter() - start
        ap, detect_seconds, detections = run(learned, test_images, test_boxes, -3.0)
        print(f"  learned (seed {seed}): AP@0.5 {ap:.3f}, trained in {seconds:.1f} s, "
              f"detect {1e3 * detect_seconds:.0f} ms per 500×375 image")
        if seed == 0:
            learned.save(HERE / "face.npz")
            draw(test_images[first], detections[first], HERE / "detections_learned.png",
                 len(test_boxes[first]))
    ap, detect_seconds, detections = run(fixed, test_images, test_boxes, 0.3)
    print(f"  fixed mean-face NCC: AP@0.5 {ap:.3f}, detect {1e3 * detect_seconds:.0f} ms")
    draw(test_images[first], detections[first], HERE / "detections_mean_face.png",
         len(test_boxes[first]))


if __name__ == "__main__":
    main()
