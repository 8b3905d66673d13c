"""patternfind: classic pattern detection with hand-crafted and learned filters.

The pipeline, one subpackage per stage:

- `patternfind.layers`: the lecture's conv/pool layers and the feature transforms;
- `patternfind.detection`: score maps over a pyramid, peaks, NMS, `detect`;
- `patternfind.evaluation`: annotations, precision/recall/AP, `compare`;
- `patternfind.learn`: `train_filter` / `train_detector` by gradient descent;
- `patternfind.show`: drawings and plots.

At the top: the records (`Filter`, `Detection`, `Box`), file I/O (`load_image`,
`Filter.load`), pixel conversion (`patternfind.pixels`) and the hand-made filter
bank (`patternfind.filters`). The lecture calculators (`output_size`,
`num_params`, `dense_params`) live in `patternfind.layers` and are importable
from here too.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from patternfind import filters
from patternfind.detection import (
    DetectOptions,
    box_iou,
    detect,
    non_max_suppression,
    score_map,
)
from patternfind.evaluation import (
    Evaluation,
    compare,
    evaluate,
    load_annotations,
    load_labelled_images,
    save_annotations,
)
from patternfind.io import load_filter, load_image, save_filter, save_image
from patternfind.layers import (
    conv2d,
    conv2d_backward,
    dense_params,
    num_params,
    output_size,
    pool2d,
    pool2d_backward,
)
from patternfind.learn import FitOptions, train_detector, train_filter
from patternfind.structures import Box, Detection, Filter

try:
    __version__ = _version("patternfind")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Box",
    "DetectOptions",
    "Detection",
    "Evaluation",
    "Filter",
    "FitOptions",
    "__version__",
    "box_iou",
    "compare",
    "conv2d",
    "conv2d_backward",
    "dense_params",
    "detect",
    "evaluate",
    "filters",
    "load_annotations",
    "load_filter",
    "load_image",
    "load_labelled_images",
    "non_max_suppression",
    "num_params",
    "output_size",
    "pool2d",
    "pool2d_backward",
    "save_annotations",
    "save_filter",
    "save_image",
    "score_map",
    "train_detector",
    "train_filter",
]
