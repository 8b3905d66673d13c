"""Detection: image → score maps over a pyramid → peaks → non-maximum suppression → boxes.

`score_map` scores one filter at every position, `detect` runs the whole search.
This stage may import `patternfind.layers` and the core records, never evaluation,
learning, drawing or the CLI.
"""

from patternfind.detection.detector import LevelMap, detect, load_filters
from patternfind.detection.nms import box_iou, non_max_suppression
from patternfind.detection.options import DetectOptions
from patternfind.detection.peaks import find_peaks
from patternfind.detection.pyramid import pyramid_scales
from patternfind.detection.scores import DEFAULT_THRESHOLDS, score_map

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DetectOptions",
    "LevelMap",
    "box_iou",
    "detect",
    "find_peaks",
    "load_filters",
    "non_max_suppression",
    "pyramid_scales",
    "score_map",
]
