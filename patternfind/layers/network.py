"""Nested conv layers: a small convolutional network that learns the feature transform.

The lecture's second half stacks convolutional layers: the first layer's
filters respond to edges and blobs, the next layer's to patterns of those
responses. Here a few ``Conv → ReLU → pool`` layers form the feature
transform φ of a learned `Filter` (``features="cnn"``); the filter itself is
the last layer, ``⟨w, φ(x)⟩ + b``. A `LocalContrast` first layer normalises
each pixel by the mean and spread of its neighbourhood, which makes the
features blind to a photograph's brightness and contrast.

Layers are written in the style of cs231n's ``layers.py``: plain arrays, an
explicit cache, and every ``forward`` has its ``backward`` twin::

    out, cache = layer.forward(x)
    grad_x, grads = layer.backward(grad_out, cache)

Each is built on `patternfind.layers.conv`'s `conv2d` / `pool2d` and their
backward passes. Arrays are channels last, ``(N, H, W, C)``.

Geometry
--------
A network of layers with filter sizes ``F_l``, strides ``S_l`` and paddings
``P_l`` has the receptive field ``R = 1 + Σ (F_l − 1)·J_{l−1}``, the total
stride ``S = J_L`` with ``J_l = S_1···S_l``, and the padding offset
``O = Σ P_l·J_{l−1}``. Output entry ``(i, j)`` sees the input pixels from
``(i·S − O, j·S − O)`` over ``R × R``. An input of ``(m − 1)·S + R − 2·O``
pixels fits every layer exactly and gives ``m`` outputs; `Network.forward`
crops any larger image to the largest such size (dropping trailing rows and
columns that no whole window covers), so the network slides over whole images
exactly as it sees cut-out windows: it is fully convolutional.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from patternfind._validation import non_negative_int, positive_int
from patternfind.layers.conv import (
    _axis_geometry,
    _conv_backward,
    conv2d,
    conv2d_backward,
    num_params,
    output_size,
    pool2d,
    pool2d_backward,
)
from patternfind.structures import Filter

__all__ = [
    "DEFAULT_LAYERS",
    "AvgPool",
    "Conv",
    "Layer",
    "LocalContrast",
    "MaxPool",
    "Network",
    "ReLU",
    "layer_from_spec",
]

Array = NDArray[np.float32]


def _positive(value: Any, name: str, layer: str) -> int:
    """A positive int, or a ValueError naming the layer, the parameter and the value."""
    try:
        return positive_int(value, name)
    except (TypeError, ValueError):
        msg = f"`{name}` of a {layer} layer must be a positive integer, got {value!r}"
        raise ValueError(msg) from None


def _positive_number(value: Any, name: str, layer: str) -> float:
    """A finite positive float, or a ValueError naming the layer, the parameter and the value."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        msg = f"`{name}` of a {layer} layer must be a positive number, got {value!r}"
        raise ValueError(msg)
    return number


class Conv:
    """A convolutional layer: ``k`` filters of ``f × f × C`` with a bias each.

    Parameters
    ----------
    k : int
        Number of filters ``K`` (output channels).
    f : int
        Filter size ``F``.
    stride : int, default 1
    padding : {"valid", "same"} or int, default "valid"
        Zero padding ``P`` on each side; ``"same"`` is ``P = (F − 1)/2`` (odd
        ``F`` only), which keeps the map size at stride 1.
    groups : int, default 1
        Split the ``C`` input channels and the ``K`` filters into this many
        groups; group ``g``'s filters see only group ``g``'s channels (as
        torch's ``groups``). A layer then has ``K(F²C/groups + 1)``
        parameters. `Network.side_by_side` uses groups to run several
        networks as one.

    Attributes
    ----------
    weights : (F, F, C/groups, K) float32 array or None
        Set by `Network` (He initialisation) or from saved parameters.
    bias : (K,) float32 array or None
    """

    kind = "conv"

    def __init__(self, k: int, f: int, *, stride: int = 1, padding: str | int = "valid",
                 groups: int = 1) -> None:
        self.k = _positive(k, "k", "Conv")
        self.f = _positive(f, "f", "Conv")
        self.stride = _positive(stride, "stride", "Conv")
        self.groups = _positive(groups, "groups", "Conv")
        if self.k % self.groups:
            msg = f"`groups`={self.groups} of a Conv layer must divide its k={self.k} filters"
            raise ValueError(msg)
        if padding == "valid":
            self.padding = 0
        elif padding == "same":
            if self.f % 2 == 0:
                msg = f"`padding`='same' needs an odd filter size to pad evenly, got f={self.f}"
                raise ValueError(msg)
            self.padding = (self.f - 1) // 2
        else:
            try:
                self.padding = non_negative_int(padding, "padding")
            except (TypeError, ValueError):
                msg = f"`padding` of a Conv layer must be 'valid', 'same' or an int ≥ 0, got {padding!r}"
                raise ValueError(msg) from None
        self.weights: Array | None = None
        self.bias: Array | None = None

    def spec(self) -> dict[str, Any]:
        spec = {"type": "conv", "k": self.k, "f": self.f, "stride": self.stride,
                "padding": self.padding}
        if self.groups != 1:  # files of ungrouped layers stay as they were
            spec["groups"] = self.groups
        return spec

    def initialise(self, channels: int, rng: np.random.Generator) -> None:
        """He initialisation: weights ~ N(0, 2 / (F²C/groups)), bias 0 (the fan-in of a filter)."""
        fan_in = self.f * self.f * (channels // self.groups)
        scale = math.sqrt(2.0 / fan_in)
        self.weights = (rng.standard_normal((self.f, self.f, channels // self.groups, self.k))
                        * scale).astype(np.float32)
        self.bias = np.zeros(self.k, dtype=np.float32)

    def params(self) -> dict[str, Array]:
        if self.weights is None or self.bias is None:
            msg = f"{self!r} has no weights yet: put it in a Network, which initialises them"
            raise ValueError(msg)
        return {"weights": self.weights, "bias": self.bias}

    def forward(self, x: Array) -> tuple[Array, Any]:
        """``(N, H, W, C)`` → ``(N, H', W', K)``; the cache is the input."""
        params = self.params()
        parts = [conv2d(x_g, w_g, b_g, stride=self.stride, padding=self.padding)
                 for x_g, w_g, b_g in zip(_split(x, self.groups),
                                          _split(params["weights"], self.groups),
                                          _split(params["bias"], self.groups), strict=True)]
        return _join(parts), x

    def backward(self, grad_out: Array, cache: Any, *, input_gradient: bool = True
                 ) -> tuple[Array | None, dict[str, Array]]:
        """``grad_x`` (None if not ``input_gradient``) and the parameters' gradients."""
        grads: list[tuple[Array | None, Array, Array]] = []
        for grad_g, x_g, w_g in zip(_split(grad_out, self.groups), _split(cache, self.groups),
                                    _split(self.params()["weights"], self.groups), strict=True):
            if input_gradient:
                grads.append(conv2d_backward(grad_g, x_g, w_g, stride=self.stride,
                                             padding=self.padding))
            else:  # a first layer: its input is the data, whose gradient nobody needs
                grads.append(_conv_backward(grad_g, x_g, w_g, self.stride, self.padding,
                                            input_gradient=False))
        grad_x, grad_w, grad_b = zip(*grads, strict=True)
        return (_join(list(grad_x)) if input_gradient else None,  # type: ignore[arg-type]
                {"weights": _join(list(grad_w)), "bias": _join(list(grad_b))})

    def __repr__(self) -> str:
        padding = f", padding={self.padding}" if self.padding else ""
        stride = f", stride={self.stride}" if self.stride != 1 else ""
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return f"Conv({self.k}, {self.f}{stride}{padding}{groups})"


class ReLU:
    """``max(0, x)``, element-wise."""

    kind = "relu"
    f = stride = 1
    padding = 0

    def spec(self) -> dict[str, Any]:
        return {"type": "relu"}

    def params(self) -> dict[str, Array]:
        return {}

    def forward(self, x: Array) -> tuple[Array, Any]:
        positive = x > 0
        return x * positive, positive

    def backward(self, grad_out: Array, cache: Any) -> tuple[Array | None, dict[str, Array]]:
        return grad_out * cache, {}

    def __repr__(self) -> str:
        return "ReLU()"


class _Pool:
    """Max or average pooling over ``f × f`` windows every ``stride`` pixels (no parameters)."""

    kind = "pool"
    mode = "max"
    padding = 0

    def __init__(self, f: int = 2, stride: int | None = None) -> None:
        name = type(self).__name__
        self.f = _positive(f, "f", name)
        self.stride = self.f if stride is None else _positive(stride, "stride", name)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "f": self.f, "stride": self.stride}

    def params(self) -> dict[str, Array]:
        return {}

    def forward(self, x: Array) -> tuple[Array, Any]:
        return pool2d(x, self.f, stride=self.stride, mode=self.mode), x

    def backward(self, grad_out: Array, cache: Any) -> tuple[Array | None, dict[str, Array]]:
        return pool2d_backward(grad_out, cache, self.f, stride=self.stride, mode=self.mode), {}

    def __repr__(self) -> str:
        stride = f", stride={self.stride}" if self.stride != self.f else ""
        return f"{type(self).__name__}({self.f}{stride})"


class MaxPool(_Pool):
    """Max pooling: the largest value of each window, per channel."""

    kind = "maxpool"
    mode = "max"


class AvgPool(_Pool):
    """Average pooling: the mean of each window, per channel."""

    kind = "avgpool"
    mode = "avg"


class LocalContrast:
    """Local contrast normalisation: each pixel minus the mean of the ``f × f`` window around it,
    over that window's standard deviation.

    ``y = (x_c − μ) / sqrt(σ² + eps²)`` with ``x_c`` the window's centre pixel and
    ``μ``, ``σ²`` the window's mean and variance, per channel (Jarrett et al.,
    "What is the best multi-stage architecture for object recognition?", 2009).
    As a first layer it makes the network's features blind to the brightness and
    contrast of a patch, as HOG's block normalisation does; ``eps`` keeps flat
    regions from having their noise blown up. The window is "valid" (the output
    is ``f − 1`` pixels smaller), so the network stays fully convolutional.

    Parameters
    ----------
    f : int, default 5
        Window size, odd (the centre pixel is normalised).
    eps : float, default 0.05
        Floor of the standard deviation, in pixel units (pixels in [0, 1]).
    """

    kind = "contrast"
    stride = 1
    padding = 0

    def __init__(self, f: int = 5, *, eps: float = 0.05) -> None:
        self.f = _positive(f, "f", "LocalContrast")
        if self.f % 2 == 0:
            msg = f"`f` of a LocalContrast layer must be odd (a centre pixel), got {f!r}"
            raise ValueError(msg)
        self.eps = _positive_number(eps, "eps", "LocalContrast")

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "f": self.f, "eps": self.eps}

    def params(self) -> dict[str, Array]:
        return {}

    def forward(self, x: Array) -> tuple[Array, Any]:
        mean = _box_mean(x, self.f)
        variance = _box_mean(x * x, self.f) - mean * mean
        np.maximum(variance, 0, out=variance)  # rounding can make the variance negative
        scale = np.sqrt(variance + x.dtype.type(self.eps ** 2))
        r = self.f // 2
        centre = x[:, r:r + mean.shape[1], r:r + mean.shape[2]]
        out = (centre - mean) / scale
        return out, (x, mean, scale, out)

    def backward(self, grad_out: Array, cache: Any) -> tuple[Array | None, dict[str, Array]]:
        # y_p = (x_c(p) − μ_p)/s_p; ∂μ_p/∂x_q = [q ∈ W_p]/n, ∂s_p/∂x_q = [q ∈ W_p](x_q − μ_p)/(n s_p).
        # With a = g/s and b = g·y/s, the sums over the windows holding q are the
        # average-pooling backward: dx = centre(a) − pool'(a) − x·pool'(b) + pool'(b·μ).
        x, mean, scale, out = cache
        a = grad_out / scale
        b = a * out / scale
        r = self.f // 2
        grad_x = -pool2d_backward(a, x, self.f, stride=1, mode="avg")
        grad_x -= x * pool2d_backward(b, x, self.f, stride=1, mode="avg")
        grad_x += pool2d_backward(b * mean, x, self.f, stride=1, mode="avg")
        grad_x[:, r:r + a.shape[1], r:r + a.shape[2]] += a
        return grad_x, {}

    def __repr__(self) -> str:
        eps = f", eps={self.eps:g}" if self.eps != 0.05 else ""
        return f"LocalContrast({self.f}{eps})"


Layer = Conv | ReLU | MaxPool | AvgPool | LocalContrast

#: The default architecture for small windows (24 × 24 and other multiples of 4 from 12):
#: conv 5×5 ×8 → ReLU → max-pool 2 → conv 3×3 ×16 → ReLU → max-pool 2. Receptive
#: field 12 pixels, total stride 4; a 24 × 24 window becomes 4 × 4 × 16 features.
DEFAULT_LAYERS: tuple[dict[str, Any], ...] = (
    {"type": "conv", "k": 8, "f": 5, "stride": 1, "padding": 0},
    {"type": "relu"},
    {"type": "maxpool", "f": 2, "stride": 2},
    {"type": "conv", "k": 16, "f": 3, "stride": 1, "padding": 0},
    {"type": "relu"},
    {"type": "maxpool", "f": 2, "stride": 2},
)


def layer_from_spec(spec: Mapping[str, Any]) -> Layer:
    """Build a layer from its `spec` dict (as stored in a filter file)."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        msg = f"a layer spec must be a mapping with a 'type', got {spec!r}"
        raise ValueError(msg)
    kind = spec["type"]
    fields = {key: value for key, value in spec.items() if key != "type"}
    builders = {"conv": Conv, "relu": ReLU, "maxpool": MaxPool, "avgpool": AvgPool,
                "contrast": LocalContrast}
    if kind not in builders:
        msg = f"unknown layer type {kind!r}; use one of {sorted(builders)}"
        raise ValueError(msg)
    try:
        if kind == "conv":
            return Conv(fields.pop("k"), fields.pop("f"), **fields)
        return builders[kind](**fields)  # type: ignore[no-any-return]
    except (KeyError, TypeError) as error:
        msg = f"bad {kind!r} layer spec {dict(spec)!r}: {error}"
        raise ValueError(msg) from None


@dataclass(frozen=True)
class Geometry:
    """Receptive field ``R``, total stride ``S`` and padding offset ``O`` of a network (pixels)."""

    receptive_field: int
    stride: int
    offset: int

    def input_size(self, outputs: int) -> int:
        """Input length that gives exactly ``outputs`` output positions."""
        return (outputs - 1) * self.stride + self.receptive_field - 2 * self.offset

    def outputs(self, n: int) -> int:
        """Output positions from an input of length ``n`` (0 if it holds no whole window)."""
        smallest = self.input_size(1)
        return 0 if n < smallest else (n - smallest) // self.stride + 1


class Network:
    """An ordered list of layers: the learned feature transform φ.

    Parameters
    ----------
    layers : sequence of Layer or of spec dicts
        E.g. ``[Conv(8, 5), ReLU(), MaxPool(2), Conv(16, 3), ReLU(), MaxPool(2)]``.
    channels : int, default 1
        Input channels (1 grey, 3 RGB).
    seed : int, default 0
        Seeds the He initialisation of conv layers that have no weights yet.

    Raises
    ------
    ValueError
        If there is no conv layer, or if stored weights do not chain (a conv
        layer's input channels differ from the previous conv layer's filters).
    """

    def __init__(self, layers: Sequence[Layer | Mapping[str, Any]], *, channels: int = 1,
                 seed: int = 0) -> None:
        self.layers: list[Layer] = [
            layer if isinstance(layer, (Conv, ReLU, MaxPool, AvgPool, LocalContrast))
            else layer_from_spec(layer)
            for layer in layers]
        self.channels = positive_int(channels, "channels")
        if not any(isinstance(layer, Conv) for layer in self.layers):
            msg = f"a network needs at least one Conv layer, got {self.layers!r}"
            raise ValueError(msg)
        rng = np.random.default_rng(seed)
        depth = self.channels
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, Conv):
                continue
            if depth % layer.groups:
                msg = (f"the network's layers do not chain: layer {index} ({layer!r}) splits its "
                       f"input into {layer.groups} groups but receives {depth} channels")
                raise ValueError(msg)
            if layer.weights is None:
                layer.initialise(depth, rng)
            _check_conv_params(layer, index, depth)
            depth = layer.k
        self.geometry = _geometry(self.layers)

    # ---------------------------------------------------------------- description

    @property
    def out_channels(self) -> int:
        """Channels of the output map: the last conv layer's ``K``."""
        return [layer.k for layer in self.layers if isinstance(layer, Conv)][-1]

    @property
    def receptive_field(self) -> int:
        """Pixels on a side that one output entry sees."""
        return self.geometry.receptive_field

    @property
    def total_stride(self) -> int:
        """Input pixels between neighbouring output entries."""
        return self.geometry.stride

    @property
    def num_params(self) -> int:
        """Learnable parameters: the lecture's ``K(F²C + 1)`` summed over conv layers.

        A grouped layer's filters see ``C/groups`` channels each: ``K(F²C/groups + 1)``.
        """
        total, depth = 0, self.channels
        for layer in self.layers:
            if isinstance(layer, Conv):
                total += num_params(layer.f, depth // layer.groups, layer.k)
                depth = layer.k
        return total

    def output_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(H', W', K)`` for an input of ``height × width`` (after cropping to fit)."""
        rows, cols = self.geometry.outputs(height), self.geometry.outputs(width)
        if rows == 0 or cols == 0:
            msg = (f"the network's receptive field ({self.receptive_field} pixels, padding "
                   f"{self.geometry.offset}) is larger than the input of {height}×{width}")
            raise ValueError(msg)
        return rows, cols, self.out_channels

    def fitted_size(self, height: int, width: int) -> tuple[int, int]:
        """The largest ``(h, w) ≤ (height, width)`` that fits every layer exactly."""
        rows, cols = self.output_shape(height, width)[:2]
        return self.geometry.input_size(rows), self.geometry.input_size(cols)

    def check_fits(self, height: int, width: int) -> None:
        """Raise the lecture's "does not fit" error unless every layer fits the input exactly.

        `forward` crops an image to the largest size that fits; a training
        window must fit as it is, or the filter would not cover all of it.
        """
        size = (int(height), int(width))
        for index, layer in enumerate(self.layers):
            if isinstance(layer, ReLU):
                continue
            try:
                size = (_output_length(layer, size[0]), _output_length(layer, size[1]))
            except ValueError as error:
                fitted = self.fitted_size(height, width) if self.geometry.outputs(
                    min(height, width)) else None
                hint = f"; the largest window that fits is {fitted[1]}×{fitted[0]}" if fitted else ""
                msg = (f"layer {index} ({layer!r}) on a {width}×{height} window: {error}{hint}")
                raise ValueError(msg) from None

    def describe(self, *, input_size: tuple[int, int] | None = None) -> str:
        """A table of the layers: output sizes (for ``input_size``) and parameters."""
        lines = [f"{'layer':<22} {'output':>14} {'parameters':>10}"]
        depth = self.channels
        size = None if input_size is None else self.fitted_size(*input_size)
        if size is not None:
            lines.append(f"{'input':<22} {f'{size[0]}×{size[1]}×{depth}':>14} {0:>10}")
        for layer in self.layers:
            params = 0
            if isinstance(layer, Conv):
                params = num_params(layer.f, depth // layer.groups, layer.k)
                depth = layer.k
            if size is not None and not isinstance(layer, ReLU):
                size = (_output_length(layer, size[0]), _output_length(layer, size[1]))
            shape = "" if size is None else f"{size[0]}×{size[1]}×{depth}"
            lines.append(f"{layer!r:<22} {shape:>14} {params:>10}")
        grouped = any(isinstance(layer, Conv) and layer.groups != 1 for layer in self.layers)
        formula = "K(F²C/groups + 1)" if grouped else "K(F²C + 1)"
        lines.append(f"total parameters {self.num_params} ({formula} per conv layer); "
                     f"receptive field {self.receptive_field} px, total stride "
                     f"{self.total_stride} px, padding offset {self.geometry.offset} px")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Network({self.layers!r}, channels={self.channels})"

    # ---------------------------------------------------------------- parameters

    def spec(self) -> list[dict[str, Any]]:
        """The architecture as JSON-ready dicts (no weights)."""
        return [layer.spec() for layer in self.layers]

    def parameters(self) -> dict[str, Array]:
        """Every learnable array by name, ``"<layer index>.weights"`` / ``".bias"`` (views)."""
        return {f"{index}.{name}": value for index, layer in enumerate(self.layers)
                for name, value in layer.params().items()}

    def set_parameters(self, parameters: Mapping[str, NDArray[Any]]) -> None:
        """Replace the learnable arrays (same names and shapes as `parameters`)."""
        current = self.parameters()
        if set(parameters) != set(current):
            msg = (f"network parameters must be {sorted(current)}, "
                   f"got {sorted(parameters)}")
            raise ValueError(msg)
        for key, value in parameters.items():
            index, name = key.split(".")
            array = np.ascontiguousarray(value, dtype=np.float32)
            if array.shape != current[key].shape:
                msg = f"network parameter {key!r} must have shape {current[key].shape}, got {array.shape}"
                raise ValueError(msg)
            setattr(self.layers[int(index)], name, array.copy())

    @classmethod
    def from_parameters(cls, layers: Sequence[Mapping[str, Any]],
                        parameters: Mapping[str, NDArray[Any]], *, channels: int) -> Network:
        """Rebuild a network from its `spec` and `parameters` (e.g. from a filter file).

        Raises
        ------
        ValueError
            If a parameter is missing, not finite, or the layers do not chain.
        """
        built = [layer_from_spec(spec) for spec in layers]
        for index, layer in enumerate(built):
            if isinstance(layer, Conv):
                for name in ("weights", "bias"):
                    key = f"{index}.{name}"
                    if key not in parameters:
                        msg = f"network parameter {key!r} of layer {index} ({layer!r}) is missing"
                        raise ValueError(msg)
                    array = np.ascontiguousarray(parameters[key], dtype=np.float32)
                    if not np.isfinite(array).all():
                        msg = f"network parameter {key!r} holds NaN or inf"
                        raise ValueError(msg)
                    setattr(layer, name, array)
        return cls(built, channels=channels)

    @classmethod
    def from_filter(cls, filter_: Filter) -> Network:
        """The network of a ``features="cnn"`` filter (its layers and learned arrays)."""
        if filter_.features != "cnn":
            msg = f"Filter {filter_.name!r} works on {filter_.features!r} features, not a network"
            raise ValueError(msg)
        return cls.from_parameters(filter_.feature_options["layers"], filter_.feature_params,
                                   channels=3 if filter_.feature_options.get("color") else 1)

    @classmethod
    def side_by_side(cls, networks: Sequence[Network]) -> Network:
        """One network that runs every network of ``networks`` on the same input.

        The networks must share one architecture. The result's output holds
        each network's output channels in turn, ``(H', W', n·K)``: the first
        conv layer's filters are stacked, and every later conv layer is
        grouped (``n`` times its groups) so that each network's filters see
        only that network's channels. The layers before the first conv run
        once; the rest cost ``n`` times one network's.

        Raises
        ------
        TypeError
            If an item of ``networks`` is not a `Network`.
        ValueError
            If ``networks`` is empty, the architectures or input channels
            differ, or the first conv layer is itself grouped.
        """
        networks = list(networks)
        if not networks:
            msg = "`networks` must hold at least one network"
            raise ValueError(msg)
        for index, network in enumerate(networks):
            if not isinstance(network, Network):
                msg = (f"`networks` must hold Network objects, got {type(network).__name__} "
                       f"at {index}")
                raise TypeError(msg)
        first = networks[0]
        for index, other in enumerate(networks[1:], 1):
            if other.spec() != first.spec() or other.channels != first.channels:
                msg = (f"`networks` must share one architecture: network {index} is {other!r}, "
                       f"network 0 is {first!r}")
                raise ValueError(msg)
        count, stacked, after_first_conv = len(networks), [], False
        for index, layer in enumerate(first.layers):
            if not isinstance(layer, Conv):  # no parameters, one channel at a time: shared
                stacked.append(layer_from_spec(layer.spec()))
                continue
            if not after_first_conv and layer.groups != 1:
                msg = (f"the first conv layer ({layer!r}) is grouped: its networks' filters "
                       "could not share the input")
                raise ValueError(msg)
            conv = Conv(layer.k * count, layer.f, stride=layer.stride, padding=layer.padding,
                        groups=layer.groups * count if after_first_conv else 1)
            members = [network.layers[index].params() for network in networks]
            conv.weights = np.concatenate([params["weights"] for params in members], axis=3)
            conv.bias = np.concatenate([params["bias"] for params in members])
            stacked.append(conv)
            after_first_conv = True
        return cls(stacked, channels=first.channels)

    # ---------------------------------------------------------------- passes

    def forward(self, x: NDArray[Any], *, keep_cache: bool = False
                ) -> tuple[Array, list[Any]]:
        """Run every layer on ``x``.

        Parameters
        ----------
        x : (N, H, W, C) array
            Images, channels last; cropped to the largest size that fits every
            layer (trailing rows and columns no whole window covers are dropped).
        keep_cache : bool
            Keep the caches `backward` needs (for training).

        Returns
        -------
        out : (N, H', W', K) float32 array
        caches : list
            One cache per layer if ``keep_cache``, else empty.
        """
        x = self._checked_input(x)
        if not keep_cache:
            return self._scores_forward(x), []
        caches: list[Any] = []
        out = x
        for layer in self.layers:
            out, cache = layer.forward(out)
            caches.append(cache)
        return out, caches

    def _scores_forward(self, x: Array) -> Array:
        """`forward` without caches (detection): the same values, with less memory traffic.

        A ReLU rectifies its input in place, as nothing else holds it (every
        layer's forward returns a fresh array, never its input or a view of
        it); a ReLU followed by a max pool runs after the pool instead, on a
        map ``stride²`` times smaller (max and ReLU commute, and both are
        exact, so the output is identical). On a 500×375 scene this took
        `detect` with the three face networks from 139 to 117 ms.
        """
        out, layers, index = x, self.layers, 0
        while index < len(layers):
            layer = layers[index]
            index += 1
            if not isinstance(layer, ReLU):
                out = layer.forward(out)[0]
                continue
            if index < len(layers) and isinstance(layers[index], MaxPool):
                out = layers[index].forward(out)[0]  # the pool first: max and ReLU commute
                index += 1
            # in place unless it is the caller's array: nothing else holds a layer's output
            out = np.maximum(out, 0) if out is x else np.maximum(out, 0, out=out)
        return out

    def backward(self, grad_out: NDArray[Any], caches: list[Any], *,
                 input_gradient: bool = True) -> tuple[Array | None, dict[str, Array]]:
        """Backpropagate ``grad_out`` through the layers, using ``forward``'s caches.

        Returns
        -------
        grad_x : (N, h, w, C) float32 array, or None
            Gradient with respect to the (cropped) input; None if not
            ``input_gradient`` (training needs only the parameters', and
            skipping the first layer's input gradient saves a third of the work).
        grads : dict of str to array
            Gradient of every parameter, keyed as `parameters`.
        """
        grads: dict[str, Array] = {}
        grad: Array | None = _float_array(grad_out)
        first_conv = min(i for i, layer in enumerate(self.layers) if isinstance(layer, Conv))
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            assert grad is not None
            if isinstance(layer, Conv) and index == first_conv and not input_gradient:
                grad, layer_grads = layer.backward(grad, caches[index], input_gradient=False)
            else:
                grad, layer_grads = layer.backward(grad, caches[index])
            for name, value in layer_grads.items():
                grads[f"{index}.{name}"] = value
            if grad is None:
                break
        return grad, grads

    def feature_map(self, image: NDArray[Any]) -> Array:
        """φ of one ``(H, W[, C])`` image: the ``(H', W', K)`` output map."""
        array = np.asarray(image, dtype=np.float32)
        if array.ndim == 2:
            array = array[..., None]
        return self.forward(array[None])[0][0]

    def _checked_input(self, x: NDArray[Any]) -> Array:
        x = _float_array(x)
        if x.ndim != 4 or x.shape[3] != self.channels:
            msg = f"network input must be (N, H, W, {self.channels}), got shape {x.shape}"
            raise ValueError(msg)
        height, width = self.fitted_size(x.shape[1], x.shape[2])
        return x[:, :height, :width]


def _float_array(values: Any) -> Array:
    """float32, or float64 if given float64 (the gradient checks run in float64)."""
    array = np.asarray(values)
    return array if array.dtype == np.float64 else array.astype(np.float32, copy=False)


def _split(array: Array, groups: int) -> list[Array]:
    """``array`` cut into ``groups`` equal parts along its last axis (channels, filters or biases)."""
    return [array] if groups == 1 else np.split(array, groups, axis=-1)


def _join(parts: list[Array]) -> Array:
    """The inverse of `_split`: the parts side by side along the last axis."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def _check_conv_params(layer: Conv, index: int, channels: int) -> None:
    assert layer.weights is not None
    assert layer.bias is not None
    expected = (layer.f, layer.f, channels // layer.groups, layer.k)
    if layer.weights.shape != expected:
        got_channels = layer.weights.shape[2] if layer.weights.ndim == 4 else "?"
        per_group = f" in each of {layer.groups} groups" if layer.groups != 1 else ""
        msg = (f"the network's layers do not chain: layer {index} ({layer!r}) has weights of "
               f"shape {layer.weights.shape} ({got_channels} input channels{per_group}) but "
               f"receives {channels} channels; expected {expected}")
        raise ValueError(msg)
    if layer.bias.shape != (layer.k,):
        msg = f"layer {index} ({layer!r}) must have a bias of shape ({layer.k},), got {layer.bias.shape}"
        raise ValueError(msg)


def _box_mean(x: Array, f: int) -> Array:
    """Mean of every ``f × f`` window of ``(N, H, W, C)`` (valid): separable, 2f adds per pixel.

    ``pool2d(x, f, stride=1, mode="avg")`` gives the same with ``f²`` adds; on a
    detector's pyramid levels the separable sums are what keep the layer cheap.
    """
    height, width = x.shape[1] - f + 1, x.shape[2] - f + 1
    rows = x[:, :height].copy()
    for i in range(1, f):
        rows += x[:, i:i + height]
    out = rows[:, :, :width].copy()
    for j in range(1, f):
        out += rows[:, :, j:j + width]
    out *= out.dtype.type(1 / (f * f))
    return out


def _output_length(layer: Conv | MaxPool | AvgPool | LocalContrast, n: int) -> int:
    """Output length of a conv or pooling layer along one axis; the lecture's error if it does not fit.

    Conv: ``(N − F + 2P)/S + 1``; pooling has no padding: ``(W − F)/S + 1``, so
    its error says to change the stride or the size, not the padding.
    """
    if isinstance(layer, Conv):
        return output_size(n, layer.f, stride=layer.stride, padding=layer.padding)
    return _axis_geometry(n, layer.f, layer.stride, None, "f")[0]


def _geometry(layers: Sequence[Layer]) -> Geometry:
    field, jump, offset = 1, 1, 0
    for layer in layers:
        field += (layer.f - 1) * jump
        offset += layer.padding * jump
        jump *= layer.stride
    return Geometry(receptive_field=field, stride=jump, offset=offset)
