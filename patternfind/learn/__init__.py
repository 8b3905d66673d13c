"""Learning: filters fitted by gradient descent, from patches or from annotated images.

May import: core, layers, detection, evaluation.

Patches are cut (`patches`), mapped by a feature transform and fitted by
`optimize.fit_linear` (`patch_training`); `detector_training` adds hard-negative
mining with the detector.
"""

from patternfind.learn.detector_training import DETECTOR_HOG_OPTIONS, train_detector
from patternfind.learn.optimize import FitOptions, fit_linear, loss_forward, objective
from patternfind.learn.patch_training import train_filter
from patternfind.learn.patches import patches_from_annotations, patches_from_folders

__all__ = [
    "DETECTOR_HOG_OPTIONS",
    "FitOptions",
    "fit_linear",
    "loss_forward",
    "objective",
    "patches_from_annotations",
    "patches_from_folders",
    "train_detector",
    "train_filter",
]
