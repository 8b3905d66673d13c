"""Time patternfind's 360° rotation search against the naive OpenCV recipe (issue 12).

The scene is a real photograph (scikit-image's coffee, resized to 640×480)
turned by a random angle about a 64×64 part cut from the upright photo, so
the part appears turned in its real surroundings. Each repeat runs, in
rotated order after one warm-up each:

- **naive**: ``cv2.warpAffine`` of the part plus ``cv2.matchTemplate``
  (TM_CCOEFF_NORMED) at every 1° step, keeping the best score and its angle;
- **patternfind ncc**: ``detect(angles=(0, 360), scales=(1, 1))`` with the
  default step, coarse-to-fine and sub-step refinement;
- **patternfind shape**: the same with ``score="shape"``.

It prints each method's median time, its ratio to the naive recipe, and its
angle and centre errors (targets: ncc ≤ 0.15×, shape ≤ 0.25×, angle error ≤ 0.5°).

``--baseline DIR`` also times ``detect`` with ``angles=None`` (default
pyramid, ncc, the part on the upright photo) in this tree and in the
patternfind source tree DIR (e.g. ``git archive main`` unpacked), in
alternating fresh subprocesses, and prints both medians and the ratio
(target: within 5 %).

Run:  python benchmarks/bench_rotation.py [--repeats 5] [--seed 12] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

import patternfind
from patternfind import Filter

HEIGHT, WIDTH, PART = 480, 640, 64


def photo() -> np.ndarray:
    """scikit-image's coffee photograph, grey, float32 in [0, 1], 640×480."""
    grey = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def scene(seed: int) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
    """(turned photo, upright part, true angle, true centre in pixel-centre coordinates)."""
    rng = np.random.default_rng(seed)
    upright = photo()
    top, left = 290, 342  # the spoon's bowl: a part with structure (the cup's rim is round)
    part = upright[top : top + PART, left : left + PART].copy()
    angle = float(rng.uniform(0, 360))
    centre = (left + (PART - 1) / 2, top + (PART - 1) / 2)
    # turn the whole photo about the part's centre, then move it to a random place
    target = (float(rng.uniform(120, WIDTH - 120)), float(rng.uniform(120, HEIGHT - 120)))
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    matrix[:, 2] += np.array(target) - centre
    turned = cv2.warpAffine(upright, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT_101)
    return turned, part, angle, target


def naive(image: np.ndarray, part: np.ndarray) -> tuple[float, tuple[float, float]]:
    """warpAffine + matchTemplate every 1°: best angle and the centre of its best window."""
    middle = ((PART - 1) / 2, (PART - 1) / 2)
    best = (-2.0, 0.0, (0.0, 0.0))
    for angle in range(360):
        turned = cv2.warpAffine(part, cv2.getRotationMatrix2D(middle, angle, 1.0), (PART, PART))
        scores = cv2.matchTemplate(image, turned, cv2.TM_CCOEFF_NORMED)
        _, value, _, (x, y) = cv2.minMaxLoc(scores)
        if value > best[0]:
            best = (value, float(angle), (x + middle[0], y + middle[1]))
    return best[1], best[2]


def ours(image: np.ndarray, part: np.ndarray, score: str) -> tuple[float, tuple[float, float]]:
    found = patternfind.detect(image, Filter(part), angles=(0, 360), scales=(1, 1), score=score,
                               subpixel=True, max_detections=1)
    if not found:
        return math.nan, (math.nan, math.nan)
    best = found[0]
    return best.angle, (best.x + best.w / 2 - 0.5, best.y + best.h / 2 - 0.5)


def angle_error(found: float, truth: float) -> float:
    difference = abs(found - truth) % 360
    return min(difference, 360 - difference)


def rotation_table(repeats: int, seed: int) -> None:
    image, part, angle, centre = scene(seed)
    methods = {
        "naive warpAffine+matchTemplate, 1° steps": lambda: naive(image, part),
        "patternfind angles=(0, 360), ncc": lambda: ours(image, part, "ncc"),
        "patternfind angles=(0, 360), shape": lambda: ours(image, part, "shape"),
    }
    results = {name: method() for name, method in methods.items()}  # warm-up, and the answers
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            started = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - started)
    naive_median = statistics.median(times[names[0]])
    print(f"640×480 coffee photo turned by {angle:.2f}° about a 64×64 part, centre at "
          f"({centre[0]:.2f}, {centre[1]:.2f}); medians of {repeats} interleaved repeats, "
          f"cv2 threads {cv2.getNumThreads()}")
    print(f"{'method':<42} {'median s':>9} {'× naive':>8} {'angle err °':>12} {'centre err px':>14}")
    for name in names:
        median = statistics.median(times[name])
        found_angle, found_centre = results[name]
        print(f"{name:<42} {median:9.3f} {median / naive_median:8.3f} "
              f"{angle_error(found_angle, angle):12.3f} {math.dist(found_centre, centre):14.3f}")


UPRIGHT_SNIPPET = """
import statistics, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, patternfind
image = np.load(sys.argv[2]); part = np.load(sys.argv[3])
f = patternfind.Filter(part)
patternfind.detect(image, f)
times = []
for _ in range(int(sys.argv[4])):
    started = time.perf_counter(); patternfind.detect(image, f); times.append(time.perf_counter() - started)
print(statistics.median(times))
"""


def upright_table(baseline: Path, repeats: int, tmp: Path) -> None:
    image = photo()
    part = image[290 : 290 + PART, 342 : 342 + PART].copy()
    np.save(tmp / "image.npy", image)
    np.save(tmp / "part.npy", part)
    trees = {"this tree": Path(__file__).resolve().parents[1], "baseline": baseline.resolve()}
    medians: dict[str, list[float]] = {name: [] for name in trees}
    for round_ in range(repeats):
        for name in (list(trees) if round_ % 2 == 0 else list(trees)[::-1]):
            output = subprocess.run(
                [sys.executable, "-c", UPRIGHT_SNIPPET, str(trees[name]), str(tmp / "image.npy"),
                 str(tmp / "part.npy"), "5"],
                check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""},
            )
            medians[name].append(float(output.stdout))
    ours_median = statistics.median(medians["this tree"])
    base_median = statistics.median(medians["baseline"])
    print(f"\ndetect(angles=None) on the upright photo, default pyramid, ncc: medians of "
          f"{repeats} alternating subprocesses × 5 calls")
    print(f"  this tree {1000 * ours_median:.1f} ms, baseline {1000 * base_median:.1f} ms, "
          f"ratio {ours_median / base_median:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a patternfind source tree to compare detect(angles=None) with")
    args = parser.parse_args()
    rotation_table(args.repeats, args.seed)
    if args.baseline is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            upright_table(args.baseline, max(args.repeats, 6), Path(folder))


if __name__ == "__main__":
    main()
