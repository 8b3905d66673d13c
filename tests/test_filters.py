"""The hand-crafted filter bank: shapes measured on the weights, and the eye on a real photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
from scipy import signal
from skimage.color import rgb2gray

from patternfind import Filter, filters

KINDS = ("eye", "blob", "edge", "bar", "corner", "ring")


def _coordinates(shape):
    """x to the right and y *up* (on screen), measured from the array's centre."""
    rows, cols = np.indices(shape, dtype=float)
    return cols - (shape[1] - 1) / 2, (shape[0] - 1) / 2 - rows


def _ncc(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


# ------------------------------------------------------------------ common


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("size", "shape"), [(3, (3, 3)), (24, (24, 24)), ((12, 31), (12, 31))])
def test_every_kind_is_a_float32_filter_of_the_asked_size(kind, size, shape):
    made = filters.make(kind, size)
    assert isinstance(made, Filter)
    assert made.weights.shape == shape
    assert made.weights.dtype == np.float32
    assert np.isfinite(made.weights).all()
    assert np.ptp(made.weights) > 0  # not flat: NCC needs some contrast
    assert made.name == kind
    assert made.meta["kind"] == "fixed"
    assert made.meta["source"] == "hand-crafted"
    assert made.meta["options"]["size"] == list(shape)


@pytest.mark.parametrize(
    ("kind", "options"),
    [("eye", {"iris": 0.5}), ("blob", {"sigma": 2.0, "polarity": "dark"}),
     ("edge", {"angle": 30}), ("bar", {"angle": 60, "width": 3}),
     ("corner", {"angle": 100, "polarity": "dark"}), ("ring", {"radius": 5, "width": 2})],
)
def test_make_dispatches_to_the_function_of_that_name(kind, options):
    by_name = filters.make(kind, 17, **options)
    direct = getattr(filters, kind)(17, **options)
    np.testing.assert_array_equal(by_name.weights, direct.weights)
    for key, value in options.items():
        assert by_name.meta["options"][key] == value


@pytest.mark.parametrize("kind", ["eye", "edge", "bar", "corner", "ring"])
def test_templates_are_pixel_values_and_zero_mean_only_shifts_them(kind):
    template = filters.make(kind, 21).weights
    assert template.min() >= 0
    assert template.max() <= 1
    centred = filters.make(kind, 21, zero_mean=True).weights
    assert abs(float(centred.mean())) < 1e-6
    np.testing.assert_allclose(centred, template - template.mean(), atol=1e-6)


def _drawn(kind, size=19, oversample=8):
    """The shape drawn independently: point tests on a fine grid, averaged down by OpenCV."""
    fine = (np.arange(size * oversample) + 0.5) / oversample - size / 2  # pixel centres
    y, x = np.meshgrid(-fine, fine, indexing="ij")  # y up, as the filters' angles are
    if kind == "bar":  # horizontal (angle 0), width a fifth of the side
        inside = np.abs(y) <= size / 5 / 2
    elif kind == "corner":  # bisector at 45°: the top-right quadrant
        inside = (x > 0) & (y > 0)
    else:  # ring: mid-line radius 0.3 × side, width a third of the radius
        radius = 0.3 * size
        inside = np.abs(np.hypot(x, y) - radius) <= radius / 3 / 2
    return cv2.resize(inside.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("kind", ["bar", "corner", "ring"])
def test_polarity_matches_an_independent_drawing(kind):
    drawn = _drawn(kind)
    for polarity, sign in (("bright", 1), ("dark", -1)):
        weights = filters.make(kind, 19, polarity=polarity).weights
        correlation = np.corrcoef(weights.ravel(), drawn.ravel())[0, 1]
        assert sign * correlation > 0.97, (polarity, correlation)
        # away from its edges the shape is 1 and the background 0 (reversed when dark)
        solid = (drawn == 1) | (drawn == 0)
        assert (drawn == 1).sum() > 5
        assert (drawn == 0).sum() > 5
        expected = drawn if polarity == "bright" else 1 - drawn
        np.testing.assert_allclose(weights[solid], expected[solid], atol=1e-6)


# ------------------------------------------------------------------ edge


@pytest.mark.parametrize("angle", [0, 30, 75, 135, 200, 315])
def test_edge_responds_best_to_a_step_rotated_to_its_angle(angle):
    edge = filters.edge(21, angle=angle).weights
    # the reference steps are drawn on a 10× finer grid, then averaged down to 21×21
    x, y = _coordinates((210, 210))
    candidates = np.arange(0, 360, 5)
    scores = []
    for candidate in candidates:
        theta = np.deg2rad(candidate)
        fine = (x * np.cos(theta) + y * np.sin(theta) > 0).astype(float)
        step = fine.reshape(21, 10, 21, 10).mean(axis=(1, 3))
        scores.append(_ncc(edge, step))
    best = candidates[int(np.argmax(scores))]
    assert best == angle % 360
    # the opposite step is the worst match: the edge has a direction, not just an axis
    assert candidates[int(np.argmin(scores))] == (angle + 180) % 360


def test_edge_angle_zero_is_bright_on_the_right_and_ninety_bright_on_top():
    right = filters.edge(10, angle=0).weights
    assert right[:, 5:].mean() > 0.99
    assert right[:, :5].mean() < 0.01
    up = filters.edge(10, angle=90).weights
    assert up[:5].mean() > 0.99  # row 0 is the top of the image
    assert up[5:].mean() < 0.01


def test_edge_is_anti_aliased_where_the_step_crosses_pixels():
    weights = filters.edge(9, angle=30).weights
    between = (weights > 0.01) & (weights < 0.99)
    assert between.any()


# ------------------------------------------------------------------ bar


def _orientation(weights):
    """Direction (degrees mod 180, y up) of the main axis of the weights' mass."""
    x, y = _coordinates(weights.shape)
    mass = weights / weights.sum()
    mx, my = (mass * x).sum(), (mass * y).sum()
    cxx = (mass * (x - mx) ** 2).sum()
    cyy = (mass * (y - my) ** 2).sum()
    cxy = (mass * (x - mx) * (y - my)).sum()
    return np.rad2deg(0.5 * np.arctan2(2 * cxy, cxx - cyy)) % 180


@pytest.mark.parametrize("angle", [0, 20, 45, 90, 120, 160])
def test_bar_lies_along_its_angle(angle):
    weights = filters.bar(31, angle=angle, width=2).weights.astype(float)
    measured = _orientation(weights)
    difference = (measured - angle + 90) % 180 - 90
    assert abs(difference) < 1.5


@pytest.mark.parametrize("width", [1, 3, 5])
def test_horizontal_bar_has_the_asked_width(width):
    weights = filters.bar(21, angle=0, width=width).weights
    column = weights[:, 10]
    assert column.sum() == pytest.approx(width, abs=1e-5)
    assert column[10] == pytest.approx(1)  # centred on the middle row
    np.testing.assert_allclose(column, column[::-1], atol=1e-6)


# ------------------------------------------------------------------ blob


@pytest.mark.parametrize("size", [9, 15, (15, 21)])
def test_blob_is_centred_symmetric_and_zero_sum(size):
    weights = filters.blob(size).weights
    height, width = weights.shape
    assert np.unravel_index(np.argmax(weights), weights.shape) == (height // 2, width // 2)
    np.testing.assert_allclose(weights, weights[::-1, ::-1], atol=1e-6)
    np.testing.assert_allclose(weights, weights.T if height == width else weights, atol=1e-6)
    assert abs(float(weights.sum())) < 1e-4
    assert weights.max() == pytest.approx(1)
    assert weights.min() < 0  # the surround of a difference of Gaussians is negative


def test_blob_polarity_matches_an_analytic_difference_of_gaussians():
    offsets = np.arange(15) - 7.0
    squared = offsets[:, None] ** 2 + offsets[None, :] ** 2
    dog = np.exp(-squared / (2 * 2.0**2)) / 2.0**2 - np.exp(-squared / (2 * 3.2**2)) / 3.2**2
    for polarity, sign in (("bright", 1), ("dark", -1)):
        weights = filters.blob(15, sigma=2, ratio=1.6, polarity=polarity).weights
        assert sign * np.corrcoef(weights.ravel(), dog.ravel())[0, 1] > 0.99
        assert sign * weights[7, 7] == pytest.approx(1)  # the centre carries the polarity


@pytest.mark.parametrize(("polarity", "spot"), [("bright", 1.0), ("dark", -1.0)])
def test_blob_finds_a_gaussian_spot_of_its_polarity(polarity, spot):
    rows, cols = np.indices((60, 80))
    image = 0.5 + 0.4 * spot * np.exp(-((rows - 23) ** 2 + (cols - 51) ** 2) / (2 * 2.5**2))
    response = signal.correlate(image, filters.blob(15, sigma=2.5, polarity=polarity).weights,
                                mode="same")
    # ignore the borders, where zero padding makes artificial contrast
    inner = np.full(response.shape, -np.inf)
    inner[8:-8, 8:-8] = response[8:-8, 8:-8]
    assert np.unravel_index(np.argmax(inner), inner.shape) == (23, 51)


# ------------------------------------------------------------------ corner


@pytest.mark.parametrize("angle", [45, 135, 10, 260])
def test_corner_quadrant_points_along_its_angle(angle):
    weights = filters.corner(41, angle=angle).weights.astype(float)
    x, y = _coordinates(weights.shape)
    weights[np.hypot(x, y) > 20] = 0  # within a disc, so the square's corners don't bias it
    direction = np.rad2deg(np.arctan2((weights * y).sum(), (weights * x).sum()))
    assert (direction - angle + 180) % 360 - 180 == pytest.approx(0, abs=1)
    disc_area = (np.hypot(x, y) <= 20).sum()
    assert weights.sum() / disc_area == pytest.approx(0.25, abs=0.01)  # one quadrant of four


def test_default_corner_is_the_top_right_quadrant():
    weights = filters.corner(10).weights
    assert weights[:5, 5:].mean() > 0.99
    assert weights[5:].max() < 0.01
    assert weights[:, :5].max() < 0.01


# ------------------------------------------------------------------ ring


@pytest.mark.parametrize(("radius", "width"), [(6.0, 2.0), (9.0, 3.0), (4.0, 1.5)])
def test_ring_radial_profile_peaks_at_its_radius(radius, width):
    weights = filters.ring(25, radius=radius, width=width).weights
    x, y = _coordinates(weights.shape)
    distance = np.hypot(x, y).ravel()
    bins = np.round(distance).astype(int)
    profile = np.bincount(bins, weights.ravel()) / np.bincount(bins)
    assert abs(int(np.argmax(profile)) - radius) <= 0.5
    assert profile[0] == 0  # hollow centre
    assert profile[int(radius + width) + 1 :].max() == 0  # nothing outside the ring
    # area of the annulus: 2π · radius · width (the sub-pixel sampling makes it close)
    assert weights.sum() == pytest.approx(2 * np.pi * radius * width, rel=0.05)


# ------------------------------------------------------------------ eye


@pytest.mark.parametrize("size", [12, 18, 24, (12, 24)])
def test_eye_has_a_dark_centre_inside_a_lighter_surround(size):
    weights = filters.eye(size).weights
    height, width = weights.shape
    cy, cx = height // 2, width // 2
    centre = weights[cy - 1 : cy + 1 + height % 2, cx - 1 : cx + 1 + width % 2]
    rest = np.ones(weights.shape, bool)
    rest[cy - 1 : cy + 1 + height % 2, cx - 1 : cx + 1 + width % 2] = False
    assert centre.mean() < 0.5 * weights[rest].mean()
    # the almond: left and right of the iris, on the middle row, is lighter than the skin
    middle = weights[(height - 1) // 2]
    assert middle[width // 5] > weights[0, 0]
    assert middle[-1 - width // 5] > weights[0, -1]
    np.testing.assert_allclose(weights, weights[:, ::-1], atol=1e-6)  # left-right symmetric


def test_eye_almond_is_wider_than_high():
    weights = filters.eye(30).weights
    skin = weights[0, 0]
    lighter = weights > skin + 0.05  # the sclera only
    rows, cols = np.nonzero(lighter)
    assert np.ptp(cols) > 2 * np.ptp(rows)


# Eye positions in skimage.data.astronaut() (512×512), found by eye on an 8×
# enlarged, gridded crop of the photo and checked on the grey values (the
# iris is the block of grey values < 0.35 between the lighter sclera):
#   her right eye (on the image's left): iris centre (203, 100), the open
#   eyelids span x 193–211, y 96–104;
#   her left eye: iris centre (246, 102), eyelids span x 236–260, y 99–106.
ASTRONAUT_IRISES = ((203, 100), (246, 102))


def _peaks(score_map, filter_shape, count):
    """Centres (x, y) of the best ``count`` peaks, each blanking a filter-sized area."""
    height, width = filter_shape
    scores = score_map.copy()
    found = []
    for _ in range(count):
        row, col = np.unravel_index(np.argmax(scores), scores.shape)
        found.append((col + (width - 1) / 2, row + (height - 1) / 2, float(scores[row, col])))
        scores[max(0, row - height) : row + height, max(0, col - width) : col + width] = -np.inf
    return found


@pytest.mark.parametrize("size", [16, 18, 20])
def test_eye_filter_finds_the_astronauts_eyes(size):
    grey = rgb2gray(skimage.data.astronaut()).astype(np.float32)
    eye = filters.eye(size).weights
    score_map = cv2.matchTemplate(grey, eye, cv2.TM_CCOEFF_NORMED)
    # the two best places in the whole photo are her two eyes, one each
    found = _peaks(score_map, eye.shape, 2)
    matched = set()
    for x, y, _ in found:
        distances = [np.hypot(x - iris_x, y - iris_y) for iris_x, iris_y in ASTRONAUT_IRISES]
        assert min(distances) <= 3, (size, found)
        matched.add(int(np.argmin(distances)))
    assert matched == {0, 1}, (size, found)


# ------------------------------------------------------------------ bad input


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"`kind`.*'eye'.*'ring'.*got 'nose'"):
        filters.make("nose", 10)


@pytest.mark.parametrize(
    ("size", "error"),
    [(2, ValueError), ((10, 2), ValueError), (0, ValueError), (-5, ValueError),
     (3.5, TypeError), ("24", TypeError), (True, TypeError), ((3, 4, 5), ValueError)],
)
@pytest.mark.parametrize("kind", KINDS)
def test_bad_size_is_rejected_naming_size(kind, size, error):
    with pytest.raises(error, match="`size`"):
        filters.make(kind, size)


@pytest.mark.parametrize("kind", ["edge", "bar", "corner"])
@pytest.mark.parametrize(("angle", "error"), [(np.nan, ValueError), (np.inf, ValueError),
                                              ("30", TypeError), (None, TypeError)])
def test_bad_angle_is_rejected_naming_angle(kind, angle, error):
    with pytest.raises(error, match="`angle`"):
        filters.make(kind, 11, angle=angle)


@pytest.mark.parametrize("kind", ["blob", "bar", "corner", "ring"])
def test_bad_polarity_names_the_choices(kind):
    with pytest.raises(ValueError, match=r"`polarity`.*'bright'.*'dark'.*got 'grey'"):
        filters.make(kind, 11, polarity="grey")


@pytest.mark.parametrize(
    ("kind", "options", "parameter"),
    [("blob", {"sigma": 0}, "sigma"), ("blob", {"sigma": -1.0}, "sigma"),
     ("blob", {"ratio": 1.0}, "ratio"), ("bar", {"width": 0}, "width"),
     ("ring", {"radius": -2}, "radius"), ("ring", {"radius": 3, "width": 7}, "width"),
     ("eye", {"iris": 0}, "iris"), ("eye", {"opening": 1.5}, "opening"),
     ("eye", {"pupil": np.nan}, "pupil")],
)
def test_bad_shape_options_name_the_parameter(kind, options, parameter):
    with pytest.raises(ValueError, match=f"`{parameter}`"):
        filters.make(kind, 15, **options)


@pytest.mark.parametrize("kind", ["eye", "edge", "bar", "corner", "ring"])
def test_zero_mean_must_be_a_bool(kind):
    with pytest.raises(TypeError, match=r"`zero_mean`.*'yes'"):
        filters.make(kind, 9, zero_mean="yes")


def test_an_option_the_kind_does_not_take_is_a_type_error_naming_the_kind():
    with pytest.raises(TypeError, match=r"filter kind 'eye'.*'angle'"):
        filters.make("eye", 15, angle=30)
