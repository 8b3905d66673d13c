"""Score maps: a filter's response at every position of an image.

Three score kinds. The correlation of the filter with the image is always
``cv2.matchTemplate`` (one core, but it switches to a DFT for large filters,
which direct correlation cannot match); unmasked windows get their sums from
OpenCV box filters, while a masked filter's window sums (Σm·x, Σm·x²) are
float64 FFT correlations with the mask (``scipy.signal.correlate``):

``"dot"``
    Σ w·x + b on pixel values in [0, 1], the lecture's score and exactly
    `patternfind.conv2d`'s output.
``"ncc"``
    Zero-mean normalised cross-correlation in [−1, 1], the definition of
    ``cv2.TM_CCOEFF_NORMED`` (each channel's mean is removed separately).
``"cosine"``
    Normalised without mean removal, as ``cv2.TM_CCORR_NORMED``.

For the normalised scores a window (or filter) with no contrast has no
defined score; it scores 0, never NaN and never ±1. A window counts as flat
when its variance (energy, for cosine) summed over channels is below
`FLAT_VARIANCE`, i.e. a standard deviation under 1/1000 of the pixel range,
a quarter of one 8-bit grey level. Both scores ignore the filter's scale, so
the filter is first divided by its largest weight: the same flatness test
then holds relative to the filter's own magnitude, and weights of any size
(1e-3 or 1e20) score as the same filter in [0, 1] would.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.signal import correlate

from patternfind.detection.parallel import map_in_threads, resolve_workers
from patternfind.detection.shape import shape_score_map
from patternfind.pixels import prepare_image, to_grey
from patternfind.structures import SCORE_KINDS, Filter

__all__ = [
    "DEFAULT_THRESHOLDS", "FLAT_VARIANCE", "check_fits", "match_channels", "score_map",
    "score_pixels",
]

#: Variance (summed over channels, pixel values in [0, 1]) below which a window is flat.
FLAT_VARIANCE = 1e-6

#: Thresholds used when neither the call nor the filter gives one.
DEFAULT_THRESHOLDS = {"ncc": 0.8, "cosine": 0.95}  # ncc: the OpenCV tutorial's 0.8

# Output rows below which splitting a map into row stripes costs more than it saves.
_MIN_STRIPE_ROWS = 96
# Pixel values (rows × columns × channels) above which a map is split anyway,
# to bound scratch memory: each stripe's float64 window statistics take 8 bytes a value.
_MAX_STRIPE_VALUES = 4 * 2**20


def match_channels(image: NDArray[np.float32], filter_: Filter) -> NDArray[np.float32]:
    """The view of ``image`` a pixel filter scores: grey for grey filters, else as is.

    A grey filter on a colour image scores the grey conversion; a colour
    filter on a grey image is an error (there is no colour to score).
    """
    if filter_.weights.ndim == 2:
        return to_grey(image)
    image_channels = 1 if image.ndim == 2 else image.shape[2]
    if image_channels != filter_.channels:
        kind = "grey" if image_channels == 1 else f"{image_channels}-channel"
        msg = (
            f"Filter {filter_.name!r} has {filter_.channels} channels but the image is {kind}; "
            "use a grey filter or a colour image"
        )
        raise ValueError(msg)
    return image


def score_map(
    image: Any,
    filter_: Filter,
    *,
    score: str = "ncc",
    workers: int | None = None,
) -> NDArray[np.float32]:
    """The score of ``filter_`` at every valid position of ``image``, at one scale.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array
        Any dtype `prepare_image` accepts. Pixel values are scaled to [0, 1].
    filter_ : Filter
        A pixel filter of shape (h, w) or (h, w, C).
    score : {"ncc", "dot", "cosine", "shape"}
        ``"shape"``: see `patternfind.detection.shape.shape_score_map`.
    workers : int, optional
        Threads to use (default: ``cv2.getNumThreads()``).

    Returns
    -------
    (H − h + 1, W − w + 1) float32 array
        Entry (i, j) scores the window whose top-left pixel is (row i, column j).
    """
    if not isinstance(filter_, Filter):
        msg = f"`filter_` must be a patternfind.Filter, got {type(filter_).__name__}"
        raise TypeError(msg)
    if score not in SCORE_KINDS:
        msg = f"`score` must be one of {SCORE_KINDS}, got {score!r}"
        raise ValueError(msg)
    if filter_.features != "pixels":
        msg = (
            f"score_map scans pixel filters; filter {filter_.name!r} works on "
            f"{filter_.features!r} features: use patternfind.detect"
        )
        raise ValueError(msg)
    pixels = match_channels(prepare_image(image), filter_)
    check_fits(pixels.shape, filter_)
    if score == "shape":  # gradient directions, with the default min_contrast and polarity
        return shape_score_map(pixels, filter_)
    return score_pixels(pixels, filter_, score, workers=resolve_workers(workers))


def check_fits(image_shape: tuple[int, ...], filter_: Filter) -> None:
    """Raise ``ValueError`` if the filter is larger than the image."""
    height, width = filter_.weights.shape[:2]
    if height > image_shape[0] or width > image_shape[1]:
        msg = (
            f"Filter {filter_.name!r} ({width}×{height}) is larger than the image "
            f"({image_shape[1]}×{image_shape[0]})"
        )
        raise ValueError(msg)


def score_pixels(
    pixels: NDArray[np.float32], filter_: Filter, score: str, *, workers: int = 1
) -> NDArray[np.float32]:
    """`score_map` on an already prepared image, in row stripes run by ``workers`` threads.

    Stripes of at most `_MAX_STRIPE_VALUES` pixel values also bound the
    scratch memory, which then grows with the number of workers, not with the image.
    """
    height, width = filter_.weights.shape[:2]
    out_rows, out_cols = pixels.shape[0] - height + 1, pixels.shape[1] - width + 1
    values_per_row = pixels.shape[1] * (1 if pixels.ndim == 2 else pixels.shape[2])
    stripes = max(
        min(workers, out_rows // _MIN_STRIPE_ROWS),
        math.ceil(out_rows * values_per_row / _MAX_STRIPE_VALUES),
        1,
    )
    if stripes == 1:
        return _score_block(pixels, filter_, score)
    bounds = np.linspace(0, out_rows, stripes + 1).astype(int)
    result = np.empty((out_rows, out_cols), np.float32)

    def run(index: int) -> None:
        top, bottom = bounds[index], bounds[index + 1]
        # each stripe needs the h − 1 rows below its last window's top
        result[top:bottom] = _score_block(pixels[top : bottom + height - 1], filter_, score)

    map_in_threads(run, range(stripes), workers)
    return result


def _score_block(
    pixels: NDArray[np.float32], filter_: Filter, score: str
) -> NDArray[np.float32]:
    weights = filter_.weights
    if score == "dot":
        result = cv2.matchTemplate(pixels, weights, cv2.TM_CCORR)
        if filter_.bias:
            result += np.float32(filter_.bias)
        return result
    if filter_.mask is not None:
        return _masked_normalised(pixels, filter_, score)
    # OpenCV's own TM_CCOEFF_NORMED would normalise again what the flat-window
    # test needs anyway; correlating with the centred filter and dividing by
    # the window statistics computed here is the same score at half the cost.
    centred = score == "ncc"
    weights = _unit_scaled(weights)
    template = _centred(weights) if centred else weights
    count = weights.shape[0] * weights.shape[1]
    norm = float(np.sqrt(np.square(template, dtype=np.float64).sum()))
    if norm * norm / count < FLAT_VARIANCE:
        return _zeros_like_map(pixels, weights)
    numerator = cv2.matchTemplate(pixels, template, cv2.TM_CCORR)
    spread = _window_spread(pixels, weights.shape[:2], centred=centred)
    return _normalise(numerator, spread, count=count, norm=norm)


def _unit_scaled(weights: NDArray[np.float32]) -> NDArray[np.float32]:
    """The weights divided by their largest magnitude.

    ncc and cosine do not change when the filter is multiplied by a positive
    number, but float32 arithmetic does: weights of 1e20 overflow when
    squared, and weights of 1e-3 would fall under the absolute flatness
    test. On this scale a filter is flat when its contrast is under
    ``sqrt(FLAT_VARIANCE)`` of its largest weight, whatever its units.
    """
    largest = float(np.abs(weights).max(initial=0.0))
    if largest == 0 or largest == 1:
        return weights
    return (weights.astype(np.float64) / largest).astype(np.float32)


def _centred(weights: NDArray[np.float32]) -> NDArray[np.float32]:
    """The filter with each channel's mean removed (computed in float64)."""
    flat = weights.reshape(-1, 1 if weights.ndim == 2 else weights.shape[2])
    mean = flat.mean(axis=0, dtype=np.float64).astype(np.float32)
    return weights - (mean[0] if weights.ndim == 2 else mean)


def _normalise(
    numerator: NDArray[np.float32], spread: NDArray[np.float64], *, count: float, norm: float
) -> NDArray[np.float32]:
    """numerator / (‖window‖·‖filter‖) in place; flat windows score 0, the rest stay in [−1, 1].

    ``spread`` is the per-pixel variance (or energy) of each window, summed
    over channels, so ‖window‖ = sqrt(spread · count).
    """
    # float32 from here on: the cancellation-prone part (the variance) is done
    denominator = spread.astype(np.float32)
    flat = denominator < FLAT_VARIANCE
    np.maximum(denominator, 0, out=denominator)  # rounding can make a variance negative
    denominator *= np.float32(count * norm * norm)
    np.sqrt(denominator, out=denominator)
    denominator[flat] = np.inf
    np.divide(numerator, denominator, out=numerator)
    numerator[flat] = 0  # not −0.0
    np.clip(numerator, -1, 1, out=numerator)  # rounding can step past ±1
    return numerator


def _zeros_like_map(pixels: NDArray[np.float32], weights: NDArray[np.float32]) -> NDArray[np.float32]:
    shape = (pixels.shape[0] - weights.shape[0] + 1, pixels.shape[1] - weights.shape[1] + 1)
    return np.zeros(shape, np.float32)


def _window_spread(
    pixels: NDArray[np.float32], size: tuple[int, int], *, centred: bool
) -> NDArray[np.float64]:
    """Per-pixel variance (``centred``) or energy of every valid window, summed over channels.

    Box filters in float64: E[x²] − E[x]² cancels badly in float32 on smooth
    windows, and OpenCV's float64 box filters cost no more than float32 ones.
    """
    height, width = size
    rows, cols = pixels.shape[0] - height + 1, pixels.shape[1] - width + 1
    ksize = (width, height)
    spread = cv2.sqrBoxFilter(pixels, cv2.CV_64F, ksize, anchor=(0, 0), normalize=True)
    if centred:
        mean = cv2.boxFilter(pixels, cv2.CV_64F, ksize, anchor=(0, 0), normalize=True)
        np.multiply(mean, mean, out=mean)
        np.subtract(spread, mean, out=spread)
        del mean
    if spread.ndim == 3:  # cv2.transform sums channels far faster than ndarray.sum(axis=2)
        spread = cv2.transform(spread, np.ones((1, spread.shape[2]), np.float64))
    return spread[:rows, :cols]


def _masked_normalised(
    pixels: NDArray[np.float32], filter_: Filter, score: str
) -> NDArray[np.float32]:
    """NCC or cosine where only the mask's pixels count, from three correlations.

    With mask m (n pixels on), the window sums Σm·x and Σm·x² give each
    window's masked mean and variance, and the numerator correlates the
    image with the masked, mean-removed filter.
    """
    assert filter_.mask is not None
    mask = filter_.mask.astype(np.float32)
    count = float(mask.sum())
    weights = _unit_scaled(filter_.weights if filter_.weights.ndim == 3 else filter_.weights[..., None])
    channels = [pixels] if pixels.ndim == 2 else [pixels[..., c] for c in range(pixels.shape[2])]
    centred = score == "ncc"
    template = weights.copy()
    if centred:
        template -= (weights * mask[..., None]).sum(axis=(0, 1)) / np.float32(count)
    template *= mask[..., None]
    norm = float(np.sqrt(np.square(template, dtype=np.float64).sum()))
    numerator = cv2.matchTemplate(pixels, template if pixels.ndim == 3 else template[..., 0],
                                  cv2.TM_CCORR)
    if norm * norm / count < FLAT_VARIANCE:
        return np.zeros_like(numerator)
    # The window sums are taken in float64: Σm·x² − (Σm·x)²/n cancels badly
    # in float32 on smooth windows (errors of 0.2 in the score were measured).
    mask64 = mask.astype(np.float64)
    spread64 = np.zeros(numerator.shape, np.float64)
    # The float32 template sums to a few 1e-7 instead of 0 per channel; times the
    # window's mean that leaks into the numerator (errors of 1e-3 in the score were
    # measured on low-contrast windows), so the leak is subtracted exactly.
    template_sums = template.reshape(-1, template.shape[2]).sum(axis=0, dtype=np.float64)
    leak64 = np.zeros(numerator.shape, np.float64)
    for index, channel in enumerate(channels):
        channel64 = channel.astype(np.float64)
        window_sum_sq = correlate(np.square(channel64), mask64, mode="valid", method="fft")
        if centred:
            window_sum = correlate(channel64, mask64, mode="valid", method="fft")
            window_sum_sq -= window_sum * window_sum / count
            leak64 += template_sums[index] * window_sum / count
        spread64 += window_sum_sq
    if centred:
        numerator = (numerator - leak64).astype(np.float32)
    return _normalise(numerator, spread64 / count, count=count, norm=norm)
