"""Time patternfind's 360° rotation search against the naive OpenCV recipe (issue 12).

The scene is a real photograph (scikit-image's coffee, resized to 640×480)
turned by a random angle about a 64×64 part cut from the upright photo, so
the part appears turned in its real surroundings. Each repeat runs, in
rotated order after one warm-up each:

- **naive**: ``cv2.warpAffine`` of the part plus ``cv2.matchTemplate``
  (TM_CCOEFF_NORMED) at every 1° step, keeping the best score and its angle;
- **patternfind ncc**: ``detect(angles=(0, 360), scales=(1, 1))`` with the
  default step, coarse-to-fine and sub-step refinement;
- **patternfind shape**: the same with ``score="shape"``;
- **patternfind HOG**: a HOG filter learned from the upright part (then
  the image turns, not the filter), over the full turn and upright (the
  cost of one upright search, for the multiple).

It prints each method's median time, its ratio to the naive recipe, and its
angle and centre errors (targets: ncc ≤ 0.15×, shape ≤ 0.25×, angle error ≤ 0.5°).

Then it times ``detect`` with ``angles=None`` (default pyramid, ncc, the
part on the upright photo) in this tree and in patternfind as it was before
the rotation search existed (the first parent of the commit that merged
branch issue12, extracted with ``git archive`` into a temporary folder; or
``--baseline REV`` for another commit), in alternating fresh subprocesses
(``--rounds`` of them, each the median of 5 calls after a warm-up), and
prints both medians and the ratio (target: within 5 %). ``--baseline none``
skips it (no git checkout at hand).

Run:  python benchmarks/bench_rotation.py [--repeats 5] [--seed 12] [--rounds 12] [--baseline REV]
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


def hog_filter(seed: int) -> Filter:
    """A HOG filter (8-pixel cells) learned from the upright part, shifted by up to 2 px,
    against random windows of the rest of the upright photo."""
    from patternfind.learn.patch_training import train_filter

    upright = photo()
    top, left = 290, 342
    positives = [upright[top + dy : top + dy + PART, left + dx : left + dx + PART]
                 for dy in range(-2, 3) for dx in range(-2, 3)]
    rng = np.random.default_rng(seed)
    negatives = []
    while len(negatives) < 500:
        y, x = int(rng.integers(0, HEIGHT - PART)), int(rng.integers(0, WIDTH - PART))
        if abs(y - top) > PART // 2 or abs(x - left) > PART // 2:
            negatives.append(upright[y : y + PART, x : x + PART])
    labels = [1] * len(positives) + [0] * len(negatives)
    return train_filter(np.array(positives + negatives), np.array(labels), features="hog",
                        name="part", l2=0.01, seed=seed)


def hog_search(image: np.ndarray, filter_: Filter, angles: tuple[float, float] | None
               ) -> tuple[float, tuple[float, float]]:
    found = patternfind.detect(image, filter_, angles=angles, scales=(1, 1), subpixel=True,
                               max_detections=1)
    if not found:
        return math.nan, (math.nan, math.nan)
    best = found[0]
    return best.angle, (best.x + best.w / 2 - 0.5, best.y + best.h / 2 - 0.5)


def angle_error(found: float, truth: float) -> float:
    difference = abs(found - truth) % 360
    return min(difference, 360 - difference)


def rotation_table(repeats: int, seed: int) -> None:
    image, part, angle, centre = scene(seed)
    hog = hog_filter(seed)
    methods = {
        "naive warpAffine+matchTemplate, 1° steps": lambda: naive(image, part),
        "patternfind angles=(0, 360), ncc": lambda: ours(image, part, "ncc"),
        "patternfind angles=(0, 360), shape": lambda: ours(image, part, "shape"),
        "patternfind angles=(0, 360), learned HOG": lambda: hog_search(image, hog, (0, 360)),
        "patternfind upright, learned HOG": lambda: hog_search(image, hog, None),
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
        if "upright" in name:  # the turned part: the upright search is only the time reference
            print(f"{name:<42} {median:9.3f} {median / naive_median:8.3f} {'-':>12} {'-':>14}")
            continue
        print(f"{name:<42} {median:9.3f} {median / naive_median:8.3f} "
              f"{angle_error(found_angle, angle):12.3f} {math.dist(found_centre, centre):14.3f}")
    turned = statistics.median(times["patternfind angles=(0, 360), learned HOG"])
    upright = statistics.median(times["patternfind upright, learned HOG"])
    print(f"learned HOG (8-pixel cells, {hog.window[1]}×{hog.window[0]} window): the full turn "
          f"costs {turned / upright:.0f} upright searches")


UPRIGHT_SNIPPET = """
import pathlib, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, patternfind
# the tree under test, not an installed copy
assert pathlib.Path(patternfind.__file__).resolve().is_relative_to(pathlib.Path(sys.argv[1]).resolve())
image = np.load(sys.argv[2]); part = np.load(sys.argv[3])
f = patternfind.Filter(part)
workers = None if sys.argv[5] == "default" else int(sys.argv[5])
patternfind.detect(image, f, workers=workers)
times = []
for _ in range(int(sys.argv[4])):
    started = time.perf_counter(); patternfind.detect(image, f, workers=workers)
    times.append(time.perf_counter() - started)
print(statistics.median(times))
"""


REPOSITORY = Path(__file__).resolve().parents[1]


def pre_rotation_commit() -> str:
    """The first parent of the commit that merged branch issue12 (the rotation search)."""
    merges = subprocess.run(
        ["git", "log", "--merges", "--format=%H %s", "main" if _has_ref("main") else "HEAD"],
        cwd=REPOSITORY, check=True, capture_output=True, text=True).stdout.splitlines()
    for line in reversed(merges):  # the oldest such merge
        commit, subject = line.split(" ", 1)
        if subject.startswith("Merge issue12"):
            return commit + "^1"
    msg = "no merge of branch issue12 in the history: pass --baseline REV"
    raise SystemExit(msg)


def _has_ref(name: str) -> bool:
    return subprocess.run(["git", "rev-parse", "--verify", "--quiet", name], cwd=REPOSITORY,
                          capture_output=True, check=False).returncode == 0


def extract(revision: str, folder: Path) -> tuple[Path, str]:
    """``git archive`` of ``revision`` unpacked in ``folder``; returns the tree and the commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", revision], cwd=REPOSITORY, check=True,
                            capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=REPOSITORY,
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder, commit


def upright_table(baseline: Path, label: str, rounds: int, tmp: Path) -> None:
    image = photo()
    part = image[290 : 290 + PART, 342 : 342 + PART].copy()
    np.save(tmp / "image.npy", image)
    np.save(tmp / "part.npy", part)
    trees = {"this tree": REPOSITORY, "baseline": baseline.resolve()}
    print(f"\ndetect(angles=None) on the upright 640×480 photo, 64×64 part, default pyramid, ncc: "
          f"{rounds} rounds of fresh subprocesses alternating the trees, each the median of 5 calls")
    print(f"{'threads':<9} {'this tree ms':>13} {'before rotation (' + label + ') ms':>30} "
          f"{'ratio of medians':>17} {'ratio of fastest':>17}")
    for workers in ("default", "1"):
        medians: dict[str, list[float]] = {name: [] for name in trees}
        for round_ in range(rounds):
            for name in (list(trees) if round_ % 2 == 0 else list(trees)[::-1]):
                output = subprocess.run(
                    [sys.executable, "-c", UPRIGHT_SNIPPET, str(trees[name]),
                     str(tmp / "image.npy"), str(tmp / "part.npy"), "5", workers],
                    check=True, capture_output=True, text=True,
                    env={**os.environ, "PYTHONPATH": ""},
                )
                medians[name].append(float(output.stdout))
        ours, base = statistics.median(medians["this tree"]), statistics.median(medians["baseline"])
        fastest = min(medians["this tree"]) / min(medians["baseline"])
        print(f"{workers:<9} {1000 * ours:13.1f} {1000 * base:30.1f} {ours / base:17.3f} "
              f"{fastest:17.3f}")
    print("target: this tree within 5 % of the tree before rotation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=12,
                        help="alternating subprocesses per tree for the angles=None timing")
    parser.add_argument("--baseline", default=None,
                        help="git revision to compare detect(angles=None) with (default: the "
                             "commit before the rotation search was merged; 'none' skips it)")
    args = parser.parse_args()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    rotation_table(args.repeats, args.seed)
    if args.baseline != "none":
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            tree, commit = extract(args.baseline or pre_rotation_commit(), Path(folder))
            upright_table(tree, commit, args.rounds, Path(folder))
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
