"""dlib's HOG detector and patternfind's on the same composite face set, in one run.

Issue 10's anchor is dlib's ``simple_object_detector`` (Felzenszwalb HOG,
structural SVM over every window, 80 × 80 window by default). This script
trains it on samples/faces/train.csv, scores it on test.csv, then swaps the
roles, exactly as samples/faces/evaluate_faces.py does for
``train_detector``; both are scored by `patternfind.evaluate` (AP@0.5 over
every detection, the same matching), and both are timed in the same run.
dlib gets the recipe of its own face example (fhog_object_detector_ex):
the training images and boxes upsampled 2× (its 80 × 80 window is larger
than every face here, 28-72 px), ``add_left_right_image_flips`` and C = 5;
its detector then runs with one upsampling (``run(image, 1, -1)``: boxes come
back in the original pixels) and ``adjust_threshold`` −1, so that its ranking
goes below its own threshold of 0, as patternfind's does to score −3. Its
images are the same grey scenes; its boxes are our boxes as
``dlib.rectangle``. ``--upsample 0`` trains and detects on the scenes as
they are.

dlib is not a dependency of patternfind: ``pip install dlib-bin`` (a
prebuilt wheel of dlib 20) to run this script.

Run:  python benchmarks/anchor_dlib_faces.py [--seeds 0 1 2] [--c 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from patternfind import Detection, box_iou, detect, evaluate, load_annotations, train_detector

try:
    import dlib
except ImportError as error:  # pragma: no cover - an optional anchor
    MESSAGE = "this benchmark needs dlib: pip install dlib-bin"
    raise SystemExit(MESSAGE) from error

FACES = Path(__file__).resolve().parent.parent / "samples" / "faces"
ASTRONAUT = FACES.parent / "astronaut.png"
#: Her face in samples/astronaut.png (x, y, w, h), as samples/faces/evaluate_faces.py has it.
ASTRONAUT_FACE = (168.0, 75.0, 97.0, 110.0)


def load(split):
    """Grey images (uint8) and boxes of one csv, keyed like the annotations."""
    boxes = load_annotations(FACES / f"{split}.csv")
    images = {key: cv2.imread(str(FACES / key), cv2.IMREAD_GRAYSCALE) for key in boxes}
    return images, boxes


def train_dlib(images, boxes, c, upsample):
    factor = 2**upsample
    images = {key: cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
              for key, image in images.items()}
    options = dlib.simple_object_detector_training_options()
    options.add_left_right_image_flips = True
    options.C = c
    options.num_threads = os.cpu_count() or 1
    options.be_verbose = False
    keys = list(images)
    rectangles = [[dlib.rectangle(round(factor * b.x), round(factor * b.y),
                                  round(factor * (b.x + b.w)) - 1, round(factor * (b.y + b.h)) - 1)
                   for b in boxes[key]] for key in keys]
    started = time.perf_counter()
    trained = dlib.train_simple_object_detector([images[key] for key in keys], rectangles, options)
    seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:  # the trained object cannot run() itself
        path = str(Path(folder) / "detector.svm")
        trained.save(path)
        return dlib.fhog_object_detector(path), seconds


def run_dlib(detector, image, upsample):
    rectangles, scores, _ = detector.run(image, upsample, -1.0)
    return [Detection(x=float(r.left()), y=float(r.top()), w=float(r.width()), h=float(r.height()),
                      score=float(s), label="face", scale=1.0)
            for r, s in sorted(zip(rectangles, scores, strict=True), key=lambda pair: -pair[1])]


def detect_all(run, images):
    found, times = {}, []
    for key, image in images.items():
        started = time.perf_counter()
        found[key] = run(image)
        times.append(time.perf_counter() - started)
    return found, float(np.median(times))


def astronaut_rank(found):
    overlaps = box_iou(np.array([[d.x, d.y, d.w, d.h] for d in found]).reshape(-1, 4),
                       np.array([ASTRONAUT_FACE]))
    hits = np.flatnonzero(overlaps[:, 0] >= 0.3)
    return int(hits[0]) + 1 if len(hits) else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="patternfind's seeds (dlib's training is deterministic)")
    parser.add_argument("--c", type=float, default=5.0, help="dlib's SVM C (default 5)")
    parser.add_argument("--upsample", type=int, default=1,
                        help="dlib's doublings of the images, in training and detection (default 1)")
    args = parser.parse_args()
    print(f"dlib {dlib.__version__}, load average {os.getloadavg()[0]:.1f} at start")
    train, test = load("train"), load("test")
    astronaut_grey = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2GRAY)
    print("| detector | test AP | swapped AP | training s: train / swapped | detect ms per scene "
          "| astronaut face rank |")
    print("|---|---|---|---|---|---|")
    up = args.upsample
    detector, seconds = train_dlib(*train, args.c, up)
    swapped_detector, swapped_seconds = train_dlib(*test, args.c, up)
    found, per_image = detect_all(lambda image: run_dlib(detector, image, up), test[0])
    swapped, _ = detect_all(lambda image: run_dlib(swapped_detector, image, up), train[0])
    rank = astronaut_rank(run_dlib(detector, astronaut_grey, up))
    print(f"| dlib (C={args.c:g}, upsample {up}) | {evaluate(found, test[1], iou=0.5).ap:.3f} | "
          f"{evaluate(swapped, train[1], iou=0.5).ap:.3f} | {seconds:.1f} / {swapped_seconds:.1f} | "
          f"{1e3 * per_image:.0f} | {rank} |", flush=True)
    for seed in args.seeds:
        started = time.perf_counter()
        learned = train_detector(*train, seed=seed)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        swapped_learned = train_detector(*test, seed=seed)
        swapped_seconds = time.perf_counter() - started
        found, per_image = detect_all(lambda image, f=learned: detect(image, f, threshold=-3),
                                      test[0])
        swapped, _ = detect_all(lambda image, f=swapped_learned: detect(image, f, threshold=-3),
                                train[0])
        rank = astronaut_rank(detect(str(ASTRONAUT), learned, threshold=-3))
        print(f"| patternfind (seed {seed}) | {evaluate(found, test[1], iou=0.5).ap:.3f} | "
              f"{evaluate(swapped, train[1], iou=0.5).ap:.3f} | {seconds:.1f} / "
              f"{swapped_seconds:.1f} | {1e3 * per_image:.0f} | {rank} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
