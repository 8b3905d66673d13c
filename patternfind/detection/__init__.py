"""Detection: image → score maps over a pyramid → peaks → non-maximum suppression → boxes.

May import: core, layers.

`score_map` scores one filter at every position, `detect` runs the whole search
and `scan` also returns the score maps.
"""

from patternfind.detection.detector import LevelMap, detect, load_filters, scan
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
    "scan",
    "score_map",
]
