"""Learn a linear filter from labelled patches: ``train_filter``.

The patches go through a feature transform φ (`patternfind.layers.features`:
pixels, gradients or dense HOG) and `patternfind.learn.optimize.fit_linear`
fits ``⟨w, φ(x)⟩ + b``. The detector computes exactly this score with
``score="dot"``, so a filter trained here on patches works on whole images.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from patternfind._validation import one_of
from patternfind.evaluation.metrics import best_f1_threshold
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
from patternfind.learn.optimize import L2_GRID, FitOptions, fit_linear
from patternfind.learn.patches import check_labels, check_patches
from patternfind.learn.selection import assign_folds, choose_l2
from patternfind.structures import Filter

__all__ = ["check_groups", "fit_with_selection", "make_filter", "train_filter"]


def train_filter(
    patches: Any,
    labels: Any,
    *,
    features: str = "pixels",
    feature_options: Mapping[str, Any] | None = None,
    name: str = "learned",
    groups: Any = None,
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
        ``"cnn"`` learns φ too: a small network trained together with the filter.
    feature_options : mapping, optional
        Options of the feature transform, e.g. ``{"cell": 8, "bins": 9}``.
    name : str
        Name of the returned filter.
    groups : (N,) int array, optional
        Patches with the same group (a crop and its mirrored or shifted
        copies) never fall on both sides of a cross-validation or early-stopping
        split. Default: every patch is its own group.
    options : FitOptions, optional
        How to fit: loss, ``l2`` (default ``"auto"``), optimiser, ``lr``,
        ``epochs``, ``batch_size``, ``val_fraction``, ``seed``, ``folds`` and
        ``progress``. With ``l2="auto"`` the strength is chosen from
        `L2_GRID` by ``folds``-fold cross-validation over the groups
        (`patternfind.learn.selection.choose_l2`: lowest held-out loss), and
        the final fit then uses every patch.
    network : Network or list of layers, optional
        For ``features="cnn"``: the architecture (``[Conv(8, 5), ReLU(),
        MaxPool(2), ...]`` or their spec dicts, He-initialised from ``seed``)
        or a `Network` to train further. Default:
        `patternfind.layers.network.DEFAULT_LAYERS`. The network and the filter
        are trained together (`patternfind.learn.network_training.fit_network`);
        ``l2="auto"`` means a fixed 1e-3 there (cross-validating a network
        costs a training run per fold and strength).
    **fit_options
        Any `FitOptions` field by keyword (``l2=0.1``), overriding ``options``.

    Returns
    -------
    Filter
        ``weights`` of shape ``(fh, fw, D)`` (``(h, w)`` for grey pixels),
        ``bias``, ``score="dot"``, ``features``, ``feature_options``,
        ``window`` (the patch size covered, in pixels: whole cells only) and
        ``threshold``: the score cut with the best F1 (ties go to the higher
        cut, placed midway between the lowest score accepted and the next score
        below it) over held-out scores: with ``l2="auto"``, every patch's
        score by the filter fitted without its fold; with a given ``l2``, the
        validation split. ``meta`` holds ``kind="learned"``, ``threshold_rule``,
        ``l2_selection`` (grid, held-out AP and loss per strength, the choice)
        and ``cv_ap`` with ``l2="auto"``,
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
    groups = np.arange(len(y)) if groups is None else check_groups(groups, len(y))
    if features == "cnn":
        return _train_network_filter(patches, y, groups, feature_settings, network, name,
                                     FitOptions.build(options, fit_options))
    if network is not None:
        msg = f"`network` is for features='cnn', not {features!r}"
        raise ValueError(msg)
    X = window_features(patches, kind=features, options=feature_settings)
    feature_shape = X.shape[1:]
    fit = fit_with_selection(X.reshape(len(X), -1), y, groups=groups,
                             options=FitOptions.build(options, fit_options))
    cell = feature_cell(features, feature_settings)
    window = (feature_shape[0] * cell, feature_shape[1] * cell)
    return make_filter(fit, feature_shape, features=features, feature_options=feature_settings,
                        window=window, name=name)


def _train_network_filter(patches: Any, y: Any, groups: NDArray[np.intp],
                          feature_settings: Mapping[str, Any], network: NetworkLike, name: str,
                          options: FitOptions) -> Filter:
    """`train_filter` for ``features="cnn"``: the network and the filter, end to end."""
    built, settings = build_network(network, feature_settings, window=patches.shape[1:3],
                                    seed=options.seed)
    images = patches if patches.ndim == 4 else patches[..., None]
    fit = fit_network(images, y, built, options=options, groups=groups)
    window = feature_window("cnn", settings, fit["feature_shape"])
    return make_filter(fit, fit.pop("feature_shape"), features="cnn", feature_options=settings,
                       window=window, name=name)


def check_groups(groups: Any, count: int) -> NDArray[np.intp]:
    """``groups`` as an ``(count,)`` int array, or a ValueError naming its shape."""
    array = np.asarray(groups)
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
        msg = f"`groups` must be ({count},) integers, one per patch, got {array.dtype} {array.shape}"
        raise ValueError(msg)
    return array.astype(np.intp)


def fit_with_selection(X: NDArray[np.float32], y: NDArray[np.float32], *,
                       groups: NDArray[np.intp], options: FitOptions,
                       fold_ids: NDArray[np.intp] | None = None,
                       grid: tuple[float, ...] = L2_GRID) -> dict[str, Any]:
    """`fit_linear`, with ``l2="auto"`` resolved by cross-validation first.

    With ``l2="auto"`` the folds (default: whole ``groups`` dealt by
    `assign_folds`) choose the strength; every fold filter and the final
    filter (on every sample) are fitted to convergence (by L-BFGS for the
    logistic loss, ``val_fraction=0``:
    the penalty regularises and the held-out folds judge it, so the fold
    filters are the final filter's kind, and their held-out scores are on its
    scale). The threshold is the best F1 over the held-out scores; the result
    also holds ``l2_selection``, ``cv_ap`` and ``threshold_rule``, and (under
    ``"cross_validation"``) the `CrossValidation` of the chosen strength,
    which `make_filter` drops.
    """
    if options.l2 != "auto":
        fit = fit_linear(X, y, groups=groups, options=options)
        fit["threshold_rule"] = "best F1 on the validation split"
        return fit
    if fold_ids is None:
        fold_ids = assign_folds(groups, y, options.folds, np.random.default_rng(options.seed))
    # An early-stopping split inside each fold fit stopped short of the optimum on
    # small sets (lfw_subset: 5-fold AUC 0.990-0.993 with it, 0.993 without). The
    # logistic objective is smooth and convex: L-BFGS reaches its optimum in tens of
    # passes (FitOptions.optimizer); the hinge loss keeps the chosen optimiser.
    converged = dataclasses.replace(
        options, val_fraction=0,
        optimizer="lbfgs" if options.loss == "logistic" else options.optimizer)
    chosen, record = choose_l2(X, y, fold_ids, groups=groups, options=converged, grid=grid)
    if options.progress is True:
        sys.stderr.write(f"l2 = {chosen.l2:g} chosen by {record['folds']}-fold cross-validation "
                         f"(held-out AP {chosen.ap:.3f})\n")
    fit = fit_linear(X, y, groups=groups, options=dataclasses.replace(converged, l2=chosen.l2))
    threshold, f1 = best_f1_threshold(chosen.scores, y > 0)
    fit.update(threshold=threshold, cv_f1=f1, cv_ap=chosen.ap, l2_selection=record,
               threshold_rule=f"best F1 over the held-out scores of {record['folds']} folds",
               cross_validation=chosen)
    return fit


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
    fit.pop("cross_validation", None)
    meta = {"kind": "learned", **fit, **(extra_meta or {})}
    return Filter(weights, bias=bias, name=name, threshold=threshold, score="dot",
                  features=features, window=window, feature_options=dict(feature_options), meta=meta,
                  feature_params=feature_params)
