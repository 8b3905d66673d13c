"""Time patternfind.conv2d (and its backward pass) against torch on the same inputs.

Shapes: the lecture's (4, 64, 64, 3) with ten 5×5×3 filters for stride 1 and 2 ×
'valid' and 'same', and the default network's two conv layers on a training
batch: (256, 24, 24, 1) × eight 5×5 and (256, 10, 10, 8) × sixteen 3×3×8.
torch gets contiguous NCHW tensors, as its users hold them (the layout change is
made once, outside the timing). "forward" times conv2d against
``torch.nn.functional.conv2d`` under ``no_grad``; "fwd+bwd" times conv2d +
conv2d_backward (all three gradients) against torch's forward and
``backward()`` of its sum, with the input, weights and bias all requiring
gradients. Both libraries are timed in the same run with interleaved repeats;
the table gives the medians and their ratio, and the ratio of the best times
(less sensitive to other work on a shared machine). Every timed call follows
a pause (``--pause``, so that the other library's threads stop spinning) and
one untimed call of its own, so that both are timed warm, as between the
steps of a training loop; timed straight after the pause, both libraries
paid to wake their threads, torch more than patternfind, and the ratios came
out lower. Before timing, each case's outputs and gradients are checked
against torch's.

Threads are set explicitly for both sides and printed: ``--threads 1`` runs
torch with ``torch.set_num_threads(1)`` and patternfind's conv layers on one
thread; ``--threads default`` leaves both at their defaults (torch's intra-op
pool; patternfind's two block threads). OpenBLAS itself is not told anything:
patternfind keeps each of its matmuls small enough that OpenBLAS runs it on
the calling thread. Set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS before starting
Python to pin them too (they are printed).

Run:  python benchmarks/bench_conv.py [--repeats 21] [--threads 1 default] [--cases lecture]
"""

from __future__ import annotations

import argparse
import os
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
DEFAULT_WORKERS = conv_module._WORKERS
DEFAULT_TORCH_THREADS = torch.get_num_threads() if torch is not None else None


def torch_padding(size, f, stride):
    """Explicit (before, after) padding for TensorFlow's 'same' rule."""
    out = -(-size // stride)
    total = max((out - 1) * stride + f - size, 0)
    return total // 2, total - total // 2


def torch_tensors(x, weights, bias, *, grad):
    x_nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    w_kcff = torch.from_numpy(np.ascontiguousarray(weights.transpose(3, 2, 0, 1)))
    b = torch.from_numpy(bias.copy())
    if grad:
        for tensor in (x_nchw, w_kcff, b):
            tensor.requires_grad_()
    return x_nchw, w_kcff, b


def make_torch_call(x, weights, bias, stride, padding, *, backward=False):
    x_nchw, w_kcff, b = torch_tensors(x, weights, bias, grad=backward)
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
        for tensor in (x_nchw, w_kcff, b):
            tensor.grad = None
        inputs = torch_functional.pad(x_nchw, pad) if pad else x_nchw
        out = torch_functional.conv2d(inputs, w_kcff, b, stride=stride)
        out.sum().backward()
        return x_nchw.grad, w_kcff.grad, b.grad

    return call_with_backward if backward else call


def check_against_torch(case, ours_forward, ours_backward, torch_forward, torch_backward):
    """The benchmark compares equal work: outputs and all three gradients agree."""
    np.testing.assert_allclose(ours_forward(), torch_forward().numpy().transpose(0, 2, 3, 1),
                               rtol=1e-3, atol=1e-3, err_msg=f"forward {case}")
    grad_x, grad_w, grad_b = ours_backward()
    torch_x, torch_w, torch_b = (g.numpy() for g in torch_backward())
    for ours, theirs, name in ((grad_x, torch_x.transpose(0, 2, 3, 1), "grad_x"),
                               (grad_w, torch_w.transpose(2, 3, 1, 0), "grad_w"),
                               (grad_b, torch_b, "grad_b")):
        scale = max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(ours / scale, theirs / scale, rtol=1e-4, atol=1e-4,
                                   err_msg=f"{name} {case}")


def time_once(call, pause):
    # let the other library's worker threads stop spinning before the clock starts:
    # on 2 cores, OpenBLAS and torch's OpenMP pools otherwise steal each other's cores
    time.sleep(pause)
    # then one untimed call, so that this library's own threads are awake again, as
    # they are between the steps of a training loop: after an idle pause, waking the
    # second core cost patternfind's threaded forward pass more than its second thread gains
    call()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def set_threads(setting):
    """Apply ``setting`` ("default" or a count) to both libraries; return a description."""
    if setting == "default":
        conv_module._WORKERS = DEFAULT_WORKERS
        if torch is not None:
            torch.set_num_threads(DEFAULT_TORCH_THREADS)
    else:
        conv_module._WORKERS = int(setting)
        if torch is not None:
            torch.set_num_threads(int(setting))
    pinned = ", ".join(f"{name}={os.environ[name]}" for name in
                       ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                       if name in os.environ) or "none"
    torch_threads = torch.get_num_threads() if torch is not None else "-"
    return (f"threads {setting}: patternfind {conv_module._WORKERS} block thread(s), torch "
            f"{torch_threads} intra-op thread(s); environment: {pinned}")


def run_table(cases, args):
    print(f"{'case':<15} {'x':>17} {'weights':>14} {'S':>2} {'padding':>7} {'pass':>8} "
          f"{'patternfind':>12} {'torch':>10} {'ratio':>6} {'best ratio':>10}")
    rng = np.random.default_rng(0)
    for name, x_shape, w_shape, stride, padding in cases:
        x = rng.standard_normal(x_shape, dtype=np.float32)
        weights = rng.standard_normal(w_shape, dtype=np.float32)
        bias = rng.standard_normal(w_shape[3], dtype=np.float32)
        grad = np.ones_like(conv2d(x, weights, bias, stride=stride, padding=padding))

        def forward(x=x, weights=weights, bias=bias, stride=stride, padding=padding):
            return conv2d(x, weights, bias, stride=stride, padding=padding)

        def backward(x=x, weights=weights, stride=stride, padding=padding, grad=grad):
            return conv2d_backward(grad, x, weights, stride=stride, padding=padding)

        def forward_backward(forward=forward, backward=backward):
            forward()
            return backward()

        torch_calls = {}
        if torch is not None:
            torch_calls = {backward_pass: make_torch_call(x, weights, bias, stride, padding,
                                                          backward=backward_pass)
                           for backward_pass in (False, True)}
            check_against_torch(f"{name} S={stride} {padding}", forward, backward,
                                torch_calls[False], torch_calls[True])
        for label, ours, backward_pass in (("forward", forward, False),
                                           ("fwd+bwd", forward_backward, True)):
            calls = {"patternfind": ours}
            if torch is not None:
                calls["torch"] = torch_calls[backward_pass]
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
                best = min(times["patternfind"]) / min(times["torch"])
                line += f" {medians['torch']:>7.3f} ms {ratio:>5.2f}× {best:>9.2f}×"
            print(line, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="interleaved repeats per case")
    parser.add_argument(
        "--pause", type=float, default=0.02, help="seconds of idle before each timed call"
    )
    parser.add_argument(
        "--threads", nargs="+", default=["1", "default"],
        help="thread settings to run, each a count for both libraries or 'default' "
             "(default: 1 default)")
    parser.add_argument("--cases", default="", help="run only cases whose name contains this")
    args = parser.parse_args(argv)
    cases = [case for case in CASES if args.cases in case[0]]

    if torch is None:
        print("torch is missing: timing patternfind only (pip install torch for the comparison)")
    else:
        print(f"torch {torch.__version__} (default {DEFAULT_TORCH_THREADS} intra-op threads), "
              f"numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(f"float32, median of {args.repeats} interleaved repeats; ratio = patternfind / torch")
    for setting in args.threads:
        print()
        print(set_threads(setting))
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        run_table(cases, args)
        print("load average after:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
