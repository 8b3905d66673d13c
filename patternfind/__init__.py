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

Names are imported on first use (PEP 562, as scikit-image does), so that
``import patternfind`` and ``patternfind --help`` load no numerical library;
``from patternfind import detect`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; tests/test_api.py keeps it equal to _EXPORTS
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

    __version__: str

#: Public name -> the module that defines it.
_EXPORTS = {
    "DetectOptions": "patternfind.detection",
    "box_iou": "patternfind.detection",
    "detect": "patternfind.detection",
    "non_max_suppression": "patternfind.detection",
    "score_map": "patternfind.detection",
    "Evaluation": "patternfind.evaluation",
    "compare": "patternfind.evaluation",
    "evaluate": "patternfind.evaluation",
    "load_annotations": "patternfind.evaluation",
    "load_labelled_images": "patternfind.evaluation",
    "save_annotations": "patternfind.evaluation",
    "load_filter": "patternfind.io",
    "load_image": "patternfind.io",
    "save_filter": "patternfind.io",
    "save_image": "patternfind.io",
    "conv2d": "patternfind.layers",
    "conv2d_backward": "patternfind.layers",
    "dense_params": "patternfind.layers",
    "num_params": "patternfind.layers",
    "output_size": "patternfind.layers",
    "pool2d": "patternfind.layers",
    "pool2d_backward": "patternfind.layers",
    "FitOptions": "patternfind.learn",
    "train_detector": "patternfind.learn",
    "train_filter": "patternfind.learn",
    "Box": "patternfind.structures",
    "Detection": "patternfind.structures",
    "Filter": "patternfind.structures",
}

#: Subpackages and modules reachable as attributes (``patternfind.show``) after ``import patternfind``.
_SUBMODULES = (
    "detection", "evaluation", "filters", "io", "layers", "learn", "pixels", "show", "structures",
)

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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"patternfind.{name}")
    elif name == "__version__":
        value = _installed_version()
    else:
        msg = f"module 'patternfind' has no attribute {name!r}"
        raise AttributeError(msg)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})


def _installed_version() -> str:
    # The one place the version is written is pyproject.toml; importlib.metadata reads it.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("patternfind")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
