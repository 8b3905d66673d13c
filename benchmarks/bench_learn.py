"""Time patternfind's learning against scikit-learn and its HOG against scikit-image.

1. Logistic regression + L2 on 20,000 "random-ish" 24 × 24 patches (smooth
   noise, 30 % carrying a faint ring, 5 % of labels flipped): the time
   `patternfind.train_filter` needs to come within 1 % of the optimal
   objective, against `sklearn.linear_model.LogisticRegression(solver="lbfgs")`
   on the same objective (C = 1 / (l2 · N); neither penalises the intercept).
   The optimum is the lower of a tight scikit-learn fit and patternfind's.
   "Time to 1 %" is measured from the call to `train_filter` (feature
   extraction and set-up included) to the end of the first epoch whose
   training objective is within 1 % of the optimum; the full call with its
   early stopping is reported too.
2. `patternfind.layers.features.feature_map(kind="hog")` against
   `skimage.feature.hog` on a 500 × 375 photograph, grey and RGB.
3. If samples/faces exists (samples/faces/make_faces.py): `train_detector` on
   its first five training scenes (about 20 boxes, two mining rounds), and
   `detect` with the learned HOG filter on a 500 × 375 test scene over scales
   0.5-2, with the share of the time spent computing the feature pyramid
   (`feature_map` on every level, timed alone, single-threaded).

Repeats are interleaved; medians and ratios are printed.

Run:  python benchmarks/bench_learn.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
from skimage import color, data, feature, transform

from patternfind.layers.features import feature_map
from patternfind.learn import objective, train_filter

L2 = 1e-3


def randomish_patches(count=20_000, size=24, seed=1):
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((count, size, size)).astype(np.float32)
    noise = np.stack([cv2.GaussianBlur(p, (0, 0), 1.5) for p in noise])
    has_ring = rng.random(count) < 0.3
    radius = np.hypot(*(np.mgrid[:size, :size] - (size - 1) / 2))
    ring = np.exp(-((radius - size / 3.5) ** 2) / 4).astype(np.float32)
    patches = 0.5 + 0.15 * noise / noise.std() + 0.08 * has_ring[:, None, None] * ring
    labels = has_ring ^ (rng.random(count) < 0.05)
    return np.clip(patches, 0, 1).astype(np.float32), labels


def full_objective(weights, bias, X, y):
    return objective(weights.ravel().astype(np.float64), bias, X, y, loss="logistic", l2=L2)[0]


def time_patternfind(patches, labels, optimum_box):
    """(seconds to 1 % of the optimum, seconds of the whole call, final objective)."""
    trace = []
    start = time.perf_counter()
    fitted = train_filter(patches, labels, l2=L2, val_fraction=0, progress=lambda epoch, total, loss:
                          trace.append((time.perf_counter() - start, loss)))
    total = time.perf_counter() - start
    return trace, total, fitted


def time_sklearn(X, labels):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1 / (L2 * len(X)), solver="lbfgs", max_iter=1000)
    start = time.perf_counter()
    model.fit(X, labels)
    return time.perf_counter() - start, model


def bench_fit(repeats):
    patches, labels = randomish_patches()
    X32 = patches.reshape(len(patches), -1)
    X64 = X32.astype(np.float64)
    y = np.where(labels, 1.0, -1.0)
    from sklearn.linear_model import LogisticRegression

    tight = LogisticRegression(C=1 / (L2 * len(X32)), solver="lbfgs", max_iter=10_000, tol=1e-10)
    tight.fit(X64, labels)
    optimum = full_objective(tight.coef_, float(tight.intercept_[0]), X64, y)
    ours_to_1, ours_total, theirs, gaps = [], [], [], []
    for _ in range(repeats):
        trace, total, fitted = time_patternfind(patches, labels, optimum)
        final = full_objective(fitted.weights, fitted.bias, X64, y)
        optimum = min(optimum, final)
        reached = [t for t, loss in trace if loss <= 1.01 * optimum]
        ours_to_1.append(reached[0] if reached else float("nan"))
        ours_total.append(total)
        seconds, model = time_sklearn(X32, labels)
        theirs.append(seconds)
        gaps.append((final, full_objective(model.coef_, float(model.intercept_[0]), X64, y)))
    ours_gap = np.median([g[0] for g in gaps]) / optimum - 1
    their_gap = np.median([g[1] for g in gaps]) / optimum - 1
    print(f"fit 20,000 × 24×24 patches, logistic + L2 (l2={L2:g}), optimum {optimum:.5f}")
    print(f"  patternfind train_filter, to within 1 %:  {np.median(ours_to_1):7.3f} s")
    print(f"  patternfind train_filter, whole call:      {np.median(ours_total):7.3f} s "
          f"(objective {ours_gap:+.2e} relative to the optimum, {fitted.meta['epochs']} epochs)")
    print(f"  scikit-learn LogisticRegression(lbfgs):    {np.median(theirs):7.3f} s "
          f"(objective {their_gap:+.2e})")
    print(f"  ratio to 1 % / sklearn: {np.median(ours_to_1) / np.median(theirs):.2f}; "
          f"whole call / sklearn: {np.median(ours_total) / np.median(theirs):.2f}")


def bench_hog(repeats):
    rgb = transform.resize(data.astronaut(), (375, 500)).astype(np.float32)
    grey = color.rgb2gray(rgb).astype(np.float32)
    for name, image, axis in (("grey", grey, None), ("RGB", rgb, -1)):
        ours, theirs = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            feature_map(image, kind="hog")
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            feature.hog(image, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                        block_norm="L2-Hys", feature_vector=False, channel_axis=axis)
            theirs.append(time.perf_counter() - start)
        print(f"HOG 500×375 {name}: patternfind feature_map {1e3 * np.median(ours):6.1f} ms, "
              f"skimage.feature.hog {1e3 * np.median(theirs):6.1f} ms, "
              f"ratio {np.median(ours) / np.median(theirs):.2f}")


def bench_detector(repeats):
    from pathlib import Path

    from patternfind.detection.detector import detect
    from patternfind.detection.pyramid import pyramid_scales, resize_to_scale
    from patternfind.evaluation.annotations import load_annotations
    from patternfind.learn import train_detector
    from patternfind.learn.patches import as_image

    faces = Path(__file__).resolve().parents[1] / "samples" / "faces"
    if not (faces / "train.csv").exists():
        print("samples/faces not built: skipping train_detector and detect")
        return
    annotations = dict(list(load_annotations(faces / "train.csv").items())[:5])
    images = {key: as_image(faces / key) for key in annotations}
    boxes = sum(len(b) for b in annotations.values())
    train_seconds = []
    for _ in range(max(1, repeats // 2)):
        start = time.perf_counter()
        learned = train_detector(images, annotations, progress=False)
        train_seconds.append(time.perf_counter() - start)
    test_key = next(iter(load_annotations(faces / "test.csv")))
    scene = as_image(faces / test_key)
    detect_seconds, single_seconds, feature_seconds = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        detect(scene, learned, threshold=0.0, scales=(0.5, 2.0))
        detect_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        detect(scene, learned, threshold=0.0, scales=(0.5, 2.0), workers=1)
        single_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        for scale in pyramid_scales((0.5, 2.0), scale_step=1.1):
            level = resize_to_scale(scene, scale)
            if min(level.shape) >= max(learned.window):
                feature_map(level, kind="hog", options=learned.feature_options)
        feature_seconds.append(time.perf_counter() - start)
    print(f"train_detector, {len(annotations)} scenes with {boxes} boxes, "
          f"{len(learned.meta['rounds'])} mining rounds: {np.median(train_seconds):.1f} s")
    print(f"detect, learned HOG filter {learned.weights.shape}, 500×375, scales 0.5-2: "
          f"{1e3 * np.median(detect_seconds):.0f} ms (default threads), "
          f"{1e3 * np.median(single_seconds):.0f} ms on one thread; feature pyramid alone, "
          f"one thread: {1e3 * np.median(feature_seconds):.0f} ms "
          f"({np.median(feature_seconds) / np.median(single_seconds):.0%} of one-thread detect)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bench_hog(max(args.repeats, 7))
    bench_fit(args.repeats)
    bench_detector(args.repeats)


if __name__ == "__main__":
    main()
