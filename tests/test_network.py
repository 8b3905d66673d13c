"""Tests of nested conv layers (patternfind.layers.network) and the 'cnn' feature kind.

Every backward pass is checked against central finite differences in float64;
the fully-convolutional property is checked window by window; parameter counts
against the lecture's formula K(F²C + 1).
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from gradient_check import numerical_gradient, relative_error

from patternfind import detect, load_filter, train_filter
from patternfind.cli import main
from patternfind.detection.detector import scan
from patternfind.layers.features import feature_map, window_features
from patternfind.layers.network import (
    DEFAULT_LAYERS,
    AvgPool,
    Conv,
    LocalContrast,
    MaxPool,
    Network,
    ReLU,
)
from patternfind.structures import Filter


def _float64_network(layers, channels, seed=0):
    network = Network(layers, channels=channels, seed=seed)
    for layer in network.layers:
        if isinstance(layer, Conv):
            layer.weights = layer.weights.astype(np.float64)
            layer.bias = np.random.default_rng(seed).standard_normal(layer.k)
    return network


# ---------------------------------------------------------------- layer gradients


@pytest.mark.parametrize(
    ("layer", "size"),
    [(Conv(3, 3), 7), (Conv(2, 3, stride=2), 9), (Conv(2, 3, padding="same"), 7),
     (Conv(2, 2, stride=2, padding=1), 8), (ReLU(), 7), (MaxPool(2), 8), (MaxPool(3, stride=1), 7),
     (MaxPool(2, stride=1), 7), (AvgPool(2), 8), (AvgPool(3, stride=2), 9),
     (LocalContrast(3, eps=0.5), 7), (LocalContrast(5, eps=0.1), 8),
     (Conv(4, 3, groups=2), 7), (Conv(2, 3, stride=2, padding=1, groups=2), 9)],
    ids=repr,
)
def test_layer_backward_matches_finite_differences(layer, size):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, size, size, 2))
    if isinstance(layer, Conv):
        layer.initialise(2, rng)
        layer.weights = layer.weights.astype(np.float64)
        layer.bias = rng.standard_normal(layer.k)
    out, cache = layer.forward(x)
    upstream = rng.standard_normal(out.shape)

    def loss():
        return float(np.sum(layer.forward(x)[0] * upstream))

    grad_x, grads = layer.backward(upstream, cache)
    assert relative_error(grad_x, numerical_gradient(loss, x)) < 1e-5
    for name, value in layer.params().items():
        assert relative_error(grads[name], numerical_gradient(loss, value)) < 1e-5


def test_whole_network_backward_matches_finite_differences():
    rng = np.random.default_rng(2)
    network = _float64_network(
        [Conv(3, 3), ReLU(), MaxPool(2), Conv(4, 2, stride=2, padding=1), ReLU(), AvgPool(2)], 2)
    x = rng.standard_normal((2, *network.fitted_size(11, 11), 2))  # fits every layer
    out, caches = network.forward(x, keep_cache=True)
    upstream = rng.standard_normal(out.shape)

    def loss():
        return float(np.sum(network.forward(x)[0] * upstream))

    grad_x, grads = network.backward(upstream, caches)
    assert relative_error(grad_x, numerical_gradient(loss, x)) < 1e-5
    for key, value in network.parameters().items():
        assert relative_error(grads[key], numerical_gradient(loss, value)) < 1e-5
    # training skips the input gradient but must give the same parameter gradients
    skipped, same = network.backward(upstream, caches, input_gradient=False)
    assert skipped is None
    for key in grads:
        np.testing.assert_allclose(same[key], grads[key])


def test_training_objective_gradient_matches_finite_differences():
    """The end-to-end gradient of the loss + L2 (filter and network) used by fit_network."""
    from patternfind.learn.network_training import _Model

    rng = np.random.default_rng(3)
    network = _float64_network([Conv(2, 3), ReLU(), MaxPool(2), Conv(3, 2), ReLU()], 1)
    model = _Model(network, (10, 10), margin=0)
    theta = np.concatenate([model.pack()[: model.filter_slice.start],
                            rng.standard_normal(model.filter_slice.stop - model.filter_slice.start)])
    x = rng.standard_normal((6, 10, 10, 1))
    y = np.array([1, -1, 1, 1, -1, -1], dtype=np.float64)
    for loss in ("logistic", "hinge"):
        value, grad, grad_b = model.gradient(theta, 0.3, x, y, loss=loss, l2=0.1)
        assert value == pytest.approx(model.objective(theta, 0.3, x, y, loss=loss, l2=0.1))
        numeric = numerical_gradient(
            lambda loss=loss: model.objective(theta, 0.3, x, y, loss=loss, l2=0.1), theta)
        assert relative_error(grad, numeric) < 1e-5
        numeric_b = (model.objective(theta, 0.3 + 1e-6, x, y, loss=loss, l2=0.1)
                     - model.objective(theta, 0.3 - 1e-6, x, y, loss=loss, l2=0.1)) / 2e-6
        assert grad_b == pytest.approx(numeric_b, rel=1e-5)


def test_patience_counts_steps_not_epochs_on_a_one_batch_set():
    """With one mini-batch per epoch, early stopping waits _PATIENCE stretches of ≥ 10 steps."""
    from patternfind.learn.optimize import _CHECK_STEPS, _PATIENCE

    patches, labels = _xor_patches(60, seed=4)
    fitted = train_filter(patches, labels, features="cnn", network=[Conv(3, 5), ReLU(), MaxPool(2)],
                          seed=1, batch_size=256)
    meta = fitted.meta
    assert meta["options"]["train_samples"] <= 256  # one step per epoch
    waited = meta["epochs"] - meta["best_epoch"]
    assert waited >= _PATIENCE * _CHECK_STEPS or meta["epochs"] == meta["options"]["epochs"]


@pytest.mark.parametrize("epochs", [12, None], ids=["short-fit", "default-length"])
def test_averaged_fit_keeps_the_moving_average_of_the_iterates(monkeypatch, epochs):
    """fit_network(average=True) keeps d^t θ0 + (1 − d) Σ d^(t−i) θi at the best epoch."""
    from patternfind.learn import network_training
    from patternfind.learn.optimize import _Optimizer

    starts, iterates = [], []
    real_step = _Optimizer.step

    def recording_step(self, w, b, grad_w, grad_b):
        starts.append(np.append(w, b).astype(np.float64))
        w, b = real_step(self, w, b, grad_w, grad_b)
        iterates.append(np.append(w, b).astype(np.float64))
        return w, b

    monkeypatch.setattr(_Optimizer, "step", recording_step)
    patches, labels = _xor_patches(300, seed=5)
    network = Network([Conv(3, 5), ReLU(), MaxPool(2)], channels=1, seed=0)
    record = network_training.fit_network(
        patches[..., None], np.where(labels, 1.0, -1.0), network, average=True,
        options=network_training.FitOptions(seed=0, epochs=epochs, batch_size=64))
    per_epoch = -(-record["options"]["train_samples"] // 64)
    # the average's span 1 / (1 − d) is 100 steps, or a fifth of the steps the fit may take
    decay = min(0.99, 1 - 5 / (record["options"]["epochs"] * per_epoch))
    assert (decay == 0.99) == (epochs is None)
    steps = record["best_epoch"] * per_epoch
    weights = decay ** np.arange(steps)[::-1]  # the best epoch's last iterate has age 0
    expected = decay ** steps * starts[0] + (1 - decay) * (
        weights[:, None] * np.array(iterates[:steps])).sum(axis=0)
    kept = np.concatenate([*(value.ravel() for value in record["feature_params"].values()),
                           record["w"].ravel(), [record["b"]]])
    np.testing.assert_allclose(kept, expected, rtol=1e-4, atol=1e-5)
    # and it is neither that epoch's last iterate nor the plain mean of the iterates
    assert np.abs(kept - iterates[steps - 1]).max() > 1e-3
    assert np.abs(kept - np.mean(iterates[:steps], axis=0)).max() > 1e-3


def test_fit_network_rejects_an_average_that_is_not_a_bool():
    """A string such as "no" is truthy: it must not silently turn the average on."""
    from patternfind.learn import network_training

    patches, labels = _xor_patches(20, seed=1)
    network = Network([Conv(3, 5), ReLU(), MaxPool(2)], channels=1, seed=0)
    with pytest.raises(TypeError, match=r"`average` must be True or False, got 'no'"):
        network_training.fit_network(patches[..., None], np.where(labels, 1.0, -1.0), network,
                                     average="no")


def test_train_detector_averages_its_network_fits(monkeypatch):
    """Every mining round's network fit keeps the moving average; train_filter's do not."""
    from test_learn import _scene

    from patternfind.learn import detector_training, patch_training

    calls = []
    real_fit = detector_training.fit_network

    def recording_fit(*args, **kwargs):
        calls.append(kwargs.get("average", False))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(detector_training, "fit_network", recording_fit)
    monkeypatch.setattr(patch_training, "fit_network", recording_fit)
    train = [_scene(seed) for seed in range(2)]
    detector_training.train_detector([image for image, _ in train], [boxes for _, boxes in train],
                                     features="cnn", network=[Conv(3, 5), ReLU(), MaxPool(2)],
                                     mine_rounds=1, epochs=2, ensemble=1, progress=False)
    assert len(calls) >= 2  # the first fit and the mining round's
    assert all(calls)
    patches, labels = _xor_patches(60, seed=4)
    train_filter(patches, labels, features="cnn", network=[Conv(3, 5), ReLU(), MaxPool(2)],
                 epochs=2)
    assert calls[-1] is False


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "layers",
    [
        DEFAULT_LAYERS,
        [Conv(3, 3), ReLU(), MaxPool(3, stride=1), Conv(2, 3, stride=2), ReLU(), AvgPool(2)],
        [Conv(2, 4, stride=2), ReLU(), MaxPool(3, stride=2)],
        [LocalContrast(5), Conv(3, 3), ReLU(), MaxPool(2)],
        [Conv(4, 3), ReLU(), MaxPool(2), Conv(6, 3, groups=2), ReLU()],
    ],
    ids=["default", "overlapping-pool-stride2-conv", "stride2-conv-overlapping-pool",
         "local-contrast-first", "grouped-conv"],
)
def test_network_on_a_whole_image_equals_the_network_on_every_window(layers):
    """The fully-convolutional property that makes the detector's boxes right."""
    network = Network(layers, channels=3, seed=4)
    image = np.random.default_rng(5).random((1, 41, 37, 3), dtype=np.float32)
    whole = network.forward(image)[0][0]
    stride, window = network.total_stride, network.fitted_size(network.receptive_field,
                                                              network.receptive_field)[0]
    for i in range(whole.shape[0]):
        for j in range(whole.shape[1]):
            cut = image[:, i * stride:i * stride + window, j * stride:j * stride + window]
            np.testing.assert_allclose(network.forward(cut)[0][0, 0, 0], whole[i, j],
                                       rtol=1e-5, atol=1e-6)
    # the map has as many entries as whole windows fit into the image
    assert whole.shape[:2] == ((41 - window) // stride + 1, (37 - window) // stride + 1)


@pytest.mark.parametrize(
    "layers",
    [
        [Conv(4, 3), ReLU(), MaxPool(2), Conv(6, 3), ReLU(), MaxPool(3, stride=1)],
        [ReLU(), MaxPool(2), Conv(3, 3), ReLU(), AvgPool(2), Conv(2, 2), ReLU()],
        [Conv(4, 3), ReLU(), ReLU(), MaxPool(2, stride=1), Conv(6, 3, groups=2), ReLU()],
        [ReLU(), Conv(3, 3), ReLU()],
    ],
    ids=["relu-maxpool", "relu-first-and-avgpool", "two-relus-overlapping-pool",
         "relu-first-then-conv"],
)
def test_scoring_without_caches_equals_the_layers_one_after_another(layers):
    """Detection reorders ReLU and a following max pool; the values must not change."""
    from patternfind.layers.conv import conv2d, pool2d

    network = _random_biases(Network(layers, channels=2, seed=3), seed=3)
    image = np.random.default_rng(6).standard_normal((2, 23, 19, 2)).astype(np.float32)
    before = image.copy()
    height, width = network.fitted_size(23, 19)
    expected = image[:, :height, :width]
    for layer in network.layers:
        if isinstance(layer, ReLU):
            expected = np.maximum(expected, 0)
        elif isinstance(layer, Conv):
            groups = np.split(expected, layer.groups, axis=3)
            weights = np.split(layer.weights, layer.groups, axis=3)
            biases = np.split(layer.bias, layer.groups)
            expected = np.concatenate([conv2d(x, w, b) for x, w, b in
                                       zip(groups, weights, biases, strict=True)], axis=3)
        else:
            expected = pool2d(expected, layer.f, stride=layer.stride, mode=layer.mode)
    np.testing.assert_array_equal(network.forward(image)[0], expected)
    np.testing.assert_array_equal(network.forward(image, keep_cache=True)[0], expected)
    np.testing.assert_array_equal(image, before)  # a leading ReLU did not rectify the caller's array


def test_local_contrast_equals_a_naive_loop_and_ignores_brightness_and_contrast():
    rng = np.random.default_rng(6)
    x = rng.random((2, 9, 8, 3))
    layer = LocalContrast(5, eps=0.05)
    out = layer.forward(x)[0]
    assert out.shape == (2, 5, 4, 3)
    for n, i, j, c in np.ndindex(*out.shape):  # a loop over outputs, independent of pool2d
        window = x[n, i:i + 5, j:j + 5, c]
        expected = (x[n, i + 2, j + 2, c] - window.mean()) / np.sqrt(window.var() + 0.05 ** 2)
        assert out[n, i, j, c] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # a brighter, higher-contrast copy: the same output, up to the eps floor (eps scaled too)
    scaled = LocalContrast(5, eps=0.05 * 3).forward(3 * x + 0.4)[0]
    np.testing.assert_allclose(scaled, out, rtol=1e-9, atol=1e-12)


def test_receptive_field_and_stride_follow_the_layer_arithmetic():
    network = Network(DEFAULT_LAYERS)
    # conv5 → R 5; pool2 → R 6, J 2; conv3 → R 10; pool2 → R 12, J 4
    assert (network.receptive_field, network.total_stride) == (12, 4)
    assert network.output_shape(24, 24) == (4, 4, 16)
    assert network.fitted_size(25, 27) == (24, 24)
    padded = Network([Conv(4, 3, padding="same"), ReLU(), MaxPool(2)])
    assert padded.geometry.offset == 1
    assert padded.output_shape(8, 8) == (4, 4, 4)  # 'same' keeps 8, the pool halves it


def test_parameter_counts_match_the_lecture_formula():
    # the lecture: 10 filters of 5×5 on 32×32×3, pad 2 → 10·(5·5·3 + 1) = 760 parameters
    assert Network([Conv(10, 5, padding=2)], channels=3).num_params == 760
    # 6 1×1 filters on 3 channels: 6·(1·1·3 + 1)
    assert Network([Conv(6, 1)], channels=3).num_params == 24
    network = Network(DEFAULT_LAYERS, channels=3)
    counted = sum(value.size for value in network.parameters().values())
    assert network.num_params == counted == 8 * (5 * 5 * 3 + 1) + 16 * (3 * 3 * 8 + 1)
    assert "760" in Network([Conv(10, 5, padding=2)], channels=3).describe(input_size=(32, 32))
    assert "32×32×10" in Network([Conv(10, 5, padding=2)], channels=3).describe(
        input_size=(32, 32))


def test_a_grouped_conv_is_the_dense_conv_with_zeros_between_its_groups():
    """groups=2: each half of the filters sees only its half of the channels."""
    from patternfind.layers.conv import conv2d

    x = np.random.default_rng(20).standard_normal((2, 9, 9, 6)).astype(np.float32)
    grouped = Network([Conv(4, 3, stride=2, padding=1, groups=2)], channels=6, seed=1)
    _random_biases(grouped, seed=1)  # He initialisation leaves them zero
    weights, bias = grouped.layers[0].weights, grouped.layers[0].bias
    assert weights.shape == (3, 3, 3, 4)
    dense = np.zeros((3, 3, 6, 4), np.float32)
    dense[:, :, :3, :2] = weights[..., :2]
    dense[:, :, 3:, 2:] = weights[..., 2:]
    np.testing.assert_allclose(grouped.forward(x)[0], conv2d(x, dense, bias, stride=2, padding=1),
                               rtol=1e-5, atol=1e-5)
    # the lecture's count, each filter seeing C/groups channels: K(F²C/g + 1) = 4·(3·3·3 + 1)
    assert grouped.num_params == 4 * (3 * 3 * 3 + 1) == np.count_nonzero(dense) + 4
    assert "K(F²C/groups + 1)" in grouped.describe()


def _random_biases(network, *, seed):
    """Give every conv layer random biases, so that a test also compares where they go."""
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, Conv):
            layer.bias = rng.standard_normal(layer.k).astype(np.float32)
    return network


def _member_layers():
    """Specs (fresh layers for every network) with contrast, pooling, stride and a grouped conv."""
    return [layer.spec() for layer in (LocalContrast(3), Conv(4, 3), ReLU(), MaxPool(2),
                                       Conv(6, 3, stride=2, groups=2), ReLU())]


def test_networks_side_by_side_give_each_networks_output_in_turn():
    members = [_random_biases(Network(_member_layers(), channels=2, seed=seed), seed=seed)
               for seed in (1, 2, 3)]
    together = Network.side_by_side(members)
    image = np.random.default_rng(21).random((2, 27, 25, 2), dtype=np.float32)
    expected = np.concatenate([member.forward(image)[0] for member in members], axis=3)
    np.testing.assert_allclose(together.forward(image)[0], expected, rtol=1e-5, atol=1e-6)
    assert together.num_params == sum(member.num_params for member in members)
    assert repr(together.layers[4]) == "Conv(18, 3, stride=2, groups=6)"


def _cnn_filter(seed, *, window=16, last_k=6, threshold=None):
    network = Network([LocalContrast(3), Conv(4, 5), ReLU(), MaxPool(2), Conv(last_k, 3), ReLU()],
                      channels=1, seed=seed)
    _random_biases(network, seed=seed)
    rows, cols, channels = network.output_shape(window, window)
    shape = (rows, cols) if channels == 1 else (rows, cols, channels)  # as Filter keeps one channel
    weights = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return Filter(weights, bias=seed - 0.5, features="cnn", window=(window, window),
                  feature_options={"layers": network.spec(), "color": False},
                  feature_params=network.parameters(), name=f"member{seed}",
                  threshold=float(seed) if threshold is None else threshold,
                  meta={"options": {"seed": seed}})


@pytest.mark.parametrize("last_k", [6, 1], ids=["six-filters", "one-filter"])
def test_averaged_networks_score_the_mean_of_their_scores(last_k, tmp_path):
    from patternfind.learn.network_training import average_networks

    def scores(filter_, windows):  # ⟨w, φ(x)⟩ + b of each window
        features = window_features(windows, kind="cnn", options=filter_.feature_options,
                                   parameters=filter_.feature_params)
        return features.reshape(len(windows), -1) @ filter_.weights.ravel() + filter_.bias

    members = [_cnn_filter(seed, last_k=last_k) for seed in (0, 1)]
    averaged = average_networks(members)
    averaged.save(tmp_path / "averaged.npz")
    loaded = load_filter(tmp_path / "averaged.npz")
    assert loaded.weights.shape == (3, 3, 2 * last_k)
    assert loaded.threshold == pytest.approx(0.5)  # the members' 0 and 1
    assert [member["seed"] for member in loaded.meta["members"]] == [0, 1]
    windows = np.random.default_rng(22).random((30, 16, 16), dtype=np.float32)
    expected = (scores(members[0], windows) + scores(members[1], windows)) / 2
    np.testing.assert_allclose(scores(loaded, windows), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("build", "text"),
    [
        (lambda: Conv(5, 3, groups=2), "`groups`=2 of a Conv layer must divide its k=5 filters"),
        (lambda: Network([Conv(4, 3, groups=2)], channels=3),
         "splits its input into 2 groups but receives 3 channels"),
        (lambda: Network.side_by_side([Network([Conv(4, 3)], channels=1),
                                       Network([Conv(4, 5)], channels=1)]),
         "must share one architecture"),
        (lambda: Network.side_by_side([Network([Conv(4, 3, groups=2)], channels=2)]),
         "the first conv layer (Conv(4, 3, groups=2)) is grouped"),
        (lambda: __import__("patternfind.learn.network_training", fromlist=["x"]).average_networks(
            [_cnn_filter(0), _cnn_filter(1, window=20)]), "filter 1 ('member1') has a (20, 20) window"),
    ],
    ids=["groups-k", "groups-channels", "architectures", "grouped-first", "windows"],
)
def test_bad_groups_and_ensembles_name_the_value(build, text):
    with pytest.raises(ValueError, match=re.escape(text)):
        build()


def test_averaging_and_stacking_take_filters_and_networks_only():
    from patternfind.learn.network_training import average_networks

    network = Network([Conv(4, 3)], channels=1)
    with pytest.raises(TypeError, match="`filters` must hold Filter objects, got Network at 1"):
        average_networks([_cnn_filter(0), network])
    with pytest.raises(TypeError, match="`networks` must hold Network objects, got str at 1"):
        Network.side_by_side([network, "conv:4:3"])


def test_an_average_with_a_member_without_threshold_has_none():
    from patternfind.learn.network_training import average_networks

    members = [_cnn_filter(0), dataclasses.replace(_cnn_filter(1), threshold=None)]
    assert average_networks(members).threshold is None
    assert average_networks(members[:1]).threshold == 0.0


def test_an_ensemble_whose_threshold_no_detection_sets_says_so():
    """No training detection hits a box: the members' mean threshold, and no image F1."""
    import time

    from patternfind.learn.detector_training import _calibrated_ensemble

    image = np.random.default_rng(23).random((40, 40), dtype=np.float32)
    started = time.perf_counter()
    merged = _calibrated_ensemble([_cnn_filter(0), _cnn_filter(1)], {"a": image}, {"a": []},
                                  started=started)
    assert merged.threshold == pytest.approx(0.5)
    assert merged.meta["threshold_rule"] == (
        "the members' mean threshold: no detection on the training images hit a box")
    assert "image_f1" not in merged.meta
    assert 0 < merged.meta["total_seconds"] <= time.perf_counter() - started


def test_he_initialisation_has_the_he_variance():
    network = Network([Conv(64, 5)], channels=8, seed=0)
    weights = network.layers[0].weights
    assert weights.dtype == np.float32
    assert weights.var() == pytest.approx(2 / (5 * 5 * 8), rel=0.05)
    assert not network.layers[0].bias.any()


# ---------------------------------------------------------------- learning


def _xor_patches(count, seed):
    """Bars crossing at the centre: label = horizontal XOR vertical (not linear in pixels)."""
    rng = np.random.default_rng(seed)
    horizontal, vertical = rng.random(count) < 0.5, rng.random(count) < 0.5
    patches = 0.1 * rng.random((count, 16, 16), dtype=np.float32)
    patches[horizontal, 7:9, 3:13] += 0.45  # where they cross: 0.9 + noise, still in [0, 1]
    patches[vertical, 3:13, 7:9] += 0.45
    return patches, horizontal ^ vertical


def test_the_network_learns_an_xor_no_linear_pixel_filter_can():
    patches, labels = _xor_patches(600, seed=0)
    test_patches, test_labels = _xor_patches(400, seed=1)
    layers = [Conv(8, 5), ReLU(), MaxPool(2), Conv(8, 3), ReLU(), MaxPool(2)]
    learned = train_filter(patches, labels, features="cnn", network=layers, seed=0, epochs=60)
    linear = train_filter(patches, labels, features="pixels", seed=0)

    def accuracy(filter_):
        features = window_features(test_patches, kind=filter_.features,
                                   options=filter_.feature_options,
                                   parameters=filter_.feature_params)
        scores = features.reshape(len(features), -1) @ filter_.weights.ravel() + filter_.bias
        return float(np.mean((scores >= filter_.threshold) == test_labels))

    assert accuracy(learned) > 0.97
    assert accuracy(linear) < 0.8  # the best linear split of an XOR gets about 3 in 4


@pytest.fixture(scope="module")
def small_cnn_filter():
    patches, labels = _xor_patches(300, seed=2)
    return train_filter(patches, labels, features="cnn", network=[Conv(4, 5), ReLU(), MaxPool(2)],
                        seed=3, epochs=5)


def test_shift_augmentation_moves_each_window_by_a_whole_pixel_offset_within_range():
    """Every augmented window is scipy's nearest-edge shift of its source by some (dy, dx) ≤ 2."""
    from scipy import ndimage

    from patternfind.learn.network_training import _shifted

    rng = np.random.default_rng(7)
    x = rng.random((40, 9, 8, 2), dtype=np.float32)
    moved = _shifted(x, 2, np.random.default_rng(8))
    assert moved.shape == x.shape
    assert moved.dtype == np.float32
    seen = set()
    for source, result in zip(x, moved, strict=True):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(ndimage.shift(source, (dy, dx, 0), order=0, mode="nearest"),
                                     result)]
        assert matches, "an augmented window is no whole-pixel shift of its source"
        seen.update(matches)
    assert len(seen) > 10  # the offsets vary from window to window
    assert _shifted(x, 0, rng) is x


def test_training_leaves_the_callers_layers_untouched():
    """A list of layers is an architecture: reusing it trains from the same He start each time."""
    patches, labels = _xor_patches(120, seed=2)
    layers = [Conv(4, 5), ReLU(), MaxPool(2)]
    first = train_filter(patches, labels, features="cnn", network=layers, seed=3, epochs=2)
    assert layers[0].weights is None
    again = train_filter(patches, labels, features="cnn", network=layers, seed=3, epochs=2)
    np.testing.assert_array_equal(again.feature_params["0.weights"],
                                  first.feature_params["0.weights"])


def test_training_is_deterministic_per_seed(small_cnn_filter):
    patches, labels = _xor_patches(300, seed=2)
    again = train_filter(patches, labels, features="cnn", network=[Conv(4, 5), ReLU(), MaxPool(2)],
                         seed=3, epochs=5)
    np.testing.assert_array_equal(again.weights, small_cnn_filter.weights)
    for key, value in small_cnn_filter.feature_params.items():
        np.testing.assert_array_equal(again.feature_params[key], value)
    other = train_filter(patches, labels, features="cnn", network=[Conv(4, 5), ReLU(), MaxPool(2)],
                         seed=4, epochs=5)
    assert not np.array_equal(other.feature_params["0.weights"],
                              small_cnn_filter.feature_params["0.weights"])


def test_a_cnn_filter_round_trips_through_its_npz_file(small_cnn_filter, tmp_path):
    small_cnn_filter.save(tmp_path / "cnn.npz")
    loaded = load_filter(tmp_path / "cnn.npz")
    assert loaded.features == "cnn"
    assert loaded.window == small_cnn_filter.window == (16, 16)
    assert loaded.feature_options == small_cnn_filter.feature_options
    assert loaded.feature_params.keys() == small_cnn_filter.feature_params.keys()
    for key, value in small_cnn_filter.feature_params.items():
        np.testing.assert_array_equal(loaded.feature_params[key], value)
    np.testing.assert_array_equal(loaded.weights, small_cnn_filter.weights)
    with np.load(tmp_path / "cnn.npz", allow_pickle=False) as archive:  # never pickled
        assert "feature_params.0.weights" in archive.files


def test_detector_boxes_land_on_the_windows_the_network_scored(small_cnn_filter):
    """Scores on the whole image equal the window scores at (i·S, j·S); boxes go there."""
    filter_ = small_cnn_filter
    rng = np.random.default_rng(6)
    image = 0.1 * rng.random((61, 75), dtype=np.float32)
    image[23:25, 27:37] += 0.45  # a horizontal bar alone: positive; window top-left (16, 24)
    _, maps = scan(image, filter_, scales=(1, 1), threshold=-1e9, nms_iou=1)
    scores = maps[0].scores
    stride = maps[0].step
    assert stride == 2  # conv 5 + max-pool 2
    windows = np.array([[image[i * stride:i * stride + 16, j * stride:j * stride + 16]
                         for j in range(scores.shape[1])] for i in range(scores.shape[0])])
    features = window_features(windows.reshape(-1, 16, 16), kind="cnn",
                               options=filter_.feature_options, parameters=filter_.feature_params)
    expected = features.reshape(len(features), -1) @ filter_.weights.ravel() + filter_.bias
    np.testing.assert_allclose(scores.ravel(), expected, rtol=1e-4, atol=1e-4)
    best = detect(image, filter_, scales=(1, 1), threshold=-1e9)[0]
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    assert (best.x, best.y, best.w, best.h) == (j * stride, i * stride, 16, 16)
    # the bar sits where it sat in the positive training windows (rows 7-8, columns 3-12)
    assert abs(best.x - 24) <= stride
    assert abs(best.y - 16) <= stride


def test_filters_on_the_same_network_share_its_feature_map(small_cnn_filter, monkeypatch):
    import patternfind.detection.detector as detector_module

    calls = []
    original = detector_module.feature_map

    def counting(*args, **kwargs):
        calls.append(kwargs["kind"])
        return original(*args, **kwargs)

    monkeypatch.setattr(detector_module, "feature_map", counting)
    twin = small_cnn_filter.replace(name="twin", bias=small_cnn_filter.bias + 1)
    image = np.random.default_rng(7).random((40, 40), dtype=np.float32)
    detect(image, [small_cnn_filter, twin], scales=(1, 1), threshold=0)
    assert calls == ["cnn"]  # one pyramid level, one network map for both filters


def test_feature_map_of_an_image_is_the_network_output(small_cnn_filter):
    filter_ = small_cnn_filter
    image = np.random.default_rng(8).random((30, 31), dtype=np.float32)
    features, cell = feature_map(image, kind="cnn", options=filter_.feature_options,
                                 parameters=filter_.feature_params)
    network = Network.from_parameters(filter_.feature_options["layers"], filter_.feature_params,
                                      channels=1)
    np.testing.assert_array_equal(features, network.feature_map(image))
    assert cell == network.total_stride


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("build", "text"),
    [
        (lambda: Conv(0, 3), "`k` of a Conv layer must be a positive integer, got 0"),
        (lambda: Conv(8, -1), "`f` of a Conv layer must be a positive integer, got -1"),
        (lambda: Conv(8, 3, stride=0), "`stride` of a Conv layer"),
        (lambda: Conv(8, 4, padding="same"), "odd filter size"),
        (lambda: MaxPool(0), "`f` of a MaxPool layer must be a positive integer, got 0"),
        (lambda: AvgPool(2, stride=-2), "`stride` of a AvgPool layer"),
        (lambda: Network([ReLU(), MaxPool(2)]), "at least one Conv layer"),
        (lambda: Network([{"type": "dense"}]), "unknown layer type 'dense'"),
    ],
)
def test_bad_layers_name_the_value(build, text):
    with pytest.raises(ValueError, match=re.escape(text)):
        build()


def test_a_receptive_field_larger_than_the_window_is_an_error():
    patches, labels = _xor_patches(40, seed=0)
    with pytest.raises(ValueError, match="receptive field of 12 pixels is larger than the 8×8"):
        train_filter(patches[:, :8, :8], labels, features="cnn")


def test_pooling_that_does_not_fit_the_window_is_the_lectures_error():
    patches, labels = _xor_patches(40, seed=0)
    # 25×25 → conv 5×5 → 21×21, then the pooling formula (W − F)/S + 1 of the lecture:
    # (21 − 2)/2 + 1 = 10.5. Pooling has no padding, so the remedy is the stride or the size.
    expected = ("layer 2 (MaxPool(2)) on a 25×25 window: `stride` 2 does not fit: "
                "(21 − 2)/2 + 1 = 10.5 is not a whole number; change the stride or the size; "
                "the largest window that fits is 24×24")
    with pytest.raises(ValueError, match=re.escape(expected)):
        train_filter(np.pad(patches, ((0, 0), (0, 9), (0, 9))), labels, features="cnn")


def test_a_conv_stride_that_does_not_fit_keeps_the_conv_wording():
    # (24 − 5 + 2·0)/2 + 1 = 10.5: a conv layer can be padded, so the remedy names the padding
    with pytest.raises(ValueError, match=re.escape(
            "(24 − 5 + 2·0)/2 + 1 = 10.5 is not a whole number; change the stride or the padding")):
        Network([Conv(8, 5, stride=2)]).check_fits(24, 24)


def test_nan_during_training_stops_and_names_the_learning_rate():
    patches, labels = _xor_patches(200, seed=0)
    with pytest.raises(ValueError, match=r"training diverged.*`lr`=1e\+06; lower it, e.g. lr=100000"):
        train_filter(patches, labels, features="cnn", network=[Conv(4, 5), ReLU(), MaxPool(2)],
                     lr=1e6, epochs=5, optimizer="sgd")


def _two_layer_filter_file(path):
    """Save an untrained grey two-conv-layer network filter; return the file's arrays and header."""
    network = Network([Conv(4, 5), ReLU(), MaxPool(2), Conv(6, 3), ReLU()], channels=1, seed=0)
    filter_ = Filter(np.ones((3, 3, 6), np.float32), features="cnn", window=(16, 16),
                     feature_options={"layers": network.spec(), "color": False},
                     feature_params=network.parameters(), name="two-layer")
    filter_.save(path)
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return arrays, json.loads(str(arrays["header"]))


def _edit_filter_file(path, arrays, header):
    arrays = {**arrays, "header": np.array(json.dumps(header))}
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


@pytest.mark.parametrize("mismatch", ["first layer", "second layer", "filter on top", "groups"])
def test_a_network_file_whose_layers_do_not_chain_is_refused_on_load(mismatch, tmp_path, capsys):
    path = tmp_path / "network.npz"
    arrays, header = _two_layer_filter_file(path)
    assert load_filter(path).feature_params["3.weights"].shape == (3, 3, 4, 6)  # it loads as saved
    if mismatch == "first layer":  # a colour first layer on a grey network: takes 3, gets 1
        arrays["feature_params.0.weights"] = np.zeros((5, 5, 3, 4), np.float32)
        expected = r"conv layer 0 .* takes 3 input channels .* the input image has 1"
    elif mismatch == "second layer":  # layer 0 now gives 5 channels, layer 3 still takes 4
        arrays["feature_params.0.weights"] = np.zeros((5, 5, 1, 5), np.float32)
        arrays["feature_params.0.bias"] = np.zeros(5, np.float32)
        header["feature_options"]["layers"][0]["k"] = 5
        expected = r"conv layer 3 .* takes 4 input channels .* conv layer 0 before it has 5"
    elif mismatch == "groups":  # layer 3 in 2 groups of the 4 channels would take 2 each
        header["feature_options"]["layers"][3]["groups"] = 2
        expected = r"conv layer 3 .* takes 4 input channels in each of 2 groups .* has 4"
    else:  # the filter takes 7 channels, the network gives 6
        arrays["weights"] = np.ones((3, 3, 7), np.float32)
        expected = r"filter 'two-layer' takes 7 feature channels .* last conv layer gives 6"
    _edit_filter_file(path, arrays, header)
    with pytest.raises(ValueError, match="layers do not chain: " + expected):
        load_filter(path)
    error = _cli_error_detecting_with(path, tmp_path, capsys)
    assert "do not chain" in error
    assert str(path) in error


def _cli_error_detecting_with(path, tmp_path, capsys):
    """The one line the CLI prints (exit 2) when detecting with the filter file ``path``."""
    from patternfind.io import save_image

    image = tmp_path / "image.png"
    save_image(image, np.zeros((40, 40), np.uint8))
    assert main([str(image), "--filter", str(path), "--threshold", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


@pytest.mark.parametrize("groups", ["2", 2.0, 0, True])
def test_a_network_file_with_a_bad_groups_value_names_it(groups, tmp_path, capsys):
    path = tmp_path / "network.npz"
    arrays, header = _two_layer_filter_file(path)
    header["feature_options"]["layers"][3]["groups"] = groups
    _edit_filter_file(path, arrays, header)
    expected = f"conv layer 3 needs `groups` as a positive integer, got {groups!r}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_filter(path)
    assert expected in _cli_error_detecting_with(path, tmp_path, capsys)


def test_a_network_file_whose_weights_do_not_match_their_layer_is_refused(tmp_path):
    path = tmp_path / "network.npz"
    arrays, header = _two_layer_filter_file(path)
    arrays["feature_params.3.weights"] = np.zeros((5, 5, 4, 6), np.float32)  # the spec says 3×3
    _edit_filter_file(path, arrays, header)
    with pytest.raises(ValueError, match=r"conv layer 3 has 6 filters of 3×3 but its weights "
                                         r"have shape \(5, 5, 4, 6\)"):
        load_filter(path)
    del arrays["feature_params.3.bias"]
    arrays["feature_params.3.weights"] = np.zeros((3, 3, 4, 6), np.float32)
    _edit_filter_file(path, arrays, header)
    with pytest.raises(ValueError, match=r"network parameter '3.bias' of conv layer 3 is missing"):
        load_filter(path)


def test_a_cnn_filter_needs_its_network():
    with pytest.raises(ValueError, match="needs the network's `feature_params`"):
        Filter(np.ones((4, 4, 16), np.float32), features="cnn", window=(24, 24))


# ---------------------------------------------------------------- CLI and pictures


def test_cli_trains_a_cnn_filter_from_folders(tmp_path, capsys):
    from patternfind.io import save_image

    patches, labels = _xor_patches(160, seed=9)
    for folder in ("pos", "neg"):
        (tmp_path / folder).mkdir()
    for index, (patch, label) in enumerate(zip(patches, labels, strict=True)):
        folder = "pos" if label else "neg"
        save_image(tmp_path / folder / f"{index}.png", (np.clip(patch, 0, 1) * 255).astype(np.uint8))
    output = tmp_path / "xor.npz"
    status = main(["train", "--pos", str(tmp_path / "pos"), "--neg", str(tmp_path / "neg"),
                   "--features", "cnn", "--layers", "conv:4:5,relu,maxpool:2", "--epochs", "3",
                   "--quiet", "-o", str(output)])
    assert status == 0
    out = capsys.readouterr().out
    assert "network: Network([Conv(4, 5), ReLU(), MaxPool(2)], channels=1), 104 parameters" in out
    learned = load_filter(output)
    assert learned.features == "cnn"
    assert learned.feature_params["0.weights"].shape == (5, 5, 1, 4)


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        (["--layers", "conv:0:3"], "`k` of a Conv layer must be a positive integer, got 0"),
        (["--layers", "pool:2"], "bad layer 'pool:2'"),
        (["--layers", "contrast:4,conv:4:5"], "`f` of a LocalContrast layer must be odd"),
        (["--layers", "contrast:5:1"], "bad layer 'contrast:5:1'"),
        (["--layers", "conv:8:5", "--features", "hog"], "--layers applies to cnn features"),
        (["--window", "25x25"], "does not fit"),
        (["--window", "8x8"], "receptive field of 12 pixels is larger than the 8×8 window"),
        (["--ensemble", "0"], "--ensemble must be a positive integer, got 0"),
        (["--ensemble", "2"], "--ensemble applies to cnn features trained from --annotations"),
    ],
)
def test_cli_refuses_bad_networks_in_one_line(tmp_path, capsys, arguments, text):
    from patternfind.io import save_image

    for folder in ("pos", "neg"):
        (tmp_path / folder).mkdir()
        for index in range(3):
            save_image(tmp_path / folder / f"{index}.png",
                       np.random.default_rng(index).integers(0, 255, (24, 24), dtype=np.uint8))
    argv = ["train", "--pos", str(tmp_path / "pos"), "--neg", str(tmp_path / "neg"),
            "--features", "cnn", "-o", str(tmp_path / "out.npz"), "--quiet"]
    if "--features" in arguments:
        argv.remove("cnn")
        argv.remove("--features")
    assert main([*argv, *arguments]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("patternfind train: error:")]
    assert len(errors) == 1
    assert text in errors[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out.npz").exists()


def test_pictures_of_the_first_layer_and_of_feature_maps(small_cnn_filter):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from patternfind.show.plot import network_filter_tiles, plot_feature_maps, plot_filter

    weights = small_cnn_filter.feature_params["0.weights"]  # (5, 5, 1, 4): a 2×2 grid
    tiles = network_filter_tiles(weights)
    assert tiles.shape == (11, 11)
    np.testing.assert_array_equal(tiles[6:11, 0:5], weights[..., 0, 2])
    assert np.isnan(tiles[5]).all()
    colour = network_filter_tiles(np.random.default_rng(0).standard_normal((3, 3, 3, 5)))
    assert colour.shape == (7, 11, 3)
    assert np.nanmin(colour) == 0
    assert np.nanmax(colour) == 1
    figure = Figure()
    picture = plot_filter(figure.subplots(), small_cnn_filter)
    np.testing.assert_array_equal(picture.get_array().filled(np.nan), tiles)
    image = np.random.default_rng(1).random((30, 30), dtype=np.float32)
    axes = plot_feature_maps(Figure(), small_cnn_filter, image)
    network = Network.from_filter(small_cnn_filter)
    relu = network.forward(image[None, :, :, None])  # the whole network, for the first ReLU below
    expected = network.layers[1].forward(network.layers[0].forward(
        image[None, :network.fitted_size(30, 30)[0], :network.fitted_size(30, 30)[1], None])[0])[0]
    assert relu[0].shape[-1] == 4
    np.testing.assert_allclose(axes[3].images[0].get_array(), expected[0, ..., 3])


def test_train_detector_with_a_network_finds_held_out_targets():
    """train_detector(features="cnn"): mining rounds, a window every layer fits, whole images."""
    from test_learn import _iou, _scene

    from patternfind import train_detector

    train = [_scene(seed) for seed in range(4)]
    fitted = train_detector([image for image, _ in train], [boxes for _, boxes in train],
                            features="cnn", network=[Conv(6, 5), ReLU(), MaxPool(2), Conv(8, 3),
                                                     ReLU(), MaxPool(2)],
                            mine_rounds=1, epochs=30, progress=False)
    assert fitted.features == "cnn"
    network = Network.from_filter(fitted)
    network.check_fits(*fitted.window)  # the default window was snapped to fit every layer
    assert fitted.window[0] <= 32
    assert len(fitted.meta["rounds"]) == 1
    found = total = 0
    for seed in range(100, 103):
        image, boxes = _scene(seed)
        detections = detect(image, fitted, scales=(0.5, 2.0))
        total += len(boxes)
        found += sum(any(_iou((d.x, d.y, d.w, d.h), (b.x, b.y, b.w, b.h)) >= 0.5
                         for d in detections) for b in boxes)
    assert found >= 0.8 * total


def test_conv_backward_is_the_same_from_run_to_run_when_split_over_threads():
    """The two threads' partial weight gradients are summed in a fixed order."""
    from patternfind.layers import conv

    rng = np.random.default_rng(10)
    x = rng.random((64, 24, 24, 1), dtype=np.float32)
    weights = rng.standard_normal((5, 5, 1, 8)).astype(np.float32)
    grad = rng.standard_normal((64, 20, 20, 8)).astype(np.float32)
    assert conv._WORKERS < 2 or len(conv._blocks(conv._windows(x, conv._ConvLayer.check(
        x, weights, 1, "valid")), 8)) >= 2 * conv._MIN_BLOCKS_PER_THREAD  # the split happens
    first = conv.conv2d_backward(grad, x, weights)
    for _ in range(5):
        again = conv.conv2d_backward(grad, x, weights)
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("features", "limit"), [("cnn", 0.5), ("hog", 0.3)])
def test_mined_negatives_overlap_no_box_beyond_the_features_limit(features, limit, monkeypatch):
    """A network mines windows over part of a target (IoU < 0.5) as negatives; HOG stays at 0.3."""
    from test_learn import _iou, _scene

    from patternfind import train_detector
    from patternfind.learn import detector_training

    mined = []
    crop = detector_training.crop_window

    def recording_crop(image, xywh, *args, **kwargs):  # only mining crops through this name
        mined.append((id(image), tuple(float(v) for v in xywh)))
        return crop(image, xywh, *args, **kwargs)

    monkeypatch.setattr(detector_training, "crop_window", recording_crop)
    # every window the detector keeps is mined, however briefly the filter trained
    monkeypatch.setattr(detector_training, "_MINING_THRESHOLD", -1e9)
    train = [_scene(seed) for seed in range(3)]
    extra = ({"network": [Conv(4, 5), ReLU(), MaxPool(2)], "epochs": 3, "ensemble": 1}
             if features == "cnn" else {})
    train_detector([image for image, _ in train], [boxes for _, boxes in train], features=features,
                   mine_rounds=1, hard_negatives_per_image=100_000, **extra)
    by_image = {id(image): boxes for image, boxes in train}
    assert mined
    assert all(key in by_image for key, _ in mined)  # crops of the training images themselves
    overlaps = [max(_iou(xywh, (b.x, b.y, b.w, b.h)) for b in by_image[key]) for key, xywh in mined]
    assert max(overlaps) < limit
    if features == "cnn":  # windows over part of a target were mined, which 0.3 would refuse
        assert max(overlaps) >= 0.3


def test_an_ensemble_detector_is_the_mean_of_the_networks_trained_from_its_seeds():
    """train_detector(ensemble=2) = the networks of seeds 0 and 1, side by side, averaged."""
    from test_learn import _scene

    from patternfind import train_detector

    train = [_scene(seed) for seed in range(2)]
    images, boxes = [image for image, _ in train], [b for _, b in train]
    settings = {"features": "cnn", "network": [Conv(4, 5), ReLU(), MaxPool(2)], "mine_rounds": 1,
                "epochs": 3}
    together = train_detector(images, boxes, ensemble=2, seed=0, **settings)
    alone = [train_detector(images, boxes, ensemble=1, seed=seed, **settings) for seed in (0, 1)]
    assert [member["seed"] for member in together.meta["members"]] == [0, 1]
    np.testing.assert_allclose(together.weights,
                               np.concatenate([f.weights for f in alone], axis=-1) / 2)
    np.testing.assert_array_equal(together.feature_params["0.weights"], np.concatenate(
        [f.feature_params["0.weights"] for f in alone], axis=-1))
    # the threshold says how it was set: the ensemble's best F1, or (no training detection
    # hit a box, as with these three epochs) the members' mean threshold
    if "image_f1" in together.meta:
        assert together.meta["threshold_rule"] == "best F1 of the ensemble over the training images"
        assert together.meta["image_f1"] > 0
    else:
        assert together.meta["threshold_rule"].startswith("the members' mean threshold")
        assert together.threshold == pytest.approx(np.mean([f.threshold for f in alone]))
    for network in alone:  # so do the networks' own thresholds
        if "image_f1" in network.meta:
            assert network.meta["threshold_rule"].startswith("best F1 over the training images")
            assert network.meta["image_f1"] > 0
        else:
            assert network.meta["threshold_rule"] == (
                "best F1 over the validation patches: no detection on the images hit a box")
    with pytest.raises(ValueError, match="`ensemble`=2 needs features='cnn'"):
        train_detector(images, boxes, features="hog", ensemble=2)
    with pytest.raises(ValueError, match="ensemble"):
        train_detector(images, boxes, features="cnn", ensemble=0)


def test_a_grouped_first_layer_trains_one_network_unless_an_ensemble_is_asked_for():
    """Side by side, the networks' first layers share one input: a grouped one cannot."""
    from test_learn import _scene

    from patternfind import train_detector

    train = [_scene(seed) for seed in range(2)]
    # colour (three channels to group), the channels unequal so that it stays colour
    images = [np.dstack([image, image * 0.5, 1 - image]) for image, _ in train]
    boxes = [b for _, b in train]
    settings = {"features": "cnn", "network": [Conv(3, 5, groups=3), ReLU(), MaxPool(2)],
                "mine_rounds": 1, "epochs": 2, "seed": 0}
    with pytest.raises(ValueError, match=re.escape(
            "`ensemble`=2 needs an ungrouped first conv layer (the networks side by side share "
            "its input), got Conv(3, 5, groups=3)")):
        train_detector(images, boxes, ensemble=2, **settings)
    single = train_detector(images, boxes, **settings)  # the default ensemble gives way
    assert "members" not in single.meta
    assert single.feature_params["0.weights"].shape == (5, 5, 1, 3)


def test_cli_trains_a_network_ensemble_from_annotations(tmp_path, capsys):
    from test_learn import _scene

    from patternfind.io import save_image

    rows = ["image,x,y,w,h,label"]
    for seed in range(2):
        image, boxes = _scene(seed)
        save_image(tmp_path / f"{seed}.png", (image * 255).astype(np.uint8))
        rows += [f"{seed}.png,{b.x},{b.y},{b.w},{b.h},ring" for b in boxes]
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    output = tmp_path / "rings.npz"
    status = main(["train", "--annotations", str(tmp_path / "boxes.csv"), "--features", "cnn",
                   "--layers", "conv:4:5,relu,maxpool:2", "--epochs", "2", "--mine-rounds", "1",
                   "--ensemble", "2", "--seed", "3", "--quiet", "-o", str(output)])
    assert status == 0
    assert "ensemble of 2 networks side by side (seeds 3, 4)" in capsys.readouterr().out
    learned = load_filter(output)
    assert learned.feature_params["0.weights"].shape == (5, 5, 1, 8)  # both networks' 4 filters
