"""Tests of patternfind.layers.features against scikit-image's HOG and naive references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import color, data, feature, transform

from patternfind.layers.features import (
    _cell_histograms,
    feature_channels,
    feature_map,
    hog_blocks_like_skimage,
    hog_orientation_weights,
    window_features,
)


@pytest.fixture(scope="module")
def photo():
    """scikit-image's astronaut, RGB float32 in [0, 1], resized to 375 × 500."""
    return transform.resize(data.astronaut(), (375, 500)).astype(np.float32)


@pytest.mark.parametrize("grey", [True, False])
@pytest.mark.parametrize(("cell", "bins", "block_norm"),
                         [(8, 9, "L2-Hys"), (6, 12, "L2"), (4, 9, "L1")])
def test_hog_blocks_equal_skimage_hog(photo, grey, cell, bins, block_norm):
    image = color.rgb2gray(photo).astype(np.float32) if grey else photo
    features, step = feature_map(image, kind="hog",
                                 options={"cell": cell, "bins": bins, "block_norm": block_norm})
    reference = feature.hog(image, orientations=bins, pixels_per_cell=(cell, cell),
                            cells_per_block=(2, 2), block_norm=block_norm, feature_vector=False,
                            channel_axis=None if grey else -1)
    assert step == cell
    assert features.shape == (375 // cell, 500 // cell, 4 * bins)
    assert features.dtype == np.float32
    blocks = hog_blocks_like_skimage(features, bins)
    assert blocks.shape == reference.shape
    # Both compute the same float32 gradients and float64 orientations; only the
    # float32 (ours) versus float64 (skimage) accumulation of the sums differs.
    np.testing.assert_allclose(blocks, reference, rtol=0, atol=2e-6)


def _naive_cell_histograms(image, cell, bins, span=180):
    """Dalal–Triggs cell histograms with explicit loops over cells and pixels."""
    height, width = image.shape
    g_row = np.zeros_like(image, dtype=np.float64)
    g_col = np.zeros_like(image, dtype=np.float64)
    for r in range(1, height - 1):
        for c in range(width):
            g_row[r, c] = float(image[r + 1, c]) - float(image[r - 1, c])
    for r in range(height):
        for c in range(1, width - 1):
            g_col[r, c] = float(image[r, c + 1]) - float(image[r, c - 1])
    out = np.zeros((height // cell, width // cell, bins))
    for i in range(height // cell):
        for j in range(width // cell):
            for r in range(i * cell, (i + 1) * cell):
                for c in range(j * cell, (j + 1) * cell):
                    angle = np.degrees(np.arctan2(g_row[r, c], g_col[r, c])) % span
                    k = min(int(angle // (span / bins)), bins - 1)
                    out[i, j, k] += np.hypot(g_row[r, c], g_col[r, c])
    return out / cell**2


@pytest.mark.parametrize("signed", [False, True])
def test_cell_histograms_match_a_naive_loop(signed):
    image = np.random.default_rng(0).random((21, 30)).astype(np.float32)
    ours = _cell_histograms(image[None], 5, 7, signed=signed)[0]
    expected = _naive_cell_histograms(image, 5, 7, span=360 if signed else 180)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_signed_bins_fold_onto_unsigned_ones():
    """Signed bin k and k + bins/2 are the two senses of unsigned bin k."""
    image = transform.resize(data.camera(), (64, 96)).astype(np.float32)
    signed = _cell_histograms(image[None], 8, 18, signed=True)[0]
    unsigned = _cell_histograms(image[None], 8, 9)[0]
    np.testing.assert_allclose(signed[..., :9] + signed[..., 9:], unsigned, rtol=1e-5, atol=1e-7)


def _naive_felzenszwalb(image, cell, bins):
    """Felzenszwalb features from the naive histograms, one cell and one block at a time."""
    signed = _naive_cell_histograms(image, cell, 2 * bins, span=360)
    unsigned = signed[..., :bins] + signed[..., bins:]
    rows, cols = signed.shape[:2]
    energy = np.zeros((rows + 2, cols + 2))
    energy[1:-1, 1:-1] = (unsigned**2).sum(-1)
    out = np.zeros((rows, cols, 3 * bins + 4))
    for i in range(rows):
        for j in range(cols):
            for k, (di, dj) in enumerate([(-1, -1), (-1, 0), (0, -1), (0, 0)]):
                # the 2 × 2 block whose top-left cell is (i + di, j + dj)
                block = energy[i + 1 + di:i + 3 + di, j + 1 + dj:j + 3 + dj].sum()
                norm = 1 / np.sqrt(block + 1e-10)
                clipped_signed = np.minimum(signed[i, j] * norm, 0.2)
                out[i, j, :2 * bins] += 0.5 * clipped_signed
                out[i, j, 2 * bins:3 * bins] += 0.5 * np.minimum(unsigned[i, j] * norm, 0.2)
                out[i, j, 3 * bins + k] = 0.2357 * clipped_signed.sum()
    return out


def test_felzenszwalb_features_match_a_naive_loop():
    image = transform.resize(data.camera(), (40, 56)).astype(np.float32)
    features, _ = feature_map(image, kind="hog", options={"variant": "felzenszwalb", "cell": 6})
    assert features.shape == (6, 9, 31)
    assert feature_channels("hog", {"variant": "felzenszwalb"}) == 31
    expected = _naive_felzenszwalb(image, 6, 9)
    # texture channel k of ours is the block whose top-left cell is (i - a, j - c), k = 2a + c
    expected[..., 27:] = expected[..., 27:][..., ::-1]
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-6)


def test_pixels_and_gradients(photo):
    grey = color.rgb2gray(photo).astype(np.float32)
    pixels, cell = feature_map(photo, kind="pixels")
    np.testing.assert_array_equal(pixels, photo)
    assert cell == 1
    assert feature_map(grey, kind="pixels")[0].shape == (375, 500, 1)
    gradients, cell = feature_map(photo, kind="gradients")
    assert cell == 1
    assert gradients.shape == (375, 500, feature_channels("gradients"))
    # np.gradient's interior central difference is half of [-1, 0, 1]
    grey_ref = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)  # the detector's grey: OpenCV's luma
    g_row, g_col = np.gradient(grey_ref.astype(np.float64))
    np.testing.assert_allclose(gradients[1:-1, 1:-1, 0], 2 * g_col[1:-1, 1:-1], atol=1e-5)
    np.testing.assert_allclose(gradients[1:-1, 1:-1, 1], 2 * g_row[1:-1, 1:-1], atol=1e-5)
    np.testing.assert_allclose(gradients[..., 2], np.hypot(gradients[..., 0], gradients[..., 1]),
                               rtol=1e-6)


@pytest.mark.parametrize("kind", ["pixels", "gradients", "hog"])
def test_window_features_equal_feature_map_of_each_patch(photo, kind):
    patches = np.stack([photo[y:y + 32, x:x + 40] for y, x in [(0, 0), (100, 213), (300, 450)]])
    batch = window_features(patches, kind=kind)
    for patch, features in zip(patches, batch, strict=True):
        np.testing.assert_array_equal(features, feature_map(patch, kind=kind)[0])


@pytest.mark.parametrize("variant", ["dalal-triggs", "felzenszwalb"])
def test_window_inside_an_image_matches_for_both_variants(photo, variant):
    grey = color.rgb2gray(photo).astype(np.float32)
    options = {"variant": variant, "cell": 6}
    full, _ = feature_map(grey, kind="hog", options=options)
    y, x = 10 * 6, 20 * 6
    window = grey[None, y - 12:y + 48 + 12, x - 12:x + 48 + 12]
    ours = window_features(window, kind="hog", options=options, context=12)[0]
    np.testing.assert_allclose(ours, full[10:18, 20:28], atol=1e-6)


def test_context_is_stripped(photo):
    patches = photo[None, 40:40 + 48, 64:64 + 64]
    inner = window_features(patches, kind="hog", context=8)
    assert inner.shape == (1, 4, 6, 36)
    np.testing.assert_array_equal(inner[0], feature_map(patches[0], kind="hog")[0][1:-1, 1:-1])


def test_window_inside_an_image_matches_the_image_map_with_context(photo):
    """With two cells of context, a window's features equal the detector's view of it."""
    grey = color.rgb2gray(photo).astype(np.float32)
    full, _ = feature_map(grey, kind="hog")
    y, x = 16 * 8, 20 * 8  # cell-aligned window of 8 × 8 cells
    window = grey[None, y - 16:y + 64 + 16, x - 16:x + 64 + 16]
    ours = window_features(window, kind="hog", context=16)[0]
    expected = full[16:24, 20:28]
    # the outer context cell absorbs the zero border gradient, the inner one the block norms
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="unknown"):
        feature_map(np.zeros((16, 16)), kind="hog", options={"orientations": 9})
    with pytest.raises(ValueError, match="`kind` must be one of"):
        feature_map(np.zeros((16, 16)), kind="sift")
    with pytest.raises(ValueError, match=r"`context` must be a multiple of the cell size 8"):
        window_features(np.zeros((2, 32, 32)), kind="hog", context=4)
    with pytest.raises(ValueError, match="no whole 8-pixel"):
        feature_map(np.zeros((7, 30)), kind="hog")
    with pytest.raises(ValueError, match=r"`image` must have shape"):
        feature_map(np.zeros((8, 8, 2)), kind="pixels")
    with pytest.raises(TypeError, match=r"`options\['signed'\]` must be True or False"):
        feature_map(np.zeros((16, 16)), kind="hog", options={"signed": "yes"})
    with pytest.raises(ValueError, match="NaN"):
        feature_map(np.full((8, 8), np.nan), kind="gradients")


def _edge_image(direction: str) -> np.ndarray:
    """48 × 48, dark on one side of a straight edge and bright on the other."""
    rows, cols = np.mgrid[:48, :48]
    bright = {"vertical": cols >= 24, "horizontal": rows >= 24, "diagonal": rows + cols >= 48}
    return np.where(bright[direction], np.float32(0.9), np.float32(0.1))


#: Gradient direction (dark → bright) in degrees, +x towards +y (down), of each edge.
_EDGE_GRADIENT = {"vertical": 0.0, "horizontal": 90.0, "diagonal": 45.0}


@pytest.mark.parametrize("direction", ["vertical", "horizontal", "diagonal"])
@pytest.mark.parametrize("options", [{"cell": 6, "variant": "felzenszwalb"},
                                     {"cell": 8, "bins": 9},
                                     {"cell": 6, "bins": 12, "signed": True}])
def test_hog_fold_puts_an_edge_on_its_orientation(direction, options):
    # Weights equal to the HOG of an edge image respond best to that edge: their
    # fold must peak, in every cell the edge crosses, on the edge's orientation.
    features, _ = feature_map(_edge_image(direction), kind="hog", options=options)
    folded, angles = hog_orientation_weights(features, options)
    bins = options.get("bins", 9)
    assert folded.shape == (*features.shape[:2], bins)
    span = 360.0 if options.get("signed") else 180.0
    np.testing.assert_allclose(angles, (np.arange(bins) + 0.5) * span / bins)
    on_edge = folded.max(axis=-1) > 0.5 * folded.max()
    assert on_edge.sum() >= 4
    peak = angles[folded[on_edge].argmax(axis=-1)]
    distance = np.abs((peak - _EDGE_GRADIENT[direction] + span / 2) % span - span / 2)
    assert (distance <= span / bins / 2 + 1e-9).all()


def test_hog_fold_agrees_with_skimage_cell_histograms():
    image = color.rgb2gray(data.astronaut()).astype(np.float32)
    cell_histograms = feature.hog(image, orientations=9, pixels_per_cell=(8, 8),
                                  cells_per_block=(1, 1), feature_vector=False)[:, :, 0, 0]
    for variant in ("dalal-triggs", "felzenszwalb"):
        options = {"cell": 8, "bins": 9, "variant": variant}
        features, _ = feature_map(image, kind="hog", options=options)
        folded, _ = hog_orientation_weights(features, options)
        strong = cell_histograms.max(axis=-1) > 2 * np.sort(cell_histograms, axis=-1)[:, :, -2]
        assert strong.sum() > 10  # cells with one clearly dominant orientation
        np.testing.assert_array_equal(folded[strong].argmax(axis=-1),
                                      cell_histograms[strong].argmax(axis=-1))


@pytest.mark.parametrize("variant", ["dalal-triggs", "felzenszwalb"])
@pytest.mark.parametrize("degrees", [10, 50, 90, 130, 170])
def test_hog_fold_points_at_the_gradient_of_a_ramp(variant, degrees):
    """A ramp rising along θ has its gradient at θ everywhere: the folded bin's angle is θ."""
    theta = np.deg2rad(degrees)
    rows, cols = np.indices((64, 64), dtype=np.float64)
    ramp = (cols * np.cos(theta) + rows * np.sin(theta)) / 200 + 0.5  # +x right, +y down
    options = {"cell": 8, "bins": 9, "variant": variant}
    features, _ = feature_map(ramp.astype(np.float32), kind="hog", options=options)
    folded, angles = hog_orientation_weights(features, options)
    strongest = angles[folded[1:-1, 1:-1].argmax(axis=-1)]  # interior cells
    difference = (strongest - degrees + 90) % 180 - 90  # unsigned: θ and θ + 180° are one bin
    assert np.abs(difference).max() <= 10  # half of a 20° bin


def test_hog_fold_drops_texture_and_refuses_other_shapes():
    texture_only = np.zeros((3, 4, 31))
    texture_only[..., 27:] = 1.0  # Felzenszwalb's four texture channels follow the 27 orientation ones
    folded, _ = hog_orientation_weights(texture_only, {"variant": "felzenszwalb"})
    assert folded.shape == (3, 4, 9)
    assert not folded.any()
    with pytest.raises(ValueError, match=r"\(h, w, 36\)"):
        hog_orientation_weights(np.zeros((3, 4, 35)), {})


@pytest.mark.parametrize("kind", ["pixels", "gradients", "hog"])
def test_color_false_sees_the_grey_conversion_of_a_colour_image(photo, kind):
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    on_colour, _ = feature_map(photo, kind=kind, options={"color": False})
    on_grey, _ = feature_map(grey, kind=kind)
    np.testing.assert_allclose(on_colour, on_grey, atol=1e-6)
