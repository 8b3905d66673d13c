"""Layers: the transforms from pixels to feature maps, and the lecture's arithmetic.

May import: core.

The convolutional and pooling layers with their backward passes, the output-size
and parameter-count calculators, the fixed feature transforms (gradients,
dense HOG), and nested conv layers that learn the transform (`network`). The
core is `_validation`, `pixels`, `structures`, `io` and `filters`;
tests/test_layering.py checks the order of the stages.
"""

from patternfind.layers.conv import (
    conv2d,
    conv2d_backward,
    dense_params,
    num_params,
    output_size,
    pool2d,
    pool2d_backward,
)
from patternfind.layers.features import FEATURE_KINDS, feature_map, window_features
from patternfind.layers.network import AvgPool, Conv, LocalContrast, MaxPool, Network, ReLU

__all__ = [
    "FEATURE_KINDS",
    "AvgPool",
    "Conv",
    "LocalContrast",
    "MaxPool",
    "Network",
    "ReLU",
    "conv2d",
    "conv2d_backward",
    "dense_params",
    "feature_map",
    "num_params",
    "output_size",
    "pool2d",
    "pool2d_backward",
    "window_features",
]
