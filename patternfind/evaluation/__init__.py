"""Evaluation: annotations in, precision, recall, F1 and AP out, one filter or several side by side.

May import: core, layers, detection.

Detection runs the filters that `compare` scores; `best_f1_threshold` and
`detection_threshold` pick operating points from scored examples.
"""

from patternfind.evaluation.annotations import (
    AnnotationWarning,
    load_annotations,
    save_annotations,
)
from patternfind.evaluation.comparison import compare, load_labelled_images
from patternfind.evaluation.metrics import (
    Evaluation,
    ImageEvaluation,
    average_precision,
    best_f1_threshold,
    detection_threshold,
    evaluate,
    match_detections,
)

__all__ = [
    "AnnotationWarning",
    "Evaluation",
    "ImageEvaluation",
    "average_precision",
    "best_f1_threshold",
    "compare",
    "detection_threshold",
    "evaluate",
    "load_annotations",
    "load_labelled_images",
    "match_detections",
    "save_annotations",
]
