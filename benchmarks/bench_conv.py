"""Time patternfind.conv2d against torch.nn.functional.conv2d on the same inputs.

Input (4, 64, 64, 3) float32, ten 5×5×3 filters with bias, for stride 1 and 2 ×
'valid' and 'same'. Both are timed in the same run with interleaved repeats, and
the medians and their ratio are printed. Without torch only patternfind is timed.

Run:  python benchmarks/bench_conv.py [--repeats 31]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from patternfind.layers.conv import conv2d

try:
    import torch
    import torch.nn.functional as torch_functional
except ImportError:  # torch is only a comparison, never a dependency
    torch = None

CASES = [(1, "valid"), (1, "same"), (2, "valid"), (2, "same")]


def torch_padding(size, f, stride):
    """Explicit (left, right, top, bottom) padding for TensorFlow's 'same' rule."""
    out = -(-size // stride)
    total = max((out - 1) * stride + f - size, 0)
    return total // 2, total - total // 2


def make_torch_call(x, weights, bias, stride, padding):
    x_nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    w_kcff = torch.from_numpy(np.ascontiguousarray(weights.transpose(3, 2, 0, 1)))
    b = torch.from_numpy(bias)
    pad = None
    if padding == "same":
        rows = torch_padding(x.shape[1], weights.shape[0], stride)
        cols = torch_padding(x.shape[2], weights.shape[1], stride)
        pad = (*cols, *rows)

    def call():
        with torch.no_grad():
            inputs = torch_functional.pad(x_nchw, pad) if pad else x_nchw
            return torch_functional.conv2d(inputs, w_kcff, b, stride=stride)

    return call


def time_once(call, pause):
    # let the other library's worker threads stop spinning before the clock starts:
    # on 2 cores, OpenBLAS and torch's OpenMP pools otherwise steal each other's cores
    time.sleep(pause)
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31, help="interleaved repeats per case")
    parser.add_argument(
        "--pause", type=float, default=0.02, help="seconds of idle before each timed call"
    )
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64, 64, 3), dtype=np.float32)
    weights = rng.standard_normal((5, 5, 3, 10), dtype=np.float32)
    bias = rng.standard_normal(10, dtype=np.float32)

    if torch is None:
        print("torch is missing: timing patternfind only (pip install torch for the comparison)")
    else:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"x {x.shape} float32, weights {weights.shape}, median of {args.repeats} repeats")
    header = f"{'stride':>6} {'padding':>8} {'patternfind':>12}"
    if torch is not None:
        header += f" {'torch':>10} {'ratio':>6}"
    header += "   (medians; ratio = patternfind / torch)"
    print(header)

    for stride, padding in CASES:

        def ours(stride=stride, padding=padding):
            return conv2d(x, weights, bias, stride=stride, padding=padding)

        calls = {"patternfind": ours}
        if torch is not None:
            calls["torch"] = make_torch_call(x, weights, bias, stride, padding)
            expected = calls["torch"]().numpy().transpose(0, 2, 3, 1)
            np.testing.assert_allclose(ours(), expected, rtol=1e-4, atol=1e-4)
        for call in calls.values():  # warm-up
            call()
        times = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                times[name].append(time_once(call, args.pause))
        medians = {name: float(np.median(values)) * 1e3 for name, values in times.items()}
        best = {name: float(np.min(values)) * 1e3 for name, values in times.items()}
        line = f"{stride:>6} {padding:>8} {medians['patternfind']:>9.3f} ms"
        if torch is not None:
            ratio = medians["patternfind"] / medians["torch"]
            line += f" {medians['torch']:>7.3f} ms {ratio:>5.2f}×"
        line += f"   (best: patternfind {best['patternfind']:.3f} ms"
        if torch is not None:
            line += f", torch {best['torch']:.3f} ms"
        line += ")"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
