"""patternfind.pixels against scikit-image's dtype rules and the ITU-R 601 luma formula."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import img_as_float32

from patternfind.pixels import as_rgb8, prepare_image, to_float_image, to_grey, to_rgb


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, bool])
def test_to_float_image_matches_skimage(dtype):
    rng = np.random.default_rng(0)
    top = 2 if dtype is bool else np.iinfo(dtype).max + 1
    image = rng.integers(0, top, size=(7, 9, 3)).astype(dtype)
    ours = to_float_image(image)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, img_as_float32(image), rtol=1e-6, atol=1e-7)


def test_to_grey_is_itu_r_601_luma():
    rng = np.random.default_rng(1)
    rgb = rng.random((5, 6, 3), dtype=np.float32)
    expected = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(to_grey(rgb), expected, atol=1e-6)
    np.testing.assert_array_equal(to_grey(rgb[..., 0]), rgb[..., 0])


def test_to_rgb_repeats_grey_and_keeps_colour():
    grey = np.arange(6, dtype=np.float32).reshape(2, 3)
    rgb = to_rgb(grey)
    assert rgb.shape == (2, 3, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], grey)
    assert to_rgb(rgb) is rgb


def test_as_rgb8_round_trips_uint8_and_drops_alpha():
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, size=(4, 5, 4)).astype(np.uint8)
    np.testing.assert_array_equal(as_rgb8(rgba), rgba[..., :3])
    grey = rgba[..., 0]
    np.testing.assert_array_equal(as_rgb8(grey), np.repeat(grey[..., None], 3, axis=2))


def test_prepare_image_refuses_what_is_not_an_image():
    with pytest.raises(ValueError, match="image"):
        prepare_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(TypeError, match="int64"):
        to_float_image(np.zeros((4, 4), np.int64))
