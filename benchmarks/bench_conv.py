"""Time patternfind.conv2d (and its backward pass) against torch on the same inputs.

Shapes: the lecture's (4, 64, 64, 3) with ten 5×5×3 filters for stride 1 and 2 ×
'valid' and 'same', and the default network's two conv layers on a training
batch: (256, 24, 24, 1) × eight 5×5 and (256, 10, 10, 8) × sixteen 3×3×8.
torch gets contiguous NCHW tensors, as its users hold them (the layout change is
made once, outside the timing). "forward" times conv2d against
``torch.nn.functional.conv2d``; "fwd+bwd" times conv2d + conv2d_backward (all
three gradients) against torch's forward and ``backward()`` of its sum. Both
are timed in the same run with interleaved repeats, and the medians and their
ratio are printed. Without torch only patternfind is timed.

Run:  python benchmarks/bench_conv.py [--repeats 31]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from patternfind.layers import conv as conv_module
from patternfind.layers.conv import conv2d, conv2d_backward

try:
    import torch
    import torch.nn.functional as torch_functional
except ImportError:  # torch is only a comparison, never a dependency
    torch = None

LECTURE = ((4, 64, 64, 3), (5, 5, 3, 10))
CASES = [  # (name, x shape, weights shape, stride, padding)
    ("lecture", *LECTURE, 1, "valid"),
    ("lecture", *LECTURE, 1, "same"),
    ("lecture", *LECTURE, 2, "valid"),
    ("lecture", *LECTURE, 2, "same"),
    ("network conv 1", (256, 24, 24, 1), (5, 5, 1, 8), 1, "valid"),
    ("network conv 2", (256, 10, 10, 8), (3, 3, 8, 16), 1, "valid"),
]


def torch_padding(size, f, stride):
    """Explicit (left, right, top, bottom) padding for TensorFlow's 'same' rule."""
    out = -(-size // stride)
    total = max((out - 1) * stride + f - size, 0)
    return total // 2, total - total // 2


def make_torch_call(x, weights, bias, stride, padding, *, backward=False):
    x_nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    w_kcff = torch.from_numpy(np.ascontiguousarray(weights.transpose(3, 2, 0, 1)))
    b = torch.from_numpy(bias)
    if backward:
        for tensor in (x_nchw, w_kcff, b):
            tensor.requires_grad_()
    pad = None
    if padding == "same":
        rows = torch_padding(x.shape[1], weights.shape[0], stride)
        cols = torch_padding(x.shape[2], weights.shape[1], stride)
        pad = (*cols, *rows)

    def call():
        with torch.no_grad():
            inputs = torch_functional.pad(x_nchw, pad) if pad else x_nchw
            return torch_functional.conv2d(inputs, w_kcff, b, stride=stride)

    def call_with_backward():
        inputs = torch_functional.pad(x_nchw, pad) if pad else x_nchw
        out = torch_functional.conv2d(inputs, w_kcff, b, stride=stride)
        out.sum().backward()
        return out

    return call_with_backward if backward else call


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
    parser.add_argument(
        "--threads", type=int, default=None,
        help="threads for both (torch.set_num_threads, and patternfind's conv pool); on a "
             "shared machine 1 gives the stablest ratio, since torch's OpenMP threads "
             "spin-wait when another process holds a core")
    args = parser.parse_args(argv)
    if args.threads is not None:
        conv_module._WORKERS = args.threads  # patternfind's own 2-thread split of the blocks
        if torch is not None:
            torch.set_num_threads(args.threads)

    if torch is None:
        print("torch is missing: timing patternfind only (pip install torch for the comparison)")
    else:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"float32, median of {args.repeats} interleaved repeats; ratio = patternfind / torch")
    print(f"{'case':<15} {'x':>17} {'weights':>14} {'S':>2} {'padding':>7} {'pass':>8} "
          f"{'patternfind':>12} {'torch':>10} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for name, x_shape, w_shape, stride, padding in CASES:
        x = rng.standard_normal(x_shape, dtype=np.float32)
        weights = rng.standard_normal(w_shape, dtype=np.float32)
        bias = rng.standard_normal(w_shape[3], dtype=np.float32)
        grad = np.ones_like(conv2d(x, weights, bias, stride=stride, padding=padding))

        def forward(x=x, weights=weights, bias=bias, stride=stride, padding=padding):
            return conv2d(x, weights, bias, stride=stride, padding=padding)

        def forward_backward(x=x, weights=weights, bias=bias, stride=stride, padding=padding,
                             grad=grad):
            conv2d(x, weights, bias, stride=stride, padding=padding)
            return conv2d_backward(grad, x, weights, stride=stride, padding=padding)

        for label, ours, backward in (("forward", forward, False),
                                      ("fwd+bwd", forward_backward, True)):
            calls = {"patternfind": ours}
            if torch is not None:
                calls["torch"] = make_torch_call(x, weights, bias, stride, padding,
                                                 backward=backward)
                if not backward:
                    expected = calls["torch"]().numpy().transpose(0, 2, 3, 1)
                    np.testing.assert_allclose(ours(), expected, rtol=1e-3, atol=1e-3)
            for call in calls.values():  # warm-up
                call()
            times = {key: [] for key in calls}
            for _ in range(args.repeats):
                for key, call in calls.items():
                    times[key].append(time_once(call, args.pause))
            medians = {key: float(np.median(values)) * 1e3 for key, values in times.items()}
            line = (f"{name:<15} {x_shape!s:>17} {w_shape!s:>14} {stride:>2} {padding:>7} "
                    f"{label:>8} {medians['patternfind']:>9.3f} ms")
            if torch is not None:
                ratio = medians["patternfind"] / medians["torch"]
                line += f" {medians['torch']:>7.3f} ms {ratio:>5.2f}×"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
