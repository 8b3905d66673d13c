"""The detector's search options, as one record shared by every entry point.

`detect`, `scan`, the CLI and the evaluation commands all take the same
options; they are documented and checked here once, so that a new option is
added in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from patternfind._validation import finite_float, flag, one_of, positive_int, with_keywords
from patternfind.detection.parallel import resolve_workers
from patternfind.detection.pyramid import pyramid_scales
from patternfind.detection.rotation import angle_range, check_angle_step
from patternfind.detection.shape import DEFAULT_MIN_CONTRAST, POLARITIES

__all__ = ["DEFAULT_SCALES", "DEFAULT_SCALE_STEP", "LARGER_SCALE_MARGIN", "SCALE_MARGIN",
           "DetectOptions",
           "filter_scale_step", "filter_scales"]

#: Scales searched for a filter that does not know its own (hand-made, or saved before 0.2).
DEFAULT_SCALES = (0.5, 2.0)
#: A learned filter searches down to its smallest trained box scale divided by this.
SCALE_MARGIN = 1.25
#: ... and up to its largest trained box scale times this. Larger objects are shrunk to
#: the window, so their detail survives (smaller ones are enlarged from detail that
#: is not there), and the levels above cost little: a level's pixels fall with the
#: square of its scale. dlib goes further and searches every larger scale. On
#: samples/astronaut.png the face trained on the composite set's 28-72 px faces
#: scores best at 112 px, 1.56 times the largest training face.
LARGER_SCALE_MARGIN = 2.0
#: Pyramid step for a filter that does not record its own (``meta["scale_step"]``).
DEFAULT_SCALE_STEP = 1.1


@dataclass(frozen=True)
class DetectOptions:
    """How `patternfind.detect` searches an image.

    Every field can also be given to `detect` by keyword
    (``detect(image, eye, threshold=0.6)``); the keywords override the fields
    of an ``options=`` record.

    Attributes
    ----------
    threshold : float, optional
        Keep peaks scoring at least this. Default: each filter's own
        ``threshold``, else `DEFAULT_THRESHOLDS` (ncc 0.8, cosine 0.95). A
        ``"dot"`` score has no universal scale, so it needs one.
    score : {"ncc", "dot", "cosine", "shape"}, optional
        Default: each filter's own ``score``, else ``"ncc"`` for pixel
        filters and ``"dot"`` for feature filters (their only score).
        ``"shape"`` compares gradient directions
        (`patternfind.detection.shape`); its default threshold is 0.7
        (0.85 with ``polarity="ignore"``).
    scales : (min, max) of float, optional
        Object sizes to search, as multiples of the filter size. ``(1, 1)``
        scans the input size only. Default: per filter, the range it was
        trained for (``meta["search_scales"]``, set by `train_detector`: its
        box sizes widened by `SCALE_MARGIN` down and `LARGER_SCALE_MARGIN` up), else `DEFAULT_SCALES`
        (0.5 to 2); see `filter_scales`.
    scale_step : float, optional
        Ratio between pyramid levels (> 1). Default: per filter, the step it
        was trained with (``meta["scale_step"]``, set by `train_detector`),
        else `DEFAULT_SCALE_STEP` (1.1); see `filter_scale_step`.
    nms_iou : float
        A box overlapping a better one by more than this IoU is dropped, and
        so is a box lying mostly (`CONTAINED_FRACTION`) inside a better one.
    per_label : bool
        If True, boxes of different filters never suppress each other.
    max_detections : int, optional
        Keep at most this many boxes.
    subpixel : bool
        Refine peak positions by a quadratic fit.
    workers : int, optional
        Threads (default ``cv2.getNumThreads()``).
    angles : (start, stop) of float, optional
        Search the filter turned by every angle in this range, in degrees
        counter-clockwise on screen (`patternfind.detection.rotation`);
        ``(0, 360)`` is a full turn, and ``(350, 10)`` a range through 0°.
        Feature filters (HOG, gradients, cnn) score the image turned the
        other way instead (`patternfind.detection.turned_features`).
        Each detection then has its ``angle``. Default None: no rotation.
    angle_step : float, optional
        Degrees between searched angles. Default: the step that moves the
        filter's outermost pixel by about one pixel (finer for larger
        filters), or for feature filters the window's corner by about one
        cell; the found angle is refined between steps anyway.
    polarity : {"use", "ignore"}
        For the shape score only: ``"ignore"`` also matches the part with
        its contrast inverted (dark on light vs light on dark).
    min_contrast : float
        For the shape score: the weakest gradient (pixel range per pixel,
        image in [0, 1]) that counts as an edge, in the filter and the image.
    """

    threshold: float | None = None
    score: str | None = None
    scales: tuple[float, float] | None = None
    scale_step: float | None = None
    nms_iou: float = 0.3
    per_label: bool = False
    max_detections: int | None = None
    subpixel: bool = False
    workers: int | None = None
    angles: tuple[float, float] | None = None
    angle_step: float | None = None
    polarity: str = "use"
    min_contrast: float = DEFAULT_MIN_CONTRAST

    def __post_init__(self) -> None:
        # raises on a bad range or step
        pyramid_scales(DEFAULT_SCALES if self.scales is None else self.scales,
                       scale_step=DEFAULT_SCALE_STEP if self.scale_step is None else self.scale_step)
        nms_iou = finite_float(self.nms_iou, "nms_iou")
        if not 0 <= nms_iou <= 1:
            msg = f"`nms_iou` must be in [0, 1], got {self.nms_iou!r}"
            raise ValueError(msg)
        if self.max_detections is not None:
            positive_int(self.max_detections, "max_detections")
        flag(self.subpixel, "subpixel")
        flag(self.per_label, "per_label")
        resolve_workers(self.workers)
        if self.threshold is not None:
            finite_float(self.threshold, "threshold")
        if self.angles is not None:
            _, extent = angle_range(self.angles)
            check_angle_step(self.angle_step, extent)
        elif self.angle_step is not None:
            msg = f"`angle_step` ({self.angle_step!r}) needs `angles`, the range to search"
            raise ValueError(msg)
        one_of(self.polarity, "polarity", POLARITIES)
        if self.polarity != "use" and self.score is not None and self.score != "shape":
            msg = f"`polarity` applies to the 'shape' score only, got score={self.score!r}"
            raise ValueError(msg)
        min_contrast = finite_float(self.min_contrast, "min_contrast")
        if not 0 < min_contrast <= 1:
            msg = f"`min_contrast` must be in (0, 1], got {self.min_contrast!r}"
            raise ValueError(msg)

    @classmethod
    def build(cls, options: DetectOptions | None, keywords: Mapping[str, Any]) -> DetectOptions:
        """``options`` (default: the defaults) with the fields named in ``keywords`` replaced.

        Raises
        ------
        TypeError
            If ``options`` is not a DetectOptions, or a keyword names no field.
        """
        return with_keywords(cls, options, keywords)


def filter_scales(filter_: Any, scales: tuple[float, float] | None = None) -> tuple[float, float]:
    """The (min, max) object scales to search with ``filter_``.

    An explicit ``scales`` wins. Otherwise a filter whose ``meta`` holds
    ``search_scales`` searches that range (`train_detector` records its
    training boxes' range widened by `SCALE_MARGIN` down and `LARGER_SCALE_MARGIN`
    up); any other
    filter, hand-made or saved by patternfind 0.1, searches `DEFAULT_SCALES`.
    """
    if scales is not None:
        low, high = scales
        return float(low), float(high)
    trained = getattr(filter_, "meta", {}).get("search_scales")
    if (isinstance(trained, (list, tuple)) and len(trained) == 2
            and all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in trained)
            and trained[0] <= trained[1]):
        return float(trained[0]), float(trained[1])
    return DEFAULT_SCALES


def filter_scale_step(filter_: Any, scale_step: float | None = None) -> float:
    """The pyramid step to search ``filter_`` with.

    An explicit ``scale_step`` wins; otherwise the filter's ``meta["scale_step"]``
    (the step `train_detector` mined and calibrated with), else `DEFAULT_SCALE_STEP`.
    """
    if scale_step is not None:
        return float(scale_step)
    trained = getattr(filter_, "meta", {}).get("scale_step")
    if isinstance(trained, (int, float)) and math.isfinite(trained) and trained > 1:
        return float(trained)
    return DEFAULT_SCALE_STEP
