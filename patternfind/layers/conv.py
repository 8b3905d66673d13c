"""The convolutional layer of the lecture: convolution, pooling and their gradients.

Every forward function has its backward twin beside it, in the style of
cs231n's ``layers.py``:

- :func:`conv2d` and :func:`conv2d_backward`,
- :func:`pool2d` and :func:`pool2d_backward`.

Shape conventions (channels last, Keras kernel layout)
------------------------------------------------------
``x`` is ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``; ``weights`` is ``(F, F)``,
``(F, F, C)`` or ``(F, F, C, K)``, and filters may be rectangular ``(Fh, Fw, ...)``.
A 2-D ``x`` has one channel and a 2-D or 3-D ``weights`` is a single filter.
The output keeps an ``N`` axis only if ``x`` had one, a channel axis only if
``x`` had one (pooling) or the weights had a ``K`` axis (convolution).

Sizes follow the lecture: ``W' = (W − F + 2P)/S + 1``. With an explicit padding
``P`` a stride that does not fit raises ``ValueError``; ``"valid"`` and ``"same"``
follow Keras' ``Conv2D``, where ``"valid"`` drops the rows and columns the last
stride cannot reach.

How the convolution is computed
-------------------------------
im2col and a matmul (OpenBLAS through numpy), in blocks that stay in cache,
spread over two threads; each matmul is kept small enough that OpenBLAS runs it
on the calling thread (its own threads spin-wait and collapse on a busy
machine). The im2col is laid out window row by window row for many channels,
and filter tap by tap (from a channels-first copy) for few channels, whichever
copies longer runs (`_tap_major`). The input gradient is added back tap by tap
(stride 1 across) or in rounds of ``sw`` taps, as whole rows. cv2.filter2D,
cv2.matchTemplate and FFT paths were measured and lost on the layer shapes
used here (benchmarks/bench_conv.py compares against torch).
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import ArrayLike, NDArray

from patternfind._validation import (
    as_float_array,
    non_negative_int,
    one_of,
    pair_of,
    positive_int,
)

__all__ = [
    "conv2d",
    "conv2d_backward",
    "dense_params",
    "num_params",
    "output_size",
    "pool2d",
    "pool2d_backward",
]

_PADDING_MODES = ("valid", "same")
_POOL_MODES = ("max", "avg")
_IM2COL_BLOCK_BYTES = 256 * 1024  # about an L2 cache
_TAP_BLOCK_BYTES = 2 * 1024 * 1024  # taps take Fh·Fw copies per block: fewer, larger blocks
# OpenBLAS (numpy's) keeps a matmul of at most 65536·4 multiply-adds on the calling thread
_SINGLE_THREAD_MACS = 65536 * 4
# On the 2-core virtual machine this was built on, the second thread gained nothing: numpy
# calls of 10-150 µs from two threads seldom overlap there (README, "Fixed, learned, nested")
_WORKERS = min(2, os.cpu_count() or 1)
_MIN_BLOCKS_PER_THREAD = 2
_SCRATCH_LIMIT_BYTES = 8 * 1024 * 1024  # larger scratch arrays are not kept between calls


# ----------------------------------------------------------------------------
# Sizes and parameter counts
# ----------------------------------------------------------------------------


def output_size(n: int, f: int, *, stride: int = 1, padding: int | str = 0) -> int:
    """Return the output length of a convolution along one axis.

    Parameters
    ----------
    n : int
        Input length (the lecture's ``N`` or ``W``).
    f : int
        Filter length ``F``.
    stride : int, optional
        Stride ``S``.
    padding : int or {"valid", "same"}, optional
        Zero padding ``P`` on each side, or a Keras padding mode: ``"valid"``
        (no padding; the positions the last stride cannot reach are dropped) or
        ``"same"`` (output ``ceil(n / stride)``).

    Returns
    -------
    int
        ``(n − f + 2·padding)/stride + 1``.

    Raises
    ------
    ValueError
        If the filter is larger than the padded input, or if with an integer
        ``padding`` the formula does not give a whole number.

    Examples
    --------
    >>> output_size(7, 3, stride=2)
    3
    >>> output_size(32, 5, padding=2)
    32
    """
    n = positive_int(n, "n")
    f = positive_int(f, "f")
    stride = positive_int(stride, "stride")
    if isinstance(padding, str):
        padding = one_of(padding, "padding", _PADDING_MODES)
        return _axis_geometry(n, f, stride, padding, "f")[0]
    padding = non_negative_int(padding, "padding")
    return _axis_geometry(n, f, stride, padding, "f")[0]


def num_params(f: int | tuple[int, int], c: int, k: int, *, bias: bool = True) -> int:
    """Return the number of learnable parameters of a convolutional layer.

    Parameters
    ----------
    f : int or (fh, fw) tuple of int
        Filter size ``F`` (square) or ``(Fh, Fw)``.
    c : int
        Number of input channels ``C``.
    k : int
        Number of filters ``K``.
    bias : bool, optional
        Whether each filter has a bias.

    Returns
    -------
    int
        ``K(F²C + 1)``, or ``K·F²·C`` without bias.

    Examples
    --------
    >>> num_params(5, 3, 10)
    760
    """
    fh, fw = pair_of(f, "f", positive_int)
    c = positive_int(c, "c")
    k = positive_int(k, "k")
    return k * (fh * fw * c + int(bool(bias)))


def dense_params(
    in_shape: int | tuple[int, ...], out_shape: int | tuple[int, ...], *, bias: bool = False
) -> int:
    """Return the number of parameters of a fully-connected layer between two volumes.

    Parameters
    ----------
    in_shape : int or tuple of int
        Shape of the input volume, e.g. ``(32, 32, 3)``.
    out_shape : int or tuple of int
        Shape of the output volume, e.g. ``(32, 32, 10)``.
    bias : bool, optional
        Whether each output value has a bias.

    Returns
    -------
    int
        ``prod(in_shape)·prod(out_shape)``, plus ``prod(out_shape)`` with bias.

    Examples
    --------
    >>> dense_params((32, 32, 3), (32, 32, 10))
    31457280
    """
    inputs = _volume(in_shape, "in_shape")
    outputs = _volume(out_shape, "out_shape")
    return inputs * outputs + (outputs if bias else 0)


def _volume(shape: Any, name: str) -> int:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        return positive_int(shape, name)
    if not isinstance(shape, (tuple, list)) or len(shape) == 0:
        msg = f"`{name}` must be a positive integer or a tuple of them, got {shape!r}"
        raise TypeError(msg)
    return math.prod(positive_int(length, name) for length in shape)


def _axis_geometry(
    n: int, f: int, stride: int, padding: int | str | None, filter_name: str, axis: str = ""
) -> tuple[int, int, int]:
    """Return ``(output length, padding before, padding after)`` along one axis.

    ``padding`` is ``"valid"``, ``"same"``, an int, or None for pooling (no padding).
    """
    where = f" along the {axis}" if axis else ""
    if padding == "same":
        out = -(-n // stride)
        total = max((out - 1) * stride + f - n, 0)
        return out, total // 2, total - total // 2  # the odd pixel goes bottom/right
    pad = 0 if padding in ("valid", None) else int(padding)
    padded = n + 2 * pad
    if f > padded:
        padded_by = f" padded by {pad} on each side ({padded})" if pad else ""
        msg = f"`{filter_name}` of size {f}{where} is larger than the input of size {n}{padded_by}"

        raise ValueError(msg)
    steps, remainder = divmod(padded - f, stride)
    if remainder and padding != "valid":
        value = (padded - f) / stride + 1
        if padding is None:  # pooling has no padding to change
            formula, remedy = f"({n} − {f})/{stride}", "the stride or the size"
        else:
            formula, remedy = f"({n} − {f} + 2·{pad})/{stride}", "the stride or the padding"
        msg = (
            f"`stride` {stride} does not fit{where}: {formula} + 1 = {round(value, 2):g}"
            f" is not a whole number; change {remedy}"
        )
        raise ValueError(msg)
    return steps + 1, pad, pad


# ----------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------


def conv2d(
    x: ArrayLike,
    weights: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = "valid",
) -> NDArray[np.floating]:
    """Slide filters over an image: the lecture's convolutional layer.

    This is cross-correlation (the kernel is not flipped): at every position the
    dot product of the filter with the window under it, summed over channels,
    plus the filter's bias.

    Parameters
    ----------
    x : (H, W), (H, W, C) or (N, H, W, C) array
        Input image(s), channels last. A 2-D ``x`` has one channel.
    weights : (Fh, Fw), (Fh, Fw, C) or (Fh, Fw, C, K) array
        Filters in the Keras kernel layout. Without a ``K`` axis it is one filter.
        Its channel count must equal that of ``x``.
    bias : float or (K,) array, optional
        Bias of each filter; a scalar is added to every filter.
    stride : int or (sh, sw) tuple of int, optional
        Step between windows.
    padding : {"valid", "same"}, int or (ph, pw) tuple of int, optional
        ``"valid"``: no padding (Keras: positions the last stride cannot reach
        are dropped). ``"same"``: TensorFlow's rule, output ``ceil(H / sh)``
        with total padding ``max((out − 1)·sh + Fh − H, 0)``, the odd pixel at
        the bottom/right. An int ``P`` or ``(ph, pw)`` zero-pads each side, and
        then ``(H − Fh + 2·ph)/sh + 1`` must be a whole number.

    Returns
    -------
    ([N,] H', W'[, K]) array
        The activation maps. The ``N`` axis is present only if ``x`` had one and
        the ``K`` axis only if ``weights`` had one. The dtype is float64 if
        ``x`` or ``weights`` is float64, else float32.

    Raises
    ------
    ValueError
        For wrong ranks, mismatched channels, a filter larger than the padded
        input, a stride that does not fit an explicit padding, NaN or inf, a
        bias of the wrong length, non-positive strides or negative padding.
    TypeError
        For non-integer strides or paddings and non-numeric arrays.

    See Also
    --------
    conv2d_backward : its gradients.

    Examples
    --------
    >>> x = np.ones((32, 32, 3), dtype=np.float32)
    >>> conv2d(x, np.ones((5, 5, 3, 4), dtype=np.float32)).shape
    (28, 28, 4)
    """
    layer = _ConvLayer.check(x, weights, stride, padding, bias=bias)
    im2col = _Im2col.of(layer)
    weight_matrix = layer.weight_matrix()
    out = np.empty((*layer.output_nhw(), layer.k), dtype=weight_matrix.dtype)
    chunk = _single_thread_rows(weight_matrix.size)

    def run(blocks: list[tuple[slice, slice]]) -> None:
        buffer = im2col.buffer(ones=False)
        product = _scratch("product", (im2col.capacity, layer.k), out.dtype)
        for block in blocks:
            columns = im2col.gather(block, buffer)
            # straight into `out` when its rows are the matrix's rows
            target = (product[: len(columns)] if im2col.tap_major
                      else out[block].reshape(len(columns), -1))
            for first in range(0, len(columns), chunk):
                np.matmul(columns[first:first + chunk], weight_matrix,
                          out=target[first:first + chunk])
            if im2col.tap_major:  # the bias goes in with the copy, while the block is in cache
                im2col.keep_output(target, block, out, layer.bias)

    _in_threads(run, im2col.blocks)
    if layer.bias is not None and not im2col.tap_major:
        # a separate sum, not a row of the matmul against the ones: there its rounding would
        # vary with the weights, which the finite-difference checks of the gradients pick up
        rows = out.reshape(-1, out.shape[2] * out.shape[3])
        rows += _bias_row(layer.bias, rows.shape[1])
    return layer.shape_output(out)


def conv2d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    weights: ArrayLike,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = "valid",
) -> tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.floating]]:
    """Return the gradients of :func:`conv2d` with respect to its three inputs.

    Parameters
    ----------
    grad_output : ([N,] H', W'[, K]) array
        Gradient of the loss with respect to the output of
        ``conv2d(x, weights, bias, stride=stride, padding=padding)``; its shape
        is that output's shape.
    x : (H, W), (H, W, C) or (N, H, W, C) array
        The forward input.
    weights : (Fh, Fw), (Fh, Fw, C) or (Fh, Fw, C, K) array
        The forward filters.
    stride, padding
        As given to :func:`conv2d`.

    Returns
    -------
    grad_x : array shaped like ``x``
    grad_weights : array shaped like ``weights``
    grad_bias : (K,) array, or a 0-d array if ``weights`` has no ``K`` axis

    Examples
    --------
    >>> x = np.ones((6, 6), dtype=np.float32)
    >>> w = np.ones((3, 3), dtype=np.float32)
    >>> grad_x, grad_w, grad_b = conv2d_backward(np.ones((4, 4)), x, w)
    >>> float(grad_b), grad_w.shape
    (16.0, (3, 3))
    """
    grad_x, grad_weights, grad_bias = _conv_backward(grad_output, x, weights, stride, padding,
                                                     input_gradient=True)
    assert grad_x is not None
    return grad_x, grad_weights, grad_bias


def _conv_backward(
    grad_output: ArrayLike, x: ArrayLike, weights: ArrayLike, stride: Any, padding: Any, *,
    input_gradient: bool,
) -> tuple[NDArray[np.floating] | None, NDArray[np.floating], NDArray[np.floating]]:
    """`conv2d_backward`; ``input_gradient=False`` skips ``grad_x`` (a network's first layer)."""
    layer = _ConvLayer.check(x, weights, stride, padding)
    grad = layer.check_grad_output(grad_output).reshape((*layer.output_nhw(), -1))
    im2col = _Im2col.of(layer)
    scatter: _TapGradients | _WindowGradients | None = None
    if input_gradient:
        scatter = (_TapGradients(layer, im2col) if im2col.tap_major
                   else _WindowGradients(layer, im2col.capacity))
    chunk = _single_thread_rows((im2col.row_length + 1) * layer.k)  # the ones column too

    def run(blocks: list[tuple[slice, slice]]) -> NDArray[np.floating]:
        buffer, wide_buffer = im2col.buffer(ones=True), im2col.grad_buffer()
        planes = scatter.buffer() if scatter is not None else None
        # weight gradients and, in the last row (the columns' ones), the bias gradient
        grad_wb = np.zeros((im2col.row_length + 1, layer.k), dtype=grad.dtype)
        for block in blocks:
            columns = im2col.gather(block, buffer)
            wide_grad = im2col.widen(grad[block], wide_buffer)
            for first in range(0, len(columns), chunk):
                grad_wb += columns[first:first + chunk].T @ wide_grad[first:first + chunk]
            if scatter is not None:
                assert planes is not None
                scatter.add(wide_grad if im2col.tap_major else grad[block].reshape(-1, layer.k),
                            block, planes)
        return grad_wb

    # row blocks of one image add onto overlapping input rows: keep an image in one thread
    partial_sums = _in_threads(run, im2col.blocks, whole_images=True)
    grad_wb = np.sum(partial_sums, axis=0)  # in the halves' order: the same from run to run
    grad_weights = grad_wb[:-1].reshape(layer.weights_shape)
    grad_bias = grad_wb[-1] if layer.has_k else grad_wb[-1].reshape(())
    if scatter is None:
        return None, grad_weights, grad_bias
    return scatter.input_gradient().reshape(layer.x_shape), grad_weights, grad_bias


@dataclass(frozen=True)
class _ConvLayer:
    """Checked and normalised arguments of one conv2d call (private).

    ``x`` is (N, H, W, C) and ``weights`` (Fh, Fw, C, K) whatever the caller gave;
    ``x_shape`` and ``weights_shape`` remember the caller's shapes.
    """

    x: NDArray[np.floating]
    x_shape: tuple[int, ...]
    weights: NDArray[np.floating]
    weights_shape: tuple[int, ...]
    has_n: bool
    has_k: bool
    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    out_hw: tuple[int, int]
    bias: NDArray[np.floating] | None

    @classmethod
    def check(
        cls, x: ArrayLike, weights: ArrayLike, stride: Any, padding: Any, *, bias: Any = None
    ) -> _ConvLayer:
        x = as_float_array(x, "x")
        weights = as_float_array(weights, "weights")
        if x.ndim not in (2, 3, 4):
            msg = f"`x` must be (H, W), (H, W, C) or (N, H, W, C), got shape {x.shape}"
            raise ValueError(msg)
        if weights.ndim not in (2, 3, 4):
            msg = f"`weights` must be (F, F), (F, F, C) or (F, F, C, K), got shape {weights.shape}"
            raise ValueError(msg)
        _check_not_empty(x, "x")
        _check_not_empty(weights, "weights")
        dtype = np.result_type(x, weights)
        x4: NDArray[np.floating] = _as_nhwc(x).astype(dtype, copy=False)
        kernel: NDArray[np.floating] = weights.reshape(
            weights.shape + (1,) * (4 - weights.ndim)
        ).astype(dtype, copy=False)
        if kernel.shape[2] != x4.shape[3]:
            msg = (
                f"`weights` has {kernel.shape[2]} channel(s) (shape {weights.shape}) but `x`"
                f" has {x4.shape[3]} (shape {x.shape})"
            )
            raise ValueError(msg)
        strides = pair_of(stride, "stride", positive_int)
        if isinstance(padding, str):
            paddings: tuple[Any, Any] = (one_of(padding, "padding", _PADDING_MODES),) * 2
        else:
            paddings = pair_of(padding, "padding", non_negative_int)
        rows = _axis_geometry(
            x4.shape[1], kernel.shape[0], strides[0], paddings[0], "weights", "rows"
        )
        cols = _axis_geometry(
            x4.shape[2], kernel.shape[1], strides[1], paddings[1], "weights", "columns"
        )
        return cls(
            x=x4,
            x_shape=x.shape,
            weights=kernel,
            weights_shape=weights.shape,
            has_n=x.ndim == 4,
            has_k=weights.ndim == 4,
            strides=strides,
            pads=((rows[1], rows[2]), (cols[1], cols[2])),
            out_hw=(rows[0], cols[0]),
            bias=_check_bias(bias, kernel.shape[3], dtype),
        )

    def padded_input(self) -> NDArray[np.floating]:
        (top, bottom), (left, right) = self.pads
        if top == bottom == left == right == 0:
            return self.x
        n, height, width, channels = self.x.shape
        padded = _scratch("padded", (n, top + height + bottom, left + width + right, channels),
                          self.x.dtype)
        padded.fill(0)  # only the borders need it, but one pass is simpler and as quick
        padded[:, top : top + height, left : left + width] = self.x
        return padded

    @property
    def k(self) -> int:
        """Number of filters."""
        return int(self.weights.shape[3])

    def output_nhw(self) -> tuple[int, int, int]:
        return (self.x.shape[0], *self.out_hw)

    def weight_matrix(self) -> NDArray[np.floating]:
        return self.weights.reshape(-1, self.weights.shape[3])

    def output_shape(self) -> tuple[int, ...]:
        shape: tuple[int, ...] = self.out_hw
        if self.has_n:
            shape = (self.x.shape[0], *shape)
        if self.has_k:
            shape = (*shape, self.weights.shape[3])
        return shape

    def shape_output(self, out: NDArray[np.floating]) -> NDArray[np.floating]:
        return out.reshape(self.output_shape())

    def check_grad_output(self, grad_output: ArrayLike) -> NDArray[np.floating]:
        grad = _grad_output(grad_output, self.x.dtype, self.output_shape())
        return grad.reshape(-1, self.weights.shape[3])


def _check_not_empty(array: NDArray[Any], name: str) -> None:
    if 0 in array.shape:
        msg = f"`{name}` must not have an empty axis, got shape {array.shape}"
        raise ValueError(msg)


def _as_nhwc(x: NDArray[np.floating]) -> NDArray[np.floating]:
    if x.ndim == 2:
        return x[np.newaxis, :, :, np.newaxis]
    if x.ndim == 3:
        return x[np.newaxis]
    return x


def _check_bias(bias: Any, k: int, dtype: Any) -> NDArray[np.floating] | None:
    if bias is None:
        return None
    # np.ascontiguousarray inside as_float_array turns a scalar into shape (1,)
    values = as_float_array(bias, "bias").astype(dtype, copy=False).reshape(np.shape(bias))
    if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != k):
        msg = (
            f"`bias` must be a scalar or have length {k} (one per filter), got shape {values.shape}"
        )
        raise ValueError(msg)
    return values


def _grad_output(
    grad_output: ArrayLike, dtype: Any, expected_shape: tuple[int, ...]
) -> NDArray[np.floating]:
    """``grad_output`` in the forward input's dtype, or an error if its shape is not the output's."""
    grad = as_float_array(grad_output, "grad_output").astype(dtype, copy=False)
    if grad.shape != expected_shape:
        msg = (
            f"`grad_output` must have the forward output's shape {expected_shape},"
            f" got {grad.shape}"
        )
        raise ValueError(msg)
    return grad


def _windows(padded: NDArray[np.floating], layer: _ConvLayer) -> NDArray[np.floating]:
    """View of every window, ``(N, H', W', Fh, Fw·C)``: the weights' (Fh, Fw, C) order.

    Within a window row the Fw·C values are contiguous in the channels-last
    input, so the view's last axis has unit stride and copying it (im2col)
    moves runs of Fw·C floats instead of gathering C at a time.
    """
    fh, fw = layer.weights.shape[:2]
    sh, sw = layer.strides
    out_h, out_w = layer.out_hw
    padded = np.ascontiguousarray(padded)
    n, height, width, channels = padded.shape
    # strides from the shape: numpy may give length-1 axes any stride, even 0
    s_c = padded.itemsize
    s_w, s_h, s_n = channels * s_c, width * channels * s_c, height * width * channels * s_c
    return as_strided(
        padded,
        shape=(n, out_h, out_w, fh, fw * channels),
        strides=(s_n, s_h * sh, s_w * sw, s_h, s_c),
        writeable=False,
    )


def _tap_major(layer: _ConvLayer) -> bool:
    """Whether to build im2col one filter tap at a time rather than one window row at a time.

    Row by row, im2col copies runs of Fw·C floats (a window row) and the matmul
    covers exactly the output. Tap by tap, from a channels-first copy of the
    input, it copies runs of whole padded rows, but the matmul also covers the
    ``Wp − W'`` windows past each row's end, and the output must be cut out of
    it. Taps win when the windows are narrow next to the rows, as in a grey or
    RGB first layer (measured with benchmarks/bench_conv.py); a column stride
    breaks the runs up.
    """
    fw, channels = layer.weights.shape[1:3]
    return layer.strides[1] == 1 and fw * channels < layer.out_hw[1]


@dataclass(frozen=True)
class _Im2col:
    """The im2col of one conv2d call, built block by block (private).

    ``gather`` returns a block's ``(rows, Fh·Fw·C)`` matrix, one row per
    window, plus a last column of ones in the backward pass: its product with
    the output gradient gives the bias gradient beside the weight gradient.

    - Row-major blocks copy window rows of the channels-last input (``source``
      is `_windows`): one matrix row per output pixel.
    - Tap-major blocks hold the transposed matrix. Each tap and channel is one
      plane copied from a channels-first copy of the input (``source``, flat
      per channel, with spare zeros at the end). The planes span the
      padded input's full width ``Wp``, so that a tap's rows follow each other
      in memory and a whole image is one copy; the ``Wp − W'`` windows past the
      right edge of each row are computed and dropped (`keep_output`), or get a
      zero gradient (`widen`).
    """

    layer: _ConvLayer
    source: NDArray[np.floating]
    tap_major: bool
    blocks: list[tuple[slice, slice]]
    row_width: int  # matrix rows per output row: W', or Wp when tap-major
    padded_hw: tuple[int, int]
    row_length: int  # Fh·Fw·C: the values under one window
    capacity: int  # matrix rows of the largest block

    @classmethod
    def of(cls, layer: _ConvLayer) -> _Im2col:
        padded = layer.padded_input()
        windows = _windows(padded, layer)
        tap_major = _tap_major(layer)
        # tap-major blocks take Fh·Fw copies each: larger blocks keep the calls few
        blocks = _blocks(windows, budget=_TAP_BLOCK_BYTES if tap_major else _IM2COL_BLOCK_BYTES)
        n, height, width, channels = padded.shape
        row_length = math.prod(layer.weights.shape[:3])
        row_width = width if tap_major else layer.out_hw[1]
        capacity = row_width * max((images.stop - images.start) * (rows.stop - rows.start)
                                   for images, rows in blocks)
        if not tap_major:
            return cls(layer, windows, False, blocks, row_width, (height, width), row_length,
                       capacity)
        # each image's planes are read up to sh - 1 rows and Fw - 1 values past its end
        spare = (layer.strides[0] - 1) * width + layer.weights.shape[1] - 1
        flat = _scratch("channels first", (channels, n * height * width + spare), padded.dtype)
        flat[:, n * height * width :] = 0
        flat[:, : n * height * width].reshape(channels, n, height, width)[...] = (
            np.moveaxis(padded, 3, 0))
        source = as_strided(flat, shape=(channels, n, height * width + spare),
                            strides=(flat.strides[0], height * width * flat.itemsize,
                                     flat.itemsize), writeable=False)
        return cls(layer, source, True, blocks, row_width, (height, width), row_length, capacity)

    def _count(self, block: tuple[slice, slice]) -> int:
        images, rows = block
        return (images.stop - images.start) * (rows.stop - rows.start) * self.row_width

    def buffer(self, *, ones: bool) -> NDArray[np.floating]:
        """A thread's scratch for `gather`; with ``ones``, its column (or row) of ones is set."""
        shape = (self.row_length + int(ones), self.capacity)
        buffer = _scratch("im2col", shape if self.tap_major else shape[::-1], self.source.dtype)
        if ones and self.tap_major:
            buffer[-1] = 1
        elif ones:
            buffer[:, -1] = 1
        return buffer

    def gather(self, block: tuple[slice, slice], buffer: NDArray[np.floating]
               ) -> NDArray[np.floating]:
        """im2col of the windows of ``block`` = (images, output rows), and the buffer's ones."""
        count, length = self._count(block), self.row_length
        if not self.tap_major:
            part = self.source[block]
            np.copyto(buffer[:count, :length].reshape(part.shape), part)
            return buffer[:count]
        images, rows = block
        fh, fw, channels = self.layer.weights.shape[:3]
        sh = self.layer.strides[0]
        width = self.padded_hw[1]
        count_rows = rows.stop - rows.start
        planes = buffer[:length, :count].reshape(fh, fw, channels, -1, count_rows, width)
        # every tap's whole padded rows at once: tap (i, j) starts i rows and j values
        # further on (its last row runs j values into the next), so the taps overlap
        first_row = self.source[:, images, rows.start * sh * width :]
        item = first_row.itemsize
        taps = as_strided(first_row, shape=planes.shape,
                          strides=(width * item, item, *first_row.strides[:2], sh * width * item,
                                   item), writeable=False)
        np.copyto(planes, taps)
        return buffer[:, :count].T

    def keep_output(self, product: NDArray[np.floating], block: tuple[slice, slice],
                    out: NDArray[np.floating], bias: NDArray[np.floating] | None) -> None:
        """Copy a tap-major ``(rows, K)`` product of `gather` for ``block`` to ``out``.

        Without the windows past each row's end, and plus the bias if any.
        """
        target = out[block]
        row = target.shape[2] * target.shape[3]  # W'·K values per output row
        target = target.reshape(-1, row)
        kept = product.reshape(len(target), -1)[:, :row]
        if bias is None:
            np.copyto(target, kept)
        else:
            np.add(kept, _bias_row(bias, row), out=target)

    def widen(self, block_grad: NDArray[np.floating], buffer: NDArray[np.floating]
              ) -> NDArray[np.floating]:
        """The output gradient of a block as ``(rows, K)`` matching `gather`'s rows.

        Zero for the windows past each row's end.
        """
        if not self.tap_major:
            return block_grad.reshape(-1, block_grad.shape[-1])
        images, rows, out_w, k = block_grad.shape
        wide = buffer[: images * rows * self.row_width]
        by_row = wide.reshape(images, rows, self.row_width, k)
        np.copyto(by_row[:, :, :out_w], block_grad)
        by_row[:, :, out_w:] = 0  # the windows past each row's end
        return wide

    def grad_buffer(self) -> NDArray[np.floating]:
        """A thread's scratch for `widen`."""
        return _scratch("wide gradient", (self.capacity if self.tap_major else 0, self.layer.k),
                        self.source.dtype)


class _WindowGradients:
    """Adds the gradient of every window back onto the padded input (im2col's adjoint).

    Each filter row is taken in rounds of ``sw`` neighbouring taps (one tap at
    stride 1). A round's taps land on ``sw`` neighbouring input columns per
    window, which the next window's round continues without overlap, so the
    round's window gradients ``grad_output @ weights[i, round]ᵀ``, computed as
    one ``(windows, sw·C)`` plane, are added to whole input rows at once.
    """

    def __init__(self, layer: _ConvLayer, capacity: int) -> None:
        fh, fw, channels, k = layer.weights.shape
        sw = layer.strides[1]
        self.layer = layer
        self.capacity = capacity
        self.rounds = -(-fw // sw)
        # the last round is filled up with zero taps, which reach past the padded input
        round_weights = np.zeros((fh, self.rounds * sw, channels, k), dtype=layer.x.dtype)
        round_weights[:, :fw] = layer.weights
        round_weights = round_weights.reshape(fh * self.rounds, sw * channels, k)
        self.width = sw * channels  # a round's values per window
        if self.width == 1:  # one (rounds, K) @ (K, windows) matmul, not many matrix-vector ones
            self.round_weights = round_weights[:, 0, :]
        else:
            self.round_weights = np.ascontiguousarray(round_weights.transpose(0, 2, 1))
        (top, bottom), (left, right) = layer.pads
        n, height, width = layer.x.shape[:3]
        self.grad_padded = _scratch(
            "input gradient",
            (n, top + height + bottom, left + width + right + self.rounds * sw - fw, channels),
            layer.x.dtype)
        self.grad_padded.fill(0)
        # each matmul is (rows, K) @ (K, sw·C), or all rounds at once when sw·C = 1
        self.chunk = _single_thread_rows(self.round_weights.size if self.width == 1
                                         else k * self.width)

    def buffer(self) -> NDArray[np.floating]:
        shape = (self.layer.weights.shape[0] * self.rounds, self.capacity, self.width)
        return _scratch("window gradients", shape, self.layer.x.dtype)

    def add(self, block_grad: NDArray[np.floating], block: tuple[slice, slice],
            buffer: NDArray[np.floating]) -> None:
        """Add the input gradient of the windows of ``block``; ``block_grad`` is (windows, K)."""
        count = len(block_grad)
        planes = buffer[:, :count]
        for first in range(0, count, self.chunk):
            part = slice(first, first + self.chunk)
            if self.width == 1:
                np.matmul(self.round_weights, block_grad[part].T, out=planes[:, part, 0])
            else:
                np.matmul(block_grad[part], self.round_weights, out=planes[:, part])
        images, rows = block
        (sh, sw), out_w = self.layer.strides, self.layer.out_hw[1]
        channels = self.layer.weights.shape[2]
        planes = planes.reshape(-1, self.rounds, count // out_w, out_w * sw, channels)
        for i in range(planes.shape[0]):  # a loop over filter rows and rounds, never over pixels
            top = rows.start * sh + i
            for r in range(self.rounds):
                target = self.grad_padded[images, top : top + (rows.stop - rows.start) * sh : sh,
                                          r * sw : r * sw + out_w * sw]
                target += planes[i, r].reshape(target.shape)

    def input_gradient(self) -> NDArray[np.floating]:
        """The gradient with respect to the unpadded input, ``(N, H, W, C)``."""
        (top, bottom), (left, right) = self.layer.pads
        height, width = self.grad_padded.shape[1:3]
        right += width - (left + self.layer.x.shape[2] + right)  # and the zero taps' spare columns
        # a copy even when the crop is contiguous: `grad_padded` is scratch
        return self.grad_padded[:, top : height - bottom, left : width - right, :].copy()


class _TapGradients:
    """Adds the gradient of every window back onto the padded input, tap by tap.

    The adjoint of the tap-major `_Im2col`: one matmul ``weights @
    grad_outputᵀ``, over its rows of whole padded width, gives for each tap
    and channel a plane of window gradients laid out like the padded rows it
    lands on in a channels-first copy of the input, so each tap is one add of
    long runs. The windows past the right edge have a zero gradient, and each
    image has spare room after its rows for the runs that go past its end.
    """

    def __init__(self, layer: _ConvLayer, im2col: _Im2col) -> None:
        self.layer = layer
        self.capacity = im2col.capacity
        self.weight_matrix = layer.weight_matrix()  # (Fh·Fw·C, K)
        height, width = im2col.padded_hw
        self.padded_hw = (height, width)
        n, channels = layer.x.shape[0], layer.x.shape[3]
        self.grad_padded = _scratch("input gradient", (channels, n, im2col.source.shape[2]),
                                    layer.x.dtype)
        self.grad_padded.fill(0)
        self.chunk = _single_thread_rows(self.weight_matrix.size)

    def buffer(self) -> NDArray[np.floating]:
        return _scratch("window gradients", (len(self.weight_matrix), self.capacity),
                        self.layer.x.dtype)

    def add(self, wide_grad: NDArray[np.floating], block: tuple[slice, slice],
            buffer: NDArray[np.floating]) -> None:
        """Add the input gradient of ``block``; ``wide_grad`` is `_Im2col.widen`'s (rows, K)."""
        count = len(wide_grad)
        planes = buffer[:, :count]
        for first in range(0, count, self.chunk):
            part = slice(first, first + self.chunk)
            np.matmul(self.weight_matrix, wide_grad[part].T, out=planes[:, part])
        images, rows = block
        fh, fw, channels = self.layer.weights.shape[:3]
        sh, width = self.layer.strides[0], self.padded_hw[1]
        count_rows = rows.stop - rows.start
        planes = planes.reshape(fh, fw, channels, -1, count_rows, width)
        for i in range(fh):  # a loop over filter taps, never over pixels
            for j in range(fw):
                start = (rows.start * sh + i) * width + j
                target = self.grad_padded[:, images, start : start + count_rows * sh * width]
                target = target.reshape(*target.shape[:2], count_rows, sh * width)[..., :width]
                target += planes[i, j]

    def input_gradient(self) -> NDArray[np.floating]:
        """The gradient with respect to the unpadded input, ``(N, H, W, C)``."""
        (top, bottom), (left, right) = self.layer.pads
        height, width = self.padded_hw
        channels, n = self.grad_padded.shape[:2]
        grad = self.grad_padded[:, :, : height * width].reshape(channels, n, height, width)
        # a copy even when the crop is contiguous: `grad_padded` is scratch
        return np.moveaxis(grad[:, :, top : height - bottom, left : width - right], 0, 3).copy()


def _bias_row(bias: NDArray[np.floating], row: int) -> NDArray[np.floating]:
    """``bias`` (scalar or ``(K,)``) repeated along one output row of ``row`` = W'·K values.

    Added to ``(rows, W'·K)`` views, numpy's inner loop then runs over whole
    rows; broadcast over ``(pixels, K)`` it ran K values per call, and the
    bias took 10% of a forward pass (0.11 of 1.1 ms on the network's second layer).
    """
    return np.tile(bias, row // len(bias)) if bias.ndim else bias


def _blocks(windows: NDArray[np.floating], k: int = 0, *, budget: int = _IM2COL_BLOCK_BYTES
            ) -> list[tuple[slice, slice]]:
    """Split the output into blocks of ``(images, rows)`` whose im2col fits in ``budget`` bytes.

    Several small images go to one block (a training batch is not a Python loop
    over images); a large image is split into blocks of rows. ``k`` is unused
    (the matmuls are cut to size separately, see `_single_thread_rows`).
    """
    n, out_h, out_w = windows.shape[:3]
    row_length = windows.shape[3] * windows.shape[4] + 1  # Fh·Fw·C and the ones
    rows_per_block = max(1, budget // (out_w * row_length * windows.itemsize))
    if _WORKERS > 1:  # enough blocks to share between the threads
        rows_per_block = min(rows_per_block, -(-n * out_h // (_WORKERS * _MIN_BLOCKS_PER_THREAD)))
    if rows_per_block >= out_h:
        per_block = _even_split(n, max(1, rows_per_block // out_h))
        return [(slice(first, min(first + per_block, n)), slice(0, out_h))
                for first in range(0, n, per_block)]
    rows_per_block = _even_split(out_h, rows_per_block)
    return [(slice(image, image + 1), slice(top, min(top + rows_per_block, out_h)))
            for image in range(n) for top in range(0, out_h, rows_per_block)]


def _even_split(total: int, at_most: int) -> int:
    """The part size that splits ``total`` into as few near-equal parts of ``≤ at_most``.

    30 rows at most 28 at a time are two blocks of 15, not 28 and a slow block of 2.
    """
    parts = -(-total // at_most)
    return -(-total // parts)


def _single_thread_rows(macs_per_row: int) -> int:
    """Matrix rows per matmul that OpenBLAS keeps on the calling thread.

    OpenBLAS runs a matmul of fewer than ``_SINGLE_THREAD_MACS`` multiply-adds on
    the calling thread. Larger ones use its own threads, which spin-wait on
    each other: on a busy machine that made the layers' matmuls 5-25× slower.
    The blocks are spread over our threads instead (`_in_threads`).
    """
    return max(1, _SINGLE_THREAD_MACS // macs_per_row)


def _in_threads(run: Any, blocks: list[tuple[slice, slice]], *, whole_images: bool = False
                ) -> list[Any]:
    """``run(list of blocks)`` on two halves of ``blocks`` in two threads (numpy frees the GIL).

    With ``whole_images`` the halves split at an image boundary (or not at all).
    Returns the results in the order of the halves, whichever thread finished first,
    so that sums over them are the same from run to run.
    """
    half = len(blocks) // 2
    if whole_images:
        while 0 < half < len(blocks) and blocks[half][0].start == blocks[half - 1][0].start:
            half += 1
    if _WORKERS < 2 or min(half, len(blocks) - half) < _MIN_BLOCKS_PER_THREAD:
        return [run(blocks)]
    pending = _executor().submit(run, blocks[half:])
    first = run(blocks[:half])
    return [first, pending.result()]


@functools.lru_cache(maxsize=1)
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="patternfind-conv")


# A forked worker (batch processing) inherits the pool but not its thread: start afresh.
os.register_at_fork(after_in_child=_executor.cache_clear)


_scratch_arrays = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype: Any) -> NDArray[Any]:
    """An uninitialised array for use within one call, kept by this thread for the next.

    Freshly allocated memory costs a page fault per page on first touch, and
    glibc hands large blocks back to the system when they are freed: on a
    busy machine that made a training step's scratch arrays cost about as
    much as its arithmetic. Arrays over ``_SCRATCH_LIMIT_BYTES`` are not kept,
    so a thread holds at most that much per name (a few names, see the
    callers). Callers use each ``name`` for one array at a time and never
    return it.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    if size * dtype.itemsize > _SCRATCH_LIMIT_BYTES:
        return np.empty(shape, dtype)
    kept, key = _scratch_arrays.__dict__, f"{name} {dtype.str}"
    flat = kept.get(key)
    if flat is None or flat.size < size:
        flat = kept[key] = np.empty(size, dtype)
    return flat[:size].reshape(shape)


# ----------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------


def pool2d(
    x: ArrayLike,
    size: int | tuple[int, int] = 2,
    *,
    stride: int | tuple[int, int] | None = None,
    mode: str = "max",
) -> NDArray[np.floating]:
    """Downsample each channel with a max or average over sliding windows.

    Parameters
    ----------
    x : (H, W), (H, W, C) or (N, H, W, C) array
        Input image(s), channels last.
    size : int or (fh, fw) tuple of int, optional
        Spatial extent ``F`` of the window.
    stride : int or (sh, sw) tuple of int, optional
        Step between windows; defaults to ``size``.
    mode : {"max", "avg"}, optional
        Take the maximum or the mean of each window.

    Returns
    -------
    ([N,] H', W'[, C]) array
        Same axes as ``x``, with ``H' = (H − fh)/sh + 1`` and
        ``W' = (W − fw)/sw + 1``. Same dtype rule as :func:`conv2d`.

    Raises
    ------
    ValueError
        If the window is larger than the input, the stride does not fit
        (the formula is not a whole number), or for bad ranks, sizes or modes.

    See Also
    --------
    pool2d_backward : its gradient.

    Examples
    --------
    >>> pool2d(np.arange(16.0).reshape(4, 4), 2)
    array([[ 5.,  7.],
           [13., 15.]])
    """
    layer = _PoolLayer.check(x, size, stride, mode)
    out = layer.tap(layer.x, 0, 0).copy()
    for i, j in list(np.ndindex(*layer.size))[1:]:  # a loop over window taps, not pixels
        tap = layer.tap(layer.x, i, j)
        if layer.mode == "max":
            np.maximum(out, tap, out=out)
        else:
            out += tap
    if layer.mode == "avg":
        out /= layer.size[0] * layer.size[1]
    return out.reshape(layer.output_shape())


def pool2d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    size: int | tuple[int, int] = 2,
    *,
    stride: int | tuple[int, int] | None = None,
    mode: str = "max",
) -> NDArray[np.floating]:
    """Return the gradient of :func:`pool2d` with respect to its input.

    For ``"max"`` each window's gradient goes to its maximum; when a window
    holds the maximum more than once, to the first in row-major order. For
    ``"avg"`` it is shared equally by the window. Overlapping windows add up.

    Parameters
    ----------
    grad_output : ([N,] H', W'[, C]) array
        Gradient of the loss with respect to ``pool2d(x, size, stride=stride, mode=mode)``.
    x : (H, W), (H, W, C) or (N, H, W, C) array
        The forward input.
    size, stride, mode
        As given to :func:`pool2d`.

    Returns
    -------
    grad_x : array shaped like ``x``

    Examples
    --------
    >>> pool2d_backward(np.ones((1, 1)), np.arange(4.0).reshape(2, 2))
    array([[0., 0.],
           [0., 1.]])
    """
    layer = _PoolLayer.check(x, size, stride, mode)
    grad = _grad_output(grad_output, layer.x.dtype, layer.output_shape()).reshape(layer.out_nhwc())
    if layer.mode == "max" and layer.strides == layer.size:  # see `_tiled_max_backward`
        return _tiled_max_backward(grad, layer).reshape(layer.x_shape)
    grad_x = np.zeros_like(layer.x)
    taps = list(np.ndindex(*layer.size))
    if layer.mode == "avg":
        share = grad / len(taps)
        for i, j in taps:
            layer.tap(grad_x, i, j)[...] += share
        return grad_x.reshape(layer.x_shape)
    tap_views = [layer.tap(layer.x, i, j) for i, j in taps]
    best = tap_views[0].copy()
    for tap in tap_views[1:]:
        np.maximum(best, tap, out=best)
    # the first tap (row-major) holding its window's maximum takes the gradient
    unclaimed = np.ones(best.shape, dtype=bool)
    disjoint = layer.strides[0] >= layer.size[0] and layer.strides[1] >= layer.size[1]
    for (i, j), tap in zip(taps, tap_views, strict=True):
        wins = tap == best
        wins &= unclaimed
        unclaimed &= ~wins
        target = layer.tap(grad_x, i, j)
        if disjoint:  # each input pixel is in one window at most: write, don't add
            np.copyto(target, grad, where=wins)
        else:
            target += np.where(wins, grad, 0)
    return grad_x.reshape(layer.x_shape)


def _tiled_max_backward(grad: NDArray[np.floating], layer: _PoolLayer) -> NDArray[np.floating]:
    """`pool2d_backward` of a max pool whose stride equals its size: ``(N, H, W, C)``.

    The windows tile the input (the stride fits, so they cover it exactly).
    Each tap's values across all windows are copied into one contiguous slab,
    so the comparisons run over whole arrays instead of C values at a time,
    and the slabs of gradients go back in one copy.
    """
    n, channels = layer.x.shape[0], layer.x.shape[3]
    (fh, fw), (out_h, out_w) = layer.size, layer.out_hw
    tiles = (n, out_h, fh, out_w, fw, channels)
    slabs = _scratch("slabs", (fh, fw, n, out_h, out_w, channels), layer.x.dtype)
    np.copyto(slabs, layer.x.reshape(tiles).transpose(2, 4, 0, 1, 3, 5))
    slabs = slabs.reshape(fh * fw, n, out_h, out_w, channels)
    best = slabs.max(axis=0)
    # the first tap (row-major) holding its window's maximum takes the gradient
    unclaimed = np.ones(best.shape, dtype=bool)
    wins = np.empty(best.shape, dtype=bool)
    grad_slabs = _scratch("gradient slabs", slabs.shape, slabs.dtype)
    for tap, grad_slab in zip(slabs, grad_slabs, strict=True):
        np.equal(tap, best, out=wins)
        wins &= unclaimed
        unclaimed ^= wins  # wins ⊆ unclaimed
        np.multiply(grad, wins, out=grad_slab)
    grad_x = np.empty_like(layer.x)
    grad_x.reshape(tiles).transpose(2, 4, 0, 1, 3, 5)[...] = grad_slabs.reshape(
        fh, fw, n, out_h, out_w, channels)
    return grad_x


@dataclass(frozen=True)
class _PoolLayer:
    """Checked and normalised arguments of one pool2d call (private); ``x`` is (N, H, W, C)."""

    x: NDArray[np.floating]
    x_shape: tuple[int, ...]
    size: tuple[int, int]
    strides: tuple[int, int]
    mode: str
    out_hw: tuple[int, int]

    @classmethod
    def check(cls, x: ArrayLike, size: Any, stride: Any, mode: Any) -> _PoolLayer:
        x = as_float_array(x, "x")
        if x.ndim not in (2, 3, 4):
            msg = f"`x` must be (H, W), (H, W, C) or (N, H, W, C), got shape {x.shape}"
            raise ValueError(msg)
        _check_not_empty(x, "x")
        sizes = pair_of(size, "size", positive_int)
        strides = sizes if stride is None else pair_of(stride, "stride", positive_int)
        mode = one_of(mode, "mode", _POOL_MODES)
        x4 = _as_nhwc(x)
        out_h = _axis_geometry(x4.shape[1], sizes[0], strides[0], None, "size", "rows")[0]
        out_w = _axis_geometry(x4.shape[2], sizes[1], strides[1], None, "size", "columns")[0]
        return cls(
            x=x4, x_shape=x.shape, size=sizes, strides=strides, mode=mode, out_hw=(out_h, out_w)
        )

    def tap(self, array: NDArray[np.floating], i: int, j: int) -> NDArray[np.floating]:
        """View of ``array`` at window offset ``(i, j)``, one element per output pixel."""
        (out_h, out_w), (sh, sw) = self.out_hw, self.strides
        return array[:, i : i + (out_h - 1) * sh + 1 : sh, j : j + (out_w - 1) * sw + 1 : sw]

    def out_nhwc(self) -> tuple[int, int, int, int]:
        return (self.x.shape[0], *self.out_hw, self.x.shape[3])

    def output_shape(self) -> tuple[int, ...]:
        shape = self.out_nhwc()
        if len(self.x_shape) == 2:
            return shape[1:3]
        if len(self.x_shape) == 3:
            return shape[1:]
        return shape
