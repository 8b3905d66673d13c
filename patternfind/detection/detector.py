"""The detector: scan filters over an image pyramid, pick peaks, remove overlaps.

``detect`` = for every pyramid level and filter: a score map
(`patternfind.detection.scores`), its thresholded local maxima (`patternfind.detection.peaks`),
boxes mapped back to input pixels; then non-maximum suppression across all
levels and filters (`patternfind.detection.nms`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from patternfind import io
from patternfind._validation import finite_float
from patternfind.detection.nms import non_max_suppression, non_max_suppression_rotated
from patternfind.detection.options import DetectOptions, filter_scale_step, filter_scales
from patternfind.detection.parallel import map_in_threads, resolve_workers
from patternfind.detection.peaks import find_peaks
from patternfind.detection.pyramid import check_memory, pyramid_scales, resize_to_scale, scan_memory
from patternfind.detection.rotation import PoseSearch, angle_range, search_poses
from patternfind.detection.scores import (
    DEFAULT_THRESHOLDS,
    FLAT_VARIANCE,
    match_channels,
    score_pixels,
)
from patternfind.detection.shape import DEFAULT_MIN_CONTRAST, DEFAULT_SHAPE_THRESHOLDS, shape_model
from patternfind.detection.turned_features import FeatureTarget, ScoreImage, search_turned_features
from patternfind.layers.features import feature_cell, feature_map
from patternfind.layers.network import Network
from patternfind.pixels import prepare_image, to_grey
from patternfind.structures import SCORE_KINDS, Detection, Filter

__all__ = ["CONTAINED_FRACTION", "LevelMap", "detect", "load_filters", "operating_point", "scan"]

#: A box with more than this fraction of its area inside a better box is a
#: duplicate: a template matches parts of its own copy at smaller scales.
CONTAINED_FRACTION = 0.7

FilterLike = Filter | str | Path
ImageLike = NDArray[Any] | str | Path


@dataclass(frozen=True)
class _Plan:
    """One filter with its score kind and threshold resolved."""

    filter: Filter
    score: str
    threshold: float
    scales: tuple[float, float]
    scale_step: float

    def searches(self, scale: float) -> bool:
        """Whether this filter is scored at pyramid level ``scale``."""
        return self.scales[0] * (1 - 1e-9) <= scale <= self.scales[1] * (1 + 1e-9) or (
            self.scales[0] == self.scales[1])


@dataclass(frozen=True)
class LevelMap:
    """A score map at one pyramid level, with what is needed to map it to input pixels.

    Attributes
    ----------
    scores : (M, N) float32 array
        Entry (i, j) scores the window whose top-left corner is at
        ``(j · step · scale_x, i · step · scale_y)`` in input pixels.
    label : str
    step : int
        Pixels of the level per map entry (1 for pixel filters, the cell size for features).
    scale_x, scale_y : float
        Input pixels per level pixel.
    window : (height, width) of float
        The window's size in input pixels.
    """

    scores: NDArray[np.float32]
    label: str
    step: int
    scale_x: float
    scale_y: float
    window: tuple[float, float]


def detect(
    image: ImageLike,
    filters: FilterLike | Sequence[FilterLike],
    *,
    options: DetectOptions | None = None,
    **search_options: Any,
) -> list[Detection]:
    """Find every occurrence of the filters in an image, at every scale.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) array, or path
        Grey, RGB or RGBA; uint8, uint16 or float (taken to be in [0, 1]).
        Pixel values are scaled to [0, 1] before scoring, so a uint8 image
        and a float filter cut from it agree.
    filters : Filter, path, or a list of them
        Grey filters score the grey conversion of a colour image; colour
        filters need a colour image.
    options : DetectOptions, optional
        The search options as one record.
    **search_options
        Any `DetectOptions` field by keyword, overriding ``options``:
        ``threshold``, ``score``, ``scales``, ``scale_step``, ``nms_iou``,
        ``per_label``, ``max_detections``, ``subpixel``, ``workers``,
        ``angles``, ``angle_step``, ``polarity``, ``min_contrast``.
        Without ``scales``, each filter searches its own trained range
        (`patternfind.detection.options.filter_scales`).

    Returns
    -------
    list of Detection
        Best score first; boxes in input-image pixels, inside the image. With
        ``angles``, what the turned filter scores (its mask, or a feature
        filter's window) lies on the image; its upright box may reach beyond.

    Examples
    --------
    >>> import patternfind
    >>> boxes = patternfind.detect("samples/astronaut.png", "samples/eye.npy")
    >>> [(box.x, box.y) for box in boxes]
    [(192.0, 93.0), (235.0, 95.0)]
    """
    return scan(image, filters, options=options, keep_maps=False, **search_options)[0]


def scan(
    image: ImageLike,
    filters: FilterLike | Sequence[FilterLike],
    *,
    options: DetectOptions | None = None,
    keep_maps: bool = True,
    feature_cache: dict[tuple[float, str], tuple[NDArray[np.float32], int]] | None = None,
    **search_options: Any,
) -> tuple[list[Detection], list[LevelMap]]:
    """`detect`, also returning every level's score maps (for heat maps).

    Takes the same arguments as `detect`. With ``keep_maps=False`` the list
    of maps is empty.

    ``feature_cache`` serves a caller that searches the *same image* again
    with other filters of the same feature kind and the same pyramid
    (`patternfind.learn.train_detector` searches every training image twice):
    give an empty dict to the first search and the same dict to the later
    ones. It keeps every level's feature maps, keyed by scale and feature
    kind (about `patternfind.detection.pyramid.feature_pyramid_bytes`), and
    the later searches skip computing them. Upright searches only.

    Returns
    -------
    detections : list of Detection
    maps : list of LevelMap
        Each filter's score map at each pyramid level.
    """
    options = DetectOptions.build(options, search_options)
    image = io.load_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
    plans = [_plan(f, options.threshold, options.score, polarity=options.polarity,
                   min_contrast=options.min_contrast, scales=options.scales,
                   scale_step=options.scale_step)
             for f in load_filters(filters)]
    levels = _levels(plans)
    workers = resolve_workers(options.workers)
    _check_memory(image.shape, levels, len(plans), min(workers, len(levels)), keep_maps)
    pixels = prepare_image(image)
    for plan in plans:
        if plan.filter.features == "pixels":
            match_channels(pixels, plan.filter)  # fail early on a colour filter and a grey image
    _check_some_level_fits(pixels.shape, plans, levels)
    if options.angles is not None or any(plan.score == "shape" for plan in plans):
        return _scan_poses(pixels, plans, levels, options, workers, keep_maps)

    # One level at a time per thread keeps memory to a few levels; with a
    # single level the threads split its rows instead.
    inner_workers = workers if len(levels) == 1 else 1
    results = map_in_threads(
        lambda scale: _scan_level(pixels, scale, plans, options.subpixel, inner_workers, keep_maps,
                                  feature_cache),
        levels,
        workers,
    )
    candidates = [candidate for found, _ in results for candidate in found]
    maps = [level_map for _, level_maps in results for level_map in level_maps]
    names = [plan.filter.name for plan in plans]
    detections = _suppress(candidates, names, options.nms_iou, options.per_label,
                           options.max_detections)
    return detections, maps


def _check_memory(shape: tuple[int, ...], levels: list[float], filters: int, workers: int,
                  keep_maps: bool) -> None:
    """Refuse, before allocating, a search whose pyramid would not fit in the memory limit."""
    needed = scan_memory(shape, levels, filters=filters, workers=workers, keep_maps=keep_maps)
    check_memory(
        needed,
        f"searching a {shape[1]}×{shape[0]} image at {len(levels)} scales from {min(levels):.3g} "
        f"(levels up to {round(shape[1] / min(levels))}×{round(shape[0] / min(levels))})",
        "use a larger minimum scale (scales=(1, ...) never enlarges the image), fewer threads",
    )


def load_filters(filters: FilterLike | Sequence[FilterLike]) -> list[Filter]:
    """Filters from a Filter, a path, or a list of them."""
    items = [filters] if isinstance(filters, (Filter, str, Path)) else list(filters)
    if not items:
        msg = "`filters` is empty: give at least one filter"
        raise ValueError(msg)
    loaded = []
    for item in items:
        if isinstance(item, Filter):
            loaded.append(item)
        elif isinstance(item, (str, Path)):
            loaded.append(io.load_filter(item))
        else:
            msg = f"`filters` must hold Filter objects or paths, got {type(item).__name__}"
            raise TypeError(msg)
    return loaded


def operating_point(
    filter_: Filter, *, threshold: float | None = None, score: str | None = None,
    polarity: str = "use", min_contrast: float = DEFAULT_MIN_CONTRAST,
) -> tuple[str, float]:
    """The score kind and threshold `detect` uses for ``filter_`` with these options.

    Raises the errors `detect` would (unknown score, a dot score without a
    threshold, an all-zero or flat filter, a threshold out of range).
    """
    plan = _plan(filter_, threshold, score, polarity=polarity, min_contrast=min_contrast)
    return plan.score, plan.threshold


def _levels(plans: list[_Plan]) -> list[float]:
    """Every scale some filter searches, increasing (whole powers of a step are shared)."""
    found: dict[float, float] = {}
    for plan in plans:
        for scale in pyramid_scales(plan.scales, scale_step=plan.scale_step):
            found.setdefault(round(scale, 9), scale)
    return sorted(found.values())


def _plan(filter_: Filter, threshold: float | None, score: str | None, *,
          polarity: str = "use", min_contrast: float = DEFAULT_MIN_CONTRAST,
          scales: tuple[float, float] | None = None,
          scale_step: float | None = None) -> _Plan:
    """Resolve the score kind, threshold and scales for one filter, or raise."""
    if filter_.features == "cnn":
        Network.from_filter(filter_)  # layers that do not chain fail here, before any image
    default_score = "ncc" if filter_.features == "pixels" else "dot"
    kind = score or filter_.score or default_score
    if kind not in SCORE_KINDS:
        msg = f"`score` must be one of {SCORE_KINDS}, got {kind!r}"
        raise ValueError(msg)
    if polarity != "use" and kind != "shape":
        msg = f"`polarity` applies to the 'shape' score only, not {kind!r} (filter {filter_.name!r})"
        raise ValueError(msg)
    if kind == "shape" and filter_.features == "pixels":
        shape_model(filter_, min_contrast=min_contrast)  # raises if the filter has no edges
    if filter_.features != "pixels" and kind != "dot":
        msg = (
            f"Filter {filter_.name!r} works on {filter_.features!r} features, "
            f"which are scored by 'dot' only, not {kind!r}"
        )
        raise ValueError(msg)
    if not np.any(filter_.weights):
        msg = f"Filter {filter_.name!r} is all zeros: it cannot detect anything"
        raise ValueError(msg)
    if kind == "ncc" and filter_.features == "pixels" and _is_flat(filter_):
        msg = f"Filter {filter_.name!r} is flat (no contrast): its ncc score is 0 everywhere"
        raise ValueError(msg)
    if threshold is None and filter_.score in (None, kind):
        threshold = filter_.threshold
    if threshold is None:
        if kind == "dot":
            msg = (
                f"a threshold must be given for the 'dot' score of filter {filter_.name!r}: "
                "raw dot products have no universal scale (pass threshold=...)"
            )
            raise ValueError(msg)
        threshold = DEFAULT_SHAPE_THRESHOLDS[polarity] if kind == "shape" else DEFAULT_THRESHOLDS[kind]
    threshold = finite_float(threshold, "threshold")
    if kind in ("ncc", "cosine", "shape") and not -1 <= threshold <= 1:
        msg = f"`threshold` for the {kind!r} score must be in [-1, 1], got {threshold!r}"
        raise ValueError(msg)
    return _Plan(filter_, kind, threshold, filter_scales(filter_, scales),
                 filter_scale_step(filter_, scale_step))


def _is_flat(filter_: Filter) -> bool:
    """Contrast under sqrt(FLAT_VARIANCE) of the largest weight: ncc ignores the filter's units."""
    weights = filter_.weights if filter_.weights.ndim == 3 else filter_.weights[..., None]
    inside = weights[filter_.mask] if filter_.mask is not None else weights.reshape(-1, weights.shape[2])
    largest = float(np.abs(inside).max(initial=0.0))
    if largest == 0:
        return True
    return float((inside.astype(np.float64) / largest).var(axis=0).sum()) < FLAT_VARIANCE


def _pixel_window(filter_: Filter) -> tuple[int, int]:
    """Size in level pixels that a filter's map entry covers (height, width)."""
    if filter_.features == "pixels":
        return filter_.weights.shape[0], filter_.weights.shape[1]
    assert filter_.window is not None
    return filter_.window


def _check_some_level_fits(shape: tuple[int, ...], plans: list[_Plan], levels: list[float]) -> None:
    """Raise if no filter fits the image at any scale (a filter that fits nowhere finds nothing)."""
    height, width = shape[:2]
    smallest = min(levels)  # the smallest object scale is the most enlarged image
    for plan in plans:
        window_height, window_width = _pixel_window(plan.filter)
        if round(height / smallest) >= window_height and round(width / smallest) >= window_width:
            return
    window_height, window_width = _pixel_window(plans[0].filter)
    msg = (
        f"Filter {plans[0].filter.name!r} ({window_width}×{window_height}) is larger than the "
        f"image ({width}×{height}) at every scale down to {smallest:.3g}; "
        "use a smaller filter or smaller scales"
    )
    raise ValueError(msg)


def _scan_level(
    pixels: NDArray[np.float32],
    scale: float,
    plans: list[_Plan],
    subpixel: bool,
    workers: int,
    keep_maps: bool,
    feature_cache: dict[tuple[float, str], tuple[NDArray[np.float32], int]] | None = None,
) -> tuple[list[NDArray[np.float64]], list[LevelMap]]:
    """Score every filter on one pyramid level (feature maps from ``feature_cache`` if there).

    Returns candidate boxes as (n, 7) arrays of x, y, w, h (input pixels),
    score, filter index and scale, and the score maps if ``keep_maps``.
    """
    level = resize_to_scale(pixels, scale)
    scale_y = pixels.shape[0] / level.shape[0]
    scale_x = pixels.shape[1] / level.shape[1]
    # What the filters look at, computed once per level and shared by all of them.
    views = {"pixels": level}
    if any(p.filter.features == "pixels" and p.filter.weights.ndim == 2 for p in plans):
        views["grey"] = to_grey(level)
    feature_maps = _feature_maps(level, [plan for plan in plans if plan.searches(scale)],
                                 feature_cache, scale)
    # Several filters: one thread each (no stripe overlap to pay); one filter: its stripes.
    per_filter = workers > 1 and len(plans) > 1

    def score_plan(index: int) -> tuple[NDArray[np.float64] | None, LevelMap | None]:
        plan = plans[index]
        filter_ = plan.filter
        window_height, window_width = _pixel_window(filter_)
        if not plan.searches(scale) or window_height > level.shape[0] or window_width > level.shape[1]:
            return None, None
        if filter_.features == "pixels":
            view = views["grey"] if filter_.weights.ndim == 2 else match_channels(level, filter_)
            scores = score_pixels(view, filter_, plan.score, workers=1 if per_filter else workers)
            step = 1
        else:
            features, step = feature_maps[_feature_key(filter_)]
            feature_scores = _feature_scores(features, filter_)
            if feature_scores is None:
                return None, None
            scores = feature_scores
        rows, cols, values = find_peaks(scores, plan.threshold, subpixel=subpixel)
        window = (window_height * scale_y, window_width * scale_x)
        # Clipping only absorbs rounding: a valid window lies inside its level.
        found = np.empty((len(values), 7))
        found[:, 0] = np.clip(cols * step * scale_x, 0, max(pixels.shape[1] - window[1], 0))
        found[:, 1] = np.clip(rows * step * scale_y, 0, max(pixels.shape[0] - window[0], 0))
        found[:, 2:4] = window[1], window[0]
        found[:, 4] = values
        found[:, 5:7] = index, scale
        level_map = LevelMap(scores, filter_.name, step, scale_x, scale_y, window) if keep_maps else None
        return found, level_map

    results = map_in_threads(score_plan, range(len(plans)), workers if per_filter else 1)
    candidates = [found for found, _ in results if found is not None]
    maps = [level_map for _, level_map in results if level_map is not None]
    return candidates, maps


def _feature_key(filter_: Filter) -> str:
    # learned transforms (a network) share a map only with the same learned parameters
    digest = hashlib.sha1(usedforsecurity=False)
    for name, array in sorted(filter_.feature_params.items()):
        digest.update(name.encode())
        digest.update(array.tobytes())
    return repr((filter_.features, sorted(filter_.feature_options.items()), digest.hexdigest()))


def _feature_maps(
    level: NDArray[np.float32], plans: list[_Plan],
    cache: dict[tuple[float, str], tuple[NDArray[np.float32], int]] | None = None,
    scale: float = 1.0,
) -> dict[str, tuple[NDArray[np.float32], int]]:
    """The feature map of every feature kind the filters use, at one level."""
    maps: dict[str, tuple[NDArray[np.float32], int]] = {}
    for plan in plans:
        filter_ = plan.filter
        key = _feature_key(filter_)
        if filter_.features == "pixels" or key in maps:
            continue
        cached = None if cache is None else cache.get((round(scale, 9), key))
        if cached is None:
            cached = feature_map(level, kind=filter_.features, options=filter_.feature_options,
                                 parameters=filter_.feature_params)
            if cache is not None:  # each level's own key: threads never write the same entry
                cache[round(scale, 9), key] = cached
        maps[key] = cached
    return maps


def _feature_scores(
    features: NDArray[np.float32], filter_: Filter
) -> NDArray[np.float32] | None:
    """⟨w, φ⟩ + b at every cell of a feature map; None if the filter does not fit."""
    weights = filter_.weights if filter_.weights.ndim == 3 else filter_.weights[..., None]
    if features.shape[2] != weights.shape[2]:
        msg = (
            f"Filter {filter_.name!r} has {weights.shape[2]} feature channels but the "
            f"{filter_.features!r} map has {features.shape[2]}"
        )
        raise ValueError(msg)
    if weights.shape[0] > features.shape[0] or weights.shape[1] > features.shape[1]:
        return None
    return _correlate_channels(features, weights, filter_.bias)


def _correlate_channels(features: NDArray[np.float32], weights: NDArray[Any],
                        bias: float) -> NDArray[np.float32]:
    """`patternfind.layers.conv.conv2d` with one filter: one `cv2.matchTemplate` per channel.

    OpenCV switches to a DFT for large templates, where an im2col product
    costs ``fh · fw`` multiply-adds per pixel (a 48 × 48 gradient filter took
    100 times HOG's detection time). For HOG's small kernels it also beats
    im2col's single-column matrix product, which multi-threaded BLAS slows
    down many times over on a busy machine (measured: 5.5 s against 0.12 s
    for a 9 × 9 × 31 filter on a 150 × 200 map, with the other core loaded).
    """
    import cv2

    total = np.full((features.shape[0] - weights.shape[0] + 1,
                     features.shape[1] - weights.shape[1] + 1), np.float32(bias), dtype=np.float32)
    for channel in range(weights.shape[2]):
        total += cv2.matchTemplate(np.ascontiguousarray(features[..., channel]),
                                   np.ascontiguousarray(weights[..., channel], dtype=np.float32),
                                   cv2.TM_CCORR)
    return total


def _suppress(
    candidates: list[NDArray[np.float64]],
    names: list[str],
    nms_iou: float,
    per_label: bool,
    max_detections: int | None,
) -> list[Detection]:
    """Non-maximum suppression over all levels and filters, then the cap."""
    table = np.concatenate(candidates) if candidates else np.zeros((0, 7))
    if not len(table):
        return []
    labels = table[:, 5].astype(int) if per_label else None
    kept = non_max_suppression(table[:, :4], table[:, 4], iou_threshold=nms_iou,
                               containment_threshold=CONTAINED_FRACTION, labels=labels)
    if max_detections is not None:
        kept = kept[:max_detections]
    return [
        Detection(x=x, y=y, w=w, h=h, score=score, label=names[int(index)], scale=scale)
        for x, y, w, h, score, index, scale in table[kept].tolist()
    ]


def _scan_poses(
    pixels: NDArray[np.float32],
    plans: list[_Plan],
    levels: list[float],
    options: DetectOptions,
    workers: int,
    keep_maps: bool,
) -> tuple[list[Detection], list[LevelMap]]:
    """`scan` with a rotation search or the shape score.

    Pixel filters turn (`patternfind.detection.rotation`); feature filters
    score turned images (`patternfind.detection.turned_features`).
    """
    start, extent = (0.0, 0.0) if options.angles is None else angle_range(options.angles)
    inner_workers = workers if len(levels) == 1 else 1

    def run_level(scale: float) -> tuple[list[NDArray[np.float64]], list[LevelMap]]:
        level = resize_to_scale(pixels, scale)
        scale_y = pixels.shape[0] / level.shape[0]
        scale_x = pixels.shape[1] / level.shape[1]
        found, maps = [], []
        for index, plan in enumerate(plans):
            height, width = _pixel_window(plan.filter)
            if (plan.filter.features != "pixels" or not plan.searches(scale)
                    or height > level.shape[0] or width > level.shape[1]):
                continue
            search = PoseSearch(plan.filter, plan.score, plan.threshold, start, extent,
                                options.angle_step, options.polarity, options.min_contrast,
                                options.subpixel)
            poses, coarse_map, (coarse_rows, coarse_cols) = search_poses(
                match_channels(level, plan.filter), search, workers=inner_workers)
            window = (height * scale_y, width * scale_x)
            found.append(_pose_rows(poses, index, scale, (height, width), (scale_y, scale_x),
                                    pixels.shape))
            if keep_maps:
                maps.append(LevelMap(coarse_map, plan.filter.name, 1, scale_x * coarse_cols,
                                     scale_y * coarse_rows, window))
        features = [(index, plan) for index, plan in enumerate(plans)
                    if plan.filter.features != "pixels" and plan.searches(scale)]
        if features:
            targets = [FeatureTarget(index, _pixel_window(plan.filter),
                                     feature_cell(plan.filter.features, plan.filter.feature_options),
                                     plan.threshold) for index, plan in features]
            every_pose, best_maps = search_turned_features(
                level, targets, _feature_scorer([plan for _, plan in features]), start=start,
                extent=extent, angle_step=options.angle_step, subpixel=options.subpixel,
                workers=inner_workers, keep_maps=keep_maps)
            for target, poses, best in zip(targets, every_pose, best_maps, strict=True):
                found.append(_pose_rows(poses, target.index, scale, target.window,
                                        (scale_y, scale_x), pixels.shape))
                if best is not None:
                    window = (target.window[0] * scale_y, target.window[1] * scale_x)
                    maps.append(LevelMap(best, plans[target.index].filter.name, target.cell,
                                         scale_x, scale_y, window))
        return found, maps

    results = map_in_threads(run_level, levels, workers)
    table = np.concatenate([rows for found, _ in results for rows in found] or [np.zeros((0, 8))])
    maps = [level_map for _, level_maps in results for level_map in level_maps]
    names = [plan.filter.name for plan in plans]
    labels = table[:, 5].astype(int) if options.per_label else None
    if np.all(table[:, 7] % 360 == 0):  # upright boxes: the upright (exact) suppression
        kept = non_max_suppression(table[:, :4], table[:, 4], iou_threshold=options.nms_iou,
                                   containment_threshold=CONTAINED_FRACTION, labels=labels)
    else:
        kept = non_max_suppression_rotated(
            table[:, [0, 1, 2, 3, 7]], table[:, 4], iou_threshold=options.nms_iou,
            containment_threshold=CONTAINED_FRACTION, labels=labels)
    if options.max_detections is not None:
        kept = kept[: options.max_detections]
    detections = [
        Detection(x=x, y=y, w=w, h=h, score=score, label=names[int(index)], scale=scale,
                  angle=angle)
        for x, y, w, h, score, index, scale, angle in table[kept].tolist()
    ]
    return detections, maps


def _pose_rows(poses: NDArray[np.float64], index: int, scale: float, level_window: tuple[int, int],
               level_scale: tuple[float, float], shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Detector rows (x, y, w, h, score, filter, scale, angle) of ``cx, cy, angle, score`` poses.

    ``poses`` are in level pixels, where the filter covers ``level_window``
    (height, width); ``level_scale`` is input pixels per level pixel (y, x).

    The box is the filter's upright box at the found centre (level pixels
    mapped to input pixels as the upright search maps a window's top-left).
    Upright boxes are clipped to the image for rounding, as the upright
    search clips them; a turned box is not: its upright box may stick out
    of the image while the turned one lies inside it.
    """
    scale_y, scale_x = level_scale
    height, width = level_window
    window = (height * scale_y, width * scale_x)
    rows = np.empty((len(poses), 8))
    rows[:, 0] = (poses[:, 0] - (width - 1) / 2) * scale_x
    rows[:, 1] = (poses[:, 1] - (height - 1) / 2) * scale_y
    upright = poses[:, 2] % 360 == 0
    rows[upright, 0] = np.clip(rows[upright, 0], 0, max(shape[1] - window[1], 0))
    rows[upright, 1] = np.clip(rows[upright, 1], 0, max(shape[0] - window[0], 0))
    rows[:, 2:4] = window[1], window[0]
    rows[:, 4] = poses[:, 3]
    rows[:, 5:7] = index, scale
    rows[:, 7] = poses[:, 2]
    return rows


def _feature_scorer(plans: list[_Plan]) -> ScoreImage:
    """Score every feature filter of ``plans`` on one image, sharing each kind's feature map."""
    def score_image(image: NDArray[np.float32]) -> list[tuple[NDArray[np.float32] | None, int]]:
        feature_maps = _feature_maps(image, plans)
        scored = []
        for plan in plans:
            features, step = feature_maps[_feature_key(plan.filter)]
            scored.append((_feature_scores(features, plan.filter), step))
        return scored

    return score_image
