"""Learn a sliding-window detector from annotated images: ``train_detector``.

Positives are the boxes resized to a window, negatives random windows that
overlap no box; after each fit, the detector runs over the training images
and its best-scoring false alarms join the negatives (hard-negative mining),
and the filter is refit with `patternfind.learn.optimize.fit_linear`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from patternfind._validation import non_negative_int, one_of, pair_of, positive_int
from patternfind.detection.detector import detect
from patternfind.detection.nms import box_iou
from patternfind.evaluation.metrics import detection_threshold
from patternfind.layers.features import FEATURE_KINDS, feature_cell, window_features
from patternfind.layers.features import (
    feature_options as complete_feature_options,  # the name is a parameter here
)
from patternfind.layers.network import Network
from patternfind.learn.network_training import NetworkLike, build_network, fit_network
from patternfind.learn.optimize import FitOptions, fit_linear
from patternfind.learn.patch_training import make_filter
from patternfind.learn.patches import (
    as_image,
    check_boxes,
    crop_window,
    patches_from_annotations,
)
from patternfind.structures import Box, Filter

__all__ = ["DETECTOR_HOG_OPTIONS", "train_detector"]

#: Largest default window area in pixels (48 × 48), and the smallest side in feature cells.
_DEFAULT_WINDOW_AREA = 48 * 48
_MIN_CELLS = 4
#: Largest allowed ratio between the window's and the boxes' median aspect ratios.
_MAX_ASPECT_MISMATCH = 1.5
#: HOG options `train_detector` uses by default: Felzenszwalb's 31 channels on 6-pixel
#: cells. On the held-out composite face set of samples/faces they reached AP@0.5
#: 0.97-0.98 over three seeds, against 0.88-0.92 for Dalal-Triggs blocks with 18 signed
#: bins and 0.64-0.72 for scikit-image's unsigned 9 bins on 8-pixel cells.
DETECTOR_HOG_OPTIONS = {"cell": 6, "variant": "felzenszwalb"}
#: Largest default window area of a network detector (32 × 32): its cost grows with the area.
_DEFAULT_NETWORK_WINDOW_AREA = 32 * 32
#: Mined windows must score above this to count as hard (a margin violation for both losses).
_MINING_THRESHOLD = -1.0


def train_detector(
    images: Mapping[str, Any] | Sequence[Any],
    annotations: Mapping[str, Sequence[Any]] | Sequence[Sequence[Any]],
    *,
    window: int | tuple[int, int] | None = None,
    features: str = "hog",
    feature_options: Mapping[str, Any] | None = None,
    mine_rounds: int = 2,
    negatives_per_image: int = 20,
    hard_negatives_per_image: int = 20,
    flip: bool = True,
    jitter: int = 0,
    scale_step: float = 1.1,
    name: str = "learned",
    options: FitOptions | None = None,
    network: NetworkLike = None,
    **fit_options: Any,
) -> Filter:
    """Train a sliding-window detector from annotated images, with hard-negative mining.

    Positives are the boxes, resized to the window (and mirrored if ``flip``);
    negatives start as random windows overlapping no box (IoU < 0.3). After
    each fit, `patternfind.detect` runs over the training images and
    the best-scoring windows (score > −1) that overlap no box by IoU ≥ 0.3
    join the negatives; then the filter is refit. Features of every window
    are computed with two cells of surrounding context, so they equal what
    the detector computes on the whole image.

    Parameters
    ----------
    images : mapping of str to image (array or path), or a sequence of images
        Keyed like ``annotations`` (or in the same order). Colour images are
        used in colour for gradient and HOG features (the detector sees them so).
    annotations : mapping of str to sequence of Box, or a sequence of such lists
        True boxes (``Box`` or ``(x, y, w, h)`` tuples). ``ignore`` boxes are
        neither positives nor negatives.
    window : int or (height, width), optional
        Window size in pixels. Default: the boxes' median aspect ratio with an
        area of the median box area, at most 48 × 48, rounded to whole cells
        and at least 4 cells a side. Boxes smaller than the window are
        upsampled; at detection, scales below 1 search them.
    features : {"hog", "gradients", "pixels", "cnn"}
        Feature transform; its options go in ``feature_options``. ``"cnn"``
        trains a small network and the filter together at every round
        (`patternfind.learn.network_training.fit_network`); the default window
        is snapped to a size every layer fits.
    feature_options : mapping, optional
        Default for HOG: `DETECTOR_HOG_OPTIONS` (Felzenszwalb's 31 channels, 6-pixel cells).
    mine_rounds : int, default 2
        Rounds of hard-negative mining (0: random negatives only).
    negatives_per_image, hard_negatives_per_image : int
        Random negatives per image at the start; mined negatives per image and round.
    flip : bool
        Add every positive mirrored left-right.
    jitter : int
        Extra slightly shifted and scaled copies of every positive
        (`patternfind.learn.patches.patches_from_annotations`).
    scale_step : float
        Pyramid step of the detector during mining.
    name, options, network, **fit_options
        As in `train_filter`: the filter's name, how to fit it (`FitOptions`)
        and, for ``"cnn"``, the network's layers.

    Returns
    -------
    Filter
        As `train_filter` returns, except the ``threshold``: the detection score
        with the best F1 when the final filter runs over the training images
        (a detection counts when it overlaps a box by IoU ≥ 0.5), since the
        patch-level cut lets through many windows of whole images. The patch
        cut stays in ``meta["patch_threshold"]``. ``meta`` also holds ``rounds`` (per round:
        negatives added, validation accuracy), ``positives``, ``negatives``
        and ``box_scales``: the (min, max) box size over window size seen in
        training, a sensible ``scales=`` for `detect`.

    Raises
    ------
    ValueError
        On degenerate boxes or boxes wholly outside their image, no boxes at
        all, or a ``window`` whose aspect ratio is more than 1.5 times off the
        boxes' median (both are named).
    """
    fit_settings = FitOptions.build(options, fit_options)
    seed = fit_settings.seed
    one_of(features, "features", FEATURE_KINDS)
    if features == "hog" and feature_options is None:
        feature_options = DETECTOR_HOG_OPTIONS
    feature_settings = complete_feature_options(features, feature_options)
    cell = feature_cell(features, feature_settings)
    mine_rounds = non_negative_int(mine_rounds, "mine_rounds")
    hard_negatives_per_image = non_negative_int(hard_negatives_per_image, "hard_negatives_per_image")
    keyed_images, keyed_boxes = _keyed(images, annotations)
    color = features != "pixels" and any(
        np.ndim(im) == 3 or isinstance(im, (str, bytes)) or hasattr(im, "__fspath__")
        for im in keyed_images.values())
    pixels = {key: as_image(keyed_images[key], f"image {key!r}", color=color) for key in keyed_boxes}
    if color and all(np.ptp(p, axis=2).max() == 0 for p in pixels.values() if p.ndim == 3):
        color = False  # every "colour" image is grey: keep them grey
        pixels = {key: p[..., 0] if p.ndim == 3 else p for key, p in pixels.items()}
    feature_settings = {**feature_settings, "color": color}
    boxes = {key: check_boxes(_as_boxes(keyed_boxes[key]), pixels[key].shape, f"image {key!r}")
             for key in keyed_boxes}
    window_given = window is not None
    window = _choose_window(boxes, window, cell)
    trained = None  # cnn: the network, trained further at every mining round
    if features == "cnn":
        if not window_given:  # a smaller default window, snapped to one every layer fits
            shrink = min(1.0, math.sqrt(_DEFAULT_NETWORK_WINDOW_AREA / (window[0] * window[1])))
            architecture = Network(feature_settings["layers"], channels=3 if color else 1)
            window = architecture.fitted_size(max(round(window[0] * shrink), 1),
                                              max(round(window[1] * shrink), 1))
        trained, feature_settings = build_network(network, feature_settings, window=window,
                                                  seed=seed)
    # Context makes a window's features what the detector sees inside the image; a
    # network without padding sees exactly the window anyway (fully convolutional).
    context = 0 if features == "pixels" or (trained and not trained.geometry.offset) else 2 * cell

    def samples(windows: NDArray[np.float32]) -> NDArray[np.float32]:
        """What the fit sees of each window: its features, or the pixels for a network."""
        if features == "cnn":
            return windows if windows.ndim == 4 else windows[..., None]
        found = window_features(windows, kind=features, options=feature_settings, context=context)
        return found.reshape(len(found), -1)

    def fit_samples(X: NDArray[np.float32], y: NDArray[np.float32], groups: NDArray[np.intp]
                    ) -> tuple[dict[str, Any], tuple[int, ...]]:
        if features != "cnn":
            return fit_linear(X, y, groups=groups, options=fit_settings), feature_shape
        assert trained is not None
        fit = fit_network(X, y, trained, groups=groups, options=fit_settings, margin=context // cell)
        return fit, fit.pop("feature_shape")

    started = time.perf_counter()
    patches, labels = patches_from_annotations(
        pixels, boxes, window=window, flip=flip, negatives_per_image=negatives_per_image,
        jitter=jitter, context=context, color=color, seed=seed)
    feature_shape: tuple[int, ...] = () if features == "cnn" else window_features(  # cnn: by the fit
        patches[:1], kind=features, options=feature_settings, context=context).shape[1:]
    X = samples(patches)
    y = np.where(labels, np.float32(1), np.float32(-1))
    # patches_from_annotations lists each box's copies (jittered, mirrored) together
    copies = (1 + jitter) * (2 if flip else 1)
    positives = int(labels.sum())
    groups = np.concatenate([np.arange(positives) // copies,
                             positives + np.arange(len(labels) - positives)])
    box_scales = _box_scales(boxes, window)
    scales = (box_scales[0] / 1.25, box_scales[1] * 1.25)
    rounds = []
    fit, feature_shape = fit_samples(X, y, groups)
    for round_index in range(1, mine_rounds + 1):
        current = make_filter(dict(fit), feature_shape, features=features, feature_options=feature_settings,
                               window=window, name=name)
        hard = []
        for key, image in pixels.items():
            found = detect(image, current, threshold=_MINING_THRESHOLD, scales=scales,
                           scale_step=scale_step, nms_iou=0.3)
            candidates = np.array([[d.x, d.y, d.w, d.h] for d in found]).reshape(-1, 4)
            if len(candidates) and boxes[key]:
                truth = np.array([[b.x, b.y, b.w, b.h] for b in boxes[key]])
                candidates = candidates[_iou_max(candidates, truth) < 0.3]
            for xywh in candidates[:hard_negatives_per_image]:  # detect sorts best first
                hard.append(crop_window(image, tuple(xywh), window, context=context))
        rounds.append({"round": round_index, "hard_negatives": len(hard)})
        if fit_settings.progress is True:
            sys.stderr.write(f"mining round {round_index}/{mine_rounds}: "
                             f"{len(hard)} hard negatives\n")
        if not hard:
            break
        X = np.concatenate([X, samples(np.stack(hard))])
        y = np.concatenate([y, np.full(len(hard), -1, dtype=np.float32)])
        groups = np.concatenate([groups, groups.max() + 1 + np.arange(len(hard))])
        fit, feature_shape = fit_samples(X, y, groups)
        rounds[-1]["val_accuracy"] = fit["val_accuracy"]
    final = make_filter(dict(fit), feature_shape, features=features, feature_options=feature_settings,
                         window=window, name=name)
    ranked = {key: detect(image, final, threshold=_MINING_THRESHOLD, scales=scales,
                          scale_step=scale_step, nms_iou=0.3) for key, image in pixels.items()}
    threshold, image_f1 = detection_threshold(ranked, boxes, iou=0.5)
    if threshold is not None:
        fit["patch_threshold"] = fit["threshold"]
        fit["threshold"] = threshold
        fit["image_f1"] = image_f1
    extra = {"rounds": rounds, "positives": int((y > 0).sum()), "negatives": int((y < 0).sum()),
             "box_scales": [float(box_scales[0]), float(box_scales[1])],
             "total_seconds": time.perf_counter() - started}
    return make_filter(fit, feature_shape, features=features, feature_options=feature_settings,
                        window=window, name=name, extra_meta=extra)


def _keyed(images: Any, annotations: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if isinstance(annotations, Mapping):
        if not isinstance(images, Mapping):
            msg = "`images` must be a mapping keyed like `annotations` when `annotations` is one"
            raise TypeError(msg)
        missing = [key for key in annotations if key not in images]
        if missing:
            msg = f"`images` has no image for annotation key(s) {missing[:3]}"
            raise ValueError(msg)
        return dict(images), dict(annotations)
    images, annotations = list(images), list(annotations)
    if len(images) != len(annotations):
        msg = f"`images` ({len(images)}) and `annotations` ({len(annotations)}) differ in length"
        raise ValueError(msg)
    keys = [str(i) for i in range(len(images))]
    return dict(zip(keys, images, strict=True)), dict(zip(keys, annotations, strict=True))


def _as_boxes(boxes: Sequence[Any]) -> list[Any]:
    return [box if isinstance(box, Box) else Box(*box) for box in boxes]


def _choose_window(boxes: Mapping[str, Sequence[Any]], window: Any, cell: int) -> tuple[int, int]:
    sizes = np.array([[b.w, b.h] for group in boxes.values() for b in group if not b.ignore])
    if len(sizes) == 0:
        msg = "the annotations hold no box to learn from"
        raise ValueError(msg)
    aspect = float(np.median(sizes[:, 0] / sizes[:, 1]))  # width / height
    if window is not None:
        height, width = pair_of(window, "window", positive_int)
        ratio = (width / height) / aspect
        if max(ratio, 1 / ratio) > _MAX_ASPECT_MISMATCH:
            msg = (f"`window` {width}x{height} (aspect {width / height:.2f}) is far from the "
                   f"boxes' median aspect ratio {aspect:.2f} (width / height)")
            raise ValueError(msg)
        if height < cell or width < cell:
            msg = f"`window` {width}x{height} is smaller than one {cell}-pixel feature cell"
            raise ValueError(msg)
        return height, width
    area = min(float(np.median(sizes[:, 0] * sizes[:, 1])), _DEFAULT_WINDOW_AREA)
    smallest = _MIN_CELLS * cell if cell > 1 else 8
    height = max(smallest, cell * round(math.sqrt(area / aspect) / cell))
    width = max(smallest, cell * round(height * aspect / cell))
    return int(height), int(width)


def _box_scales(boxes: Mapping[str, Sequence[Any]], window: tuple[int, int]) -> tuple[float, float]:
    ratios = [math.sqrt(b.w * b.h / (window[0] * window[1]))
              for group in boxes.values() for b in group if not b.ignore]
    return min(ratios), max(ratios)


def _iou_max(candidates: NDArray[np.float64], truth: NDArray[np.float64]) -> NDArray[np.float64]:
    return box_iou(candidates, truth).max(axis=1)
