"""Rotation search: planted parts at known poses, rotated masks, sub-step angles, bad input."""

import math

import cv2
import numpy as np
import pytest

import patternfind
from patternfind import Filter
from patternfind.detection.rotation import (
    angle_grid,
    angle_range,
    default_angle_step,
    rotate_filter,
    rotated_score_map,
)
from patternfind.detection.scores import score_map
from patternfind.evaluation.metrics import angle_error


def textured(shape, rng, sigma):
    """Smooth random texture in [0.1, 0.9]: every window has contrast, none repeats."""
    noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), sigma)
    noise -= noise.min()
    return (0.1 + 0.8 * noise / noise.max()).astype(np.float32)


def plant(scene, part, angle, centre, scale=1.0):
    """Paste ``part`` turned ``angle`` degrees (counter-clockwise on screen) and scaled,
    with its centre (pixel-centre coordinates) at ``centre``; returns the new scene."""
    height, width = part.shape
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, scale)
    matrix[:, 2] += np.array(centre) - ((width - 1) / 2, (height - 1) / 2)
    size = (scene.shape[1], scene.shape[0])
    warped = cv2.warpAffine(part, matrix, size, flags=cv2.INTER_LINEAR)
    cover = cv2.warpAffine(np.ones_like(part), matrix, size, flags=cv2.INTER_LINEAR)
    return (scene * (1 - cover) + warped).astype(np.float32)


def centre_of(detection):
    """A detection's centre in pixel-centre coordinates (pixel i covers [i − 0.5, i + 0.5])."""
    return detection.x + detection.w / 2 - 0.5, detection.y + detection.h / 2 - 0.5


@pytest.fixture(scope="module")
def part():
    return textured((32, 32), np.random.default_rng(7), 1.5)


def planted_scenes(part, *, seed=3):
    """Parts turned every 7.3° over the full turn, 8 to an image, alternating scale 1 and 1.21.

    The scenes' sides divide by 1.21 exactly, so the pyramid level keeps the aspect ratio.
    """
    rng = np.random.default_rng(seed)
    angles = [k * 7.3 for k in range(50)]  # 0 … 357.7
    scenes = []
    for first in range(0, len(angles), 8):
        scene = textured((242, 363), rng, 3.0)
        truths = []
        for slot, angle in enumerate(angles[first : first + 8]):
            row, col = divmod(slot, 4)
            centre = (42 + 80 * col + rng.uniform(-3, 3), 50 + 100 * row + rng.uniform(-3, 3))
            scale = 1.21 if (first + slot) % 2 else 1.0
            scene = plant(scene, part, angle, centre, scale)
            truths.append((angle, centre, scale))
        scenes.append((scene, truths))
    return scenes


@pytest.mark.slow
@pytest.mark.parametrize("score", ["ncc", "shape"])
def test_planted_parts_every_7_3_degrees_are_found_once_at_their_pose(part, score):
    filter_ = Filter(part, name="part")
    angle_errors, centre_errors = [], []
    for scene, truths in planted_scenes(part):
        found = patternfind.detect(scene, filter_, angles=(0, 360), scales=(1, 1.21),
                                   scale_step=1.21, score=score, subpixel=True)
        assert len(found) == len(truths), [(d.angle, centre_of(d), d.score) for d in found]
        for angle, centre, scale in truths:
            near = [d for d in found if math.dist(centre_of(d), centre) < 8]
            assert len(near) == 1
            assert near[0].scale == pytest.approx(scale, rel=0.01)
            angle_errors.append(angle_error(near[0].angle, angle))
            centre_errors.append(math.dist(centre_of(near[0]), centre))
    print(f"{score}: angle error mean {np.mean(angle_errors):.3f} max {max(angle_errors):.3f}°, "
          f"centre error mean {np.mean(centre_errors):.3f} max {max(centre_errors):.3f} px")
    assert max(angle_errors) <= 0.5
    assert max(centre_errors) <= 0.5


def test_zero_degrees_equals_the_upright_score_map_exactly(part):
    rng = np.random.default_rng(0)
    image = textured((60, 70), rng, 2.0)
    mask = np.ones(part.shape, bool)
    mask[:5, :9] = False
    for filter_ in (Filter(part), Filter(part, mask=mask)):
        for score in ("ncc", "cosine", "dot"):
            expected = score_map(image, filter_, score=score)
            np.testing.assert_array_equal(rotated_score_map(image, filter_, 0.0, score=score),
                                          expected)
            np.testing.assert_array_equal(rotated_score_map(image, filter_, 360.0, score=score),
                                          expected)


def naive_masked_ncc(image, weights, mask):
    """NCC over the mask's pixels only, window by window, in float64."""
    height, width = mask.shape
    template = weights[mask].astype(np.float64)
    template -= template.mean()
    rows, cols = image.shape[0] - height + 1, image.shape[1] - width + 1
    result = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            window = image[i : i + height, j : j + width][mask].astype(np.float64)
            window -= window.mean()
            denominator = np.sqrt((window**2).sum() * (template**2).sum())
            result[i, j] = window @ template / denominator if denominator > 0 else 0
    return result


@pytest.mark.parametrize("angle", [30.0, 90.0, 211.5])
def test_rotated_filter_scores_only_its_mask_like_a_naive_loop(angle):
    rng = np.random.default_rng(1)
    weights = textured((13, 17), rng, 1.0)
    image = textured((40, 44), rng, 1.0)
    turned, mask = rotate_filter(weights, None, angle)
    # the canvas's corners are outside the mask (unless the turn is a quarter turn), and
    # the mask is the turned rectangle's area
    assert (not mask[0, 0] and not mask[-1, -1]) or angle % 90 == 0
    assert mask.sum() == pytest.approx(13 * 17, rel=0.08)
    scores = rotated_score_map(image, Filter(weights), angle, score="ncc")
    np.testing.assert_allclose(scores, naive_masked_ncc(image, turned, mask), atol=2e-5)
    # pixels outside the mask never count: changing them changes no score
    changed = image.copy()
    height, width = mask.shape
    changed[:height, :width][~mask] = rng.random(int((~mask).sum()))
    np.testing.assert_array_equal(rotated_score_map(changed, Filter(weights), angle)[0, 0],
                                  scores[0, 0])


def test_rotating_by_90_degrees_moves_pixels_exactly():
    # sides of the same parity: the turned pixels land on whole pixels of the canvas
    weights = np.arange(15, dtype=np.float32).reshape(3, 5) / 15
    turned, mask = rotate_filter(weights, None, 90.0)
    # counter-clockwise on screen: the top row becomes the left column, read bottom-up
    assert turned.shape == (5, 3)
    np.testing.assert_allclose(turned, np.rot90(weights), atol=1e-5)
    assert mask.all()
    # sides of different parity keep the filter's centre on the detector's grid, so the
    # turned pixels fall between canvas pixels: one more row, interpolated
    turned, mask = rotate_filter(weights[:, :4], None, 90.0)
    assert turned.shape == (5, 4)
    assert mask.sum() == pytest.approx(12, abs=4)


def test_wrapping_range_through_zero_finds_parts_on_both_sides(part):
    rng = np.random.default_rng(5)
    scene = textured((90, 160), rng, 3.0)
    scene = plant(scene, part, 6.0, (40.0, 45.0))
    scene = plant(scene, part, 353.0, (118.0, 44.0))
    found = patternfind.detect(scene, Filter(part), angles=(350, 10), scales=(1, 1), subpixel=True)
    assert len(found) == 2
    by_x = sorted(found, key=lambda d: d.x)
    assert angle_error(by_x[0].angle, 6.0) <= 0.5
    assert angle_error(by_x[1].angle, 353.0) <= 0.5
    assert 350 <= by_x[1].angle < 360
    assert 0 <= by_x[0].angle <= 10
    # outside the range: nothing
    assert patternfind.detect(scene, Filter(part), angles=(40, 80), scales=(1, 1)) == []


def test_angles_none_is_todays_search_and_angle_zero():
    image = patternfind.load_image("samples/astronaut.png")
    eye = Filter.load("samples/eye.npy")
    upright = patternfind.detect(image, eye)
    assert [d.angle for d in upright] == [0.0] * len(upright)
    assert [(d.x, d.y) for d in upright] == [(192.0, 93.0), (235.0, 95.0)]


def test_default_step_follows_the_filter_size():
    # the outermost pixel (half-diagonal r) moves about one pixel per step
    for size in (16, 32, 64):
        step = default_angle_step(size, size)
        radius = math.hypot(size, size) / 2
        assert radius * math.radians(step) == pytest.approx(1.0, rel=0.01)
    angles, full = angle_grid(0, 360, 1.3)
    assert full
    assert angles[0] == 0
    assert angles[-1] < 360
    assert np.diff(angles).max() <= 1.3
    angles, full = angle_grid(350, 20, 3.0)
    assert not full
    assert angles[0] == 350
    assert angles[-1] == pytest.approx(370)


def test_corners_turn_counter_clockwise_on_screen():
    detection = patternfind.Detection(x=10, y=20, w=40, h=20, score=1, angle=90)
    corners = np.array(detection.corners)
    # turned 90° counter-clockwise: the filter's top-left corner goes to the bottom-left
    np.testing.assert_allclose(corners, [[20, 50], [20, 10], [40, 10], [40, 50]], atol=1e-9)
    upright = patternfind.Detection(x=10, y=20, w=40, h=20, score=1)
    np.testing.assert_allclose(upright.corners, [[10, 20], [50, 20], [50, 40], [10, 40]])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"angles": (0, 360), "angle_step": 0}, "angle_step"),
        ({"angles": (0, 360), "angle_step": -1.0}, "angle_step"),
        ({"angles": (0, 10), "angle_step": 20.0}, "angle_step"),
        ({"angles": (float("nan"), 10)}, "angles"),
        ({"angles": (0, float("nan"))}, "angles"),
        ({"angles": (10, -20)}, "start <= stop"),
        ({"angles": (-10, 400)}, "at most 360"),
        ({"angles": (0, 1, 2)}, "pair"),
        ({"angle_step": 2.0}, "needs `angles`"),
        ({"polarity": "ignore", "score": "ncc"}, "shape"),
        ({"polarity": "sideways"}, "polarity"),
        ({"min_contrast": 0.0}, "min_contrast"),
        ({"min_contrast": float("nan")}, "min_contrast"),
    ],
)
def test_bad_rotation_options_name_the_value(part, options, message):
    with pytest.raises(ValueError, match=message):
        patternfind.detect(np.zeros((40, 40), np.float32), Filter(part), **options)


def test_polarity_with_a_filter_scored_by_ncc_is_an_error(part):
    with pytest.raises(ValueError, match="shape"):
        patternfind.detect(textured((40, 40), np.random.default_rng(0), 2), Filter(part),
                           polarity="ignore")


def test_angle_range_reads_wrapping_ranges():
    assert angle_range((350, 10)) == (350, 20)
    assert angle_range((0, 360)) == (0, 360)
    assert angle_range((-45, 45)) == (-45, 90)
    assert angle_range((30, 30)) == (30, 0)


def round_masked_part(rng):
    part = textured((32, 32), rng, 1.5)
    yy, xx = np.mgrid[:32, :32]
    return part, np.hypot(xx - 15.5, yy - 15.5) <= 13


def test_a_part_whose_turned_canvas_crosses_the_border_is_found():
    # a round mask turned 45°: its 46-pixel canvas leaves the image, the disc does not
    rng = np.random.default_rng(11)
    part, mask = round_masked_part(rng)
    scene = textured((90, 120), rng, 3.0)
    scene = plant(scene, part, 45.0, (14.5, 40.0))
    scene = plant(scene, part, 120.0, (100.0, 75.5))
    found = patternfind.detect(scene, Filter(part, mask=mask), angles=(0, 360), scales=(1, 1),
                               subpixel=True)
    assert len(found) == 2
    first, second = sorted(found, key=lambda d: d.x)
    assert angle_error(first.angle, 45.0) <= 0.5
    assert math.dist(centre_of(first), (14.5, 40.0)) <= 0.5
    assert angle_error(second.angle, 120.0) <= 0.5
    assert math.dist(centre_of(second), (100.0, 75.5)) <= 0.5


def test_a_part_whose_mask_leaves_the_image_is_not_found():
    rng = np.random.default_rng(11)
    part, mask = round_masked_part(rng)
    scene = plant(textured((90, 120), rng, 3.0), part, 45.0, (8.0, 40.0))  # disc cut by 5 px
    found = patternfind.detect(scene, Filter(part, mask=mask), angles=(0, 360), scales=(1, 1),
                               threshold=0.5)
    for detection in found:  # whatever scores, its disc lies on the image
        cx, cy = centre_of(detection)
        assert cx - 13 >= -0.5 - 1e-6
        assert math.dist((cx, cy), (8.0, 40.0)) > 4
