"""Train nested conv layers and the filter on top of them together, end to end.

A ``"cnn"`` filter scores a window ``x`` as ``⟨w, φ(x)⟩ + b`` where φ is a
small network (`patternfind.layers.network.Network`). `fit_network`
minimises the same objective as `patternfind.learn.optimize.fit_linear`,

    J = mean_i ℓ(y_i s_i) + (l2 / 2) (‖w‖² + Σ ‖conv weights‖²),

over the filter *and* the network's weights (biases are not penalised), with
the same `FitOptions`: loss, Adam or momentum SGD, mini-batches, a stratified
validation split for early stopping and the threshold, seeds and progress. The
gradient reaches the conv layers by backpropagation through the layers'
``backward`` passes. Each mini-batch is augmented by moving every window a
pixel or so (``shift``), which the small training sets here need more than a
linear filter over HOG does: HOG's cells tolerate such shifts by design.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from patternfind._validation import flag, non_negative_int
from patternfind.layers.features import feature_options as complete_feature_options
from patternfind.layers.network import Conv, Layer, Network
from patternfind.learn.optimize import (
    _CHECK_STEPS,
    _DIVERGED,
    _MIN_PROGRESS,
    _PATIENCE,
    FitOptions,
    _Optimizer,
    _progress_reporter,
    _stratified_split,
    fit_record,
    loss_forward,
)
from patternfind.structures import Filter

__all__ = ["average_networks", "build_network", "fit_network"]

_DEFAULT_LR = 0.01  # Adam; SGD (momentum 0.9) gets a tenth of it
_DEFAULT_EPOCHS = 40  # early stopping usually ends sooner ...
_MIN_STEPS = 500  # ... but small sets get enough epochs for this many steps
_MAX_EPOCHS = 200
_CHUNK = 2048  # windows per forward pass when scoring (bounds memory)
_NETWORK_L2 = 1e-3  # l2="auto" for a network (see fit_network)
# With ``average``, the weights kept are a moving average of the iterates, each weighted
# by decay**age in steps: over about the last 1 / (1 − decay) = 100 steps, and at most a
# fifth of the steps a fit may take (see fit_network's Notes).
_AVERAGE_DECAY = 0.99
_AVERAGE_SPAN = 5
_STALL = 3  # epochs without a better training loss before the rate is halved

NetworkLike = Network | Sequence[Layer | Mapping[str, Any]] | None


def build_network(network: NetworkLike, feature_settings: Mapping[str, Any], *,
                  window: tuple[int, int], seed: int) -> tuple[Network, dict[str, Any]]:
    """The network to train and the complete ``"cnn"`` feature options that describe it.

    ``network`` is a `Network` (trained from its current weights), a list of
    layers or layer specs (He-initialised from ``seed``), or None for the
    options' ``layers`` (default `patternfind.layers.network.DEFAULT_LAYERS`).

    Raises
    ------
    ValueError
        If the network's receptive field is larger than the window, or its
        input channels do not match the patches'.
    """
    channels = 3 if feature_settings.get("color") else 1
    if isinstance(network, Network):
        built = Network.from_parameters(network.spec(), network.parameters(),
                                        channels=network.channels)
    else:  # fresh layers from their specs: training must not change the caller's objects
        built = Network(_layer_specs(network, feature_settings), channels=channels, seed=seed)
    if built.channels != channels:
        kind = "colour" if channels == 3 else "grey"
        msg = (f"`network` takes {built.channels} input channel(s) but the patches are {kind} "
               f"({channels})")
        raise ValueError(msg)
    geometry = built.geometry
    if geometry.outputs(window[0]) == 0 or geometry.outputs(window[1]) == 0:
        msg = (f"the network's receptive field of {geometry.receptive_field} pixels"
               + (f" (padding {geometry.offset})" if geometry.offset else "")
               + f" is larger than the {window[1]}×{window[0]} window; use smaller or fewer "
               "layers, or a larger window")
        raise ValueError(msg)
    built.check_fits(*window)
    settings = complete_feature_options("cnn", {**feature_settings, "layers": built.spec()})
    return built, settings


def _layer_specs(network: NetworkLike, feature_settings: Mapping[str, Any]) -> list[Any]:
    """The layer specs a list of layers (or None: the options' ``layers``) asks for."""
    if network is None:
        return list(complete_feature_options("cnn", feature_settings)["layers"])
    if isinstance(network, Network):
        return network.spec()
    return [layer.spec() if hasattr(layer, "spec") else layer for layer in network]


def grouped_first_conv(network: NetworkLike, feature_settings: Mapping[str, Any]) -> Conv | None:
    """The network's first conv layer if it is grouped, else None.

    `Network.side_by_side` (and so an ensemble) cannot stack such a layer.
    """
    channels = 3 if feature_settings.get("color") else 1
    layers = Network(_layer_specs(network, feature_settings), channels=channels).layers
    first = next((layer for layer in layers if isinstance(layer, Conv)), None)
    return first if first is not None and first.groups != 1 else None


def average_networks(filters: Sequence[Filter], *, name: str | None = None) -> Filter:
    """One ``"cnn"`` filter whose score is the mean of the given filters' scores.

    The filters (trained from different seeds, say) must share the window
    and the network's architecture. Their networks run side by side as one
    (`Network.side_by_side`: grouped conv layers, so detection costs the sum
    of theirs) and the filter on top holds each filter's weights, divided by
    their number, over its own network's channels: at every window the score
    is ``mean_m (⟨w_m, φ_m(x)⟩ + b_m)``.

    Parameters
    ----------
    filters : sequence of Filter
        ``features="cnn"`` filters, each of weights ``(fh, fw, K)``.
    name : str, optional
        Default: the first filter's name.

    Returns
    -------
    Filter
        Weights ``(fh, fw, n·K)``. Its threshold is the filters' mean
        threshold, or None if a filter has none (`patternfind.train_detector`
        sets it anew on the training images); ``meta`` is the first
        filter's, with ``meta["members"]`` holding each filter's seed,
        threshold and meta.

    Raises
    ------
    TypeError
        If an item of ``filters`` is not a `Filter`.
    ValueError
        If ``filters`` is empty, or a filter is not ``"cnn"``, or they differ
        in window, network or colour.
    """
    filters = list(filters)
    if not filters:
        msg = "`filters` must hold at least one filter"
        raise ValueError(msg)
    first = filters[0]
    for index, filter_ in enumerate(filters):
        if not isinstance(filter_, Filter):
            msg = f"`filters` must hold Filter objects, got {type(filter_).__name__} at {index}"
            raise TypeError(msg)
        if filter_.features != "cnn":
            msg = f"filter {index} ({filter_.name!r}) has {filter_.features!r} features, not a network"
            raise ValueError(msg)
        if filter_.window != first.window or filter_.weights.shape != first.weights.shape or (
                filter_.feature_options.get("color") != first.feature_options.get("color")):
            msg = (f"filter {index} ({filter_.name!r}) has a {filter_.window} window and weights "
                   f"{filter_.weights.shape}; filter 0 has {first.window} and {first.weights.shape}")
            raise ValueError(msg)
    network = Network.side_by_side([Network.from_filter(filter_) for filter_ in filters])
    count = len(filters)
    # a last conv layer of one filter gives (fh, fw) weights: stack them as channels too
    weights = np.concatenate([np.atleast_3d(filter_.weights) for filter_ in filters],
                             axis=-1) / np.float32(count)
    members = [{"seed": filter_.meta.get("options", {}).get("seed"),
                "threshold": filter_.threshold, "meta": dict(filter_.meta)} for filter_ in filters]
    known = [filter_.threshold for filter_ in filters if filter_.threshold is not None]
    return Filter(weights, bias=float(np.mean([filter_.bias for filter_ in filters])),
                  name=first.name if name is None else name,
                  threshold=float(np.mean(known)) if len(known) == count else None,
                  score="dot", features="cnn", window=first.window,
                  feature_options={**first.feature_options, "layers": network.spec()},
                  feature_params=network.parameters(),
                  meta={**first.meta, "members": members})


def fit_network(
    patches: NDArray[np.float32],
    y: NDArray[np.floating],
    network: Network,
    *,
    options: FitOptions | None = None,
    groups: NDArray[np.integer] | None = None,
    margin: int = 0,
    shift: int = 1,
    average: bool = False,
) -> dict[str, Any]:
    """Minimise the objective over the network's weights and the filter ``(w, b)``.

    Parameters
    ----------
    patches : (N, h, w, C) float32 array
        Training windows (with context if ``margin``), channels last.
    y : (N,) array
        Labels in {−1, +1}.
    network : Network
        Trained in place from its current weights.
    options : FitOptions, optional
        As for `fit_linear`; ``l2="auto"`` means 1e-3 here. Default learning rate: 0.01 for Adam, 0.001 for
        SGD; default epochs 40 (more on small sets, for at least 500 steps).
    groups : (N,) int array, optional
        Near-copies that must stay on one side of the validation split.
    margin : int
        Map cells of context on each side of the patches' feature maps that
        the filter does not cover.
    shift : int, default 1
        Augmentation: every training window of every mini-batch is moved by
        its own random whole-pixel offset in ``[−shift, shift]²`` (edge pixels
        repeat), so that the network learns to tolerate small misalignments;
        0 turns it off. On the digits sheet (a validation split of the training
        columns) one pixel raised the mean AP of the default network from
        0.982 to 0.986. A detector passes half the network's total stride: an
        object lies up to that far from the nearest window the network scores.
    average : bool, default False
        Keep a moving average of the weights instead of one step's (see
        Notes); `train_detector` turns it on.

    Returns
    -------
    dict
        As `fit_linear`'s (``w``, ``b``, ``threshold`` and the meta entries),
        plus ``feature_shape`` (the filter's ``(fh, fw, K)``) and
        ``feature_params`` (the trained network's arrays).

    Notes
    -----
    With ``average``, the weights kept are an exponential moving average of
    the iterates θ₁ … θₜ that starts at the starting weights θ₀, as
    TensorFlow's ``ExponentialMovingAverage`` starts its copies:
    dᵗ θ₀ + (1 − d) Σᵢ dᵗ⁻ⁱ θᵢ, with d = 0.99 (about the last 100 steps).
    Early stopping judges that average on the validation windows and keeps
    the best epoch's. On four folds of the composite face set's training
    scenes it raised `train_detector`'s held-out AP from 0.969 to 0.982 on
    average for pairs of networks, and from 0.976 to 0.984 for triples
    (seeds 0-3); a debiased average, Σᵢ dᵗ⁻ⁱ θᵢ / Σᵢ dᵗ⁻ⁱ, did not (0.969 and
    0.976). Its span, 1 / (1 − d), is at most a fifth of the steps the fit
    may take (``epochs`` × mini-batches), so that a short fit does not keep
    mostly its starting weights.

    Raises
    ------
    ValueError
        If the loss becomes NaN or inf, or diverges: the message names the
        learning rate to lower.
    """
    options = options or FitOptions()
    shift = non_negative_int(shift, "shift")
    average = flag(average, "average")
    loss, optimizer, seed = options.loss, options.optimizer, options.seed
    # "auto" cross-validates the strength for linear filters; a network would need a
    # training run per fold and strength, so it takes the fixed default
    l2 = _NETWORK_L2 if options.l2 == "auto" else float(options.l2)
    patches = np.ascontiguousarray(patches, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.float32)
    rng = np.random.default_rng(seed)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    train, val = _stratified_split(y, groups, options.val_fraction, rng)
    # hold the training windows in one shuffled order; batches are slices of it (as fit_linear)
    order = train[rng.permutation(len(train))]
    x_train, y_train = patches[order], y[order]
    x_val, y_val = (patches[val], y[val]) if len(val) else (x_train, y_train)
    batch = len(x_train) if options.batch_size is None else min(options.batch_size, len(x_train))
    starts = np.arange(0, len(x_train), batch)
    max_epochs = options.epochs or min(
        _MAX_EPOCHS, max(_DEFAULT_EPOCHS, -(-_MIN_STEPS // len(starts))))
    lr = options.lr or (_DEFAULT_LR if optimizer == "adam" else _DEFAULT_LR / 10)

    model = _Model(network, patches.shape[1:3], margin)
    theta = model.pack()
    state = _Optimizer(optimizer, theta.size, lr)
    bias = 0.0
    decay = min(_AVERAGE_DECAY, 1 - _AVERAGE_SPAN / (max_epochs * len(starts))) if average else 0.0
    kept, kept_bias = theta.copy(), bias  # the weights early stopping judges
    start = time.perf_counter()
    history: list[float] = []
    val_history: list[float] = []
    best: tuple[float, NDArray[np.float32], float, int] = (math.inf, theta.copy(), bias, 0)
    previous = initial = math.inf
    stalled = 0
    report, finish = _progress_reporter(options.progress, max_epochs)
    # Patience and annealing count stretches of at least _CHECK_STEPS steps, as fit_linear's:
    # a small set (one batch per epoch) would otherwise stop after _PATIENCE single steps,
    # on a validation loss that one noisy step moves (lfw_subset, 4-fold cross-validation
    # inside each training split: mean AUC 0.9978 counting epochs, 0.9991 counting steps).
    span = -(-_CHECK_STEPS // len(starts))  # epochs per stretch
    for epoch in range(1, max_epochs + 1):
        total = 0.0
        for first in rng.permutation(starts):
            rows = slice(first, first + batch)
            value, grad_theta, grad_b = model.gradient(theta, bias,
                                                       _shifted(x_train[rows], shift, rng),
                                                       y_train[rows], loss=loss, l2=l2)
            if not math.isfinite(value):
                _diverged(lr, value, epoch)
            theta, bias = state.step(theta, bias, grad_theta, grad_b)
            if average:
                kept += np.float32(1 - decay) * (theta - kept)
                kept_bias += (1 - decay) * (bias - kept_bias)
            else:
                kept, kept_bias = theta, bias
            total += value * len(y_train[rows])
        value = total / len(y_train)
        if epoch == 1:
            initial = value
        if not math.isfinite(value) or value > _DIVERGED * max(initial, 1e-12):
            _diverged(lr, value, epoch)
        # early stopping judges, and keeps, the average
        val_value = model.objective(kept, kept_bias, x_val, y_val, loss=loss, l2=l2)
        if not math.isfinite(val_value):
            _diverged(lr, val_value, epoch)
        history.append(value)
        val_history.append(val_value)
        report(epoch, value)
        if best[3] == 0 or val_value < best[0] - 1e-6 * abs(best[0]):
            best = (val_value, kept.copy(), kept_bias, epoch)
        # Mini-batch losses of a network are noisy: anneal the rate only after
        # _STALL stretches without a new best training loss, not after every bad epoch.
        if value < previous * (1 - _MIN_PROGRESS):
            previous, stalled = value, 0
        else:
            stalled += 1
            if stalled >= _STALL * span:
                state.lr *= 0.5
                stalled = 0
        if epoch - best[3] >= _PATIENCE * span or state.lr < lr * 1e-4:
            break
    _, theta, bias, best_epoch = best
    finish(len(history), best_epoch, history[-1])
    model.unpack(theta)
    record = fit_record(
        theta[model.filter_slice].copy(), bias, train_scores=model.scores(theta, bias, x_train),
        y_train=y_train, val_scores=model.scores(theta, bias, x_val), y_val=y_val,
        history=history, val_history=val_history, best_epoch=best_epoch, started=start,
        objective=model.objective(theta, bias, x_train, y_train, loss=loss, l2=l2),
        options={"loss": loss, "l2": l2, "optimizer": optimizer, "lr": float(lr),
                 "epochs": max_epochs, "batch_size": options.batch_size,
                 "val_fraction": options.val_fraction, "seed": seed,
                 "train_samples": len(train), "val_samples": len(val),
                 "network_params": network.num_params})
    record["feature_shape"] = model.feature_shape
    record["feature_params"] = {key: value.copy() for key, value in network.parameters().items()}
    return record


def _shifted(x: NDArray[np.float32], shift: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """Each window moved by its own random whole-pixel offset in [−shift, shift]² (edges repeat)."""
    if shift == 0:
        return x
    count, height, width = x.shape[:3]
    padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
    offsets = rng.integers(0, 2 * shift + 1, size=(2, count))
    rows = offsets[0][:, None] + np.arange(height)  # (N, h): the source row of each output row
    cols = offsets[1][:, None] + np.arange(width)
    return padded[np.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _diverged(lr: float, value: float, epoch: int) -> None:
    msg = (f"training diverged: the loss became {value:g} at epoch {epoch} with learning rate "
           f"`lr`={lr:g}; lower it, e.g. lr={lr / 10:g}")
    raise ValueError(msg)


class _Model:
    """The network and the filter on top, with all weights in one flat vector ``theta``.

    ``theta`` holds every conv layer's weights and bias, then the filter's
    ``w``; the filter's bias ``b`` is the optimiser's separate scalar. The
    layers' arrays are views into ``theta``, re-pointed at every step.
    """

    def __init__(self, network: Network, window: tuple[int, ...], margin: int) -> None:
        self.network = network
        rows, cols, channels = network.output_shape(int(window[0]), int(window[1]))
        self.margin = margin
        self.feature_shape = (rows - 2 * margin, cols - 2 * margin, channels)
        self.slices: dict[str, tuple[slice, tuple[int, ...]]] = {}
        position = 0
        penalised = []
        for key, value in network.parameters().items():
            self.slices[key] = (slice(position, position + value.size), value.shape)
            penalised.append(np.full(value.size, key.endswith("weights"), dtype=np.float32))
            position += value.size
        size = int(np.prod(self.feature_shape))
        self.filter_slice = slice(position, position + size)
        penalised.append(np.ones(size, dtype=np.float32))
        self.penalty_mask = np.concatenate(penalised)  # 1 for weights, 0 for biases

    def pack(self) -> NDArray[np.float32]:
        parts = [value.ravel() for value in self.network.parameters().values()]
        parts.append(np.zeros(self.filter_slice.stop - self.filter_slice.start, np.float32))
        return np.concatenate(parts).astype(np.float32)

    def unpack(self, theta: NDArray[np.float32]) -> None:
        for key, (where, shape) in self.slices.items():
            index, name = key.split(".")
            setattr(self.network.layers[int(index)], name, theta[where].reshape(shape))

    def _features(self, x: NDArray[np.float32], *, keep_cache: bool
                  ) -> tuple[NDArray[np.float32], list[Any]]:
        out, caches = self.network.forward(x, keep_cache=keep_cache)
        if self.margin:
            out = out[:, self.margin:-self.margin, self.margin:-self.margin]
        return out.reshape(len(x), -1), caches

    def scores(self, theta: NDArray[np.float32], bias: float, x: NDArray[np.float32]
               ) -> NDArray[np.float32]:
        self.unpack(theta)
        w = theta[self.filter_slice]
        parts = [self._features(x[i:i + _CHUNK], keep_cache=False)[0] @ w
                 for i in range(0, len(x), _CHUNK)]
        scores = np.concatenate(parts)
        return scores + scores.dtype.type(bias)

    def penalty(self, theta: NDArray[np.float32], l2: float) -> float:
        return 0.5 * l2 * float(np.dot(theta * self.penalty_mask, theta))

    def objective(self, theta: NDArray[np.float32], bias: float, x: NDArray[np.float32],
                  y: NDArray[np.float32], *, loss: str, l2: float) -> float:
        values, _ = loss_forward(y * self.scores(theta, bias, x), loss=loss)
        return float(values.mean(dtype=np.float64)) + self.penalty(theta, l2)

    def gradient(self, theta: NDArray[np.float32], bias: float, x: NDArray[np.float32],
                 y: NDArray[np.float32], *, loss: str, l2: float
                 ) -> tuple[float, NDArray[np.float32], float]:
        """The objective on one batch, its gradient in ``theta`` and in ``b``."""
        self.unpack(theta)
        w = theta[self.filter_slice]
        features, caches = self._features(x, keep_cache=True)
        dtype = features.dtype.type  # float32; float64 in the gradient checks
        scores = features @ w + dtype(bias)
        values, slopes = loss_forward(y * scores, loss=loss)
        upstream = (slopes * y / dtype(len(y))).astype(features.dtype)  # dJ/ds_i
        grad = np.empty_like(theta)
        grad[self.filter_slice] = upstream @ features
        grad_map = np.zeros((len(x), *self.network.output_shape(*x.shape[1:3])), features.dtype)
        inner = grad_map[:, self.margin:grad_map.shape[1] - self.margin,
                         self.margin:grad_map.shape[2] - self.margin]
        inner[...] = (upstream[:, None] * w[None, :]).reshape(inner.shape)
        _, grads = self.network.backward(grad_map, caches, input_gradient=False)
        for key, (where, _) in self.slices.items():
            grad[where] = grads[key].ravel()
        grad += dtype(l2) * self.penalty_mask * theta
        value = float(values.mean(dtype=np.float64)) + self.penalty(theta, l2)
        return value, grad, float(upstream.sum(dtype=np.float64))

