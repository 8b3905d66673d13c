"""Every worked example of the lecture (Lecture 5, Convolutional Neural Networks).

Each runs conv2d/pool2d on real arrays and checks the sizes and parameter counts
the lecture gives, and each is its own test.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import correlate

from patternfind.layers.conv import conv2d, dense_params, num_params, output_size, pool2d


@pytest.fixture
def rng():
    return np.random.default_rng(5)


def image(rng, *shape):
    return rng.random(shape, dtype=np.float32)


def test_32x32x3_with_one_5x5x3_filter_gives_28x28x1(rng):
    x = image(rng, 32, 32, 3)
    assert conv2d(x, image(rng, 5, 5, 3, 1)).shape == (28, 28, 1)
    # the same filter without a K axis gives the single activation map itself
    assert conv2d(x, image(rng, 5, 5, 3)).shape == (28, 28)


def test_32x32x3_with_four_5x5x3_filters_gives_28x28x4(rng):
    assert conv2d(image(rng, 32, 32, 3), image(rng, 5, 5, 3, 4)).shape == (28, 28, 4)


def test_28x28x4_with_ten_5x5x4_filters_gives_24x24x10(rng):
    assert conv2d(image(rng, 28, 28, 4), image(rng, 5, 5, 4, 10)).shape == (24, 24, 10)


def test_stacked_layers_shrink_32_to_28_to_24(rng):
    first = conv2d(image(rng, 32, 32, 3), image(rng, 5, 5, 3, 4))
    second = conv2d(first, image(rng, 5, 5, 4, 10))
    assert (first.shape, second.shape) == ((28, 28, 4), (24, 24, 10))


def test_7x7_with_3x3_stride_1_gives_5x5(rng):
    assert conv2d(image(rng, 7, 7), image(rng, 3, 3), stride=1).shape == (5, 5)
    assert output_size(7, 3, stride=1) == 5


def test_7x7_with_3x3_stride_2_gives_3x3(rng):
    assert conv2d(image(rng, 7, 7), image(rng, 3, 3), stride=2, padding=0).shape == (3, 3)
    assert output_size(7, 3, stride=2) == 3


def test_7x7_with_3x3_stride_3_does_not_fit(rng):
    message = (
        r"\(7 − 3 \+ 2·0\)/3 \+ 1 = 2\.33 is not a whole number; change the stride or the padding"
    )
    with pytest.raises(ValueError, match=message):
        conv2d(image(rng, 7, 7), image(rng, 3, 3), stride=3, padding=0)
    with pytest.raises(ValueError, match=message):
        output_size(7, 3, stride=3)


def test_7x7_with_3x3_stride_1_pad_1_gives_7x7(rng):
    assert conv2d(image(rng, 7, 7), image(rng, 3, 3), padding=1).shape == (7, 7)
    assert output_size(7, 3, padding=1) == 7


def test_32x32x3_ten_5x5_filters_stride_1_pad_2_gives_32x32x10_and_760_parameters(rng):
    weights = image(rng, 5, 5, 3, 10)
    bias = image(rng, 10)
    assert conv2d(image(rng, 32, 32, 3), weights, bias, stride=1, padding=2).shape == (32, 32, 10)
    assert num_params(5, 3, 10) == 760
    assert num_params(5, 3, 10) == weights.size + bias.size


def test_fully_connected_32x32x3_to_32x32x10_has_31457280_parameters():
    assert dense_params((32, 32, 3), (32, 32, 10)) == 31_457_280
    assert dense_params((32, 32, 3), (32, 32, 10)) == 32 * 32 * 10 * 32 * 32 * 3


def test_six_1x1_filters_on_32x32x3_give_32x32x6_and_24_parameters(rng):
    x = image(rng, 32, 32, 3)
    weights = image(rng, 1, 1, 3, 6)
    result = conv2d(x, weights, stride=1, padding=0)
    assert result.shape == (32, 32, 6)
    # a 1×1 filter mixes the channels of one pixel: a matrix product per pixel
    np.testing.assert_allclose(result, x @ weights[0, 0], rtol=1e-5)
    assert num_params(1, 3, 6) == 6 * (1 * 1 * 3 + 1) == 24


@pytest.mark.parametrize(("f", "p"), [(3, 1), (5, 2), (7, 3)])
def test_padding_half_the_filter_keeps_the_size(rng, f, p):
    """The lecture's P = (F − 1)/2 is SciPy's "same" correlation with zero padding."""
    x, weights = image(rng, 32, 32, 3), image(rng, f, f, 3, 2)
    result = conv2d(x, weights, padding=p)
    assert result.shape == (32, 32, 2)
    assert output_size(32, f, padding=p) == 32
    for k in range(2):
        same = sum(correlate(x[..., c], weights[..., c, k], mode="same") for c in range(3))
        np.testing.assert_allclose(result[..., k], same, rtol=1e-4, atol=1e-4)


def test_pool_4x4_f2_s1_gives_3x3(rng):
    assert pool2d(image(rng, 4, 4), 2, stride=1).shape == (3, 3)


def test_pool_4x4_f2_s2_gives_2x2(rng):
    assert pool2d(image(rng, 4, 4), 2, stride=2).shape == (2, 2)


def test_pool_4x4_f3_s1_gives_2x2_from_different_windows():
    x = np.arange(16.0).reshape(4, 4)
    by_two = pool2d(x, 2, stride=2)
    by_three = pool2d(x, 3, stride=1)
    assert by_three.shape == by_two.shape == (2, 2)
    # same size, different computation: 3×3 windows overlapping, not 2×2 tiles
    np.testing.assert_array_equal(by_two, [[5, 7], [13, 15]])
    np.testing.assert_array_equal(by_three, [[10, 11], [14, 15]])


def test_pooling_has_no_parameters_and_keeps_channels(rng):
    x = image(rng, 4, 4, 3)
    # W' × H' × K with K = C: pooling works on each channel alone
    result = pool2d(x, 2, stride=2, mode="avg")
    assert result.shape == (2, 2, 3)
    np.testing.assert_allclose(result[0, 0], x[:2, :2].mean(axis=(0, 1)), rtol=1e-6)


def test_keras_example_four_28x28x3_images_two_3x3_filters_same(rng):
    # tf.keras.layers.Conv2D(2, 3, padding='same') on input_shape (4, 28, 28, 3)
    result = conv2d(image(rng, 4, 28, 28, 3), image(rng, 3, 3, 3, 2), padding="same")
    assert result.shape == (4, 28, 28, 2)
