"""Detection time of a gradient-feature filter against a HOG filter on the same photo.

Both filters are 54 × 54-pixel face windows learned by `train_filter` from the
crops of samples/faces/train.csv (``l2=0.01``): one on ``"gradients"``
(3 channels per pixel, so a 54 × 54 × 3 kernel), one on the detector's HOG
(9 × 9 cells × 31 channels). `detect` searches one 375 × 500 test scene over
scales 0.5-2 with each, interleaved, single-threaded. The issue's bound:
gradients at most 2 × HOG.

Also: one 9 × 9 × 31 filter scored on a 150 × 200 × 31 map, by the im2col
`patternfind.layers.conv.conv2d` and by the per-channel ``cv2.matchTemplate``
sum that `detect` uses.

Run:  python benchmarks/bench_feature_scores.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from patternfind.detection.detector import _correlate_channels, detect
from patternfind.evaluation.annotations import load_annotations
from patternfind.layers.conv import conv2d
from patternfind.learn import DETECTOR_HOG_OPTIONS, train_filter
from patternfind.learn.patches import as_image, patches_from_annotations

FACES = Path(__file__).resolve().parents[1] / "samples" / "faces"


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    boxes = load_annotations(FACES / "train.csv")
    images = {key: as_image(FACES / key) for key in boxes}
    patches, labels = patches_from_annotations(images, boxes, window=(54, 54))
    gradients = train_filter(patches, labels, features="gradients", l2=0.01)
    hog = train_filter(patches, labels, features="hog", feature_options=DETECTOR_HOG_OPTIONS, l2=0.01)
    scene = as_image(FACES / "test" / "00.png")
    times = {"gradients": [], "hog": []}
    for _ in range(repeats):
        for name, filter_ in (("hog", hog), ("gradients", gradients)):
            times[name].append(timed(lambda f=filter_: detect(scene, f, scales=(0.5, 2.0), workers=1,
                                                              threshold=f.threshold)))
    hog_ms, gradient_ms = (1e3 * np.median(times[k]) for k in ("hog", "gradients"))
    print(f"detect, 375 x 500 scene, scales 0.5-2, 1 thread: HOG {hog_ms:.0f} ms, "
          f"gradients {gradient_ms:.0f} ms, ratio {gradient_ms / hog_ms:.2f}")

    rng = np.random.default_rng(0)
    features = rng.random((150, 200, 31), dtype=np.float32)
    weights = rng.standard_normal((9, 9, 31)).astype(np.float32)
    scoring = {"conv2d (im2col)": [], "per-channel cv2": []}
    for _ in range(repeats):
        scoring["conv2d (im2col)"].append(timed(lambda: conv2d(features, weights, 0.5)))
        scoring["per-channel cv2"].append(timed(lambda: _correlate_channels(features, weights, 0.5)))
    medians = {k: 1e3 * np.median(v) for k, v in scoring.items()}
    print("9x9x31 filter on a 150x200x31 map: " + ", ".join(f"{k} {v:.1f} ms" for k, v in medians.items())
          + f", ratio {medians['conv2d (im2col)'] / medians['per-channel cv2']:.1f}")


if __name__ == "__main__":
    main()
