"""Time patternfind's non-maximum suppression against ``cv2.dnn.NMSBoxes`` in the same run (issue 8).

For 50, 500 and 5000 boxes, in two layouts, both methods run interleaved
(each repeat runs both once, the order alternating) after a warm-up call, and
the medians and the ratio patternfind / OpenCV are printed. Both get the same
float64 ``(x, y, w, h)`` array and scores, with IoU threshold 0.3 and
patternfind's containment rule off (OpenCV has none); the kept indices are
checked to be identical before timing. A third column times patternfind with
the containment rule on (0.7, as `detect` uses), for information.

Layouts, on a 1920×1080 image:

- ``clustered``: what a detector hands to NMS. One object per 10 boxes, each
  object seen as 10 boxes jittered by up to 15 % of its size in position and
  scale (sizes 24–96 px), scores falling with the jitter;
- ``scattered``: boxes placed uniformly at random (sizes 20–100 px), most of
  which survive.

Run:  python benchmarks/bench_nms.py [--repeats 15] [--sizes 50,500,5000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np

from patternfind.detection.nms import non_max_suppression

WIDTH, HEIGHT = 1920, 1080
IOU = 0.3
CONTAINMENT = 0.7


def clustered(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    objects = max(1, count // 10)
    size = rng.uniform(24, 96, objects)
    centre = rng.uniform((0, 0), (WIDTH, HEIGHT), (objects, 2))
    owner = rng.integers(0, objects, count)
    jitter = rng.uniform(-0.15, 0.15, (count, 3))
    side = size[owner] * (1 + jitter[:, 2])
    x = centre[owner, 0] + jitter[:, 0] * size[owner] - side / 2
    y = centre[owner, 1] + jitter[:, 1] * size[owner] - side / 2
    boxes = np.stack([x, y, side, side], axis=1)
    scores = rng.uniform(0.6, 1.0, objects)[owner] - np.abs(jitter).sum(axis=1)
    return boxes, _as_float32(scores)


def scattered(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = rng.uniform(20, 100, (count, 2))
    corner = rng.uniform((0, 0), (WIDTH, HEIGHT), (count, 2)) - size / 2
    return np.concatenate([corner, size], axis=1), _as_float32(rng.uniform(0.05, 1, count))


def _as_float32(scores: np.ndarray) -> np.ndarray:
    # OpenCV compares scores in float32: give both methods float32 values so ties agree
    return scores.astype(np.float32).astype(np.float64)


def opencv_nms(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    kept = cv2.dnn.NMSBoxes(boxes, scores, score_threshold=0.0, nms_threshold=IOU)
    return np.asarray(kept, dtype=np.intp).reshape(-1)


def time_interleaved(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()  # warm-up
    names = list(calls)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sizes", default="50,500,5000")
    args = parser.parse_args(argv)
    sizes = [int(text) for text in args.sizes.split(",")]
    print(f"NMS, IoU {IOU}, medians of {args.repeats} interleaved repeats "
          f"(ratio = patternfind / cv2.dnn.NMSBoxes; < 1 is faster)")
    print(f"{'layout':<10} {'boxes':>6} {'kept':>6} {'patternfind':>12} {'cv2':>10} {'ratio':>6}"
          f" {'+containment':>13}")
    for layout in (clustered, scattered):
        for count in sizes:
            boxes, scores = layout(count, np.random.default_rng(count))
            ours = non_max_suppression(boxes, scores, iou_threshold=IOU)
            reference = opencv_nms(boxes, scores)
            if not np.array_equal(ours, reference):
                msg = f"{layout.__name__} {count}: patternfind and OpenCV keep different boxes"
                raise AssertionError(msg)
            medians = time_interleaved({
                "patternfind": lambda b=boxes, s=scores: non_max_suppression(
                    b, s, iou_threshold=IOU),
                "cv2": lambda b=boxes, s=scores: opencv_nms(b, s),
                "containment": lambda b=boxes, s=scores: non_max_suppression(
                    b, s, iou_threshold=IOU, containment_threshold=CONTAINMENT),
            }, args.repeats)
            ratio = medians["patternfind"] / medians["cv2"]
            print(f"{layout.__name__:<10} {count:>6} {len(ours):>6} {medians['patternfind']:>9.3f} ms"
                  f" {medians['cv2']:>7.3f} ms {ratio:>5.2f}× {medians['containment']:>10.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
