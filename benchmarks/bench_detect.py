"""Time the patternfind detector against OpenCV in the same run (issue 3, item 10 "Speed").

Every case times patternfind and its OpenCV anchor *interleaved* (each repeat
runs every method once, start position rotated), after one warm-up call each,
and prints both medians and the ratio patternfind / OpenCV:

1. one 32×32 filter, ncc, one scale, 1920×1080 grey float32:
   ``patternfind.detection.scores.score_map`` vs ``cv2.matchTemplate(TM_CCOEFF_NORMED)``  (target ≤ 1.2×)
2. K = 8 and 32 filters of 24×24, dot, 1920×1080 grey float32:
   ``patternfind.detect(scales=(1, 1), score="dot")`` with a per-filter
   threshold that lets ~20 pixels per map through (the public path a user
   takes for "all filters on this image"); also a ``score_map`` loop, for
   information; vs a loop of ``cv2.matchTemplate(TM_CCORR)``  (target < 1.0×)
3. full ``detect`` with one 32×32 filter, ncc (default threshold), pyramid
   ×1.25 over 17 scales (``scales=(1, 1.25**16)``), peaks and NMS included, vs
   ``cv2.resize(INTER_AREA)`` from the full image + ``cv2.matchTemplate`` over
   the same level sizes (levels the filter does not fit are skipped by both)  (target ≤ 1.2×)
4. 3840×2160 RGB uint8, 32×32×3 filter, ncc, one scale: ``score_map`` on the
   uint8 array vs ``cv2.matchTemplate`` on the same uint8 array (and on a
   float32 copy made outside the timing)  (target ≤ 1.2×); plus peak memory
   above the loaded input, each measured in a fresh subprocess (VmHWM from
   /proc/self/status, reset through /proc/self/clear_refs after loading the
   input)  (target ≤ 500 MiB for patternfind).

Images are real photographs: scikit-image's astronaut beside a centre crop of
its coffee cup, resized up to 1920×1080 (bicubic) with ±1 grey level of
Gaussian noise added; 4K is the same mosaic at 3840×2160. Filters are cut
from the image.

Run:  python benchmarks/bench_detect.py [--repeats 7] [--quick] [--cases 1,2,3,4]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from patternfind.detection.detector import detect
from patternfind.detection.pyramid import pyramid_scales
from patternfind.detection.scores import DEFAULT_THRESHOLDS, score_map
from patternfind.structures import Filter

H, W = 1080, 1920
H4, W4 = 2160, 3840
SEED = 3
MIB = 1024 * 1024


# ---------------------------------------------------------------- data


def photo_rgb(height: int, width: int) -> np.ndarray:
    """A real photo mosaic (astronaut | coffee) of the given size, uint8 RGB, light noise."""
    from skimage import data

    astronaut = cv2.resize(data.astronaut(), (height, height), interpolation=cv2.INTER_CUBIC)
    coffee = data.coffee()  # 400 × 600
    crop_width = round(coffee.shape[0] * (width - height) / height)
    left = (coffee.shape[1] - crop_width) // 2
    coffee = cv2.resize(
        np.ascontiguousarray(coffee[:, left : left + crop_width]),
        (width - height, height),
        interpolation=cv2.INTER_CUBIC,
    )
    mosaic = np.concatenate([astronaut, coffee], axis=1).astype(np.float32)
    mosaic += np.random.default_rng(SEED).standard_normal(mosaic.shape, dtype=np.float32)
    return np.ascontiguousarray(np.clip(mosaic, 0, 255).round().astype(np.uint8))


def grey_float(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / 255)


def eye_box(height: int, size: int) -> tuple[int, int]:
    """Top-left (row, col) of a size×size patch on the astronaut's left eye (her right)."""
    scale = height / 512
    return round(96 * scale) - size // 2 + round(size * 0.1), round(200 * scale) - size // 2


def cut(image: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    return np.ascontiguousarray(image[row : row + size, col : col + size])


def random_patches(image: np.ndarray, count: int, size: int, seed: int) -> list[np.ndarray]:
    """``count`` textured size×size patches cut at random places."""
    rng = np.random.default_rng(seed)
    patches = []
    while len(patches) < count:
        row = int(rng.integers(0, image.shape[0] - size))
        col = int(rng.integers(0, image.shape[1] - size))
        patch = cut(image, row, col, size)
        if patch.std() > 0.03:
            patches.append(patch)
    return patches


# ---------------------------------------------------------------- timing


def interleaved(methods: dict, repeats: int) -> tuple[dict, dict]:
    """name -> list of seconds, and name -> warm-up output; interleaved, order rotated."""
    names = list(methods)
    outputs = {}
    for name in names:
        gc.collect()
        outputs[name] = methods[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        k = repeat % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            start = time.perf_counter()
            methods[name]()
            samples[name].append(time.perf_counter() - start)
    return samples, outputs


def med(values: list[float]) -> float:
    return statistics.median(values)


ROWS: list[tuple[str, str, float, str, float, float, str]] = []


def report(case: str, pf_name: str, pf: list[float], cv_name: str, cv: list[float],
           target: float, note: str = "") -> None:
    ratio = med(pf) / med(cv)
    verdict = "ok" if ratio <= target else "MISS"
    ROWS.append((case, pf_name, med(pf), cv_name, med(cv), ratio, f"≤{target:g} {verdict}"))
    print(
        f"  {case}: {pf_name} {med(pf) * 1e3:.1f} ms [min {min(pf) * 1e3:.1f}, max {max(pf) * 1e3:.1f}]"
        f" | {cv_name} {med(cv) * 1e3:.1f} ms [min {min(cv) * 1e3:.1f}, max {max(cv) * 1e3:.1f}]"
        f" | ratio {ratio:.2f} (target ≤ {target:g}: {verdict}) {note}",
        flush=True,
    )


def max_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---------------------------------------------------------------- cases


def case1(grey: np.ndarray, repeats: int) -> None:
    row, col = eye_box(H, 32)
    filter_ = Filter(cut(grey, row, col, 32), name="eye32")
    methods = {
        "pf": lambda: score_map(grey, filter_, score="ncc"),
        "cv": lambda: cv2.matchTemplate(grey, filter_.weights, cv2.TM_CCOEFF_NORMED),
    }
    samples, outs = interleaved(methods, repeats)
    err = max_err(outs["pf"], np.clip(outs["cv"], -1, 1))
    report("1 ncc 32x32 1080p", "score_map", samples["pf"], "cv2 CCOEFF_NORMED", samples["cv"], 1.2,
           f"max|Δ| {err:.1e}")


def case2(grey: np.ndarray, repeats: int, counts: list[int]) -> None:
    for count in counts:
        patches = random_patches(grey, count, 24, SEED + count)
        filters = []
        for index, patch in enumerate(patches):
            # a threshold letting ~20 pixels of the map through: few peaks, like a real dot threshold
            flat = cv2.matchTemplate(grey, patch, cv2.TM_CCORR).ravel()
            threshold = float(np.partition(flat, flat.size - 20)[flat.size - 20])
            filters.append(Filter(patch, name=f"f{index}", threshold=threshold, score="dot"))
        methods = {
            "pf_detect": lambda filters=filters: detect(grey, filters, score="dot", scales=(1, 1),
                                                        nms_iou=0.3, per_label=True),
            "pf_loop": lambda filters=filters: [score_map(grey, f, score="dot") for f in filters],
            "cv": lambda patches=patches: [cv2.matchTemplate(grey, p, cv2.TM_CCORR) for p in patches],
        }
        samples, outs = interleaved(methods, repeats)
        err = max(max_err(a, b) / float(np.abs(b).max()) for a, b in zip(outs["pf_loop"], outs["cv"], strict=True))
        note = f"({len(outs['pf_detect'])} boxes; score_map rel err {err:.1e})"
        report(f"2 dot K={count} 24x24 detect", "detect(scales=(1,1))", samples["pf_detect"],
               "cv2 TM_CCORR loop", samples["cv"], 1.0, note)
        report(f"2 dot K={count} 24x24 loop", "score_map loop", samples["pf_loop"],
               "cv2 TM_CCORR loop", samples["cv"], 1.0)


def case3(grey: np.ndarray, repeats: int) -> None:
    row, col = eye_box(H, 32)
    filter_ = Filter(cut(grey, row, col, 32), name="eye32")
    scales = (1.0, 1.25**16)
    levels = pyramid_scales(scales, scale_step=1.25)
    # the level sizes patternfind.detection.pyramid.resize_to_scale makes; both sides skip levels the filter misses
    sizes = [(max(1, round(W / s)), max(1, round(H / s))) for s in levels]
    scanned = [size for size in sizes if size[0] >= 32 and size[1] >= 32]
    print(f"  3: pyramid_scales({scales[0]:g}, 1.25**16, step 1.25) -> {len(levels)} scales "
          f"[{', '.join(f'{s:.3g}' for s in levels)}]")
    print(f"     level sizes (w×h): {', '.join(f'{w}x{h}' for w, h in sizes)}; "
          f"{len(scanned)} fit a 32×32 filter")

    def cv_loop() -> list[np.ndarray]:
        out = []
        for size in scanned:
            level = grey if size == (W, H) else cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            out.append(cv2.matchTemplate(level, filter_.weights, cv2.TM_CCOEFF_NORMED))
        return out

    methods = {
        "pf": lambda: detect(grey, filter_, score="ncc", scales=scales, scale_step=1.25),
        "cv": cv_loop,
    }
    samples, outs = interleaved(methods, repeats)
    found = outs["pf"]
    best = f"best {found[0].score:.3f} at x={found[0].x:.0f},y={found[0].y:.0f},s={found[0].scale:.3g}" if found else ""
    report("3 detect pyramid 16 lv", f"detect(ncc, thr {DEFAULT_THRESHOLDS['ncc']})", samples["pf"], "cv2 resize+match loop", samples["cv"],
           1.2, f"({len(found)} boxes; {best}; true eye at x={col},y={row},s=1)")


def case4(rgb4: np.ndarray, repeats: int, script: str) -> None:
    row, col = eye_box(H4, 32)
    weights_u8 = cut(rgb4, row, col, 32)
    weights = weights_u8.astype(np.float32) * np.float32(1 / 255)
    filter_ = Filter(weights, name="eye32rgb")
    rgb4_f32 = rgb4.astype(np.float32) * np.float32(1 / 255)
    methods = {
        "pf": lambda: score_map(rgb4, filter_, score="ncc"),
        "cv_u8": lambda: cv2.matchTemplate(rgb4, weights_u8, cv2.TM_CCOEFF_NORMED),
        "cv_f32": lambda: cv2.matchTemplate(rgb4_f32, weights, cv2.TM_CCOEFF_NORMED),
    }
    samples, outs = interleaved(methods, repeats)
    err = max_err(outs["pf"], np.clip(outs["cv_f32"], -1, 1))
    del outs
    report("4 ncc 4K RGB uint8", "score_map(uint8)", samples["pf"], "cv2 uint8", samples["cv_u8"], 1.2,
           f"max|Δ| vs cv2 f32 {err:.1e}")
    report("4 ncc 4K RGB uint8", "score_map(uint8)", samples["pf"], "cv2 float32", samples["cv_f32"], 1.2,
           "(cv2 f32 input converted outside timing)")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "u8.npy"), rgb4)
        np.save(os.path.join(tmp, "f32.npy"), rgb4_f32)
        np.save(os.path.join(tmp, "t_u8.npy"), weights_u8)
        memory = {}
        for kind in ("pf", "cv_u8", "cv_f32"):
            result = subprocess.run([sys.executable, script, "--mem-child", kind, tmp],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                memory[kind] = f"failed: {result.stderr.strip().splitlines()[-1:]}"
            else:
                memory[kind] = result.stdout.strip()
    for kind, text in memory.items():
        print(f"  4 memory {kind}: {text}", flush=True)
    pf_text = memory["pf"]
    if pf_text.startswith("+"):
        peak = float(pf_text.split()[0][1:])
        verdict = "ok" if peak <= 500 else "MISS"
        ROWS.append(("4 peak mem above input", "score_map(uint8)", peak, "cv2 uint8 / f32",
                     float("nan"), float("nan"), f"≤500 MiB {verdict}"))
        MEMORY.update(memory)


MEMORY: dict[str, str] = {}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def mem_child(kind: str, folder: str) -> None:
    """Run one call in this fresh process; print peak resident memory above the loaded input."""
    image = np.load(os.path.join(folder, "f32.npy" if kind == "cv_f32" else "u8.npy"))
    weights_u8 = np.load(os.path.join(folder, "t_u8.npy"))
    weights = weights_u8.astype(np.float32) * np.float32(1 / 255)
    filter_ = Filter(weights, name="eye32rgb")
    gc.collect()
    try:  # reset the high-water mark to the current RSS (Linux ≥ 4.0)
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        how = "VmHWM after clear_refs"
    except OSError:
        how = "VmHWM (not reset)"
    base = _status_kib("VmRSS")
    base_hwm = _status_kib("VmHWM")
    if kind == "pf":
        out = score_map(image, filter_, score="ncc")
    elif kind == "cv_u8":
        out = cv2.matchTemplate(image, weights_u8, cv2.TM_CCOEFF_NORMED)
    else:
        out = cv2.matchTemplate(image, weights, cv2.TM_CCOEFF_NORMED)
    peak = _status_kib("VmHWM")
    reference = max(base, base_hwm)
    print(f"+{(peak - reference) / 1024:.0f} MiB peak above input (input {image.nbytes / MIB:.0f} MiB, "
          f"output {out.nbytes / MIB:.0f} MiB; {how})")


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timed repeats per method (default 7)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 repeats, K=8 only")
    parser.add_argument("--cases", default="1,2,3,4", help="comma list of cases to run (default 1,2,3,4)")
    parser.add_argument("--mem-child", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mem_child:
        mem_child(*args.mem_child)
        return
    repeats = min(args.repeats, 3) if args.quick else args.repeats
    cases = {int(c) for c in args.cases.split(",") if c.strip()}
    print(f"patternfind vs OpenCV {cv2.__version__} (cv2 threads {cv2.getNumThreads()}, "
          f"{os.cpu_count()} CPUs), numpy {np.__version__}, {repeats} interleaved repeats, "
          f"loadavg {os.getloadavg()[0]:.2f}", flush=True)
    start = time.perf_counter()
    rgb = photo_rgb(H, W)
    grey = grey_float(rgb)
    if 1 in cases:
        case1(grey, repeats)
    if 2 in cases:
        case2(grey, repeats, [8] if args.quick else [8, 32])
    if 3 in cases:
        case3(grey, repeats)
    if 4 in cases:
        case4(photo_rgb(H4, W4), repeats, os.path.abspath(__file__))
    print("\n| case | patternfind | median | OpenCV | median | ratio | target |")
    print("|---|---|---|---|---|---|---|")
    for case, pf_name, pf, cv_name, cv, ratio, target in ROWS:
        if case.startswith("4 peak"):
            print(f"| {case} | {pf_name} | +{pf:.0f} MiB | {cv_name} | {MEMORY.get('cv_u8', '?').split()[0]} / "
                  f"{MEMORY.get('cv_f32', '?').split()[0]} MiB | | {target} |")
        else:
            print(f"| {case} | {pf_name} | {pf * 1e3:.1f} ms | {cv_name} | {cv * 1e3:.1f} ms | {ratio:.2f} | {target} |")
    print(f"(total {time.perf_counter() - start:.0f} s, loadavg {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
