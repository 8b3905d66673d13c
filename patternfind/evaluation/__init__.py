"""Evaluation: annotations in, precision, recall, F1 and AP out, one filter or several side by side.

This stage may import detection (to run the filters it compares) and the core,
never learning, drawing or the CLI.
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
