"""The Filter record: what it accepts, what it refuses, and what it derives."""

import cv2
import numpy as np
import pytest
from skimage import data

import patternfind
from patternfind import Filter


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"weights": np.array([["1", "2"], ["3", "4"]]), "mask": np.ones((2, 2), bool)},
         TypeError, "`weights` must be an array of numbers"),
        ({"weights": np.ones((2, 2)) * (1 + 1j), "mask": np.ones((2, 2), bool)},
         TypeError, "`weights` must be real"),
        ({"weights": np.ones((3, 3)), "threshold": np.nan}, ValueError, "`threshold` must be finite"),
        ({"weights": np.ones((3, 3)), "threshold": "abc"}, TypeError, "`threshold` must be a real"),
        ({"weights": np.ones((3, 3)), "bias": "x"}, TypeError, "`bias` must be a real"),
        ({"weights": np.ones((3, 3)), "window": (0, 3)}, ValueError, "`window` must be a positive"),
        ({"weights": np.ones((3, 3, 4))}, ValueError, "must have 1 or 3 channels"),
        ({"weights": np.ones((3, 3, 2))}, ValueError, "must have 1 or 3 channels"),
        ({"weights": np.full((3, 3), np.nan), "mask": np.zeros((3, 3), bool)},
         ValueError, "masks out every pixel"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(fields, error, message):
    with pytest.raises(error, match=message):
        Filter(**fields)


def test_nan_outside_the_mask_is_allowed_and_never_counts():
    weights = np.ones((4, 4))
    weights[0, 0] = np.nan
    mask = np.ones((4, 4), bool)
    mask[0, 0] = False
    assert Filter(weights, mask=mask).weights[0, 0] == 0
    with pytest.raises(ValueError, match="inside the mask"):
        Filter(weights, mask=np.ones((4, 4), bool))


def test_from_rgba_image_keeps_rgb_and_turns_alpha_into_the_mask():
    rgb = data.astronaut()[80:120, 180:220]
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:5] = 0
    filter_ = Filter.from_image(np.dstack([rgb, alpha]), (0, 0, 40, 40))
    assert filter_.weights.shape == (40, 40, 3)
    np.testing.assert_array_equal(filter_.mask, alpha > 0)
    # and it runs on the RGBA image itself, scoring 1 where it was cut
    image = np.dstack([data.astronaut(), np.full((512, 512), 255, np.uint8)])
    found = patternfind.detect(image, Filter.from_image(image, (180, 80, 40, 40)), scales=(1, 1))
    assert (found[0].x, found[0].y) == (180, 80)
    assert found[0].score == pytest.approx(1, abs=1e-5)


def test_grey_template_saved_as_rgb_loads_as_a_grey_filter(tmp_path):
    grey = data.camera()[200:232, 200:232]
    path = tmp_path / "template.png"
    cv2.imwrite(str(path), np.dstack([grey] * 3))
    loaded = Filter.load(path)
    assert loaded.weights.ndim == 2
    np.testing.assert_allclose(loaded.weights, grey / 255, atol=1e-6)
    found = patternfind.detect(data.camera(), loaded, scales=(1, 1))
    assert (found[0].x, found[0].y) == (200, 200)


def test_filter_never_changes_or_freezes_the_callers_array():
    weights = np.ones((3, 3), np.float32)
    mask = np.ones((3, 3), bool)
    mask[0, 0] = False
    filter_ = Filter(weights, mask=mask)
    assert weights[0, 0] == 1
    assert weights.flags.writeable
    assert filter_.weights[0, 0] == 0
    assert not filter_.weights.flags.writeable


@pytest.mark.parametrize(
    "values", [[1.0, np.nan], [np.inf, -np.inf], [1e308, np.inf], [-np.inf], [1e308, 1e308, np.nan]]
)
def test_check_finite_finds_nan_and_inf_even_when_the_sum_overflows(values):
    from patternfind._validation import check_finite

    with pytest.raises(ValueError, match="NaN or inf"):
        check_finite(np.array(values), "x")
    check_finite(np.array([1e308, 1e308]), "x")  # overflowing but finite: accepted
