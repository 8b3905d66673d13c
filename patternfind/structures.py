"""The small frozen records patternfind passes around: `Filter`, `Detection`, `Box`.

Boxes everywhere are ``(x, y, w, h)``: the top-left corner and the size, in
input-image pixels, x to the right and y down (the convention of OpenCV,
COCO and Multi-Template-Matching).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from patternfind._validation import (
    as_float_array,
    check_finite,
    finite_float,
    pair_of,
    positive_int,
)
from patternfind.pixels import to_float_image

__all__ = ["FEATURE_KINDS", "FILTER_FORMAT_VERSION", "SCORE_KINDS", "Box", "Detection", "Filter"]

#: Version of the ``.npz`` filter format written by `Filter.save`.
FILTER_FORMAT_VERSION = 1

FEATURE_KINDS = ("pixels", "gradients", "hog", "cnn")
SCORE_KINDS = ("ncc", "dot", "cosine", "shape")


@dataclass(frozen=True, eq=False)
class Filter:
    """A linear filter: F×F×C weights plus a bias, and what it was made for.

    Parameters
    ----------
    weights : (h, w) or (h, w, C) array
        The filter's weights, stored as C-contiguous float32. For
        ``features="pixels"`` the axes are pixels (and colour channels); for
        other feature kinds they are feature cells and feature channels.
    bias : float
        Added to the dot product (the lecture's ``b``).
    name : str
        Label given to this filter's detections.
    threshold : float, optional
        The filter's own operating threshold, used when `detect` is given none.
    score : {"ncc", "dot", "cosine", "shape"}, optional
        The score kind the filter was made for (and its threshold refers to).
    features : {"pixels", "gradients", "hog", "cnn"}
        What the weights are applied to; ``"cnn"`` is a learned network
        (`patternfind.layers.network`) whose layers are in ``feature_options``.
    mask : (h, w) bool array, optional
        True where the filter counts. Only masked-in pixels take part in any score.
    window : (height, width) of int, optional
        The window the filter covers, in pixels at scale 1. Defaults to the
        weights' first two axes for pixel filters.
    feature_options : mapping
        Options of the feature transform (e.g. HOG cell size and bins).
    meta : mapping
        Free metadata, e.g. ``{"kind": "learned", "loss": [...]}``.
    feature_params : mapping of str to array
        Learned parameters of the feature transform: for ``features="cnn"``
        the conv layers' weights and biases (``"0.weights"``, ``"0.bias"``, ...);
        empty for the fixed transforms. Stored read-only.
    """

    weights: NDArray[np.float32]
    bias: float = 0.0
    name: str = "filter"
    threshold: float | None = None
    score: str | None = None
    features: str = "pixels"
    mask: NDArray[np.bool_] | None = None
    window: tuple[int, int] | None = None
    feature_options: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    feature_params: Mapping[str, NDArray[np.float32]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # With a mask only the masked-in weights must be finite (checked below).
        weights = as_float_array(self.weights, "weights", dtype=np.float32,
                                 finite=self.mask is None).copy()  # ours: frozen, never the caller's
        if weights.ndim == 3 and weights.shape[2] == 1:
            weights = weights[..., 0]  # one channel is grey: it scores grey images and grey views
        if weights.ndim not in (2, 3):
            msg = f"`weights` of filter {self.name!r} must be (h, w) or (h, w, C), got shape {weights.shape}"
            raise ValueError(msg)
        if 0 in weights.shape:
            msg = f"Filter {self.name!r} has an empty shape {weights.shape}"
            raise ValueError(msg)
        if self.features == "pixels" and weights.ndim == 3 and weights.shape[2] != 3:
            msg = (
                f"`weights` of pixel filter {self.name!r} must have 1 or 3 channels (grey or "
                f"RGB), got {weights.shape[2]}"
            )
            raise ValueError(msg)
        mask = None
        if self.mask is not None:
            mask = np.ascontiguousarray(self.mask, dtype=bool)
            if mask.shape != weights.shape[:2]:
                msg = f"`mask` of filter {self.name!r} must have shape {weights.shape[:2]}, got {mask.shape}"
                raise ValueError(msg)
            if not mask.any():
                msg = f"`mask` of filter {self.name!r} masks out every pixel"
                raise ValueError(msg)
            # Masked-out weights never count, so they may be NaN (e.g. a transparent
            # template); zero them so that no score can see them.
            check_finite(weights[mask], "weights (inside the mask)")
            weights[~mask] = 0
        if self.features not in FEATURE_KINDS:
            msg = f"`features` must be one of {FEATURE_KINDS}, got {self.features!r}"
            raise ValueError(msg)
        if self.score is not None and self.score not in SCORE_KINDS:
            msg = f"`score` must be one of {SCORE_KINDS} or None, got {self.score!r}"
            raise ValueError(msg)
        bias = finite_float(self.bias, "bias")
        threshold = None if self.threshold is None else finite_float(self.threshold, "threshold")
        window = self.window
        if window is None:
            if self.features != "pixels":
                msg = f"Filter {self.name!r} on {self.features!r} features needs a `window` in pixels"
                raise ValueError(msg)
            window = (int(weights.shape[0]), int(weights.shape[1]))
        window = pair_of(window, "window", positive_int)
        weights.flags.writeable = False
        if mask is not None:
            mask.flags.writeable = False
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "feature_options", dict(self.feature_options))
        object.__setattr__(self, "meta", dict(self.meta))
        object.__setattr__(self, "feature_params", _feature_params(self))


    @property
    def channels(self) -> int:
        """Number of channels C (1 for an (h, w) filter)."""
        return 1 if self.weights.ndim == 2 else int(self.weights.shape[2])

    def replace(self, **changes: Any) -> Filter:
        """Return a copy with some fields changed (`dataclasses.replace`)."""
        return replace(self, **changes)

    @classmethod
    def load(cls, path: str | Path, *, name: str | None = None) -> Filter:
        """Read a filter from ``.npy`` (weights only), ``.npz`` (`save`) or an image file.

        An image's alpha channel becomes the mask. The name defaults to the file stem.
        """
        from patternfind import io

        return io.load_filter(path, name=name)

    def save(self, path: str | Path) -> None:
        """Write the filter atomically: ``.npz`` keeps every field, ``.npy`` only the weights."""
        from patternfind import io

        io.save_filter(self, path)

    @classmethod
    def from_image(
        cls,
        image: NDArray[Any],
        box: tuple[int, int, int, int],
        *,
        name: str = "crop",
        **fields: Any,
    ) -> Filter:
        """Crop a filter out of an image.

        Parameters
        ----------
        image : (H, W), (H, W, 3) or (H, W, 4) array
            Any dtype `patternfind.pixels.to_float_image` accepts; pixel values are
            scaled to [0, 1] so the crop matches the detector's view of images.
            An alpha channel becomes the mask (alpha > 0 counts).
        box : (x, y, w, h) of int
            The crop, in pixels; it must lie inside the image.
        """
        array = np.asarray(image)
        alpha = None
        if array.ndim == 3 and array.shape[2] in (2, 4):  # the alpha channel becomes the mask
            array, alpha = array[..., :-1], array[..., -1] > 0
        pixels = to_float_image(array, "image")
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[..., 0]
        x, y, w, h = (int(v) for v in box)
        height, width = pixels.shape[:2]
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            msg = f"`box` {tuple(box)} must lie inside the {width}×{height} image with w, h > 0"
            raise ValueError(msg)
        weights = pixels[y : y + h, x : x + w].copy()
        if alpha is not None and not alpha[y : y + h, x : x + w].all():
            fields.setdefault("mask", alpha[y : y + h, x : x + w])
        meta = {"kind": "fixed", "source": "crop", "box": [x, y, w, h], **fields.pop("meta", {})}
        return cls(weights, name=name, meta=meta, **fields)


@dataclass(frozen=True)
class Detection:
    """One detected box, in input-image pixels.

    Attributes
    ----------
    x, y : float
        Top-left corner.
    w, h : float
        Width and height.
    score : float
        The score at the peak (a Python float).
    label : str
        Name of the filter that fired.
    scale : float
        Object size over filter size: 2.0 means the object was found twice as
        large as the filter (on the image shrunk by half).
    angle : float
        The filter's turn in degrees, counter-clockwise on screen, about the
        box's centre; 0 without a rotation search (``angles=``). The box
        ``x, y, w, h`` is the upright filter at the found centre and scale;
        `corners` is the turned rectangle.
    """

    x: float
    y: float
    w: float
    h: float
    score: float
    label: str = "filter"
    scale: float = 1.0
    angle: float = 0.0

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``: top-left and bottom-right corners."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    @property
    def corners(self) -> tuple[tuple[float, float], ...]:
        """The 4 corners ``(x, y)`` of the turned rectangle: top-left, top-right,
        bottom-right, bottom-left of the filter (the top edge is the filter's top)."""
        return rotated_corners(self.x, self.y, self.w, self.h, self.angle)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with keys x, y, w, h, score, label, scale, angle."""
        return asdict(self)


def rotated_corners(x: float, y: float, w: float, h: float,
                    angle: float) -> tuple[tuple[float, float], ...]:
    """Corners of the box ``(x, y, w, h)`` turned ``angle`` degrees (counter-clockwise
    on screen) about its centre: top-left, top-right, bottom-right, bottom-left."""
    centre_x, centre_y = x + w / 2, y + h / 2
    radians = math.radians(angle)
    cos, sin = math.cos(radians), math.sin(radians)
    corners = []
    for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):
        # y points down: a counter-clockwise turn on screen is x' = c·x + s·y, y' = −s·x + c·y
        corners.append((centre_x + cos * dx + sin * dy, centre_y - sin * dx + cos * dy))
    return tuple(corners)


@dataclass(frozen=True)
class Box:
    """A ground-truth box from an annotation file.

    Attributes
    ----------
    x, y, w, h : float
        Top-left corner and size, in image pixels.
    label : str or None
        The category, where the format has one.
    ignore : bool
        True for boxes that count neither as hits nor as misses
        (VOC ``difficult``, dlib ``ignore``).
    angle : float or None
        The object's turn in degrees, counter-clockwise on screen, about the
        box's centre (``x, y, w, h`` is then the upright box); None when the
        annotation has no angle.
    """

    x: float
    y: float
    w: float
    h: float
    label: str | None = None
    ignore: bool = False
    angle: float | None = None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``: top-left and bottom-right corners."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)


def _feature_params(filter_: Filter) -> dict[str, NDArray[np.float32]]:
    """Read-only float32 copies of the feature transform's learned arrays (checked finite)."""
    params = {}
    for key, value in dict(filter_.feature_params).items():
        array = as_float_array(value, f"feature_params[{key!r}]", dtype=np.float32).copy()
        array.flags.writeable = False
        params[str(key)] = array
    if filter_.features == "cnn" and not params:
        msg = f"Filter {filter_.name!r} on 'cnn' features needs the network's `feature_params`"
        raise ValueError(msg)
    if filter_.features == "cnn" and "layers" in filter_.feature_options:
        _check_network_chain(filter_, params)
    return params


def _check_network_chain(filter_: Filter, params: Mapping[str, NDArray[np.float32]]) -> None:
    """Refuse stored network arrays whose layers do not chain, by shape arithmetic alone.

    Each conv layer's weights are ``(F, F, C/groups, K)``: ``C`` must be the channels it
    receives (the image's for the first conv layer, the previous conv layer's
    ``K`` after it) and the filter on top must take the last ``K``. The layers
    themselves live in `patternfind.layers.network`, above this module, so the
    check reads only the stored layer specs and array shapes.
    """
    layers = filter_.feature_options["layers"]
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (list, tuple)):
        msg = f"Filter {filter_.name!r}: feature_options['layers'] must be a list, got {layers!r}"
        raise TypeError(msg)
    depth = 3 if filter_.feature_options.get("color", True) else 1
    source = "the input image"
    for index, spec in enumerate(layers):
        if not isinstance(spec, Mapping) or spec.get("type") != "conv":
            continue
        weights, bias = params.get(f"{index}.weights"), params.get(f"{index}.bias")
        if weights is None or bias is None:
            missing = f"{index}.weights" if weights is None else f"{index}.bias"
            msg = f"Filter {filter_.name!r}: network parameter {missing!r} of conv layer {index} is missing"
            raise ValueError(msg)
        size, count = spec.get("f"), spec.get("k")
        if weights.ndim != 4 or weights.shape[0] != size or weights.shape[1] != size or (
                weights.shape[3] != count):
            msg = (f"Filter {filter_.name!r}: conv layer {index} has {count} filters of {size}×{size} "
                   f"but its weights have shape {weights.shape}; expected ({size}, {size}, C, {count})")
            raise ValueError(msg)
        groups = spec.get("groups", 1)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            msg = (f"Filter {filter_.name!r}: conv layer {index} needs `groups` as a positive "
                   f"integer, got {groups!r}")
            raise ValueError(msg)
        if weights.shape[2] * groups != depth:
            per_group = f" in each of {groups} groups" if groups != 1 else ""
            msg = (f"the network's layers do not chain: conv layer {index} of filter "
                   f"{filter_.name!r} takes {weights.shape[2]} input channels{per_group} (weights "
                   f"of shape {weights.shape}) but {source} has {depth}")
            raise ValueError(msg)
        if bias.shape != (count,):
            msg = (f"Filter {filter_.name!r}: conv layer {index} needs a bias of shape "
                   f"({count},), got {bias.shape}")
            raise ValueError(msg)
        depth, source = int(count), f"conv layer {index} before it"
    channels = 1 if filter_.weights.ndim == 2 else int(filter_.weights.shape[2])
    if channels != depth:
        msg = (f"the network's layers do not chain: filter {filter_.name!r} takes {channels} "
               f"feature channels but the network's last conv layer gives {depth}")
        raise ValueError(msg)
