"""Learn a linear filter from labelled patches: ``train_filter``.

The patches go through a feature transform φ (`patternfind.layers.features`:
pixels, gradients or dense HOG) and `patternfind.learn.optimize.fit_linear`
fits ``⟨w, φ(x)⟩ + b``. The detector computes exactly this score with
``score="dot"``, so a filter trained here on patches works on whole images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from patternfind._validation import one_of
from patternfind.layers.features import (
    FEATURE_KINDS,
    feature_cell,
    feature_window,
    window_features,
)
from patternfind.layers.features import (
    feature_options as complete_feature_options,  # the name is a parameter here
)
from patternfind.learn.network_training import NetworkLike, build_network, fit_network
from patternfind.learn.optimize import FitOptions, fit_linear
from patternfind.learn.patches import check_labels, check_patches
from patternfind.structures import Filter

__all__ = ["make_filter", "train_filter"]


def train_filter(
    patches: Any,
    labels: Any,
    *,
    features: str = "pixels",
    feature_options: Mapping[str, Any] | None = None,
    name: str = "learned",
    options: FitOptions | None = None,
    network: NetworkLike = None,
    **fit_options: Any,
) -> Filter:
    """Fit a linear filter ``⟨w, φ(x)⟩ + b`` to labelled patches.

    Parameters
    ----------
    patches : (N, h, w) or (N, h, w, 3) array, or a sequence of such patches
        Training windows; uint8/uint16 are scaled to [0, 1] like images.
        Every patch must have the same size; NaN or inf is an error. Constant
        (flat) patches are valid samples (their gradient and HOG features are
        zero), but if *every* patch has the same features there is nothing to
        learn and a ``ValueError`` is raised.
    labels : (N,) array
        1/True for the object, 0/False (or −1) for background. Both classes
        must be present, in the training and in the validation split.
    features : {"pixels", "gradients", "hog", "cnn"}
        Feature transform φ (`patternfind.layers.features.window_features`).
        ``"cnn"`` learns φ too: a small network trained together with the
        filter (`patternfind.learn.network_training.fit_network`).
    feature_options : mapping, optional
        Options of the feature transform, e.g. ``{"cell": 8, "bins": 9}``.
    name : str
        Name of the returned filter.
    options : FitOptions, optional
        How to fit: loss, ``l2``, optimiser, ``lr``, ``epochs``,
        ``batch_size``, ``val_fraction``, ``seed`` and ``progress``.
    network : Network or list of layers, optional
        For ``features="cnn"``: the architecture (``[Conv(8, 5), ReLU(),
        MaxPool(2), ...]`` or their spec dicts, He-initialised from ``seed``)
        or a `Network` to train further. Default:
        `patternfind.layers.network.DEFAULT_LAYERS`.
    **fit_options
        Any `FitOptions` field by keyword (``l2=0.1``), overriding ``options``.

    Returns
    -------
    Filter
        ``weights`` of shape ``(fh, fw, D)`` (``(h, w)`` for grey pixels),
        ``bias``, ``score="dot"``, ``features``, ``feature_options``,
        ``window`` (the patch size covered, in pixels: whole cells only) and
        ``threshold``: the score cut with the best F1 on the validation split
        (ties go to the higher cut), placed midway between the lowest score
        accepted and the next score below it. ``meta`` holds ``kind="learned"``,
        ``loss`` (training objective per epoch), ``val_loss``,
        ``train_accuracy``, ``val_accuracy`` and ``val_f1`` at the threshold,
        ``epochs``, ``best_epoch``, ``seconds`` and ``options``.

    Raises
    ------
    ValueError
        On bad options, one class only, mixed patch sizes, NaN patches, or a
        learning rate that makes the loss diverge (NaN, inf or ×1000).
    """
    one_of(features, "features", FEATURE_KINDS)
    patches = check_patches(patches)
    # Record whether the filter saw colour, so that the detector shows it the same.
    feature_settings = complete_feature_options(
        features, {"color": patches.ndim == 4, **(feature_options or {})})
    y = np.where(check_labels(labels, len(patches)), np.float32(1), np.float32(-1))
    if features == "cnn":
        return _train_network_filter(patches, y, feature_settings, network, name,
                                     FitOptions.build(options, fit_options))
    if network is not None:
        msg = f"`network` is for features='cnn', not {features!r}"
        raise ValueError(msg)
    X = window_features(patches, kind=features, options=feature_settings)
    feature_shape = X.shape[1:]
    fit = fit_linear(X.reshape(len(X), -1), y, options=FitOptions.build(options, fit_options))
    cell = feature_cell(features, feature_settings)
    window = (feature_shape[0] * cell, feature_shape[1] * cell)
    return make_filter(fit, feature_shape, features=features, feature_options=feature_settings,
                        window=window, name=name)


def _train_network_filter(patches: Any, y: Any, feature_settings: Mapping[str, Any],
                          network: NetworkLike, name: str, options: FitOptions) -> Filter:
    """`train_filter` for ``features="cnn"``: the network and the filter, end to end."""
    built, settings = build_network(network, feature_settings, window=patches.shape[1:3],
                                    seed=options.seed)
    images = patches if patches.ndim == 4 else patches[..., None]
    fit = fit_network(images, y, built, options=options)
    window = feature_window("cnn", settings, fit["feature_shape"])
    return make_filter(fit, fit.pop("feature_shape"), features="cnn", feature_options=settings,
                       window=window, name=name)


def make_filter(fit: dict[str, Any], feature_shape: Sequence[int], *, features: str,
                feature_options: Mapping[str, Any], window: tuple[int, int], name: str,
                 extra_meta: Mapping[str, Any] | None = None) -> Filter:
    """The `Filter` record of a `fit_linear` result (``fit`` is consumed).

    ``weights`` get ``feature_shape``; the fit's remaining entries and
    ``extra_meta`` go into ``meta`` with ``kind="learned"``.
    """
    weights = fit.pop("w").reshape(feature_shape)
    feature_params = fit.pop("feature_params", {})  # a learned transform's arrays (cnn)
    if features == "pixels" and weights.shape[-1] == 1:
        weights = weights[..., 0]
    bias = fit.pop("b")
    threshold = fit.pop("threshold")
    meta = {"kind": "learned", **fit, **(extra_meta or {})}
    return Filter(weights, bias=bias, name=name, threshold=threshold, score="dot",
                  features=features, window=window, feature_options=dict(feature_options), meta=meta,
                  feature_params=feature_params)
