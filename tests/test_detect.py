"""detect() on images with templates planted at known positions and scales.

The truth is where the test pasted each template, never the detector's output.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from patternfind.detection.detector import detect, load_filters, scan
from patternfind.detection.nms import box_iou
from patternfind.detection.pyramid import pyramid_scales
from patternfind.structures import Detection, Filter

STEP = 1.1


def textured_background(shape, rng):
    """Smoothed noise: texture at several sizes, but nothing like the template."""
    noise = rng.random(shape)
    smooth = ndimage.gaussian_filter(noise, sigma=(2, 2, 0)[: noise.ndim])
    return np.clip(0.5 + 1.5 * (smooth - smooth.mean()) + 0.05 * (noise - 0.5), 0, 1)


def eye_template(colour: bool) -> np.ndarray:
    """A real 24×30 patch around the astronaut's eye, in [0, 1].

    It is chosen to have contrast (a low-contrast patch on a busy background is
    swamped by the pixel of background that resizing mixes into its border) and
    structure in both directions (a smooth edge-like patch matches its own parts
    at smaller scales almost as well as the whole).
    """
    patch = data.astronaut()[200:224, 250:280] / 255.0
    return patch if colour else cv2.cvtColor(patch.astype(np.float32), cv2.COLOR_RGB2GRAY)


def plant(background, template, placements):
    """Paste the template resized by each factor at each (x, y); return the true boxes."""
    image = background.copy()
    truth = []
    for x, y, factor in placements:
        height, width = template.shape[:2]
        size = (round(width * factor), round(height * factor))
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
        resized = np.clip(cv2.resize(template.astype(np.float32), size,
                                     interpolation=interpolation), 0, 1)
        image[y : y + size[1], x : x + size[0]] = resized
        truth.append((x, y, size[0], size[1], factor))
    return image, truth


PLACEMENTS = [(20, 30, 1.0), (150, 40, 0.6), (60, 150, 1.5), (250, 170, 1.9), (300, 30, 0.8),
              (170, 120, 1.25)]


def check_found_once(detections, truth, image_shape, *, min_iou=0.7):
    boxes = np.array([[d.x, d.y, d.w, d.h] for d in detections]).reshape(-1, 4)
    true_boxes = np.array([t[:4] for t in truth], dtype=np.float64)
    iou = box_iou(true_boxes, boxes)
    for index, (x, y, w, h, factor) in enumerate(truth):
        matches = np.flatnonzero(iou[index] > 0.3)
        assert len(matches) == 1, f"template at {(x, y)} ×{factor}: {len(matches)} boxes"
        found = detections[matches[0]]
        assert iou[index, matches[0]] > min_iou, (found, (x, y, w, h))
        assert abs(found.x - x) <= 2 + 0.05 * w
        assert abs(found.y - y) <= 2 + 0.05 * h
        assert found.scale == pytest.approx(factor, rel=STEP - 1 + 0.02), (found, factor)
    assert len(detections) == len(truth), detections  # nothing else: no duplicates
    height, width = image_shape[:2]
    for found in detections:
        assert found.x >= 0
        assert found.y >= 0
        assert found.x + found.w <= width + 1e-6
        assert found.y + found.h <= height + 1e-6


@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_planted_templates_found_once_at_the_right_scale(colour, dtype):
    rng = np.random.default_rng(0)
    template = eye_template(colour)
    shape = (260, 380, 3) if colour else (260, 380)
    image, truth = plant(textured_background(shape, rng), template, PLACEMENTS)
    image = np.round(image * 255).astype(np.uint8) if dtype == np.uint8 else image.astype(dtype)
    detections = detect(image, Filter(template, name="eye"), scales=(0.5, 2.0), scale_step=STEP)
    check_found_once(detections, truth, image.shape)
    assert all(d.label == "eye" for d in detections)
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(d.score, float) and 0.7 <= d.score <= 1 for d in detections)
    levels = pyramid_scales((0.5, 2.0), scale_step=STEP)
    assert all(any(d.scale == pytest.approx(level) for level in levels) for d in detections)


def test_planted_in_noise_with_subpixel_and_rgba():
    rng = np.random.default_rng(1)
    template = eye_template(True)
    background = rng.random((200, 260, 3))
    image, truth = plant(background, template, [(10, 10, 1.0), (120, 60, 1.6), (40, 140, 0.7)])
    rgba = np.concatenate([image, np.ones((*image.shape[:2], 1))], axis=-1).astype(np.float32)
    detections = detect(rgba, Filter(template), subpixel=True)
    check_found_once(detections, truth, image.shape)


def test_exact_copy_at_scale_one_scores_one_at_the_exact_box():
    rng = np.random.default_rng(2)
    template = eye_template(False)
    image, _ = plant(textured_background((120, 150), rng), template, [(37, 51, 1.0)])
    image = np.round(image * 255).astype(np.uint8)
    filter_ = Filter.from_image(image, (37, 51, 30, 24), name="cut")
    detections = detect(image, filter_, scales=(1, 1))
    assert len(detections) == 1
    found = detections[0]
    assert (found.x, found.y, found.w, found.h) == (37.0, 51.0, 30.0, 24.0)
    assert found.score == pytest.approx(1, abs=1e-4)
    assert found.scale == 1.0
    assert found.label == "cut"
    assert found.xyxy == (37.0, 51.0, 67.0, 75.0)
    assert found.to_dict() == {"x": 37.0, "y": 51.0, "w": 30.0, "h": 24.0,
                               "score": found.score, "label": "cut", "scale": 1.0,
                               "angle": 0.0}


def test_astronaut_eye_cut_from_uint8_photo():
    image = data.astronaut()
    filter_ = Filter.from_image(image, (236, 196, 30, 24), name="eye")
    detections = detect(image, filter_, scales=(0.8, 1.25), threshold=0.9)
    assert detections
    best = detections[0]
    assert (best.x, best.y) == (236.0, 196.0)
    assert best.score == pytest.approx(1, abs=1e-4)


def test_two_filters_per_label_and_max_detections():
    rng = np.random.default_rng(3)
    eye = eye_template(False)
    flag = data.astronaut()[40:64, 400:430].mean(axis=2) / 255.0  # the flag, 24×30
    background = textured_background((200, 260), rng)
    image, eye_truth = plant(background, eye, [(20, 20, 1.0), (150, 100, 1.3)])
    image, flag_truth = plant(image, flag, [(200, 20, 1.0), (40, 120, 0.8)])
    filters = [Filter(eye, name="eye"), Filter(flag, name="flag")]
    detections = detect(image, filters, per_label=True)
    for label, truth in (("eye", eye_truth), ("flag", flag_truth)):
        check_found_once([d for d in detections if d.label == label], truth, image.shape)
    capped = detect(image, filters, per_label=True, max_detections=3)
    assert capped == detections[:3]


def test_nothing_found_is_an_empty_list():
    rng = np.random.default_rng(4)
    image = textured_background((100, 100), rng)
    assert detect(image, Filter(eye_template(False)), threshold=0.99) == []


def test_dot_with_a_threshold_and_filter_threshold():
    rng = np.random.default_rng(5)
    image = np.zeros((60, 60))
    image[20:26, 30:36] = 1.0
    image += 0.01 * rng.random(image.shape)
    weights = np.ones((6, 6))
    found = detect(image, Filter(weights, bias=-30.0), score="dot", threshold=5.0, scales=(1, 1))
    assert [(d.x, d.y) for d in found] == [(30.0, 20.0)]
    assert found[0].score == pytest.approx(6.0 + 0.01 * image[20:26, 30:36].size / 2, abs=0.3)
    own = Filter(weights, bias=-30.0, threshold=5.0, score="dot")
    assert detect(image, own, scales=(1, 1)) == found


def test_scan_keeps_maps():
    rng = np.random.default_rng(6)
    image = rng.random((80, 90))
    detections, maps = scan(image, Filter(image[10:20, 10:22]), scales=(1, 1.21), keep_maps=True)
    assert len(maps) == 3  # scales 1, 1.1, 1.21
    assert maps[0].scores.shape == (71, 79)
    assert any(d.x == 10 and d.y == 10 for d in detections)


def test_a_feature_cache_reuses_the_maps_and_changes_no_detection(monkeypatch):
    """A second search of the same image through the same cache computes no feature map."""
    from pathlib import Path

    from patternfind.detection import detector
    from patternfind.detection.pyramid import feature_pyramid_bytes

    face = Filter.load(Path(__file__).resolve().parent / "data" / "face_v0_1.npz")  # HOG, 6-px cells
    other = Filter(face.weights[:, ::-1].copy(), bias=face.bias, name="mirror", threshold=-1.0,
                   features="hog", window=face.window, feature_options=face.feature_options)
    image = data.astronaut()
    calls = []
    original = detector.feature_map
    monkeypatch.setattr(detector, "feature_map",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    options = {"threshold": -1.0, "scales": (1.0, 2.0), "scale_step": 1.2}
    cache: dict = {}
    first = scan(image, face, feature_cache=cache, keep_maps=False, **options)[0]
    levels = pyramid_scales((1.0, 2.0), scale_step=1.2)
    assert len(calls) == len(cache) == len(levels)
    assert scan(image, other, feature_cache=cache, keep_maps=False, **options)[0] == detect(
        image, other, **options)
    assert len(calls) == 2 * len(levels)  # the second scan computed nothing; detect did
    assert first == detect(image, face, **options)
    held = sum(features.nbytes for features, _ in cache.values())
    estimate = feature_pyramid_bytes(image.shape, levels, cell=6, channels=31)
    assert abs(held - estimate) <= 0.1 * held  # rounding of the cell grid only


def test_paths_as_image_and_filter(tmp_path):
    rng = np.random.default_rng(7)
    image = np.round(textured_background((90, 110, 3), rng) * 255).astype(np.uint8)
    image_path = tmp_path / "scene.png"
    cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    filter_path = tmp_path / "patch.npy"
    np.save(filter_path, image[30:50, 40:65] / 255.0)
    found = detect(image_path, str(filter_path), scales=(1, 1))
    assert found[0] == Detection(40.0, 30.0, 25.0, 20.0, found[0].score, "patch", 1.0)
    assert found[0].score == pytest.approx(1, abs=1e-4)
    assert [f.name for f in load_filters([filter_path, Filter(np.eye(3))])] == ["patch", "filter"]


# ----------------------------------------------------------------- bad input


def test_missing_image_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*nope.png"):
        detect(tmp_path / "nope.png", Filter(np.eye(3)))


def test_missing_filter_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"filter file not found: .*nope.npy"):
        detect(np.zeros((10, 10)), tmp_path / "nope.npy")


def test_filter_larger_than_image_at_every_scale():
    with pytest.raises(
        ValueError, match=r"'big' \(40×40\) is larger than the image \(50×50\) at every scale"
    ):
        detect(np.random.default_rng(0).random((50, 50)), Filter(np.eye(40), name="big"),
               scales=(2.0, 4.0))


def test_filter_that_fits_only_when_enlarging_is_scanned():
    rng = np.random.default_rng(8)
    image = rng.random((30, 30))
    found = detect(image, Filter(rng.random((40, 40))), scales=(0.5, 0.7), threshold=-1)
    assert found
    assert all(d.scale <= 0.7 + 1e-9 for d in found)


def test_all_zero_filter():
    with pytest.raises(ValueError, match=r"'zero' is all zeros"):
        detect(np.zeros((10, 10)), Filter(np.zeros((3, 3)), name="zero"), score="dot", threshold=1)


def test_flat_filter_with_ncc():
    with pytest.raises(ValueError, match=r"'flat' is flat"):
        detect(np.zeros((10, 10)), Filter(np.full((3, 3), 0.5), name="flat"))


def test_flat_masked_filter_with_ncc():
    weights = np.eye(4) + 0.5
    mask = ~np.eye(4, dtype=bool)  # the contrast is all masked out
    with pytest.raises(ValueError, match=r"'m' is flat"):
        detect(np.zeros((10, 10)), Filter(weights, mask=mask, name="m"))


@pytest.mark.parametrize("shape", [(0, 0), (0, 10, 3), (10, 0)])
def test_empty_image(shape):
    with pytest.raises(ValueError, match=r"`image` is empty"):
        detect(np.zeros(shape), Filter(np.eye(3)))


def test_colour_filter_on_grey_image():
    with pytest.raises(ValueError, match=r"'rgb' has 3 channels but the image is grey"):
        detect(np.zeros((20, 20)), Filter(np.eye(3)[..., None] * [1, 2, 3], name="rgb"))


@pytest.mark.parametrize(
    ("scales", "step", "match"),
    [
        ((2.0, 1.0), 1.1, "min <= max"),
        ((0, 1.0), 1.1, "`scales` must be positive"),
        ((-0.5, 1.0), 1.1, "`scales` must be positive"),
        ((0.5, 2.0), 1.0, "`scale_step` must be greater than 1"),
        ((0.5, 2.0), 0.9, "`scale_step` must be greater than 1"),
    ],
)
def test_bad_scales(scales, step, match):
    with pytest.raises(ValueError, match=match):
        detect(np.zeros((20, 20)), Filter(np.eye(3)), scales=scales, scale_step=step)


@pytest.mark.parametrize("threshold", [1.5, -1.01, 7])
@pytest.mark.parametrize("score", ["ncc", "cosine"])
def test_threshold_outside_minus_one_one(threshold, score):
    with pytest.raises(ValueError, match=rf"`threshold` for the '{score}' score must be in \[-1, 1\]"):
        detect(np.zeros((20, 20)), Filter(np.eye(3)), threshold=threshold, score=score)


def test_non_finite_threshold():
    with pytest.raises(ValueError, match=r"`threshold` must be finite"):
        detect(np.zeros((20, 20)), Filter(np.eye(3)), threshold=float("nan"))


def test_dot_without_any_threshold():
    with pytest.raises(ValueError, match=r"a threshold must be given for the 'dot' score of filter 'w'"):
        detect(np.zeros((20, 20)), Filter(np.eye(3), name="w"), score="dot")


def test_filter_threshold_for_another_score_is_not_used_for_dot():
    filter_ = Filter(np.eye(3), name="w", threshold=0.8, score="ncc")
    with pytest.raises(ValueError, match=r"a threshold must be given for the 'dot' score"):
        detect(np.zeros((20, 20)), filter_, score="dot")


def test_bad_score_and_nms_and_max():
    image, filter_ = np.zeros((20, 20)), Filter(np.eye(3))
    with pytest.raises(ValueError, match=r"`score` must be one of .*'sad'"):
        detect(image, filter_, score="sad")
    with pytest.raises(ValueError, match=r"`nms_iou` must be in \[0, 1\], got 1.2"):
        detect(image, filter_, nms_iou=1.2)
    with pytest.raises(ValueError, match=r"`max_detections` must be a positive integer, got 0"):
        detect(image, filter_, max_detections=0)
    with pytest.raises(TypeError, match=r"`max_detections` must be a positive integer, got 2.5"):
        detect(image, filter_, max_detections=2.5)


def test_bad_filters_argument():
    with pytest.raises(ValueError, match=r"`filters` is empty"):
        detect(np.zeros((20, 20)), [])
    with pytest.raises(TypeError, match=r"`filters` must hold Filter objects or paths, got ndarray"):
        detect(np.zeros((20, 20)), [np.eye(3)])


def test_image_with_nan():
    image = np.zeros((20, 20))
    image[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"`image` contains 1 NaN or inf"):
        detect(image, Filter(np.eye(3)))


def test_flat_image_finds_nothing_and_no_nan():
    for value in (0.0, 0.5):
        image = np.full((40, 40), value)
        assert detect(image, Filter(np.eye(5)), threshold=0.01) == []
        # Flat windows score exactly 0, so a threshold below 0 accepts them: one
        # plateau peak per level, all at the top-left corner.
        found = detect(image, Filter(np.eye(5)), threshold=-1)
        assert found
        assert all(d.score == 0 and d.x == 0 and d.y == 0 for d in found)


def test_no_duplicate_inside_a_found_smooth_object():
    rng = np.random.default_rng(3)
    coin = data.coins()[170:200, 15:45] / 255.0
    image, truth = plant(textured_background((120, 160), rng), coin, [(100, 20, 1.0)])
    check_found_once(detect(image, Filter(coin, name="coin")), truth, image.shape)


def test_filter_that_fits_only_below_scale_one_is_scanned_with_default_scales():
    rng = np.random.default_rng(9)
    image = rng.random((50, 50))
    filter_ = Filter(image[5:45, 5:45])  # fits up to scale 50 / 40 = 1.25
    found = detect(image, filter_)
    assert found
    assert all(d.scale <= 1.25 for d in found)
    assert (found[0].x, found[0].y, found[0].scale) == (5.0, 5.0, 1.0)
