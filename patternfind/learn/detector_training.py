"""Learn a sliding-window detector from annotated images: ``train_detector``.

Positives are the boxes resized to a window, negatives random windows that
overlap no box; after each fit, the detector runs over the training images
and its best-scoring false alarms join the negatives (hard-negative mining),
and the filter is refit with `patternfind.learn.optimize.fit_linear`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind._validation import finite_float, non_negative_int, one_of, pair_of, positive_int
from patternfind.detection.detector import detect, scan
from patternfind.detection.nms import box_iou
from patternfind.detection.options import LARGER_SCALE_MARGIN, SCALE_MARGIN, DetectOptions
from patternfind.detection.pyramid import feature_pyramid_bytes, memory_limit, pyramid_scales
from patternfind.evaluation.metrics import detection_threshold, evaluate
from patternfind.layers.features import (
    FEATURE_KINDS,
    feature_cell,
    feature_channels,
    window_features,
)
from patternfind.layers.features import (
    feature_options as complete_feature_options,  # the name is a parameter here
)
from patternfind.layers.network import Network
from patternfind.learn.network_training import (
    NetworkLike,
    average_networks,
    build_network,
    fit_network,
    grouped_first_conv,
)
from patternfind.learn.optimize import FitOptions, fit_linear
from patternfind.learn.patch_training import fit_with_selection, make_filter
from patternfind.learn.patches import (
    annotated_patches,
    as_image,
    check_boxes,
    crop_window,
)
from patternfind.learn.selection import assign_folds, cross_validate
from patternfind.structures import Box, Filter

__all__ = ["DETECTOR_HOG_OPTIONS", "DETECTOR_L2_GRID", "train_detector"]

#: Default window: the boxes' median area, clipped to this many pixels (dlib's 80 × 80 at
#: most) and at least _MIN_DEFAULT_CELLS cells a side, so that HOG has detail to see;
#: smaller boxes are upsampled. An explicit window needs only _MIN_CELLS.
_DEFAULT_WINDOW_AREA = 80 * 80
_MIN_DEFAULT_CELLS = 8
_MIN_CELLS = 4
#: L2 strength of the filters that mine hard negatives when l2="auto" (chosen after mining).
_MINING_L2 = 1e-2
#: The strengths l2="auto" chooses from for a detector. Windows mined from the training
#: images are almost separable from the boxes, so the held-out *window* loss keeps
#: asking for weaker penalties than whole held-out *images* bear: on the composite
#: face set, l2 = 1e-3 gave held-out-image AP 0.74 and a threshold that kept 35 % of
#: the faces, where 1e-2 gave 0.96 (the issue saw the same on photographs: 1e-3 → 0.1
#: lifted the swapped AP from 0.55 to 0.86). So the grid starts at 1e-2.
DETECTOR_L2_GRID = (1e-2, 1e-1, 1.0)
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
#: A network's mined negatives may overlap a box up to IoU 0.5 (a linear filter's: 0.3),
#: so that the windows over part of a face that outscore the whole face (and then win
#: non-maximum suppression) are taught as negatives. On 4 folds of the composite face
#: set's training scenes (seeds 0, 1) the network's held-out AP rose from 0.926 to 0.953.
_NETWORK_NEGATIVE_IOU = 0.5


def train_detector(
    images: Mapping[str, Any] | Sequence[Any],
    annotations: Mapping[str, Sequence[Any]] | Sequence[Sequence[Any]],
    *,
    window: int | tuple[int, int] | None = None,
    features: str = "hog",
    feature_options: Mapping[str, Any] | None = None,
    mine_rounds: int | None = None,
    negatives_per_image: int = 40,
    hard_negatives_per_image: int = 50,
    flip: bool | str = "auto",
    jitter: int = 0,
    scale_step: float = 1.2,
    upsample: float | None = None,
    network: NetworkLike = None,
    ensemble: int | None = None,
    name: str = "learned",
    options: FitOptions | None = None,
    **fit_options: Any,
) -> Filter:
    """Train a sliding-window detector from annotated images, with hard-negative mining.

    Positives are the boxes, resized to the window (with a mirrored copy, see ``flip``);
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
        Window size in pixels; a given window always wins. Default: the
        boxes' median aspect ratio with the median box area, clipped to at
        least 8 × 8 cells (48 × 48 px for 6-px HOG cells: enough detail for
        HOG) and at most 80 × 80 px (dlib's default area), rounded to whole
        cells; ``meta["window_rule"]`` says how it was chosen. Boxes smaller
        than the window are upsampled; at detection, scales below 1 search them.
    features : {"hog", "gradients", "pixels", "cnn"}
        Feature transform; its options go in ``feature_options``. ``"cnn"``
        trains a small network and the filter together at every round
        (`patternfind.learn.network_training.fit_network`, warm-started from
        the previous round, keeping a moving average of the weights: see its
        Notes); its default window is at most 32 × 32, snapped
        to a size every layer fits, and its threshold is the best F1 on the
        training images (no per-fold networks: each would be a training run).
        A network's mined negatives may overlap a box up to IoU 0.5: windows
        over part of an object are negatives too.
    feature_options : mapping, optional
        Default for HOG: `DETECTOR_HOG_OPTIONS` (Felzenszwalb's 31 channels, 6-pixel cells).
    mine_rounds : int, optional
        Rounds of hard-negative mining (0: random negatives only). Default: 1
        for a linear filter (on the composite face set a second round found 1
        hard negative more and left the test and swapped AP unchanged over
        three seeds, at a third of the training's detection time); 2 for
        ``"cnn"``, whose network trains further at every round.
    negatives_per_image, hard_negatives_per_image : int, default 40 and 50
        Random negatives per image at the start; mined negatives per image and
        round (dlib keeps every margin violator). On the composite face set,
        40 and 50 against 20 and 20 raised the test AP from 0.971 and 0.968 to
        0.980 and 0.970 (seeds 0, 1), for about the same training time. Images
        listed without boxes contribute negatives only: add face-free photos.
    flip : {"auto", True, False}
        ``True`` adds every positive mirrored left-right; ``False`` adds no
        copy. ``"auto"`` (the default) lets cross-validation choose between
        the mirrored copy and the box itself counted twice (so that the
        positives weigh the same either way), by the held-out loss of the
        boxes themselves (copies are not scored) at the mining strength.
        Mirroring helps when the objects are left-right symmetric and the
        boxes centred on them; it blurs the filter when they are not. On the
        composite face set, whose boxes put the LFW faces about 1.7 px of 25
        left of centre, the mirrored copies raised the held-out loss on every
        fold split and seed, and the box counted twice gave test AP
        0.994-0.995 against 0.979-0.981 with mirroring. The choice is in
        ``meta["flip_selection"]``; a ``"cnn"`` detector mirrors (its fits
        are training runs, too long to repeat).
    jitter : int
        Extra slightly shifted and scaled copies of every positive
        (`patternfind.learn.patches.patches_from_annotations`).
    scale_step : float, default 1.2
        Pyramid step of the detector during mining and calibration, recorded
        in ``meta["scale_step"]`` for `detect` to search with (dlib's pyramid
        also steps by 6/5). HOG cells pool over 6 pixels, so a coarser step
        costs little accuracy: on the composite face set, 1.2 against 1.1
        gave test AP 0.962 and 0.967 against 0.953 and 0.954 (seeds 0, 1) with
        about half the pyramid levels.
    upsample : float, optional
        Enlarge every image (and its boxes) by this factor before training,
        as dlib's ``upsample``; ``meta["box_scales"]`` is divided by it, so
        the filter still searches the original images at the right scales.
    ensemble : int, optional
        ``"cnn"`` only: train this many networks, from seeds ``seed``,
        ``seed + 1``, …, and score every window by the mean of their scores
        (`patternfind.learn.network_training.average_networks`: one filter,
        the networks side by side). Default 2 for ``"cnn"`` and 1 otherwise.
        A network trained on a few dozen objects depends on its seed: on
        4 folds of the composite face set's training scenes, five seeds
        gave held-out AP 0.873-0.964 alone, 0.951-0.980 in pairs,
        0.967-0.987 in triples and 0.979 all five (a second partition of
        the scenes: 0.842 alone for one seed; pairs 0.958 and 0.977).
        Training takes ``ensemble`` times as long, and so does the network
        part of detection, so the default stops at two. A network whose
        first conv layer is grouped trains alone (the networks side by side
        share that layer's input; ``ensemble`` > 1 is refused for it).
    name, options, network, **fit_options
        As in `train_filter`: the filter's name, how to fit it (`FitOptions`)
        and, for ``"cnn"``, the network's layers.
        Cross-validation splits by image: ``options.folds`` folds of whole
        images (fewer if fewer images hold boxes). With ``l2="auto"`` (the
        default) hard negatives are mined with ``l2=0.01`` and the final
        strength is chosen from `DETECTOR_L2_GRID` on the mined set by those
        folds (lowest held-out loss, `patternfind.learn.selection.choose_l2`).

    Returns
    -------
    Filter
        As `train_filter` returns, except the ``threshold``: the detection
        score with the best F1 over the *held-out* images of the folds (each
        image is searched by the filter fitted without its fold; a detection
        counts when it overlaps a box by IoU ≥ 0.5), so that it is not set on
        images the filter fits almost perfectly. With a single annotated
        image it falls back to the training image, and if no detection hits
        a box, to the patch cut (``meta["threshold_rule"]`` says which).
        The patch cut stays in ``meta["patch_threshold"]``, the
        AP of the held-out detections in ``meta["cv_ap"]``. ``meta`` also holds
        ``rounds`` (per round: negatives added, validation accuracy),
        ``positives``, ``negatives``, ``window_rule``, ``l2_selection``,
        ``flip`` (whether the copies are mirrored) and ``flip_selection``,
        ``box_scales`` (the (min, max) box size over window size seen in
        training) and ``search_scales``: that range from 1/1.25 of its low
        end to 2 times its high end, which `detect` searches when no
        ``scales`` is given.

    Raises
    ------
    ValueError
        On degenerate boxes or boxes wholly outside their image, no boxes at
        all, or a ``window`` whose aspect ratio is more than 1.5 times off the
        boxes' median (both are named).
    """
    started = time.perf_counter()
    fit_settings = FitOptions.build(options, fit_options)
    seed = fit_settings.seed
    one_of(features, "features", FEATURE_KINDS)
    if features == "hog" and feature_options is None:
        feature_options = DETECTOR_HOG_OPTIONS
    feature_settings = complete_feature_options(features, feature_options)
    cell = feature_cell(features, feature_settings)
    if mine_rounds is None:
        mine_rounds = 2 if features == "cnn" else 1
    mine_rounds = non_negative_int(mine_rounds, "mine_rounds")
    default_members = 2 if features == "cnn" else 1
    members = positive_int(default_members if ensemble is None else ensemble, "ensemble")
    if members > 1 and features != "cnn":
        msg = (f"`ensemble`={ensemble!r} needs features='cnn': the mean of linear filters on "
               f"{features!r} features is one linear filter")
        raise ValueError(msg)
    if flip not in ("auto", True, False):
        msg = f"`flip` must be 'auto', True or False, got {flip!r}"
        raise ValueError(msg)
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
    grouped = grouped_first_conv(network, feature_settings) if members > 1 else None
    if grouped is not None:  # side by side, the networks' first layers share one input
        if ensemble is not None:
            msg = (f"`ensemble`={ensemble!r} needs an ungrouped first conv layer (the networks "
                   f"side by side share its input), got {grouped!r}")
            raise ValueError(msg)
        members = 1
    boxes = {key: check_boxes(_as_boxes(keyed_boxes[key]), pixels[key].shape, f"image {key!r}")
             for key in keyed_boxes}
    factor = 1.0 if upsample is None else finite_float(upsample, "upsample")
    if factor <= 0:
        msg = f"`upsample` must be positive, got {upsample!r}"
        raise ValueError(msg)
    if members > 1:
        networks = [train_detector(
            pixels, boxes, window=window, features=features, feature_options=feature_options,
            mine_rounds=mine_rounds, negatives_per_image=negatives_per_image,
            hard_negatives_per_image=hard_negatives_per_image, flip=flip, jitter=jitter,
            scale_step=scale_step, upsample=upsample, network=network, ensemble=1, name=name,
            options=dataclasses.replace(fit_settings, seed=seed + index))
            for index in range(members)]
        return _calibrated_ensemble(networks, pixels, boxes, started=started)
    if factor != 1:
        pixels = {key: cv2.resize(p, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
                  for key, p in pixels.items()}
        boxes = {key: [dataclasses.replace(b, x=b.x * factor, y=b.y * factor, w=b.w * factor,
                                           h=b.h * factor) for b in group]
                 for key, group in boxes.items()}
    window_given = window is not None
    window, window_rule = _choose_window(boxes, window, cell)
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

    feature_shape: tuple[int, ...] = ()  # the filter's: from the features, or a network's fit

    def samples(windows: NDArray[np.float32]) -> NDArray[np.float32]:
        """What the fit sees of each window: its features, or the pixels for a network."""
        if features == "cnn":
            return windows if windows.ndim == 4 else windows[..., None]
        found = window_features(windows, kind=features, options=feature_settings, context=context)
        return found.reshape(len(found), -1)

    def fit_samples(X: NDArray[np.float32], y: NDArray[np.float32], groups: NDArray[np.intp],
                    settings: FitOptions) -> dict[str, Any]:
        if trained is None:
            return fit_linear(X, y, groups=groups, options=settings)
        fit = fit_network(X, y, trained, groups=groups, options=settings, margin=context // cell,
                          shift=trained.total_stride // 2,  # objects fall between map cells
                          average=True)  # face folds: pairs 0.982 on average, not 0.969
        nonlocal feature_shape
        feature_shape = fit.pop("feature_shape")
        return fit
    patches, labels, sources = annotated_patches(
        pixels, boxes, window=window, flip=flip is not False, negatives_per_image=negatives_per_image,
        jitter=jitter, context=context, color=color, seed=seed)
    if trained is None:
        feature_shape = window_features(patches[:1], kind=features, options=feature_settings,
                                        context=context).shape[1:]
    X = samples(patches)
    y = np.where(labels, np.float32(1), np.float32(-1))
    # annotated_patches lists each box's copies (jittered, mirrored) together, every
    # crop followed by its mirror image
    copies = (1 + jitter) * (2 if flip is not False else 1)
    positives = int(labels.sum())
    groups = np.concatenate([np.arange(positives) // copies,
                             positives + np.arange(len(labels) - positives)])
    flip_selection = None
    if flip == "auto" and trained is None:
        mirrors = np.arange(1, positives, 2)
        X, flip_selection = _choose_mirroring(
            X, y, groups, mirrors, _image_folds(sources, y, fit_settings),
            _mining_settings(fit_settings, linear=True))
    box_scales = _box_scales(boxes, window)
    scales = (box_scales[0] / SCALE_MARGIN, box_scales[1] * LARGER_SCALE_MARGIN)
    search = DetectOptions(threshold=_MINING_THRESHOLD, scales=scales, scale_step=scale_step,
                           nms_iou=0.3)
    # Every image is searched once to mine and once more to calibrate, with the same
    # pyramid: keep its feature maps between the searches when they fit in a quarter
    # of the memory limit (HOG on the composite face set: 11 MB an image, and the
    # features are three quarters of a search). A network changes at every round, so
    # its maps are never searched twice.
    levels = pyramid_scales(scales, scale_step=scale_step)
    cached = trained is None and features != "pixels" and sum(
        feature_pyramid_bytes(p.shape, levels, cell=cell, channels=feature_channels(
            features, feature_settings, image_channels=3 if color else 1))
        for p in pixels.values()) <= memory_limit() // 4
    caches: dict[str, dict[Any, Any]] = {key: {} for key in pixels} if cached else {}

    def search_image(key: str, filter_: Filter) -> list[Any]:
        return scan(pixels[key], filter_, options=search, keep_maps=False,
                    feature_cache=caches.get(key))[0]

    def as_filter(w: NDArray[np.float32], b: float) -> Filter:
        params = {} if trained is None else {"feature_params": trained.parameters()}
        return make_filter({"w": w.copy(), "b": b, "threshold": _MINING_THRESHOLD, **params},
                           feature_shape, features=features, feature_options=feature_settings,
                           window=window, name=name)

    mining_settings = _mining_settings(fit_settings, linear=trained is None)
    rounds = []
    fit = fit_samples(X, y, groups, mining_settings)
    keys = list(pixels)
    for round_index in range(1, mine_rounds + 1):
        current = as_filter(fit["w"], fit["b"])
        hard, hard_sources = [], []
        for index, key in enumerate(keys):
            image = pixels[key]
            found = search_image(key, current)
            candidates = np.array([[d.x, d.y, d.w, d.h] for d in found]).reshape(-1, 4)
            if len(candidates) and boxes[key]:
                truth = np.array([[b.x, b.y, b.w, b.h] for b in boxes[key]])
                candidates = candidates[_iou_max(candidates, truth) < (
                    0.3 if trained is None else _NETWORK_NEGATIVE_IOU)]
            for xywh in candidates[:hard_negatives_per_image]:  # detect sorts best first
                hard.append(crop_window(image, tuple(xywh), window, context=context))
                hard_sources.append(index)
        rounds.append({"round": round_index, "hard_negatives": len(hard)})
        if fit_settings.progress is True:
            sys.stderr.write(f"mining round {round_index}/{mine_rounds}: "
                             f"{len(hard)} hard negatives\n")
        if not hard:
            break
        X = np.concatenate([X, samples(np.stack(hard))])
        y = np.concatenate([y, np.full(len(hard), -1, dtype=np.float32)])
        groups = np.concatenate([groups, groups.max() + 1 + np.arange(len(hard))])
        sources = np.concatenate([sources, np.array(hard_sources, dtype=np.intp)])
        if round_index < mine_rounds:
            fit = fit_samples(X, y, groups, mining_settings)
            held_out = fit.get("options", {}).get("val_samples", 1)  # 0: scored on its own rows
            rounds[-1]["val_accuracy" if held_out else "train_accuracy"] = fit["val_accuracy"]

    # Folds of whole images: l2 (if "auto") and the threshold are judged on unseen images.
    fold_ids = _image_folds(sources, y, fit_settings)
    if trained is not None:  # a network per fold would be a training run each: calibrate on
        fit = fit_samples(X, y, groups, fit_settings)  # the training images, as one image does
        fit["threshold_rule"] = "best F1 over the training images (a network: no per-fold fits)"
        ranked = {key: detect(image, as_filter(fit["w"], fit["b"]), options=search)
                  for key, image in pixels.items()}
        calibration = boxes
    elif fold_ids is None:  # one image with boxes: no image to hold out; folds of boxes for l2
        fit = fit_with_selection(X, y, groups=groups, options=fit_settings, grid=DETECTOR_L2_GRID)
        fit.pop("cross_validation", None)
        fit["threshold_rule"] = "best F1 over the training image (a single image: none to hold out)"
        ranked = {key: search_image(key, as_filter(fit["w"], fit["b"])) for key in pixels}
        calibration = boxes
    else:
        # the final filter is fitted like the fold filters whose held-out detections set
        # its threshold, so that its scores are on their scale
        fit = fit_with_selection(X, y, groups=groups, options=fit_settings, fold_ids=fold_ids,
                                 grid=DETECTOR_L2_GRID)
        validation = fit.pop("cross_validation", None)
        if validation is None:
            validation = cross_validate(X, y, fold_ids, groups=groups, options=fit_settings)
        ranked = {}
        for index, key in enumerate(keys):
            w, b = validation.fits[_fold_of_image(fold_ids, sources, index)]
            ranked[key] = search_image(key, as_filter(w, b))
        calibration = boxes
        fit["threshold_rule"] = (f"best F1 over detections on held-out images "
                                 f"({len(validation.fits)}-fold cross-validation by image)")
        fit["cv_ap"] = evaluate(ranked, calibration, iou=0.5).ap
    threshold, image_f1 = detection_threshold(ranked, calibration, iou=0.5)
    if threshold is not None:
        fit["patch_threshold"] = fit["threshold"]
        fit["threshold"] = threshold
        fit["image_f1"] = image_f1
    else:  # the fit's own cut stays
        fit["threshold_rule"] = ("best F1 over the validation patches: no detection on the "
                                 "images hit a box")
    extra = {"rounds": rounds, "positives": int((y > 0).sum()), "negatives": int((y < 0).sum()),
             "box_scales": [float(box_scales[0]) / factor, float(box_scales[1]) / factor],
             "search_scales": [float(scales[0]) / factor, float(scales[1]) / factor],
             "scale_step": float(scale_step), "upsample": factor, "window_rule": window_rule,
             "flip": flip_selection["chosen"] == "mirrored" if flip_selection else flip is not False,
             **({"flip_selection": flip_selection} if flip_selection else {}),
             "total_seconds": time.perf_counter() - started}
    return make_filter(fit, feature_shape, features=features, feature_options=feature_settings,
                       window=window, name=name, extra_meta=extra)


def _calibrated_ensemble(networks: list[Filter], pixels: Mapping[str, NDArray[np.float32]],
                         boxes: Mapping[str, list[Box]], *, started: float) -> Filter:
    """The networks' mean (`average_networks`), its threshold set as each network's was.

    The threshold is the best F1 of the ensemble's detections on the training
    images (IoU ≥ 0.5 with a box), over the networks' own search range; if
    none of them hits a box, the members' mean threshold. ``started`` is
    the training's start (`time.perf_counter`), for ``meta["total_seconds"]``.
    """
    merged = average_networks(networks)
    ranked = {key: detect(image, merged, threshold=_MINING_THRESHOLD, nms_iou=0.3)
              for key, image in pixels.items()}
    threshold, image_f1 = detection_threshold(ranked, boxes, iou=0.5)
    meta = {key: value for key, value in merged.meta.items() if key != "image_f1"}
    if threshold is None:
        meta["threshold_rule"] = ("the members' mean threshold: no detection on the training "
                                  "images hit a box")
    else:
        meta.update(threshold_rule="best F1 of the ensemble over the training images",
                    image_f1=image_f1)
    meta["total_seconds"] = time.perf_counter() - started
    return dataclasses.replace(merged, meta=meta,
                               threshold=merged.threshold if threshold is None else threshold)


def _mining_settings(settings: FitOptions, *, linear: bool) -> FitOptions:
    """How the filters that mine (and choose the copies) are fitted.

    Mining needs a filter before l2 is chosen: with ``l2="auto"``, the grid's
    weakest strength, fitted to its optimum by L-BFGS like the cross-validation
    fits (a linear logistic filter).
    """
    if settings.l2 != "auto":
        return settings
    settings = dataclasses.replace(settings, l2=_MINING_L2)
    if linear and settings.loss == "logistic":
        settings = dataclasses.replace(settings, optimizer="lbfgs", val_fraction=0)
    return settings


def _choose_mirroring(X: NDArray[np.float32], y: NDArray[np.float32], groups: NDArray[np.intp],
                      mirrors: NDArray[np.intp], fold_ids: NDArray[np.intp] | None,
                      settings: FitOptions) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """Keep the mirrored copies (rows ``mirrors``) or repeat the crop before each instead.

    Both candidates are cross-validated (folds of whole images, or of boxes
    with one image) with the boxes' copies left out of the held-out scores, so
    that both are judged on the same rows; the lower mean held-out loss wins.

    Returns
    -------
    X : (N, D) float32 array
        The features with the winner's copies.
    record : dict
        For ``meta["flip_selection"]``: ``cv_loss`` per candidate, ``chosen``,
        ``l2``, ``folds`` and the ``rule`` (with a single box, nothing to hold
        out: ``chosen="mirrored"`` and the rule only).
    """
    if fold_ids is None:  # one image with boxes: folds of boxes (a box's copies together)
        if len(np.unique(groups[y > 0])) < 2:
            return X, {"chosen": "mirrored", "rule": "a single box: none to hold out"}
        fold_ids = assign_folds(groups, y, settings.folds, np.random.default_rng(settings.seed))
    scored = np.ones(len(y), dtype=bool)
    scored[mirrors] = False
    repeated = X.copy()
    repeated[mirrors] = X[mirrors - 1]
    candidates = {"mirrored": X, "repeated": repeated}
    losses = {name: cross_validate(features, y, fold_ids, groups=groups, options=settings,
                                   scored=scored).loss
              for name, features in candidates.items()}
    chosen = min(losses, key=losses.__getitem__)
    record = {"cv_loss": losses, "chosen": chosen, "l2": float(settings.l2),
              "folds": len(np.unique(fold_ids)),
              "rule": "lowest mean held-out loss of the boxes, copies not scored"}
    return candidates[chosen], record


def _image_folds(sources: NDArray[np.intp], y: NDArray[np.float32],
                 settings: FitOptions) -> NDArray[np.intp] | None:
    """Fold of every row, dealt by image; None when fewer than two images hold boxes."""
    if len(np.unique(sources[y > 0])) < 2:
        return None
    return assign_folds(sources, y, settings.folds, np.random.default_rng(settings.seed))


def _fold_of_image(fold_ids: NDArray[np.intp], sources: NDArray[np.intp], image: int) -> int:
    """The fold an image's rows are in (an image without rows joins fold 0: no fit saw it)."""
    rows = np.flatnonzero(sources == image)
    return int(fold_ids[rows[0]]) if len(rows) else 0


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


def _choose_window(boxes: Mapping[str, Sequence[Any]], window: Any, cell: int
                   ) -> tuple[tuple[int, int], str]:
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
        return (height, width), "given"
    median_area = float(np.median(sizes[:, 0] * sizes[:, 1]))
    smallest = _MIN_DEFAULT_CELLS * cell if cell > 1 else 8
    area = min(max(median_area, smallest * smallest), _DEFAULT_WINDOW_AREA)
    height = max(smallest, cell * round(math.sqrt(area / aspect) / cell))
    width = max(smallest, cell * round(height * aspect / cell))
    rule = (f"median box {math.sqrt(median_area):.0f} px (aspect {aspect:.2f}): area clipped to "
            f"[{smallest}², {math.isqrt(_DEFAULT_WINDOW_AREA)}²], whole {cell}-px cells")
    return (int(height), int(width)), rule


def _box_scales(boxes: Mapping[str, Sequence[Any]], window: tuple[int, int]) -> tuple[float, float]:
    ratios = [math.sqrt(b.w * b.h / (window[0] * window[1]))
              for group in boxes.values() for b in group if not b.ignore]
    return min(ratios), max(ratios)


def _iou_max(candidates: NDArray[np.float64], truth: NDArray[np.float64]) -> NDArray[np.float64]:
    return box_iou(candidates, truth).max(axis=1)
