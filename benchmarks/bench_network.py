"""Time the nested conv layers: training, one step against torch, and detection against HOG.

1. ``train_filter(features="cnn")`` on 20,000 grey 24×24 patches (jittered digit
   cells of tests/data/digits.png, "3" against the rest), default network, 10
   epochs, no early stop. Target: ≤ 60 s.
2. One training step of the default network (forward and backward of a
   256-patch batch) with patternfind's layers and with torch (contiguous NCHW,
   `torch.nn.functional`), interleaved; medians and their ratio.
3. ``detect`` over the default pyramid on a 500×375 photo
   (samples/faces/test/00.png) with the network filter samples/faces/face_cnn.npz
   and with the linear HOG filter samples/faces/face.npz, interleaved; medians
   and their ratio. Target: ≤ 4×.

The machine is shared: read the medians and ratios, not single times. Every
timed call follows a 20 ms pause (the other library's threads go idle) and one
untimed call of its own (its threads are awake, as in a running loop).

The training step is timed once per ``--threads`` setting: a count applies to
both libraries (``torch.set_num_threads`` and patternfind's conv block threads),
"default" leaves both as they start. Training and detection run with the
library's defaults. The settings and the load average are printed.

Run:  python benchmarks/bench_network.py [--repeats 7] [--skip-training] [--threads 1 default]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np

from patternfind import detect, load_filter, load_image, train_filter
from patternfind.layers import conv as conv_module
from patternfind.layers.network import DEFAULT_LAYERS, Network

try:
    import torch
    import torch.nn.functional as torch_functional
except ImportError:  # torch is only a comparison, never a dependency
    torch = None

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKERS = conv_module._WORKERS
DEFAULT_TORCH_THREADS = torch.get_num_threads() if torch is not None else None


def set_threads(setting):
    """Apply ``setting`` ("default" or a count) to both libraries; return a description."""
    workers = DEFAULT_WORKERS if setting == "default" else int(setting)
    conv_module._WORKERS = workers
    if torch is not None:
        torch.set_num_threads(DEFAULT_TORCH_THREADS if setting == "default" else int(setting))
    torch_threads = torch.get_num_threads() if torch is not None else "-"
    return (f"threads {setting}: patternfind {workers} conv block thread(s), "
            f"torch {torch_threads} intra-op thread(s)")


def digit_patches(count, seed=0):
    """``count`` 24×24 patches: digit cells with 2 pixels of random shift, and their labels."""
    sheet = cv2.imread(str(ROOT / "tests" / "data" / "digits.png"), cv2.IMREAD_GRAYSCALE)
    padded = np.pad(sheet.astype(np.float32) / 255, 4)  # a 24×24 window centred on a cell: dy = 2
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, 50, count), rng.integers(0, 100, count)
    dy, dx = rng.integers(0, 5, count), rng.integers(0, 5, count)
    patches = np.stack([padded[r * 20 + y:r * 20 + y + 24, c * 20 + x:c * 20 + x + 24]
                        for r, c, y, x in zip(rows, cols, dy, dx, strict=True)])
    return patches, rows // 5 == 3


def time_training():
    patches, labels = digit_patches(20_000)
    start = time.perf_counter()
    learned = train_filter(patches, labels, features="cnn", epochs=10, seed=0)
    seconds = time.perf_counter() - start
    print(f"train_filter cnn: 20,000 patches 24×24, {learned.meta['epochs']} epochs "
          f"(best {learned.meta['best_epoch']}), {seconds:.1f} s in all "
          f"({learned.meta['seconds']:.1f} s in the fit); validation accuracy "
          f"{learned.meta['val_accuracy']:.4f}   target ≤ 60 s")


def torch_step(network, x):
    """The same forward and backward as patternfind's training step, in torch."""
    params = []
    for layer in network.layers:
        if hasattr(layer, "weights"):
            weight = torch.from_numpy(np.ascontiguousarray(layer.weights.transpose(3, 2, 0, 1)))
            params += [weight.requires_grad_(), torch.from_numpy(layer.bias).requires_grad_()]
    x_nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def call():
        out = x_nchw
        position = 0
        for layer in network.layers:
            if layer.kind == "conv":
                out = torch_functional.conv2d(out, params[position], params[position + 1],
                                              stride=layer.stride, padding=layer.padding)
                position += 2
            elif layer.kind == "relu":
                out = torch.relu(out)
            else:
                out = torch_functional.max_pool2d(out, layer.f, layer.stride)
        out.sum().backward()
        return out

    return call


def time_step(repeats):
    network = Network(DEFAULT_LAYERS, seed=0)
    x = np.random.default_rng(0).random((256, 24, 24, 1), dtype=np.float32)

    def ours():
        out, caches = network.forward(x, keep_cache=True)
        network.backward(np.ones_like(out), caches, input_gradient=False)

    calls = {"patternfind": ours}
    if torch is not None:
        calls["torch"] = torch_step(network, x)
    medians = interleaved(calls, repeats)
    line = f"one training step (256 × 24×24, default network): patternfind {medians['patternfind']:.1f} ms"
    if torch is not None:
        line += (f", torch {medians['torch']:.1f} ms, ratio "
                 f"{medians['patternfind'] / medians['torch']:.2f}×")
    print(line)


def time_detection(repeats):
    image = load_image(ROOT / "samples" / "faces" / "test" / "00.png")
    hog = load_filter(ROOT / "samples" / "faces" / "face.npz")
    cnn = load_filter(ROOT / "samples" / "faces" / "face_cnn.npz")
    calls = {"cnn": lambda: detect(image, cnn, threshold=0.0),
             "hog": lambda: detect(image, hog, threshold=0.0)}
    medians = interleaved(calls, repeats)
    print(f"detect on {image.shape[1]}×{image.shape[0]}, default pyramid: network "
          f"{medians['cnn']:.0f} ms, linear HOG {medians['hog']:.0f} ms, ratio "
          f"{medians['cnn'] / medians['hog']:.2f}×   target ≤ 4×")


def interleaved(calls, repeats):
    for call in calls.values():  # warm-up
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            time.sleep(0.02)  # let the other library's threads go idle
            call()  # untimed: wakes this library's own threads, as in a running loop
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(values)) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats")
    parser.add_argument("--skip-training", action="store_true", help="skip the 20,000-patch run")
    parser.add_argument("--threads", nargs="+", default=["1", "default"],
                        help="thread settings for the training-step comparison")
    args = parser.parse_args(argv)
    pinned = ", ".join(f"{name}={os.environ[name]}" for name in
                       ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                       if name in os.environ) or "none"
    if torch is not None:
        print(f"torch {torch.__version__}, default {DEFAULT_TORCH_THREADS} threads")
    print(f"{os.cpu_count()} CPUs; thread variables in the environment: {pinned}")
    print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if not args.skip_training:
        time_training()
    for setting in args.threads:
        print(set_threads(setting), end=": ")
        time_step(args.repeats * 3)
    set_threads("default")
    time_detection(args.repeats)
    print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
