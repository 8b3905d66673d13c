"""conv2d, pool2d and their gradients against independent references.

References: a naive four-loop convolution written here, ``scipy.signal.correlate``,
``skimage.measure.block_reduce`` for pooling, TensorFlow's 'same' rule coded from
its definition, and central finite differences for the backward passes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradient_check import numerical_gradient, relative_error
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import correlate
from skimage.measure import block_reduce

from patternfind.layers.conv import (
    conv2d,
    conv2d_backward,
    output_size,
    pool2d,
    pool2d_backward,
)

FLOATS = [np.float32, np.float64]


# --------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------


def tf_same_padding(n, f, s):
    """TensorFlow's 'same' rule: (before, after) padding along one axis."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + f - n, 0)
    return total // 2, total - total // 2


def reference_padding(shape, f, stride, padding):
    """Padding ((top, bottom), (left, right)) for the references, from the definitions."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        return tf_same_padding(shape[0], f[0], stride[0]), tf_same_padding(
            shape[1], f[1], stride[1]
        )
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return (ph, ph), (pw, pw)


def naive_conv(x, w, b, stride, pads):
    """Loop over every image, output pixel and filter: x (N,H,W,C), w (Fh,Fw,C,K)."""
    x = np.pad(x.astype(np.float64), ((0, 0), *pads, (0, 0)))
    n, h, width, _ = x.shape
    fh, fw, _, k = w.shape
    out_h = (h - fh) // stride[0] + 1
    out_w = (width - fw) // stride[1] + 1
    out = np.zeros((n, out_h, out_w, k))
    for image in range(n):
        for row in range(out_h):
            for col in range(out_w):
                top, left = row * stride[0], col * stride[1]
                window = x[image, top : top + fh, left : left + fw, :]
                for filt in range(k):
                    out[image, row, col, filt] = np.sum(window * w[..., filt]) + b[filt]
    return out


def scipy_conv(x, w, b, stride, pads):
    """Same thing through scipy.signal.correlate (valid, then subsample)."""
    x = np.pad(x.astype(np.float64), ((0, 0), *pads, (0, 0)))
    maps = []
    for image in x:
        per_filter = [
            correlate(image, w[..., filt].astype(np.float64), mode="valid")[..., 0] + b[filt]
            for filt in range(w.shape[3])
        ]
        maps.append(np.stack(per_filter, axis=-1)[:: stride[0], :: stride[1]])
    return np.stack(maps)


def naive_pool(x, size, stride, mode):
    reduce = np.max if mode == "max" else np.mean
    n, h, w, c = x.shape
    out_h, out_w = (h - size[0]) // stride[0] + 1, (w - size[1]) // stride[1] + 1
    out = np.zeros((n, out_h, out_w, c))
    for image in range(n):
        for row in range(out_h):
            for col in range(out_w):
                top, left = row * stride[0], col * stride[1]
                window = x[image, top : top + size[0], left : left + size[1], :]
                out[image, row, col] = reduce(window, axis=(0, 1))
    return out


def tolerance(dtype):
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}


# --------------------------------------------------------------------------
# Forward: random shapes, strides and paddings
# --------------------------------------------------------------------------


@st.composite
def conv_cases(draw):
    n = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    c, k = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(
        st.one_of(
            st.sampled_from(["valid", "same"]),
            st.integers(0, 2),
            st.tuples(st.integers(0, 2), st.integers(0, 2)),
        )
    )
    pads = reference_padding((h, w), (1, 1), stride, padding) if padding != "same" else None
    extra = (0, 0) if pads is None else (sum(pads[0]), sum(pads[1]))
    limit_h = h + extra[0] if padding != "same" else 5
    limit_w = w + extra[1] if padding != "same" else 5
    f = (draw(st.integers(1, min(limit_h, 5))), draw(st.integers(1, min(limit_w, 5))))
    seed = draw(st.integers(0, 2**32 - 1))
    return n, h, w, c, k, f, stride, padding, seed


def fits(n, f, s, pad):
    return (n + 2 * pad - f) % s == 0


@settings(max_examples=100, deadline=None)
@given(case=conv_cases(), dtype=st.sampled_from(FLOATS))
def test_conv2d_matches_naive_loop_and_scipy(case, dtype):
    n, h, w, c, k, f, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    weights = rng.standard_normal((*f, c, k)).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype)
    if not isinstance(padding, str):
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
        if not (fits(h, f[0], stride[0], ph) and fits(w, f[1], stride[1], pw)):
            with pytest.raises(ValueError, match=r"`stride`.*is not a whole number"):
                conv2d(x, weights, bias, stride=stride, padding=padding)
            return
    pads = reference_padding((h, w), f, stride, padding)
    result = conv2d(x, weights, bias, stride=stride, padding=padding)
    assert result.dtype == dtype
    expected = naive_conv(x, weights, bias, stride, pads)
    np.testing.assert_allclose(result, expected, **tolerance(dtype))
    np.testing.assert_allclose(
        result, scipy_conv(x, weights, bias, stride, pads), **tolerance(dtype)
    )


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "out_shape"),
    [
        ((8, 7), (3, 2), (6, 6)),  # grey image, one filter
        ((8, 7), (3, 3, 1, 4), (6, 5, 4)),  # grey image, four filters
        ((8, 7, 3), (3, 3, 3), (6, 5)),  # RGB, one filter
        ((8, 7, 3), (3, 3, 3, 2), (6, 5, 2)),  # RGB, two filters
        ((2, 8, 7, 3), (3, 3, 3), (2, 6, 5)),  # batch, one filter
        ((2, 8, 7, 3), (3, 3, 3, 2), (2, 6, 5, 2)),  # batch, two filters
        ((2, 8, 7, 1), (3, 3), (2, 6, 5)),  # batch of grey, (F, F) filter
    ],
)
def test_conv2d_rank_conventions(x_shape, w_shape, out_shape, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(dtype)
    weights = rng.standard_normal(w_shape).astype(dtype)
    result = conv2d(x, weights, 0.5)
    assert result.shape == out_shape
    assert result.dtype == dtype
    x4 = x.reshape((1,) * (4 - x.ndim) + x.shape) if x.ndim != 2 else x[None, :, :, None]
    w4 = weights.reshape(weights.shape + (1,) * (4 - weights.ndim))
    expected = naive_conv(x4, w4, [0.5] * w4.shape[3], (1, 1), ((0, 0), (0, 0)))
    np.testing.assert_allclose(result, expected.reshape(out_shape), **tolerance(dtype))


def test_conv2d_is_cross_correlation_not_convolution():
    x = np.zeros((5, 5))
    x[2, 2] = 1.0
    weights = np.arange(9.0).reshape(3, 3)
    # an impulse read through an unflipped kernel comes out rotated by 180°
    np.testing.assert_array_equal(conv2d(x, weights, padding=1)[1:4, 1:4], weights[::-1, ::-1])


def test_conv2d_integer_input_becomes_float32_and_mixed_input_float64():
    x = np.arange(16).reshape(4, 4)
    assert conv2d(x, np.ones((2, 2), dtype=np.float32)).dtype == np.float32
    assert conv2d(x.astype(np.float32), np.ones((2, 2))).dtype == np.float64


@pytest.mark.parametrize("f", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("n", [5, 6, 7, 8])
def test_same_padding_follows_tensorflow_rule(n, f, stride):
    rng = np.random.default_rng(n * 100 + f * 10 + stride)
    x = rng.standard_normal((n, n + 1, 2))
    weights = rng.standard_normal((f, f, 2, 3))
    result = conv2d(x, weights, stride=stride, padding="same")
    assert result.shape == (math.ceil(n / stride), math.ceil((n + 1) / stride), 3)
    pads = (tf_same_padding(n, f, stride), tf_same_padding(n + 1, f, stride))
    expected = naive_conv(x[None], weights, np.zeros(3), (stride, stride), pads)[0]
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)
    assert output_size(n, f, stride=stride, padding="same") == math.ceil(n / stride)


def test_same_padding_puts_the_odd_pixel_bottom_right():
    x = np.arange(16.0).reshape(4, 4)
    # a 2×2 all-ones filter needs one pixel of padding: it must go below and to the right
    result = conv2d(x, np.ones((2, 2)), padding="same")
    assert result[-1, -1] == x[-1, -1]
    assert result[0, 0] == x[:2, :2].sum()


@pytest.mark.parametrize("padding", ["valid", 0, 1, (2, 0)])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_output_size_agrees_with_conv2d(stride, padding):
    height, width = 13, 16
    x = np.ones((height, width))
    for f in (1, 2, 4):
        ph, pw = (
            (0, 0)
            if padding == "valid"
            else ((padding,) * 2 if isinstance(padding, int) else padding)
        )
        if not isinstance(padding, str) and not (
            fits(height, f, stride, ph) and fits(width, f, stride, pw)
        ):
            continue
        result = conv2d(x, np.ones((f, f)), stride=stride, padding=padding)
        expected_h = (height + 2 * ph - f) // stride + 1
        expected_w = (width + 2 * pw - f) // stride + 1
        assert result.shape == (expected_h, expected_w)
        row_padding = padding if isinstance(padding, str) else ph
        assert output_size(height, f, stride=stride, padding=row_padding) == expected_h


def test_valid_padding_drops_the_unreachable_border_like_keras():
    # (7 − 3)/3 + 1 is not whole: 'valid' floors (Keras), explicit padding=0 refuses
    assert conv2d(np.ones((7, 7)), np.ones((3, 3)), stride=3, padding="valid").shape == (2, 2)
    assert output_size(7, 3, stride=3, padding="valid") == 2
    with pytest.raises(ValueError, match=r"\(7 − 3 \+ 2·0\)/3 \+ 1 = 2\.33 is not a whole number"):
        conv2d(np.ones((7, 7)), np.ones((3, 3)), stride=3, padding=0)


# --------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------


@st.composite
def pool_cases(draw):
    size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    out = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    h, w = ((o - 1) * s + f for o, s, f in zip(out, stride, size, strict=True))
    return draw(st.integers(1, 2)), h, w, draw(st.integers(1, 3)), size, stride


@settings(max_examples=100, deadline=None)
@given(
    case=pool_cases(),
    mode=st.sampled_from(["max", "avg"]),
    dtype=st.sampled_from(FLOATS),
    seed=st.integers(0, 2**32 - 1),
)
def test_pool2d_matches_naive_loop(case, mode, dtype, seed):
    n, h, w, c, size, stride = case
    x = np.random.default_rng(seed).standard_normal((n, h, w, c)).astype(dtype)
    result = pool2d(x, size, stride=stride, mode=mode)
    assert result.dtype == dtype
    np.testing.assert_allclose(result, naive_pool(x, size, stride, mode), **tolerance(dtype))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("mode", "reduce"), [("max", np.max), ("avg", np.mean)])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_pool2d_matches_skimage_block_reduce(size, mode, reduce, dtype):
    x = np.random.default_rng(size).standard_normal((2, 6 * size, 4 * size, 3)).astype(dtype)
    expected = block_reduce(x, (1, size, size, 1), reduce)
    np.testing.assert_allclose(pool2d(x, size, mode=mode), expected, **tolerance(dtype))


@pytest.mark.parametrize(
    ("shape", "out_shape"),
    [((6, 4), (3, 2)), ((6, 4, 3), (3, 2, 3)), ((2, 6, 4, 3), (2, 3, 2, 3))],
)
def test_pool2d_keeps_the_input_axes(shape, out_shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    result = pool2d(x)
    assert result.shape == out_shape
    assert result.dtype == np.float32


def test_pool2d_stride_that_does_not_fit():
    with pytest.raises(ValueError, match=r"`stride` 2.*\(5 − 2\)/2 \+ 1 = 2\.5 is not a whole"):
        pool2d(np.ones((5, 5)), 2)


# --------------------------------------------------------------------------
# Backward passes against central finite differences (float64)
# --------------------------------------------------------------------------




@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "padding"),
    [
        ((2, 7, 6, 3), (3, 3, 3, 4), 1, "valid"),
        ((2, 7, 6, 3), (3, 2, 3, 4), (2, 1), "same"),
        ((1, 8, 8, 2), (4, 4, 2, 3), 2, "same"),
        ((1, 7, 7, 2), (3, 3, 2, 2), 2, 1),
        ((6, 5, 2), (2, 3, 2), 1, (1, 2)),
        ((6, 5), (3, 3), 3, "same"),
    ],
)
def test_conv2d_backward_matches_finite_differences(x_shape, w_shape, stride, padding):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape)
    weights = rng.standard_normal(w_shape)
    bias = rng.standard_normal(w_shape[3]) if len(w_shape) == 4 else np.array(0.3)
    out = conv2d(x, weights, bias, stride=stride, padding=padding)
    upstream = rng.standard_normal(out.shape)

    def loss():
        return np.sum(conv2d(x, weights, bias, stride=stride, padding=padding) * upstream)

    grad_x, grad_w, grad_b = conv2d_backward(upstream, x, weights, stride=stride, padding=padding)
    assert grad_x.shape == x.shape
    assert grad_w.shape == weights.shape
    assert grad_b.shape == bias.shape
    assert relative_error(grad_x, numerical_gradient(loss, x)) < 1e-6
    assert relative_error(grad_w, numerical_gradient(loss, weights)) < 1e-6
    assert relative_error(grad_b, numerical_gradient(loss, bias)) < 1e-6


def test_conv2d_backward_keeps_float32():
    x = np.ones((5, 5, 2), dtype=np.float32)
    weights = np.ones((3, 3, 2, 4), dtype=np.float32)
    grads = conv2d_backward(np.ones((3, 3, 4), dtype=np.float32), x, weights)
    assert [g.dtype for g in grads] == [np.float32] * 3


def test_conv2d_backward_rejects_grad_output_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"`grad_output`.*\(3, 3, 4\)"):
        conv2d_backward(np.ones((3, 3)), np.ones((5, 5, 2)), np.ones((3, 3, 2, 4)))


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize(
    ("shape", "size", "stride"),
    [((2, 6, 6, 2), 2, None), ((5, 5, 3), 3, 1), ((7, 5), (3, 2), (2, 1))],
)
def test_pool2d_backward_matches_finite_differences(shape, size, stride, mode):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape)
    upstream = rng.standard_normal(pool2d(x, size, stride=stride, mode=mode).shape)

    def loss():
        return np.sum(pool2d(x, size, stride=stride, mode=mode) * upstream)

    grad_x = pool2d_backward(upstream, x, size, stride=stride, mode=mode)
    assert grad_x.shape == x.shape
    assert relative_error(grad_x, numerical_gradient(loss, x)) < 1e-6


def test_max_pool_backward_sends_a_tie_to_the_first_maximum():
    grad = pool2d_backward(np.array([[2.0]]), np.ones((2, 2)))
    np.testing.assert_array_equal(grad, [[2.0, 0.0], [0.0, 0.0]])


# --------------------------------------------------------------------------
# The im2col layouts, block splits and threads, against naive loops
# --------------------------------------------------------------------------


def naive_conv_backward(x, w, grad, stride, pads):
    """Loop over every image and output pixel: each window's share of the three gradients."""
    padded = np.pad(x.astype(np.float64), ((0, 0), *pads, (0, 0)))
    fh, fw = w.shape[:2]
    grad_padded = np.zeros_like(padded)
    grad_w = np.zeros(w.shape)
    for image, row, col in np.ndindex(*grad.shape[:3]):
        top, left = row * stride[0], col * stride[1]
        upstream = grad[image, row, col].astype(np.float64)  # (K,)
        grad_w += padded[image, top : top + fh, left : left + fw, :, None] * upstream
        grad_padded[image, top : top + fh, left : left + fw] += w.astype(np.float64) @ upstream
    (top, bottom), (left, right) = pads
    height, width = padded.shape[1:3]
    grad_x = grad_padded[:, top : height - bottom, left : width - right]
    return grad_x, grad_w, grad.sum(axis=(0, 1, 2))


# (x shape, weights shape, stride, padding, layout conv2d should pick)
LAYOUT_CASES = [
    ((3, 9, 14, 1), (3, 4, 1, 5), 1, "valid", "taps"),  # grey: narrow windows, wide rows
    ((2, 8, 16, 3), (3, 3, 3, 4), 1, "same", "taps"),  # RGB
    ((2, 11, 16, 2), (3, 3, 2, 3), (2, 1), 1, "taps"),  # a row stride
    ((2, 9, 13, 1), (4, 2, 1, 2), (3, 1), "same", "taps"),  # odd 'same' padding, row stride 3
    ((2, 8, 16, 3), (3, 3, 3, 4), (1, 2), "same", "rows"),  # a column stride
    ((3, 6, 6, 8), (3, 3, 8, 6), 1, "valid", "rows"),  # many channels on a small map
    ((2, 9, 9, 4), (5, 5, 4, 2), 2, 2, "rows"),
    ((1, 8, 13, 2), (2, 5, 2, 3), (2, 3), (1, 2), "rows"),  # rounds of 3 taps, one short
]


def check_against_naive(x, weights, bias, grad, stride, padding):
    strides = (stride, stride) if isinstance(stride, int) else stride
    f = weights.shape[:2]
    pads = reference_padding(x.shape[1:3], f, strides, padding)
    tol = tolerance(x.dtype)
    out = conv2d(x, weights, bias, stride=stride, padding=padding)
    np.testing.assert_allclose(out, naive_conv(x, weights, bias, strides, pads), **tol)
    grads = conv2d_backward(grad, x, weights, stride=stride, padding=padding)
    expected = naive_conv_backward(x, weights, grad, strides, pads)
    for name, ours, theirs in zip(("grad_x", "grad_w", "grad_b"), grads, expected, strict=True):
        assert ours.dtype == x.dtype, name
        np.testing.assert_allclose(ours, theirs, err_msg=name, **tol)


def layout_inputs(x_shape, w_shape, stride, padding, dtype, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weights = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[3]).astype(dtype)
    out_shape = conv2d(x, weights, stride=stride, padding=padding).shape
    return x, weights, bias, rng.standard_normal(out_shape).astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "layout"), LAYOUT_CASES)
def test_both_im2col_layouts_match_naive_loops(x_shape, w_shape, stride, padding, layout, dtype):
    from patternfind.layers import conv

    x, weights, bias, grad = layout_inputs(x_shape, w_shape, stride, padding, dtype)
    layer = conv._ConvLayer.check(x, weights, stride, padding)
    assert conv._tap_major(layer) == (layout == "taps")  # the case covers the layout it names
    check_against_naive(x, weights, bias, grad, stride, padding)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "layout"), LAYOUT_CASES)
def test_blocks_of_single_rows_and_two_threads_match_naive_loops(
    monkeypatch, x_shape, w_shape, stride, padding, layout, workers
):
    """Tiny block budgets cut every image into blocks of one output row, split over threads."""
    from patternfind.layers import conv

    monkeypatch.setattr(conv, "_TAP_BLOCK_BYTES", 1)
    monkeypatch.setattr(conv, "_IM2COL_BLOCK_BYTES", 1)
    monkeypatch.setattr(conv, "_WORKERS", workers)
    x, weights, bias, grad = layout_inputs(x_shape, w_shape, stride, padding, np.float32)
    layer = conv._ConvLayer.check(x, weights, stride, padding)
    assert len(conv._Im2col.of(layer).blocks) == x_shape[0] * layer.out_hw[0]
    check_against_naive(x, weights, bias, grad, stride, padding)


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "layout"), LAYOUT_CASES)
def test_non_contiguous_inputs_give_the_same_results(x_shape, w_shape, stride, padding, layout):
    x, weights, bias, grad = layout_inputs(x_shape, w_shape, stride, padding, np.float32)
    # every other column of a wider image, Fortran-ordered weights, a reversed gradient view
    wide = np.zeros((x.shape[0], x.shape[1], 2 * x.shape[2], x.shape[3]), np.float32)
    wide[:, :, ::2] = x
    strided_x = wide[:, :, ::2]
    fortran_w = np.asfortranarray(weights)
    reversed_grad = np.ascontiguousarray(grad[..., ::-1])[..., ::-1]
    assert not strided_x.flags.c_contiguous
    assert not fortran_w.flags.c_contiguous
    assert not reversed_grad.flags.c_contiguous
    np.testing.assert_array_equal(
        conv2d(strided_x, fortran_w, bias, stride=stride, padding=padding),
        conv2d(x, weights, bias, stride=stride, padding=padding),
    )
    for ours, expected in zip(
        conv2d_backward(reversed_grad, strided_x, fortran_w, stride=stride, padding=padding),
        conv2d_backward(grad, x, weights, stride=stride, padding=padding),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize(("x_shape", "w_shape"), [((64, 24, 24, 1), (5, 5, 1, 8)),
                                                  ((64, 10, 10, 8), (3, 3, 8, 16))])
def test_threaded_gradients_are_the_same_from_run_to_run(monkeypatch, x_shape, w_shape):
    """Both layouts split over two threads: their partial sums are added in a fixed order."""
    from patternfind.layers import conv

    monkeypatch.setattr(conv, "_WORKERS", 2)
    x, weights, _, grad = layout_inputs(x_shape, w_shape, 1, "valid", np.float32)
    assert len(conv._Im2col.of(conv._ConvLayer.check(x, weights, 1, "valid")).blocks) >= 4
    first = conv2d_backward(grad, x, weights)
    for _ in range(3):
        for a, b in zip(first, conv2d_backward(grad, x, weights), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("w_shape", "stride", "padding"),
    [((1, 1, 1, 3), 1, "valid"),  # tap-major with no spare room: its crop is contiguous
     ((2, 2, 2, 3), 2, "valid"),  # rounds of whole strides: the crop is contiguous too
     ((3, 3, 2, 3), 1, 1)],
)
def test_results_never_share_memory_with_the_next_call(w_shape, stride, padding):
    """Scratch arrays are kept between calls; what a call returns must not be one of them."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 8, 10, w_shape[2])).astype(np.float32)
    weights = rng.standard_normal(w_shape).astype(np.float32)
    out = conv2d(x, weights, stride=stride, padding=padding)
    grads = conv2d_backward(np.ones_like(out), x, weights, stride=stride, padding=padding)
    pooled_grad = pool2d_backward(np.ones((3, 4, 5, w_shape[2])), x, 2)
    kept = [array.copy() for array in (out, *grads, pooled_grad)]
    # the same shapes again, and other shapes, with other values
    for scale in (2.0, 3.0):
        other = conv2d(scale * x, weights, stride=stride, padding=padding)
        conv2d_backward(scale * np.ones_like(other), scale * x, weights, stride=stride,
                        padding=padding)
        pool2d_backward(np.full((3, 4, 5, w_shape[2]), scale), scale * x, 2)
        conv2d_backward(np.ones((2, 4, 4, 2)), np.ones((2, 6, 6, 3)), np.ones((3, 3, 3, 2)))
    for array, copy in zip((out, *grads, pooled_grad), kept, strict=True):
        np.testing.assert_array_equal(array, copy)


def naive_max_pool_backward(x, grad, size, stride):
    """Each window's gradient to the first maximum in row-major order, by loops."""
    grad_x = np.zeros(x.shape)
    for image, row, col, channel in np.ndindex(*grad.shape):
        top, left = row * stride[0], col * stride[1]
        window = x[image, top : top + size[0], left : left + size[1], channel]
        i, j = np.unravel_index(np.argmax(window), window.shape)  # argmax: the first maximum
        grad_x[image, top + i, left + j, channel] += grad[image, row, col, channel]
    return grad_x


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    ("shape", "size", "stride"),
    [((3, 6, 6, 4), (2, 2), (2, 2)),  # windows that tile the input
     ((2, 6, 9, 3), (3, 3), (3, 3)),
     ((2, 4, 9, 2), (2, 3), (2, 3)),
     ((2, 7, 7, 2), (3, 3), (2, 2)),  # overlapping windows
     ((2, 8, 8, 2), (2, 2), (3, 3))],  # gaps between windows
)
def test_max_pool_backward_matches_a_naive_loop_with_many_ties(shape, size, stride, dtype):
    rng = np.random.default_rng(12)
    x = np.maximum(rng.integers(-3, 3, shape), 0).astype(dtype)  # ReLU-like: ties everywhere
    grad = rng.standard_normal(pool2d(x, size, stride=stride).shape).astype(dtype)
    result = pool2d_backward(grad, x, size, stride=stride)
    assert result.dtype == dtype
    np.testing.assert_allclose(result, naive_max_pool_backward(x, grad, size, stride),
                               **tolerance(dtype))


# --------------------------------------------------------------------------
# Bad input: ValueError/TypeError naming the parameter
# --------------------------------------------------------------------------

X = np.ones((7, 7, 3))
W = np.ones((3, 3, 3, 2))


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: conv2d(np.ones(7), W), ValueError, r"`x`.*shape \(7,\)"),
        (lambda: conv2d(np.ones((1, 1, 7, 7, 3)), W), ValueError, r"`x`.*shape"),
        (lambda: conv2d(X, np.ones(3)), ValueError, r"`weights`.*shape \(3,\)"),
        (lambda: conv2d(X, np.ones((3, 3, 3, 2, 1))), ValueError, r"`weights`.*shape"),
        (
            lambda: conv2d(X, np.ones((3, 3, 2, 2))),
            ValueError,
            r"`weights` has 2 channel.*`x` has 3",
        ),
        (lambda: conv2d(np.ones((7, 7)), W), ValueError, r"`weights` has 3 channel.*`x` has 1"),
        (
            lambda: conv2d(X, np.ones((9, 3, 3, 2))),
            ValueError,
            r"`weights` of size 9.*input of size 7",
        ),
        (
            lambda: conv2d(X, np.ones((3, 9, 3))),
            ValueError,
            r"`weights` of size 9 along the columns",
        ),
        (lambda: conv2d(X, W, stride=0), ValueError, r"`stride`.*got 0"),
        (lambda: conv2d(X, W, stride=-2), ValueError, r"`stride`.*got -2"),
        (lambda: conv2d(X, W, stride=1.5), TypeError, r"`stride`.*got 1\.5"),
        (lambda: conv2d(X, W, stride=(1, 0)), ValueError, r"`stride`.*got 0"),
        (lambda: conv2d(X, W, stride=(1, 2, 3)), ValueError, r"`stride`.*\(1, 2, 3\)"),
        (lambda: conv2d(X, W, padding=-1), ValueError, r"`padding`.*got -1"),
        (lambda: conv2d(X, W, padding=(1, -1)), ValueError, r"`padding`.*got -1"),
        (lambda: conv2d(X, W, padding=1.0), TypeError, r"`padding`.*got 1\.0"),
        (lambda: conv2d(X, W, padding="full"), ValueError, r"`padding`.*'full'"),
        (lambda: conv2d(X, W, padding="SAME"), ValueError, r"`padding`.*'SAME'"),
        (lambda: conv2d(X, W, stride=3, padding=0), ValueError, r"`stride` 3.*2\.33 is not"),
        (lambda: conv2d(np.full((7, 7, 3), np.nan), W), ValueError, r"`x` contains 147 NaN"),
        (lambda: conv2d(X, np.where(W > 0, np.inf, 0)), ValueError, r"`weights` contains .*inf"),
        (lambda: conv2d(X, W, [1.0, np.nan]), ValueError, r"`bias` contains 1 NaN"),
        (lambda: conv2d(X, W, [1.0, 2.0, 3.0]), ValueError, r"`bias`.*length 2.*\(3,\)"),
        (lambda: conv2d(X, W, np.ones((2, 1))), ValueError, r"`bias`.*\(2, 1\)"),
        (lambda: conv2d(X, W, "a"), TypeError, r"`bias`"),
        (lambda: conv2d(np.ones((0, 7, 3)), W), ValueError, r"`x`.*empty.*\(0, 7, 3\)"),
        (lambda: conv2d([[1, 2], [3]], np.ones((1, 1))), TypeError, r"`x`"),
        (lambda: pool2d(X, 0), ValueError, r"`size`.*got 0"),
        (lambda: pool2d(X, (2, 0)), ValueError, r"`size`.*got 0"),
        (lambda: pool2d(X, 2.0), TypeError, r"`size`.*got 2\.0"),
        (lambda: pool2d(X, 8, stride=1), ValueError, r"`size` of size 8.*input of size 7"),
        (lambda: pool2d(np.ones(4), 2), ValueError, r"`x`.*shape \(4,\)"),
        (lambda: pool2d(X, 1, stride=0), ValueError, r"`stride`.*got 0"),
        (lambda: pool2d(X, 2, mode="min"), ValueError, r"`mode`.*'min'"),
        (lambda: pool2d(np.full((4, 4), np.inf)), ValueError, r"`x` contains 16 NaN or inf"),
        (lambda: output_size(7, 3, stride=3), ValueError, r"`stride` 3.*2\.33 is not"),
        (lambda: output_size(7, 3, padding="full"), ValueError, r"`padding`.*'full'"),
        (lambda: output_size(7, 3, padding=-1), ValueError, r"`padding`.*-1"),
        (lambda: output_size(7, 0), ValueError, r"`f`.*got 0"),
        (lambda: output_size(2, 3), ValueError, r"`f` of size 3.*input of size 2"),
        (lambda: output_size(7, 3, stride=0), ValueError, r"`stride`.*got 0"),
    ],
)
def test_bad_input_names_the_parameter(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
