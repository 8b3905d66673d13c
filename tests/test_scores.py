"""Score maps against independent references.

References: ``cv2.matchTemplate`` (TM_CCOEFF_NORMED, TM_CCORR_NORMED),
``skimage.feature.match_template`` (grey only: its colour NCC removes one mean
over all channels), ``scipy.signal.correlate``, `patternfind.layers.conv.conv2d`, and
float64 sliding-window formulas written here (plain and masked).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import correlate
from skimage import data
from skimage.feature import match_template

from patternfind.detection.scores import FLAT_VARIANCE, score_map
from patternfind.layers.conv import conv2d
from patternfind.structures import Filter

TOLERANCE = 1e-4
# cv2's NCC sums in float32: on windows with std ≈ 0.02 it is 1.1e-4 from the exact
# float64 score (measured on coins()), so float64 references get a little more room.
FLOAT64_TOLERANCE = 2e-4
MIN_WINDOW_STD = 0.02  # compare only windows that are clearly not flat


# ----------------------------------------------------------------- references


def _windows(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H', W', h, w, C) float64 windows of an (H, W, C) image."""
    view = sliding_window_view(image, size, axis=(0, 1))  # (H', W', C, h, w)
    return np.moveaxis(view, 2, -1).astype(np.float64)


def _as_hwc(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    return array[..., None] if array.ndim == 2 else array


def naive_scores(image, weights, kind, *, bias=0.0, mask=None):
    """float64 reference: dot, ncc (each channel's mean removed) or cosine, masked or not."""
    image, weights = _as_hwc(image), _as_hwc(weights)
    windows = _windows(image, weights.shape[:2])
    m = np.ones(weights.shape[:2]) if mask is None else np.asarray(mask, np.float64)
    m = m[..., None]
    if kind == "dot":
        return np.einsum("ijhwc,hwc->ij", windows, weights) + bias
    if kind == "ncc":
        count = m.sum()
        weights = weights - (weights * m).sum(axis=(0, 1)) / count
        windows = windows - (windows * m).sum(axis=(2, 3), keepdims=True) / count
    weights = weights * m
    windows = windows * m
    numerator = np.einsum("ijhwc,hwc->ij", windows, weights)
    denominator = np.sqrt(np.square(weights).sum() * np.square(windows).sum(axis=(2, 3, 4)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator  # NaN on flat windows, which are never compared


def window_std(image, size, mask=None):
    """Per-pixel standard deviation of every window, each channel about its own mean, summed."""
    image = _as_hwc(image)
    windows = _windows(image, size)
    if mask is not None:
        windows = windows[:, :, np.asarray(mask, bool)]  # (H', W', n, C)
        return np.sqrt(windows.var(axis=2).sum(axis=-1))
    return np.sqrt(windows.var(axis=(2, 3)).sum(axis=-1))


def to_dtype(image01: np.ndarray, dtype) -> np.ndarray:
    """An image in [0, 1] stored as ``dtype`` (uint8/uint16 scaled to their full range)."""
    if dtype == np.uint8:
        return np.round(image01 * 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.round(image01 * 65535).astype(np.uint16)
    return image01.astype(dtype)


def as_unit(image: np.ndarray) -> np.ndarray:
    """float64 pixel values in [0, 1], the detector's view of any dtype."""
    if image.dtype == np.uint8:
        return image / 255.0
    if image.dtype == np.uint16:
        return image / 65535.0
    return image.astype(np.float64)


def real_images():
    rng = np.random.default_rng(0)
    astronaut = data.astronaut()[180:260, 180:270] / 255.0  # the face: smooth and textured
    coins = data.coins()[40:120, 60:150] / 255.0
    camera = data.camera()[100:180, 200:290] / 255.0
    noise = rng.random((70, 80, 3))
    return {"astronaut": astronaut, "coins": coins, "camera": camera, "noise": noise}


def _layout(image01: np.ndarray, layout: str) -> np.ndarray:
    grey = image01 if image01.ndim == 2 else cv2.cvtColor(
        image01.astype(np.float32), cv2.COLOR_RGB2GRAY
    ).astype(np.float64)
    colour = image01 if image01.ndim == 3 else np.stack(
        [image01, np.roll(image01, 3, axis=0), image01[::-1] * 0.5], axis=-1
    )
    if layout == "grey":
        return grey
    if layout == "rgb":
        return colour
    alpha = np.linspace(0, 1, colour.shape[1])[None, :, None] * np.ones((*colour.shape[:2], 1))
    return np.concatenate([colour, alpha], axis=-1)


def _compare(ours, reference, valid, tolerance=TOLERANCE):
    assert ours.shape == reference.shape
    assert ours.dtype == np.float32
    assert valid.mean() > 0.3, "too few textured windows to compare"
    np.testing.assert_allclose(ours[valid], reference[valid], atol=tolerance, rtol=0)


# ----------------------------------------------------------------- ncc / cosine


@pytest.mark.parametrize("name", ["astronaut", "coins", "camera", "noise"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["grey", "rgb", "rgba"])
def test_ncc_matches_opencv_and_naive(name, dtype, layout):
    image = to_dtype(_layout(real_images()[name], layout), dtype)
    pixels = as_unit(image)[..., :3] if layout == "rgba" else as_unit(image)
    weights = pixels[20:33, 25:36].astype(np.float32)
    ours = score_map(image, Filter(weights), score="ncc")
    valid = window_std(pixels, weights.shape[:2]) > MIN_WINDOW_STD
    opencv = cv2.matchTemplate(pixels.astype(np.float32), weights, cv2.TM_CCOEFF_NORMED)
    _compare(ours, opencv, valid)
    _compare(ours, naive_scores(pixels, weights, "ncc"), valid, FLOAT64_TOLERANCE)
    assert ours[20, 25] == pytest.approx(1, abs=TOLERANCE)


@pytest.mark.parametrize("name", ["astronaut", "coins", "camera", "noise"])
def test_grey_ncc_matches_skimage(name):
    image = _layout(real_images()[name], "grey")
    weights = image[10:25, 30:42]
    ours = score_map(image, Filter(weights), score="ncc")
    reference = match_template(image, weights)  # float64 path
    valid = window_std(image, weights.shape) > MIN_WINDOW_STD
    _compare(ours, reference, valid, FLOAT64_TOLERANCE)


@pytest.mark.parametrize("name", ["astronaut", "coins", "noise"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("layout", ["grey", "rgb"])
def test_cosine_matches_opencv_and_naive(name, dtype, layout):
    image = to_dtype(_layout(real_images()[name], layout), dtype)
    pixels = as_unit(image)
    rng = np.random.default_rng(1)
    weights = (pixels[5:14, 40:52] + 0.1 * rng.random(pixels[5:14, 40:52].shape)).astype(np.float32)
    ours = score_map(image, Filter(weights), score="cosine")
    valid = window_std(pixels, weights.shape[:2]) > MIN_WINDOW_STD
    opencv = cv2.matchTemplate(pixels.astype(np.float32), weights, cv2.TM_CCORR_NORMED)
    _compare(ours, opencv, valid)
    _compare(ours, naive_scores(pixels, weights, "cosine"), valid, FLOAT64_TOLERANCE)


def test_filter_with_negative_weights_ncc():
    rng = np.random.default_rng(2)
    image = rng.random((60, 70))
    weights = rng.standard_normal((9, 7)).astype(np.float32)
    ours = score_map(image, Filter(weights), score="ncc")
    np.testing.assert_allclose(ours, naive_scores(image, weights, "ncc"), atol=TOLERANCE)


def test_row_stripes_over_threads_agree_with_one_thread():
    rng = np.random.default_rng(3)
    image = rng.random((420, 90, 3)).astype(np.float32)
    weights = image[100:117, 20:31]
    for kind in ("ncc", "cosine", "dot"):
        one = score_map(image, Filter(weights), score=kind, workers=1)
        two = score_map(image, Filter(weights), score=kind, workers=2)
        assert one.shape == two.shape == (404, 80)
        np.testing.assert_allclose(one, two, atol=1e-5)


# ----------------------------------------------------------------- dot


@pytest.mark.parametrize("layout", ["grey", "rgb"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_dot_matches_naive_scipy_and_conv2d(layout, dtype):
    rng = np.random.default_rng(4)
    image = to_dtype(_layout(real_images()["astronaut"], layout), dtype)
    pixels = as_unit(image)
    shape = (7, 9) if layout == "grey" else (7, 9, 3)
    weights = rng.standard_normal(shape).astype(np.float32)
    bias = -0.75
    ours = score_map(image, Filter(weights, bias=bias), score="dot")
    naive = naive_scores(pixels, weights, "dot", bias=bias)
    scale = np.abs(naive).max()
    np.testing.assert_allclose(ours, naive, atol=TOLERANCE * scale)
    scipy_reference = correlate(pixels, weights.astype(np.float64), mode="valid")
    if layout == "rgb":
        scipy_reference = scipy_reference[..., 0]
    np.testing.assert_allclose(ours, scipy_reference + bias, atol=TOLERANCE * scale)
    conv = conv2d(pixels.astype(np.float32), weights, bias)
    np.testing.assert_allclose(ours, conv, atol=TOLERANCE * scale)


# ----------------------------------------------------------------- masks


@pytest.mark.parametrize("kind", ["ncc", "cosine"])
@pytest.mark.parametrize("layout", ["grey", "rgb"])
@pytest.mark.parametrize("name", ["astronaut", "coins", "noise"])
def test_masked_scores_match_naive(kind, layout, name):
    pixels = _layout(real_images()[name], layout)
    weights = pixels[30:45, 10:23].astype(np.float32)
    yy, xx = np.mgrid[:15, :13]
    mask = (yy - 7) ** 2 / 49 + (xx - 6) ** 2 / 36 <= 1  # an ellipse
    # Masked-out weights are garbage: they must not count.
    weights = weights.copy()
    weights[~mask] = 5.0
    ours = score_map(pixels, Filter(weights, mask=mask), score=kind)
    reference = naive_scores(pixels, weights, kind, mask=mask)
    valid = window_std(pixels, mask.shape, mask=mask) > MIN_WINDOW_STD
    _compare(ours, reference, valid)
    assert ours[30, 10] == pytest.approx(1, abs=TOLERANCE)


def test_masked_nan_outside_mask_is_ignored():
    rng = np.random.default_rng(5)
    image = rng.random((40, 40))
    weights = image[5:15, 5:15].copy()
    mask = np.ones((10, 10), bool)
    mask[:3] = False
    weights[:3] = np.nan
    ours = score_map(image, Filter(weights, mask=mask), score="ncc")
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, naive_scores(image, np.nan_to_num(weights), "ncc", mask=mask),
                               atol=TOLERANCE)


def test_masked_dot_counts_only_the_mask():
    rng = np.random.default_rng(6)
    image = rng.random((30, 30))
    weights = rng.standard_normal((6, 6))
    mask = rng.random((6, 6)) > 0.4
    ours = score_map(image, Filter(weights, mask=mask, bias=0.5), score="dot")
    reference = naive_scores(image, weights * mask, "dot", bias=0.5)
    np.testing.assert_allclose(ours, reference, atol=TOLERANCE)


# ----------------------------------------------------------------- flat windows and filters


@pytest.mark.parametrize("kind", ["ncc", "cosine"])
@pytest.mark.parametrize("layout", ["grey", "rgb"])
@pytest.mark.parametrize("masked", [False, True])
def test_flat_windows_score_exactly_zero(kind, layout, masked):
    rng = np.random.default_rng(7)
    image = rng.random((60, 60, 3))
    image[:, :30] = 0.0 if kind == "cosine" else 0.4  # cosine is undefined on black only
    if layout == "grey":
        image = image[..., 0]
    weights = rng.random((8, 8) if layout == "grey" else (8, 8, 3))
    mask = rng.random((8, 8)) > 0.3 if masked else None
    ours = score_map(image, Filter(weights, mask=mask), score=kind)
    assert np.isfinite(ours).all()
    assert ours.min() >= -1
    assert ours.max() <= 1
    flat = ours[:, : 30 - 8 + 1]
    assert (flat == 0).all()
    assert np.abs(ours[:, 30:]).max() > 0


@pytest.mark.parametrize("kind", ["ncc", "cosine"])
def test_flat_filter_scores_zero_everywhere(kind):
    rng = np.random.default_rng(8)
    image = rng.random((40, 40))
    weights = np.full((7, 7), 0.0 if kind == "cosine" else 0.6)
    ours = score_map(image, Filter(weights), score=kind)
    assert (ours == 0).all()


def test_constant_image_scores_zero_not_nan():
    weights = np.random.default_rng(9).random((5, 5, 3))
    for value in (0.0, 0.5, 1.0):
        image = np.full((30, 30, 3), value, np.float32)
        assert (score_map(image, Filter(weights), score="ncc") == 0).all()
    black = np.zeros((30, 30, 3), np.float32)
    assert (score_map(black, Filter(weights), score="cosine") == 0).all()
    # A constant grey window has energy, so its cosine is defined (and finite).
    grey = score_map(np.full((30, 30, 3), 0.5, np.float32), Filter(weights), score="cosine")
    reference = weights.sum() / np.sqrt(np.square(weights).sum() * weights.size)
    np.testing.assert_allclose(grey, reference, atol=TOLERANCE)


def test_nearly_flat_window_stays_in_range():
    """A window one 16-bit level from flat must not blow up past ±1."""
    rng = np.random.default_rng(10)
    image = np.full((50, 50), 30000, np.uint16)
    image[::2, ::3] += 1
    image[25:, 25:] = rng.integers(0, 65535, (25, 25))
    weights = rng.random((6, 6))
    for kind in ("ncc", "cosine"):
        ours = score_map(image, Filter(weights), score=kind)
        assert np.isfinite(ours).all()
        assert np.abs(ours).max() <= 1


@pytest.mark.parametrize(("dtype", "base", "step", "scored"), [
    (np.uint8, 128, 1, True),  # one 8-bit grey level of contrast is a pattern, not flat
    (np.uint16, 30000, 140, True),  # a standard deviation of 70/65535 ≈ 1.07e-3
    (np.uint16, 30000, 120, False),  # 60/65535 ≈ 0.92e-3: under a quarter grey level, flat
])
def test_windows_flatter_than_a_quarter_grey_level_score_zero(dtype, base, step, scored):
    """FLAT_VARIANCE's promise, seen from outside: std under 1e-3 of the range scores 0."""
    image = np.full((40, 40), base, dtype)
    rows, cols = np.indices((20, 20))
    image[10:30, 10:30] += ((rows + cols) % 2 * step).astype(dtype)  # checkerboard: std = step/2
    weights = np.random.default_rng(3).random((6, 6)).astype(np.float32)
    inside = (slice(10, 25), slice(10, 25))  # windows wholly on the checkerboard
    pixels = image.astype(np.float64) / np.iinfo(dtype).max
    assert window_std(pixels, (6, 6))[inside].min() == pytest.approx(step / 2 / np.iinfo(dtype).max)
    ours = score_map(image, Filter(weights), score="ncc")
    assert (ours[:4, :4] == 0).all()  # truly flat windows
    if scored:
        np.testing.assert_allclose(ours[inside], naive_scores(pixels, weights, "ncc")[inside],
                                   atol=1e-3)
        assert np.abs(ours[inside]).min() > 0.01
    else:
        assert (ours[inside] == 0).all()
    assert np.sqrt(FLAT_VARIANCE) == pytest.approx(1e-3)  # what the docstring promises


# ----------------------------------------------------------------- channels


@pytest.mark.parametrize("kind", ["ncc", "cosine", "dot"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_grey_filter_on_colour_image_scores_the_grey_conversion(kind, dtype):
    colour = to_dtype(data.astronaut()[150:250, 150:260] / 255.0, dtype)
    grey = cv2.cvtColor(as_unit(colour).astype(np.float32), cv2.COLOR_RGB2GRAY)
    weights = grey[30:45, 40:52]
    ours = score_map(colour, Filter(weights, bias=0.1), score=kind)
    # OpenCV on the grey image it converted itself is the independent reference
    method = {"ncc": cv2.TM_CCOEFF_NORMED, "cosine": cv2.TM_CCORR_NORMED, "dot": cv2.TM_CCORR}[kind]
    reference = cv2.matchTemplate(grey, weights, method) + (np.float32(0.1) if kind == "dot" else 0)
    textured = window_std(grey, weights.shape) > 0.02  # where OpenCV's score is defined
    _compare(ours, reference, textured)
    rgba = np.concatenate([colour, np.zeros_like(colour[..., :1])], axis=-1)
    _compare(score_map(rgba, Filter(weights, bias=0.1), score=kind), reference, textured)


def test_colour_filter_on_grey_image_raises():
    with pytest.raises(ValueError, match=r"'eye' has 3 channels but the image is grey"):
        score_map(np.zeros((20, 20)), Filter(np.ones((4, 4, 3)), name="eye"))


def test_colour_filter_on_grey_alpha_image_raises():
    with pytest.raises(ValueError, match=r"3 channels"):
        score_map(np.zeros((20, 20, 2)), Filter(np.ones((4, 4, 3))))


def test_uint8_image_and_float_filter_cut_from_it_agree():
    image = data.astronaut()
    box = (240, 200, 30, 24)  # x, y, w, h around the left eye
    filter_ = Filter.from_image(image, box)
    assert filter_.weights.dtype == np.float32
    assert filter_.weights.max() <= 1
    ours = score_map(image[150:300, 150:330], filter_, score="ncc")
    row, col = np.unravel_index(np.argmax(ours), ours.shape)
    assert (col + 150, row + 150) == (240, 200)
    assert ours[row, col] == pytest.approx(1, abs=TOLERANCE)
    dot = score_map(image[200:224, 240:270], filter_, score="dot")
    assert dot[0, 0] == pytest.approx(float(np.square(filter_.weights.astype(np.float64)).sum()),
                                      rel=1e-5)


# ----------------------------------------------------------------- bad input


def test_bad_score_kind():
    with pytest.raises(ValueError, match=r"`score` must be one of .*'sad'"):
        score_map(np.zeros((10, 10)), Filter(np.eye(3)), score="sad")


def test_filter_larger_than_image():
    with pytest.raises(ValueError, match=r"'big' \(12×5\) is larger than the image \(10×10\)"):
        score_map(np.zeros((10, 10)), Filter(np.ones((5, 12)), name="big"))


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (0, 0, 3)])
def test_empty_image(shape):
    with pytest.raises(ValueError, match=r"`image` is empty"):
        score_map(np.zeros(shape), Filter(np.eye(1)))


@pytest.mark.parametrize("shape", [(5,), (4, 4, 5), (2, 4, 4, 3)])
def test_image_of_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"`image` must be"):
        score_map(np.zeros(shape), Filter(np.eye(1)))


def test_image_with_nan():
    image = np.zeros((10, 10), np.float32)
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"`image` contains 1 NaN or inf value\(s\), the first at index \(3, 4\)"):
        score_map(image, Filter(np.eye(3)))


@pytest.mark.parametrize("dtype", [np.int64, np.int16, np.uint32])
def test_ambiguous_integer_image(dtype):
    with pytest.raises(TypeError, match=f"`image` has dtype {np.dtype(dtype)}"):
        score_map(np.zeros((10, 10), dtype), Filter(np.eye(3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_filter_with_non_finite_weights(bad):
    weights = np.ones((3, 3))
    weights[1, 2] = bad
    with pytest.raises(ValueError, match=r"`weights` contains 1 NaN or inf value\(s\)"):
        Filter(weights)


def test_filter_with_nan_inside_mask():
    weights = np.ones((3, 3))
    weights[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"weights \(inside the mask\)"):
        Filter(weights, mask=np.ones((3, 3), bool))


@pytest.mark.parametrize("kind", ["ncc", "cosine", "dot"])
def test_filter_as_large_as_the_image_gives_one_score(kind):
    rng = np.random.default_rng(11)
    image = rng.random((9, 12, 3))
    weights = rng.random((9, 12, 3))
    ours = score_map(image, Filter(weights), score=kind)
    assert ours.shape == (1, 1)
    np.testing.assert_allclose(ours, naive_scores(image, weights, kind), atol=TOLERANCE)
