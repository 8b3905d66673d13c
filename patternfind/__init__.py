"""patternfind: classic pattern detection with hand-crafted and learned filters.

The main entry points:

- `detect`: slide filters over an image pyramid and return boxes;
- `score_map`: one filter's raw score at every position;
- `train_filter` / `train_detector`: learn a filter by gradient descent, from
  patches or from annotated images with hard-negative mining;
- `evaluate` / `compare`: precision, recall and AP of filters on labelled images;
- `conv2d` / `pool2d` and their backward passes: the lecture's layers;
- `Filter`, `Detection`, `Box`: the records passed around.
"""

from patternfind import filters
from patternfind.annotations import load_annotations, save_annotations
from patternfind.comparison import compare
from patternfind.conv import (
    conv2d,
    conv2d_backward,
    dense_params,
    num_params,
    output_size,
    pool2d,
    pool2d_backward,
)
from patternfind.detection import detect
from patternfind.io import load_image
from patternfind.learn import train_detector, train_filter
from patternfind.metrics import Evaluation, evaluate
from patternfind.nms import non_max_suppression
from patternfind.scores import score_map
from patternfind.structures import Box, Detection, Filter

__version__ = "0.1.0"

__all__ = [
    "Box",
    "Detection",
    "Evaluation",
    "Filter",
    "__version__",
    "compare",
    "conv2d",
    "conv2d_backward",
    "dense_params",
    "detect",
    "evaluate",
    "filters",
    "load_annotations",
    "load_image",
    "non_max_suppression",
    "num_params",
    "output_size",
    "pool2d",
    "pool2d_backward",
    "save_annotations",
    "score_map",
    "train_detector",
    "train_filter",
]
