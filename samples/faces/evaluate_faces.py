"""Held-out checks of the learned detector with its defaults, against a fixed mean face.

One run prints the whole table the README quotes:

1. **composite scenes** (samples/faces: real LFW faces pasted on real
   photographs, made by make_faces.py). For seeds 0, 1 and 2,
   `train_detector` with its defaults trains on train.csv and is scored on
   test.csv (AP@0.5 over every detection above score −3), then the roles
   are swapped (train on test.csv, score on train.csv). train.csv also lists
   nine face-free images without boxes (negatives only, see make_faces.py).
   Training time and the median detection time per 375 × 500 scene are
   wall-clock, with the process's CPU seconds in brackets: on a shared
   machine the CPU time is the steadier figure (detection runs its pyramid
   levels in two threads, so a quiet machine's wall time can be lower).
2. **lfw_subset**: `train_filter(X, y)` with its defaults (pixels, ``l2="auto"``)
   in 5-fold cross-validation (stratified, shuffled with the seed), ROC AUC of
   the held-out scores.
3. **astronaut** (samples/astronaut.png, one real photograph): the rank of the
   box over her face among the seed-0 detector's detections.

It also writes face.npz (seed 0, trained on train.csv), mean_face.npz (the
fixed filter: the mean of the training face crops, NCC, its threshold the
best F1 over its detections on the training scenes) and report.png, the
page of ``patternfind compare --annotations samples/faces/test.csv --filter
samples/faces/face.npz --filter samples/faces/mean_face.npz --rank-threshold
-3 --rank-threshold 0 --report samples/faces/report.png``.

Run:  python samples/faces/evaluate_faces.py   (after make_faces.py)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from patternfind import (
    Filter,
    box_iou,
    compare,
    detect,
    evaluate,
    load_annotations,
    train_detector,
    train_filter,
)
from patternfind.evaluation import detection_threshold
from patternfind.layers import window_features
from patternfind.learn.patches import as_image, crop_window
from patternfind.show import write_report

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
#: Lowest score kept for the whole-ranking AP (and for the fixed filter's calibration).
FLOORS = {"learned": -3.0, "fixed": 0.0}
#: The fixed filter searches the scales of the composite faces (28-72 px for a 32-px filter).
FIXED_SCALES = (0.8, 2.5)
#: Her face in samples/astronaut.png (x, y, w, h), drawn by hand around the hairline and chin.
ASTRONAUT_FACE = (168.0, 75.0, 97.0, 110.0)


def load(split):
    annotations = load_annotations(HERE / f"{split}.csv")
    images = {key: as_image(HERE / key) for key in annotations}
    return images, annotations


def timed(function, *args, **kwargs):
    """``function(*args, **kwargs)``, its wall-clock seconds and its process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def detect_all(filter_, images, floor, **options):
    """Detections per image, and the median wall and CPU seconds per image."""
    detections, walls, cpus = {}, [], []
    for key, image in images.items():
        detections[key], wall, cpu = timed(detect, image, filter_, threshold=floor, **options)
        walls.append(wall)
        cpus.append(cpu)
    return detections, (float(np.median(walls)), float(np.median(cpus)))


def train_and_score(train, test, seed):
    learned, wall, cpu = timed(train_detector, *train, seed=seed, name="learned")
    detections, detect_seconds = detect_all(learned, test[0], FLOORS["learned"])
    result = evaluate(detections, test[1], iou=0.5, threshold=learned.threshold)
    return learned, result, (wall, cpu), detect_seconds


def lfw_auc(seed):
    from skimage.data import lfw_subset  # shipped inside scikit-image: no download

    images = lfw_subset().astype(np.float32)
    faces = np.arange(len(images)) < 100
    rng = np.random.default_rng(seed)
    folds = np.empty(len(images), dtype=int)
    for label in (True, False):  # stratified: 20 faces and 20 non-faces per fold
        members = rng.permutation(np.flatnonzero(faces == label))
        folds[members] = np.arange(len(members)) % 5
    scores = np.zeros(len(images))
    for fold in range(5):
        held_out = folds == fold
        learned = train_filter(images[~held_out], faces[~held_out], seed=seed)
        features = window_features(images[held_out], kind=learned.features,
                                   options=learned.feature_options)
        scores[held_out] = features.reshape(held_out.sum(), -1) @ learned.weights.ravel() + learned.bias
    return mannwhitneyu(scores[faces], scores[~faces]).statistic / (100 * 100)


def astronaut_rank(filter_):
    found = detect(as_image(HERE.parent / "astronaut.png", color=True), filter_, threshold=-3)
    overlaps = box_iou(np.array([[d.x, d.y, d.w, d.h] for d in found]), np.array([ASTRONAUT_FACE]))
    hits = np.flatnonzero(overlaps[:, 0] >= 0.3)
    return (int(hits[0]) + 1 if len(hits) else None), found[:2]


def fixed_mean_face(train):
    images, boxes = train
    crops = [crop_window(images[key], (b.x, b.y, b.w, b.h), (32, 32))
             for key, group in boxes.items() for b in group]
    fixed = Filter(np.mean(crops, axis=0), name="mean-face", score="ncc",
                   meta={"kind": "fixed", "source": "mean of the training face crops"})
    ranked, _ = detect_all(fixed, images, FLOORS["fixed"], scales=FIXED_SCALES)
    threshold, f1 = detection_threshold(ranked, boxes, iou=0.5)
    return dataclasses.replace(fixed, threshold=threshold, meta={
        **fixed.meta, "threshold_rule": "best F1 on the training scenes", "image_f1": f1,
        "search_scales": list(FIXED_SCALES)})


def main():
    train, test = load("train"), load("test")
    for split, (_, boxes) in (("train", train), ("test", test)):
        print(f"composite {split}.csv: {sum(map(len, boxes.values()))} faces in "
              f"{sum(1 for group in boxes.values() if group)} scenes, "
              f"{sum(1 for group in boxes.values() if not group)} face-free images")
    print("| seed | window | l2 | box copies: train / swapped | threshold | CV AP | test AP | swapped AP | training s, wall "
          "(CPU): train / swapped | detect ms per scene, wall (CPU) | astronaut face rank | "
          "lfw 5-fold AUC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in SEEDS:
        learned, result, seconds, detect_seconds = train_and_score(train, test, seed)
        swapped_filter, swapped, swapped_seconds, _ = train_and_score(test, train, seed)
        rank, _ = astronaut_rank(learned)
        meta = learned.meta
        print(f"| {seed} | {learned.window[1]}x{learned.window[0]} | {meta['options']['l2']:g} | "
              f"{meta['flip_selection']['chosen']} / {swapped_filter.meta['flip_selection']['chosen']} | "
              f"{learned.threshold:.3f} | {meta['cv_ap']:.3f} | {result.ap:.3f} (P {result.precision:.2f} "
              f"R {result.recall:.2f}) | {swapped.ap:.3f} (P {swapped.precision:.2f} R "
              f"{swapped.recall:.2f}) | {seconds[0]:.1f} ({seconds[1]:.1f}) / "
              f"{swapped_seconds[0]:.1f} ({swapped_seconds[1]:.1f}) | {1e3 * detect_seconds[0]:.0f} "
              f"({1e3 * detect_seconds[1]:.0f}) | {rank} | {lfw_auc(seed):.4f} |", flush=True)
        if seed == 0:
            learned.save(HERE / "face.npz")
            face = learned
    fixed = fixed_mean_face(train)
    fixed.save(HERE / "mean_face.npz")
    detections, detect_seconds = detect_all(fixed, test[0], FLOORS["fixed"], scales=FIXED_SCALES)
    result = evaluate(detections, test[1], iou=0.5, threshold=fixed.threshold)
    print(f"fixed mean face (NCC, threshold {fixed.threshold:.3f}): test AP {result.ap:.3f} "
          f"(P {result.precision:.2f} R {result.recall:.2f}), detect {1e3 * detect_seconds[0]:.0f} ms "
          f"(CPU {1e3 * detect_seconds[1]:.0f} ms)")
    rank, top = astronaut_rank(face)
    print(f"astronaut.png with face.npz: her face is detection #{rank}; top two: "
          + ", ".join(f"({d.x:.0f}, {d.y:.0f}, {d.w:.0f}x{d.h:.0f}) score {d.score:.2f}" for d in top))
    filters = [face, fixed]
    evaluations = compare(filters, HERE / "test.csv",
                          rank_thresholds=[FLOORS["learned"], FLOORS["fixed"]])
    example = write_report(HERE / "report.png", evaluations, filters, test[0],
                           title="patternfind compare on test.csv")
    print(f"wrote {HERE / 'report.png'} (example image {example})")


if __name__ == "__main__":
    main()
