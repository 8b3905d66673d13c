"""Time a whole batch job, file names to written output: patternfind against a plain loop.

The job (issue 11): N JPEGs of 640×480 cut from scikit-image photographs,
4 filters of 24×24 cut from them, ncc, threshold 0.8, object scales 0.8–1.25.

- **loop**: what a user writes with OpenCV alone, in one process: ``cv2.imread``,
  ``cv2.resize`` to each scale, ``cv2.matchTemplate(TM_CCOEFF_NORMED)`` for each
  filter, ``np.where`` above the threshold, ``cv2.dnn.NMSBoxes``, one jsonl line
  per image;
- **patternfind --jobs 1** and **--jobs 2**: ``patternfind FOLDER --filter … --format
  jsonl -o out.jsonl`` as a subprocess (worker start-up included);
- **dask, 2 workers**: ``detect_many(client=…)`` on an already running
  ``distributed.LocalCluster`` (a user's cluster is up before the job), writing
  the same jsonl.

Each job runs in a fresh subprocess, one after the other, ``--repeats`` times
interleaved; the script prints the median images per second, the ratio to the
loop, and the peak RSS of the job's main process. Then, separately: the main
process's peak RSS at 100 images against N images, and the per-image overhead
with ``--jobs 2`` on tiny images (16×16 against one 4×4 filter).

Run:  python benchmarks/bench_batch.py [--images 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data

FILTER_SIZE = 24
SCALES = (0.8, 1.25)

_LOOP = r"""
import json, resource, sys
from pathlib import Path
import cv2, numpy as np
folder, output = Path(sys.argv[1]), sys.argv[2]
filters = [np.load(f)["weights"] if f.endswith(".npz") else np.load(f) for f in sys.argv[3:]]
filters = [cv2.cvtColor(f.astype(np.float32), cv2.COLOR_RGB2GRAY) if f.ndim == 3 else f
           for f in filters]
scales = [1.1 ** k for k in range(-2, 3)]  # 0.83 ... 1.21, like patternfind's levels in 0.8-1.25
with open(output, "w") as out:
    for path in sorted(folder.glob("*.jpg")):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        boxes, scores = [], []
        for scale in scales:
            level = cv2.resize(image, None, fx=1 / scale, fy=1 / scale,
                               interpolation=cv2.INTER_AREA)
            for weights in filters:
                result = cv2.matchTemplate(level, weights, cv2.TM_CCOEFF_NORMED)
                rows, cols = np.where(result >= 0.8)
                h, w = weights.shape
                boxes += [[c * scale, r * scale, w * scale, h * scale]
                          for r, c in zip(rows.tolist(), cols.tolist())]
                scores += result[rows, cols].tolist()
        keep = cv2.dnn.NMSBoxes(boxes, scores, 0.8, 0.3) if boxes else []
        found = [{"x": boxes[i][0], "y": boxes[i][1], "w": boxes[i][2], "h": boxes[i][3],
                  "score": scores[i]} for i in np.ravel(keep)]
        out.write(json.dumps({"image": str(path), "detections": found}) + "\n")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

_DASK = r"""
import resource, sys
from pathlib import Path
from patternfind.batch import detect_many, expand_inputs
from patternfind.batch.cluster import dask_client
from patternfind.batch.outputs import open_results
if __name__ == "__main__":
    folder, output, filters = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    with dask_client("local", workers=2) as client:
        started = __import__("time").perf_counter()
        paths = expand_inputs([folder]).paths
        with open_results("jsonl", output, images=paths, filter_names=filters) as writer:
            for result in detect_many(paths, filters, client=client, scales=(0.8, 1.25)):
                writer.write(result)
        elapsed = __import__("time").perf_counter() - started
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, elapsed)
"""

_CLI = r"""
import resource, sys
from patternfind.cli import main
if __name__ == "__main__":
    main(sys.argv[1:])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` 640×480 JPEGs: random crops of scikit-image photographs, resized."""
    rng = np.random.default_rng(seed)
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(),
              cv2.cvtColor(skimage.data.camera(), cv2.COLOR_GRAY2RGB)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        crop_h = int(rng.integers(height // 2, height))
        crop_w = int(rng.integers(width // 2, width))
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        crop = cv2.resize(photo[top:top + crop_h, left:left + crop_w], (640, 480),
                          interpolation=cv2.INTER_CUBIC)
        path = folder / f"{index:05d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def make_filters(folder: Path, paths: list[Path]) -> list[str]:
    """4 grey 24×24 filters cut from 4 of the images."""
    from patternfind import Filter

    names = []
    for index, path in enumerate(paths[:4]):
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        y, x = 200 + 10 * index, 300 - 20 * index
        name = folder / f"part{index}.npy"
        Filter(grey[y:y + FILTER_SIZE, x:x + FILTER_SIZE], name=f"part{index}").save(name)
        names.append(str(name))
    return names


def run(code: str, *args: str) -> tuple[float, list[str]]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr[-2000:])
    return elapsed, done.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_images(root / "images", args.images)
        filters = make_filters(root, paths)
        flags = [f for name in filters for f in ("--filter", name)]
        detect = ["--scales", "0.8,1.25", "--format", "jsonl", "--quiet"]
        jobs = {
            "loop (cv2, 1 process)": lambda out: run(_LOOP, str(root / "images"), out, *filters),
            "patternfind --jobs 1": lambda out: run(
                _CLI, str(root / "images"), *flags, *detect, "-o", out, "--jobs", "1"),
            "patternfind --jobs 2": lambda out: run(
                _CLI, str(root / "images"), *flags, *detect, "-o", out, "--jobs", "2"),
            "dask LocalCluster, 2 workers": lambda out: run(
                _DASK, str(root / "images"), out, *filters),
        }
        times: dict[str, list[float]] = {name: [] for name in jobs}
        memory: dict[str, list[float]] = {name: [] for name in jobs}
        for repeat in range(args.repeats):
            for name, job in jobs.items():
                elapsed, printed = job(str(root / f"out{repeat}.jsonl"))
                if name.startswith("dask"):
                    elapsed = float(printed[1])  # the job itself; the cluster was up before
                times[name].append(elapsed)
                memory[name].append(int(printed[0]) / 1024)
        loop = statistics.median(times["loop (cv2, 1 process)"])
        print(f"{args.images} JPEGs 640x480, 4 filters 24x24, ncc 0.8, scales 0.8-1.25; "
              f"medians of {args.repeats}")
        print(f"{'job':<32} {'seconds':>8} {'images/s':>9} {'vs loop':>8} {'main RSS MiB':>13}")
        for name in jobs:
            median = statistics.median(times[name])
            print(f"{name:<32} {median:8.2f} {args.images / median:9.1f} {loop / median:7.2f}x "
                  f"{statistics.median(memory[name]):13.0f}")

        _, small = run(_CLI, *[str(p) for p in paths[:100]], *flags, *detect,
                       "-o", str(root / "m100.jsonl"), "--jobs", "2")
        _, large = run(_CLI, str(root / "images"), *flags, *detect,
                       "-o", str(root / "mall.jsonl"), "--jobs", "2")
        print(f"main-process peak RSS, --jobs 2: {int(small[0]) / 1024:.0f} MiB at 100 images, "
              f"{int(large[0]) / 1024:.0f} MiB at {args.images} "
              f"(growth {(int(large[0]) - int(small[0])) / 1024:.0f} MiB; target <= 100)")

        tiny = root / "tiny"
        tiny.mkdir()
        rng = np.random.default_rng(1)
        for index in range(args.images):
            cv2.imwrite(str(tiny / f"{index:05d}.png"), rng.integers(0, 255, (16, 16), np.uint8))
        from patternfind import Filter

        Filter(np.array([[0, 1, 1, 0]] * 4, np.float32), name="tiny").save(root / "tiny.npy")
        overhead = []
        for _ in range(args.repeats):
            elapsed, _ = run(_CLI, str(tiny), "--filter", str(root / "tiny.npy"), "--scales",
                             "1,1", "--format", "jsonl", "-o", str(root / "tiny.jsonl"),
                             "--quiet", "--jobs", "2")
            overhead.append(elapsed / args.images * 1000)
        print(f"per-image overhead, --jobs 2, 16x16 images, one 4x4 filter: "
              f"{statistics.median(overhead):.2f} ms (start-up included; target <= 5 ms)")


if __name__ == "__main__":
    main()
