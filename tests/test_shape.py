"""The shape score against naive float64 loops, and its robustness to lighting and inversion."""

import math

import cv2
import numpy as np
import pytest
from scipy import ndimage

import patternfind
from patternfind import Filter
from patternfind.detection.rotation import rotated_score_map
from patternfind.detection.shape import (
    gradients,
    shape_model,
    shape_score_map,
    shape_scores_at,
)
from patternfind.evaluation.metrics import angle_error

SCHARR_X = np.array([[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]], np.float64) / 32


def smooth(shape, seed, sigma=1.2):
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), sigma)
    noise -= noise.min()
    return (0.1 + 0.8 * noise / noise.max()).astype(np.float32)


def naive_gradients(image):
    """Scharr derivatives in float64 with OpenCV's default border (reflect-101 = scipy 'mirror')."""
    image = image.astype(np.float64)
    return (ndimage.correlate(image, SCHARR_X, mode="mirror"),
            ndimage.correlate(image, SCHARR_X.T, mode="mirror"))


def naive_model(weights, min_contrast):
    """Interior pixels with a gradient of at least min_contrast; the strongest quarter at most."""
    gx, gy = naive_gradients(weights)
    magnitude = np.hypot(gx, gy)
    height, width = weights.shape
    points = [(magnitude[r, c], r, c) for r in range(1, height - 1) for c in range(1, width - 1)
              if magnitude[r, c] >= min_contrast]
    points.sort(key=lambda p: -p[0])
    return {(r, c) for _, r, c in points[: max(4, height * width // 4)]}


def naive_shape_map(image, filter_, min_contrast, polarity):
    """Mean cosine over the model's points, window by window, in float64."""
    model = shape_model(filter_, min_contrast=min_contrast)
    height, width = filter_.weights.shape
    gx, gy = naive_gradients(image)
    rows, cols = image.shape[0] - height + 1, image.shape[1] - width + 1
    result = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            total = 0.0
            for (dx, dy), (ux, uy) in zip(model.offsets, model.directions, strict=True):
                r, c = round(i + (height - 1) / 2 + dy), round(j + (width - 1) / 2 + dx)
                g = math.hypot(gx[r, c], gy[r, c])
                cosine = (ux * gx[r, c] + uy * gy[r, c]) / g if g >= min_contrast else 0.0
                total += abs(cosine) if polarity == "ignore" else cosine
            result[i, j] = total / len(model.offsets)
    return result


def test_model_points_are_the_strongest_interior_edges():
    weights = smooth((9, 11), 0)
    model = shape_model(Filter(weights), min_contrast=0.02)
    found = {(round(dy + 4), round(dx + 5)) for dx, dy in model.offsets}
    assert found == naive_model(weights, 0.02)
    gx, gy = naive_gradients(weights)
    for (dx, dy), (ux, uy) in zip(model.offsets, model.directions, strict=True):
        r, c = round(dy + 4), round(dx + 5)
        assert math.atan2(uy, ux) == pytest.approx(math.atan2(gy[r, c], gx[r, c]), abs=1e-5)


@pytest.mark.parametrize("polarity", ["use", "ignore"])
def test_shape_score_map_matches_a_naive_float64_loop(polarity):
    image = smooth((26, 30), 1)
    filter_ = Filter(smooth((9, 11), 2))
    expected = naive_shape_map(image, filter_, 0.02, polarity)
    scores = shape_score_map(image, filter_, min_contrast=0.02, polarity=polarity)
    np.testing.assert_allclose(scores, expected, atol=2e-5)
    # score_map dispatches to it
    if polarity == "use":
        np.testing.assert_array_equal(patternfind.score_map(image, filter_, score="shape"), scores)


def test_shape_scores_at_real_positions_match_bilinear_sampling():
    image = smooth((40, 40), 3)
    model = shape_model(Filter(smooth((11, 11), 4)), min_contrast=0.02).rotated(23.0)
    gx, gy = naive_gradients(image)
    rng = np.random.default_rng(5)
    centres = rng.uniform(8, 32, size=(7, 2))
    found = shape_scores_at(*gradients(image), model, centres, min_contrast=0.02)
    for centre, value in zip(centres, found, strict=True):
        points = centre + model.offsets  # (x, y)
        coordinates = [points[:, 1], points[:, 0]]
        sx = ndimage.map_coordinates(gx, coordinates, order=1, mode="constant")
        sy = ndimage.map_coordinates(gy, coordinates, order=1, mode="constant")
        magnitude = np.hypot(sx, sy)
        cosine = np.where(magnitude >= 0.02, (sx * model.directions[:, 0]
                                              + sy * model.directions[:, 1]) / magnitude, 0)
        assert value == pytest.approx(cosine.mean(), abs=1e-5)


def test_flat_images_score_zero_and_inversion_flips_the_sign():
    filter_ = Filter(smooth((9, 9), 6))
    flat = np.full((20, 20), 0.4, np.float32)
    assert not shape_score_map(flat, filter_).any()
    image = smooth((24, 24), 7)
    scores = shape_score_map(image, filter_)
    assert scores.min() >= -1
    assert scores.max() <= 1
    np.testing.assert_allclose(shape_score_map(1 - image, filter_), -scores, atol=1e-6)
    np.testing.assert_allclose(shape_score_map(1 - image, filter_, polarity="ignore"),
                               shape_score_map(image, filter_, polarity="ignore"), atol=1e-6)


def test_a_filter_without_edges_is_refused():
    flat = Filter(np.full((12, 12), 0.5, np.float32), name="flat")
    with pytest.raises(ValueError, match="has no edges to match; lower min_contrast or use ncc"):
        patternfind.detect(np.zeros((30, 30), np.float32), flat, score="shape")
    gentle = Filter(np.tile(np.linspace(0, 0.1, 12, dtype=np.float32), (12, 1)))
    with pytest.raises(ValueError, match=r"min_contrast=0\.5"):
        patternfind.detect(np.zeros((30, 30), np.float32), gentle, score="shape", min_contrast=0.5)


# ---------------------------------------------------------------- robustness


def plant(scene, part, angle, centre):
    height, width = part.shape
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    matrix[:, 2] += np.array(centre) - ((width - 1) / 2, (height - 1) / 2)
    size = (scene.shape[1], scene.shape[0])
    warped = cv2.warpAffine(part, matrix, size, flags=cv2.INTER_LINEAR)
    cover = cv2.warpAffine(np.ones_like(part), matrix, size, flags=cv2.INTER_LINEAR)
    return (scene * (1 - cover) + warped).astype(np.float32), cover > 0.5


ANGLE, CENTRE = 20.0, (60.0, 58.0)


@pytest.fixture(scope="module")
def scene_and_part():
    part = smooth((32, 32), 8, sigma=1.5)
    scene, covered = plant(smooth((120, 130), 9, sigma=3.0), part, ANGLE, CENTRE)
    return scene, part, covered


def lighting_variants(scene, part, covered):
    _, cols = np.nonzero(covered)
    occluded = scene.copy()
    # 30 % of the part, its left side, hidden behind something else
    hidden = covered & (np.arange(scene.shape[1])[None, :] < np.percentile(cols, 30))
    occluded[hidden] = smooth(scene.shape, 10, sigma=1.0)[hidden]
    gradient = np.linspace(0.3, 1.0, scene.shape[1], dtype=np.float32)[None, :]
    return {
        "gamma 0.5": scene**0.5,
        "gamma 2.0": scene**2.0,
        "uneven light": scene * gradient,
        "30% occluded": occluded,
        "inverted": 1 - scene,
    }


def near_truth(detections):
    return [d for d in detections
            if math.dist((d.x + d.w / 2 - 0.5, d.y + d.h / 2 - 0.5), CENTRE) < 1.5
            and angle_error(d.angle, ANGLE) < 1.0]


@pytest.mark.parametrize("case", ["gamma 0.5", "gamma 2.0", "uneven light", "30% occluded",
                                  "inverted"])
def test_shape_finds_the_part_under_lighting_changes_occlusion_and_inversion(scene_and_part, case):
    scene, part, covered = scene_and_part
    image = lighting_variants(scene, part, covered)[case]
    polarity = "ignore" if case == "inverted" else "use"
    threshold = 0.8 if case == "inverted" else 0.5
    found = patternfind.detect(image, Filter(part), angles=(0, 360), scales=(1, 1), score="shape",
                               polarity=polarity, threshold=threshold, subpixel=True)
    assert len(near_truth(found)) == 1
    assert found[0] in near_truth(found)  # the part is the best find


def test_ncc_fails_where_the_shape_score_does_not(scene_and_part):
    scene, part, covered = scene_and_part
    variants = lighting_variants(scene, part, covered)
    filter_ = Filter(part)
    # ncc's own score at the true pose, for the record of what it misses
    top, left = round(CENTRE[1] - 15.5), round(CENTRE[0] - 15.5)
    ncc_at_truth = {}
    for case, image in variants.items():
        turned = rotated_score_map(image, filter_, ANGLE, score="ncc")
        margin = (turned.shape[0] - (image.shape[0] - 31)) // -2  # canvas − filter, per side
        ncc_at_truth[case] = float(turned[top - margin - 1 : top - margin + 2,
                                          left - margin - 1 : left - margin + 2].max())
    assert ncc_at_truth["inverted"] < 0.8  # below ncc's own default threshold: a miss
    assert ncc_at_truth["30% occluded"] < 0.8  # so is the occluded part (shape: 0.79 > 0.5)
    assert not near_truth(patternfind.detect(variants["inverted"], filter_, angles=(0, 360),
                                             scales=(1, 1)))


def test_shape_without_angles_searches_upright_only(scene_and_part):
    scene, part, _ = scene_and_part
    upright, _ = plant(scene, part, 0.0, (30.0, 95.0))
    found = patternfind.detect(upright, Filter(part), score="shape", scales=(1, 1))
    assert [(d.x, d.y, d.angle) for d in found] == [(14.0, 79.0, 0.0)]
