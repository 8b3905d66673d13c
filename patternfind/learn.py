"""Learn linear filters from labelled patches by mini-batch gradient descent.

A learned filter scores a window ``x`` as ``⟨w, φ(x)⟩ + b``, where ``φ`` is a
feature transform from `patternfind.features` (pixels, gradients or dense HOG)
and ``w`` has the shape of ``φ(x)``. The detector computes exactly this score
with ``score="dot"``, so a filter trained here on patches works on whole
images.

The objective, for labels ``y ∈ {−1, +1}`` and scores ``s = X w + b``, is

    J(w, b) = mean_i ℓ(y_i s_i) + (l2 / 2) ‖w‖²

with the logistic loss ``ℓ(m) = log(1 + e^(−m))`` or the hinge loss
``ℓ(m) = max(0, 1 − m)``; the bias is not penalised. `objective` returns ``J``
and its (sub)gradient; `fit_linear` minimises it on feature rows,
`train_filter` on patches, and `train_detector` on annotated images with
hard-negative mining.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from patternfind._validation import finite_float, non_negative_int, one_of, positive_int
from patternfind.features import FEATURE_KINDS, feature_cell, window_features
from patternfind.features import (
    feature_options as complete_feature_options,  # the name is a parameter here
)
from patternfind.patches import (
    as_image,
    check_boxes,
    check_labels,
    check_patches,
    crop_window,
    patches_from_annotations,
)
from patternfind.structures import Filter

LOSSES = ("logistic", "hinge")
OPTIMIZERS = ("adam", "sgd")
_DEFAULT_ADAM_LR = 0.03  # sgd: 1 / (estimated Lipschitz constant)
_DEFAULT_EPOCHS = 100
_DEFAULT_STEPS = 3000  # default epochs: at least 100, and enough for this many steps ...
_MAX_EPOCHS = 1000  # ... but no more than this
_PATIENCE = 8  # epochs without a better validation loss before stopping
_MIN_PROGRESS = 1e-5  # relative decrease of the training loss per epoch below which lr halves
_DIVERGED = 1e3  # the loss has diverged once it exceeds this many times its starting value


# ---------------------------------------------------------------- objective


def loss_forward(margins: NDArray[np.floating], *, loss: str
                 ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    """Per-sample loss of the margins ``m = y s`` and its derivative ``dℓ/dm``.

    Parameters
    ----------
    margins : (N,) array
        ``y_i * s_i`` with ``y_i ∈ {−1, +1}``.
    loss : {"logistic", "hinge"}

    Returns
    -------
    values : (N,) array
        ``log(1 + exp(−m))`` or ``max(0, 1 − m)``.
    slopes : (N,) array
        ``−1 / (1 + exp(m))`` or ``−[m < 1]`` (a subgradient at the kink).
    """
    if loss == "logistic":
        values = np.logaddexp(0, -margins)
        slopes = -np.exp(-np.logaddexp(0, margins))  # −σ(−m), computed without overflow
        return values, slopes
    one_of(loss, "loss", LOSSES)
    values = np.maximum(0, 1 - margins)
    slopes = -(margins < 1).astype(margins.dtype)
    return values, slopes


def objective(w: NDArray[np.floating], b: float, X: NDArray[np.floating],
              y: NDArray[np.floating], *, loss: str = "logistic", l2: float = 1e-3
              ) -> tuple[float, NDArray[np.floating], float]:
    """The training objective and its gradient.

    Parameters
    ----------
    w : (D,) array
        Weights.
    b : float
        Bias.
    X : (N, D) array
        Features, one row per sample.
    y : (N,) array
        Labels in {−1, +1}.
    loss : {"logistic", "hinge"}
    l2 : float
        Weight of the penalty ``(l2 / 2) ‖w‖²`` (the bias is not penalised).

    Returns
    -------
    value : float
        ``mean_i ℓ(y_i (X_i · w + b)) + (l2 / 2) ‖w‖²``.
    grad_w : (D,) array
        Gradient with respect to ``w`` (dtype of ``X``).
    grad_b : float
        Derivative with respect to ``b``.
    """
    dtype = X.dtype
    w = w.astype(dtype, copy=False)
    # einsum, not BLAS gemv: OpenBLAS threads made `X @ w` 10-20× slower on a busy machine
    scores = np.einsum("ij,j->i", X, w) + dtype.type(b)
    values, slopes = loss_forward(y * scores, loss=loss)
    upstream = (slopes * y) / dtype.type(len(y))  # dJ/ds_i
    grad_w = np.einsum("i,ij->j", upstream, X) + dtype.type(l2) * w
    value = float(values.mean(dtype=np.float64)) + 0.5 * l2 * float(np.dot(w, w))
    return value, grad_w, float(upstream.sum(dtype=np.float64))


# ---------------------------------------------------------------- training


def train_filter(
    patches: Any,
    labels: Any,
    *,
    loss: str = "logistic",
    l2: float = 1e-3,
    optimizer: str = "adam",
    lr: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = 256,
    features: str = "pixels",
    feature_options: Mapping[str, Any] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: bool | Callable[[int, int, float], None] = True,
    name: str = "learned",
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
    loss : {"logistic", "hinge"}
        Per-sample loss (see the module docstring).
    l2 : float, default 1e-3
        Weight of the L2 penalty ``(l2 / 2) ‖w‖²`` (≥ 0).
    optimizer : {"adam", "sgd"}
        Adam (β = 0.9, 0.999), or SGD with Nesterov-free momentum 0.9.
    lr : float, optional
        Learning rate. Default: 0.03 for Adam; for SGD, ``1 / L`` with ``L``
        the objective's smoothness constant estimated by power iteration.
        The rate is halved whenever the training loss fails to decrease for
        an epoch, so that the fit settles at the optimum.
    epochs : int, optional
        Maximum number of passes over the training split. Default: 100, or
        more on small sets so that there are at least 3000 mini-batch steps
        (at most 1000 epochs); early stopping usually ends training sooner.
    batch_size : int or None, default 256
        Mini-batch size; None means full-batch gradient descent.
    features : {"pixels", "gradients", "hog"}
        Feature transform φ (`patternfind.features.window_features`).
    feature_options : mapping, optional
        Options of the feature transform, e.g. ``{"cell": 8, "bins": 9}``.
    val_fraction : float, default 0.2
        Share of each class held out (stratified) for early stopping and the
        threshold. With 0, both use the training split.
    seed : int, default 0
        Seeds `numpy.random.default_rng` for the split and the batch order; the
        same inputs and seed give the same filter.
    progress : bool or callable, default True
        True draws a progress bar on stderr; a callable is called as
        ``progress(epoch, max_epochs, train_loss)`` after every epoch.
    name : str
        Name of the returned filter.

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
    options = complete_feature_options(
        features, {"color": patches.ndim == 4, **(feature_options or {})})
    y = np.where(check_labels(labels, len(patches)), np.float32(1), np.float32(-1))
    X = window_features(patches, kind=features, options=options)
    feature_shape = X.shape[1:]
    fit = fit_linear(X.reshape(len(X), -1), y, loss=loss, l2=l2, optimizer=optimizer, lr=lr,
                     epochs=epochs, batch_size=batch_size, val_fraction=val_fraction,
                     seed=seed, progress=progress)
    cell = feature_cell(features, options)
    window = (feature_shape[0] * cell, feature_shape[1] * cell)
    return _make_filter(fit, feature_shape, features=features, options=options,
                        window=window, name=name)


def _make_filter(fit: dict[str, Any], feature_shape: Sequence[int], *, features: str,
                 options: Mapping[str, Any], window: tuple[int, int], name: str,
                 extra_meta: Mapping[str, Any] | None = None) -> Filter:
    weights = fit.pop("w").reshape(feature_shape)
    if features == "pixels" and weights.shape[-1] == 1:
        weights = weights[..., 0]
    bias = fit.pop("b")
    threshold = fit.pop("threshold")
    meta = {"kind": "learned", **fit, **(extra_meta or {})}
    return Filter(weights, bias=bias, name=name, threshold=threshold, score="dot",
                  features=features, window=window, feature_options=dict(options), meta=meta)


def fit_linear(
    X: NDArray[np.floating],
    y: NDArray[np.floating],
    *,
    loss: str = "logistic",
    l2: float = 1e-3,
    optimizer: str = "adam",
    lr: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = 256,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: bool | Callable[[int, int, float], None] = False,
    groups: NDArray[np.integer] | None = None,
) -> dict[str, Any]:
    """Minimise `objective` over ``(w, b)`` for feature rows ``X`` and labels ``y``.

    This is the engine of `train_filter` on ready-made features.

    Parameters
    ----------
    X : (N, D) array
        Feature rows (converted to float32).
    y : (N,) array
        Labels in {−1, +1}.
    loss, l2, optimizer, lr, epochs, batch_size, val_fraction, seed, progress
        As in `train_filter`.
    groups : (N,) int array, optional
        Rows with the same group (e.g. a box and its mirrored and jittered
        copies) go to the same side of the validation split, so that the
        validation accuracy and threshold are not flattered by near-copies.

    Returns
    -------
    dict
        ``w`` ((D,) float32), ``b``, ``threshold`` and the ``meta`` entries
        listed in `train_filter`.
    """
    loss = one_of(loss, "loss", LOSSES)
    optimizer = one_of(optimizer, "optimizer", OPTIMIZERS)
    l2 = finite_float(l2, "l2")
    if l2 < 0:
        msg = f"`l2` must be ≥ 0, got {l2!r}"
        raise ValueError(msg)
    if epochs is not None:
        epochs = positive_int(epochs, "epochs")
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
    val_fraction = finite_float(val_fraction, "val_fraction")
    if not 0 <= val_fraction < 1:
        msg = f"`val_fraction` must be in [0, 1), got {val_fraction!r}"
        raise ValueError(msg)
    seed = non_negative_int(seed, "seed")
    if lr is not None:
        lr = finite_float(lr, "lr")
        if lr <= 0:
            msg = f"`lr` must be positive, got {lr!r}"
            raise ValueError(msg)
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.float32)
    if not np.isfinite(X).all():
        msg = "features of the patches contain NaN or inf"
        raise ValueError(msg)
    if np.ptp(X, axis=0).max() == 0:
        msg = f"every one of the {len(X)} samples has the same features; there is nothing to learn"
        raise ValueError(msg)

    rng = np.random.default_rng(seed)
    if groups is None:
        groups = np.arange(len(y))
    groups = np.asarray(groups)
    if groups.shape != y.shape:
        msg = f"`groups` must have one entry per sample ({len(y)}), got shape {groups.shape}"
        raise ValueError(msg)
    train, val = _stratified_split(y, groups, val_fraction, rng)
    X_train, y_train = X[train], y[train]
    # Centre the features: the same objective in (w, b − w·μ), far better conditioned.
    mean = X_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    X_train -= mean
    X_val, y_val = (X[val] - mean, y[val]) if len(val) else (X_train, y_train)
    batch = len(X_train) if batch_size is None else min(batch_size, len(X_train))
    steps_per_epoch = -(-len(X_train) // batch)
    # small sets give few steps per epoch: allow enough epochs for _DEFAULT_STEPS steps
    max_epochs = epochs or min(_MAX_EPOCHS, max(_DEFAULT_EPOCHS, -(-_DEFAULT_STEPS // steps_per_epoch)))
    if lr is None:
        lr = _DEFAULT_ADAM_LR if optimizer == "adam" else 1.0 / _smoothness(X_train, loss, l2, rng)

    start = time.perf_counter()
    state = _Optimizer(optimizer, X.shape[1], lr)
    w = np.zeros(X.shape[1], dtype=np.float32)
    b = 0.0
    order = rng.permutation(len(X_train))  # batches are fixed slices of one shuffle ...
    X_train, y_train = X_train[order], y_train[order]
    starts = np.arange(0, len(X_train), batch)
    initial = objective(w, b, X_train, y_train, loss=loss, l2=l2)[0]
    history, val_history = [], []
    best = (math.inf, w.copy(), b, 0)
    previous = initial
    report, finish = _progress_reporter(progress, max_epochs)
    for epoch in range(1, max_epochs + 1):
        average_w, average_b = np.zeros_like(w), 0.0
        for first in rng.permutation(starts):  # ... visited in a new order every epoch
            rows = slice(first, first + batch)
            _, grad_w, grad_b = objective(w, b, X_train[rows], y_train[rows], loss=loss, l2=l2)
            w, b = state.step(w, b, grad_w, grad_b)
            average_w += w
            average_b += b
        value = objective(w, b, X_train, y_train, loss=loss, l2=l2)[0]
        if len(starts) > 1:  # the epoch's average iterate smooths out mini-batch noise
            average_w /= np.float32(len(starts))
            average_b /= len(starts)
            average_value = objective(average_w, average_b, X_train, y_train, loss=loss, l2=l2)[0]
            if average_value < value:
                w, b, value = average_w, average_b, average_value
        if not math.isfinite(value) or value > _DIVERGED * max(initial, 1e-12):
            msg = (f"the learning rate `lr`={lr:g} diverged: the training loss became {value:g} "
                   f"(from {initial:g}) at epoch {epoch}; pass a smaller `lr`")
            raise ValueError(msg)
        val_value = objective(w, b, X_val, y_val, loss=loss, l2=l2)[0]
        history.append(value)
        val_history.append(val_value)
        report(epoch, value)
        if best[3] == 0 or val_value < best[0] - 1e-6 * abs(best[0]):
            best = (val_value, w.copy(), b, epoch)
        if value > previous * (1 - _MIN_PROGRESS):  # too little progress: anneal the rate
            state.lr *= 0.5
        previous = min(previous, value)
        if epoch - best[3] >= _PATIENCE or state.lr < lr * 1e-4:
            break
    _, w, b, best_epoch = best
    finish(len(history), best_epoch, history[-1])
    bias = b - float(np.dot(w, mean))
    X_val = X_val + mean
    X_train_raw = X_train + mean
    val_scores = X_val @ w + np.float32(bias)
    threshold, f1 = best_f1_threshold(val_scores, y_val > 0)
    train_scores = X_train_raw @ w + np.float32(bias)
    return {
        "w": w,
        "b": bias,
        "threshold": threshold,
        "loss": [float(v) for v in history],
        "val_loss": [float(v) for v in val_history],
        "objective": float(objective(w, b, X_train, y_train, loss=loss, l2=l2)[0]),
        "train_accuracy": float(np.mean((train_scores >= threshold) == (y_train > 0))),
        "val_accuracy": float(np.mean((val_scores >= threshold) == (y_val > 0))),
        "val_f1": f1,
        "epochs": len(history),
        "best_epoch": best_epoch,
        "seconds": time.perf_counter() - start,
        "options": {"loss": loss, "l2": l2, "optimizer": optimizer, "lr": float(lr),
                    "epochs": max_epochs, "batch_size": batch_size,
                    "val_fraction": val_fraction, "seed": seed,
                    "train_samples": len(train), "val_samples": len(val)},
    }


def best_f1_threshold(scores: NDArray[np.floating], positive: NDArray[np.bool_], *,
                      total_positives: int | None = None) -> tuple[float, float]:
    """The score cut with the best F1 for ``score ≥ threshold`` ⇒ positive.

    Parameters
    ----------
    scores : (N,) array
    positive : (N,) bool array
        True for the samples that should score above the threshold.
    total_positives : int, optional
        Number of positives in all, if some are missing from ``scores``
        (objects the detector never reported); default ``positive.sum()``.

    Returns
    -------
    threshold : float
        Midway between the lowest score accepted at the best cut and the next
        lower score (just below the lowest score when every sample is
        accepted). Among equally good cuts, the highest is taken.
    f1 : float
        F1 at that threshold.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_positive = scores[order], positive[order]
    true_positives = np.cumsum(sorted_positive)
    accepted = np.arange(1, len(scores) + 1)
    total = positive.sum() if total_positives is None else total_positives
    f1 = 2 * true_positives / (accepted + total)
    # a cut can only fall between distinct scores
    valid = np.append(sorted_scores[1:] < sorted_scores[:-1], True)
    f1 = np.where(valid, f1, -1)
    k = int(np.argmax(f1))  # first maximum: the highest cut
    if k + 1 < len(scores):
        threshold = 0.5 * (sorted_scores[k] + sorted_scores[k + 1])
    else:
        threshold = sorted_scores[k] - max(1e-6, 1e-6 * abs(sorted_scores[k]))
    return float(threshold), float(f1[k])


def _stratified_split(y: NDArray[np.floating], groups: NDArray[np.integer], val_fraction: float,
                      rng: np.random.Generator) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Split each class into train and validation by whole groups (one label per group)."""
    if val_fraction == 0:
        return np.arange(len(y)), np.arange(0)
    train, val = [], []
    for cls in (1, -1):
        members = np.flatnonzero(y == cls)
        member_groups = rng.permutation(np.unique(groups[members]))
        count = round(val_fraction * len(member_groups))
        if count == 0 or count == len(member_groups):
            name = "positive" if cls > 0 else "negative"
            msg = (f"`val_fraction`={val_fraction:g} leaves no {name} sample on one side of the "
                   f"split ({len(members)} {name} samples); pass more samples or val_fraction=0")
            raise ValueError(msg)
        in_val = np.isin(groups[members], member_groups[:count])
        val.append(members[in_val])
        train.append(members[~in_val])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _smoothness(X: NDArray[np.float32], loss: str, l2: float, rng: np.random.Generator) -> float:
    """Upper estimate of the Lipschitz constant of the objective's gradient (power iteration)."""
    vector = np.asarray(rng.standard_normal(X.shape[1]), dtype=np.float32)
    eigenvalue = 1.0
    for _ in range(20):
        vector = X.T @ (X @ vector) / np.float32(len(X))
        eigenvalue = float(np.linalg.norm(vector))
        if eigenvalue == 0:
            break
        vector /= np.float32(eigenvalue)
    curvature = 0.25 if loss == "logistic" else 1.0
    return 1.1 * curvature * (eigenvalue + 1.0) + l2  # +1: the bias's column of ones


class _Optimizer:
    """Adam or momentum SGD on (w, b), updating the rate via ``lr``."""

    def __init__(self, kind: str, size: int, lr: float) -> None:
        self.kind, self.lr, self.t = kind, lr, 0
        self.m_w = np.zeros(size, dtype=np.float32)
        self.v_w = np.zeros(size, dtype=np.float32)
        self.m_b = self.v_b = 0.0

    def step(self, w: NDArray[np.float32], b: float, grad_w: NDArray[np.float32],
             grad_b: float) -> tuple[NDArray[np.float32], float]:
        self.t += 1
        if self.kind == "sgd":
            self.m_w *= np.float32(0.9)
            self.m_w += grad_w
            self.m_b = 0.9 * self.m_b + grad_b
            return w - np.float32(self.lr) * self.m_w, b - self.lr * self.m_b
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        self.m_w *= np.float32(beta1)
        self.m_w += np.float32(1 - beta1) * grad_w
        self.v_w *= np.float32(beta2)
        self.v_w += np.float32(1 - beta2) * np.square(grad_w)
        self.m_b = beta1 * self.m_b + (1 - beta1) * grad_b
        self.v_b = beta2 * self.v_b + (1 - beta2) * grad_b**2
        correction1, correction2 = 1 - beta1**self.t, 1 - beta2**self.t
        rate = self.lr * math.sqrt(correction2) / correction1
        w = w - np.float32(rate) * self.m_w / (np.sqrt(self.v_w) + np.float32(eps))
        b = b - rate * self.m_b / (math.sqrt(self.v_b) + eps)
        return w, b


def _progress_reporter(progress: bool | Callable[[int, int, float], None], total: int
                       ) -> tuple[Callable[[int, float], None], Callable[[int, int, float], None]]:
    """``(step(epoch, loss), finish(epochs, best_epoch, loss))`` for `fit_linear`."""
    if callable(progress):
        def call(epoch: int, value: float) -> None:
            progress(epoch, total, value)
        return call, lambda epochs, best, value: None
    if not progress:
        return lambda epoch, value: None, lambda epochs, best, value: None

    def draw(epoch: int, value: float) -> None:
        done = int(30 * epoch / total)
        sys.stderr.write(f"\rtraining [{'#' * done}{'.' * (30 - done)}] "
                         f"epoch {epoch}/{total} loss {value:.4f}")
        sys.stderr.flush()

    def finish(epochs: int, best: int, value: float) -> None:
        # early stopping usually ends far below the epoch cap: the run is complete, say why
        how = f"stopped early at epoch {epochs}" if epochs < total else f"epoch {epochs}/{total}"
        sys.stderr.write(f"\rtraining [{'#' * 30}] {how} (best {best}) loss {value:.4f}"
                         "          \n")
        sys.stderr.flush()
    return draw, finish


# ---------------------------------------------------------------- detectors from annotated images

#: Largest default window area in pixels (48 × 48), and the smallest side in feature cells.
_DEFAULT_WINDOW_AREA = 48 * 48
_MIN_CELLS = 4
#: Largest allowed ratio between the window's and the boxes' median aspect ratios.
_MAX_ASPECT_MISMATCH = 1.5
#: HOG options `train_detector` uses by default: Felzenszwalb's 31 channels on 6-pixel
#: cells. On the held-out composite face set of samples/faces they reached AP@0.5
#: 0.97-0.98 over three seeds, against 0.88-0.92 for Dalal-Triggs blocks with 18 signed
#: bins and 0.64-0.72 for scikit-image's unsigned 9 bins on 8-pixel cells.
DETECTOR_HOG_OPTIONS = {"cell": 6, "variant": "felzenszwalb"}
#: Mined windows must score above this to count as hard (a margin violation for both losses).
_MINING_THRESHOLD = -1.0


def train_detector(
    images: Mapping[str, Any] | Sequence[Any],
    annotations: Mapping[str, Sequence[Any]] | Sequence[Sequence[Any]],
    *,
    window: int | tuple[int, int] | None = None,
    features: str = "hog",
    feature_options: Mapping[str, Any] | None = None,
    mine_rounds: int = 2,
    negatives_per_image: int = 20,
    hard_negatives_per_image: int = 20,
    flip: bool = True,
    jitter: int = 0,
    scale_step: float = 1.1,
    loss: str = "logistic",
    l2: float = 1e-3,
    optimizer: str = "adam",
    lr: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = 256,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: bool | Callable[[int, int, float], None] = True,
    name: str = "learned",
) -> Filter:
    """Train a sliding-window detector from annotated images, with hard-negative mining.

    Positives are the boxes, resized to the window (and mirrored if ``flip``);
    negatives start as random windows overlapping no box (IoU < 0.3). After
    each fit, `patternfind.detect` runs over the training images and
    the best-scoring windows (score > −1) that overlap no box by IoU ≥ 0.3
    join the negatives; then the filter is refit. Features of every window
    are computed with two cells of surrounding context, so they equal what
    the detector computes on the whole image.

    Parameters
    ----------
    images : mapping of str to image (array or path), or a sequence of images
        Keyed like ``annotations`` (or in the same order). Colour images are
        used in colour for gradient and HOG features (the detector sees them so).
    annotations : mapping of str to sequence of Box, or a sequence of such lists
        True boxes (``Box`` or ``(x, y, w, h)`` tuples). ``ignore`` boxes are
        neither positives nor negatives.
    window : int or (height, width), optional
        Window size in pixels. Default: the boxes' median aspect ratio with an
        area of the median box area, at most 48 × 48, rounded to whole cells
        and at least 4 cells a side. Boxes smaller than the window are
        upsampled; at detection, scales below 1 search them.
    features : {"hog", "gradients", "pixels"}
        Feature transform; its options go in ``feature_options``.
    feature_options : mapping, optional
        Default for HOG: `DETECTOR_HOG_OPTIONS` (Felzenszwalb's 31 channels, 6-pixel cells).
    mine_rounds : int, default 2
        Rounds of hard-negative mining (0: random negatives only).
    negatives_per_image, hard_negatives_per_image : int
        Random negatives per image at the start; mined negatives per image and round.
    flip : bool
        Add every positive mirrored left-right.
    jitter : int
        Extra slightly shifted and scaled copies of every positive
        (`patternfind.patches.patches_from_annotations`).
    scale_step : float
        Pyramid step of the detector during mining.
    loss, l2, optimizer, lr, epochs, batch_size, val_fraction, seed, progress, name
        As in `train_filter`.

    Returns
    -------
    Filter
        As `train_filter` returns, except the ``threshold``: the detection score
        with the best F1 when the final filter runs over the training images
        (a detection counts when it overlaps a box by IoU ≥ 0.5), since the
        patch-level cut lets through many windows of whole images. The patch
        cut stays in ``meta["patch_threshold"]``. ``meta`` also holds ``rounds`` (per round:
        negatives added, validation accuracy), ``positives``, ``negatives``
        and ``box_scales``: the (min, max) box size over window size seen in
        training, a sensible ``scales=`` for `detect`.

    Raises
    ------
    ValueError
        On degenerate boxes or boxes wholly outside their image, no boxes at
        all, or a ``window`` whose aspect ratio is more than 1.5 times off the
        boxes' median (both are named).
    """
    from patternfind.detection import detect

    one_of(features, "features", FEATURE_KINDS)
    if features == "hog" and feature_options is None:
        feature_options = DETECTOR_HOG_OPTIONS
    options = complete_feature_options(features, feature_options)
    cell = feature_cell(features, options)
    mine_rounds = non_negative_int(mine_rounds, "mine_rounds")
    hard_negatives_per_image = non_negative_int(hard_negatives_per_image, "hard_negatives_per_image")
    keyed_images, keyed_boxes = _keyed(images, annotations)
    color = features != "pixels" and any(
        np.ndim(im) == 3 or isinstance(im, (str, bytes)) or hasattr(im, "__fspath__")
        for im in keyed_images.values())
    pixels = {key: as_image(keyed_images[key], f"image {key!r}", color=color) for key in keyed_boxes}
    if color and all(np.ptp(p, axis=2).max() == 0 for p in pixels.values() if p.ndim == 3):
        color = False  # every "colour" image is grey: keep them grey
        pixels = {key: p[..., 0] if p.ndim == 3 else p for key, p in pixels.items()}
    options = {**options, "color": color}
    boxes = {key: check_boxes(_as_boxes(keyed_boxes[key]), pixels[key].shape, f"image {key!r}")
             for key in keyed_boxes}
    window = _choose_window(boxes, window, cell)
    context = 0 if features == "pixels" else 2 * cell
    started = time.perf_counter()
    patches, labels = patches_from_annotations(
        pixels, boxes, window=window, flip=flip, negatives_per_image=negatives_per_image,
        jitter=jitter, context=context, color=color, seed=seed)
    X = window_features(patches, kind=features, options=options, context=context)
    feature_shape = X.shape[1:]
    X = X.reshape(len(X), -1)
    y = np.where(labels, np.float32(1), np.float32(-1))
    # patches_from_annotations lists each box's copies (jittered, mirrored) together
    copies = (1 + jitter) * (2 if flip else 1)
    positives = int(labels.sum())
    groups = np.concatenate([np.arange(positives) // copies,
                             positives + np.arange(len(labels) - positives)])
    fit_options: dict[str, Any] = {"loss": loss, "l2": l2, "optimizer": optimizer, "lr": lr,
                                   "epochs": epochs, "batch_size": batch_size,
                                   "val_fraction": val_fraction, "seed": seed, "progress": progress}
    box_scales = _box_scales(boxes, window)
    scales = (box_scales[0] / 1.25, box_scales[1] * 1.25)
    rounds = []
    fit = fit_linear(X, y, groups=groups, **fit_options)
    for round_index in range(1, mine_rounds + 1):
        current = _make_filter(dict(fit), feature_shape, features=features, options=options,
                               window=window, name=name)
        hard = []
        for key, image in pixels.items():
            found = detect(image, current, threshold=_MINING_THRESHOLD, scales=scales,
                           scale_step=scale_step, nms_iou=0.3)
            candidates = np.array([[d.x, d.y, d.w, d.h] for d in found]).reshape(-1, 4)
            if len(candidates) and boxes[key]:
                truth = np.array([[b.x, b.y, b.w, b.h] for b in boxes[key]])
                candidates = candidates[_iou_max(candidates, truth) < 0.3]
            for xywh in candidates[:hard_negatives_per_image]:  # detect sorts best first
                hard.append(crop_window(image, tuple(xywh), window, context=context))
        rounds.append({"round": round_index, "hard_negatives": len(hard)})
        if progress is True:
            sys.stderr.write(f"mining round {round_index}/{mine_rounds}: "
                             f"{len(hard)} hard negatives\n")
        if not hard:
            break
        hard_features = window_features(np.stack(hard), kind=features, options=options,
                                        context=context)
        X = np.concatenate([X, hard_features.reshape(len(hard), -1)])
        y = np.concatenate([y, np.full(len(hard), -1, dtype=np.float32)])
        groups = np.concatenate([groups, groups.max() + 1 + np.arange(len(hard))])
        fit = fit_linear(X, y, groups=groups, **fit_options)
        rounds[-1]["val_accuracy"] = fit["val_accuracy"]
    final = _make_filter(dict(fit), feature_shape, features=features, options=options,
                         window=window, name=name)
    threshold, image_f1 = _image_threshold(final, pixels, boxes, scales, scale_step)
    if threshold is not None:
        fit["patch_threshold"] = fit["threshold"]
        fit["threshold"] = threshold
        fit["image_f1"] = image_f1
    extra = {"rounds": rounds, "positives": int((y > 0).sum()), "negatives": int((y < 0).sum()),
             "box_scales": [float(box_scales[0]), float(box_scales[1])],
             "total_seconds": time.perf_counter() - started}
    return _make_filter(fit, feature_shape, features=features, options=options,
                        window=window, name=name, extra_meta=extra)


def _image_threshold(filter_: Filter, pixels: Mapping[str, NDArray[np.float32]],
                     boxes: Mapping[str, Sequence[Any]], scales: tuple[float, float],
                     scale_step: float) -> tuple[float | None, float]:
    """The detection threshold with the best F1 over the training images (IoU ≥ 0.5)."""
    from patternfind.detection import detect
    from patternfind.metrics import TRUE_POSITIVE, match_detections

    scores: list[float] = []
    hits: list[bool] = []
    total = 0
    for key, image in pixels.items():
        found = detect(image, filter_, threshold=_MINING_THRESHOLD, scales=scales,
                       scale_step=scale_step, nms_iou=0.3)
        outcome, _ = match_detections(found, boxes[key], iou=0.5)
        scores.extend(d.score for d in found)
        hits.extend(outcome == TRUE_POSITIVE)
        total += sum(not box.ignore for box in boxes[key])
    if not any(hits):
        return None, 0.0
    return best_f1_threshold(np.array(scores), np.array(hits), total_positives=total)


def _keyed(images: Any, annotations: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if isinstance(annotations, Mapping):
        if not isinstance(images, Mapping):
            msg = "`images` must be a mapping keyed like `annotations` when `annotations` is one"
            raise TypeError(msg)
        missing = [key for key in annotations if key not in images]
        if missing:
            msg = f"`images` has no image for annotation key(s) {missing[:3]}"
            raise ValueError(msg)
        return dict(images), dict(annotations)
    images, annotations = list(images), list(annotations)
    if len(images) != len(annotations):
        msg = f"`images` ({len(images)}) and `annotations` ({len(annotations)}) differ in length"
        raise ValueError(msg)
    keys = [str(i) for i in range(len(images))]
    return dict(zip(keys, images, strict=True)), dict(zip(keys, annotations, strict=True))


def _as_boxes(boxes: Sequence[Any]) -> list[Any]:
    from patternfind.structures import Box

    return [box if isinstance(box, Box) else Box(*box) for box in boxes]


def _choose_window(boxes: Mapping[str, Sequence[Any]], window: Any, cell: int) -> tuple[int, int]:
    from patternfind._validation import pair_of

    sizes = np.array([[b.w, b.h] for group in boxes.values() for b in group if not b.ignore])
    if len(sizes) == 0:
        msg = "the annotations hold no box to learn from"
        raise ValueError(msg)
    aspect = float(np.median(sizes[:, 0] / sizes[:, 1]))  # width / height
    if window is not None:
        height, width = pair_of(window, "window", positive_int)
        ratio = (width / height) / aspect
        if max(ratio, 1 / ratio) > _MAX_ASPECT_MISMATCH:
            msg = (f"`window` {width}x{height} (aspect {width / height:.2f}) is far from the "
                   f"boxes' median aspect ratio {aspect:.2f} (width / height)")
            raise ValueError(msg)
        if height < cell or width < cell:
            msg = f"`window` {width}x{height} is smaller than one {cell}-pixel feature cell"
            raise ValueError(msg)
        return height, width
    area = min(float(np.median(sizes[:, 0] * sizes[:, 1])), _DEFAULT_WINDOW_AREA)
    smallest = _MIN_CELLS * cell if cell > 1 else 8
    height = max(smallest, cell * round(math.sqrt(area / aspect) / cell))
    width = max(smallest, cell * round(height * aspect / cell))
    return int(height), int(width)


def _box_scales(boxes: Mapping[str, Sequence[Any]], window: tuple[int, int]) -> tuple[float, float]:
    ratios = [math.sqrt(b.w * b.h / (window[0] * window[1]))
              for group in boxes.values() for b in group if not b.ignore]
    return min(ratios), max(ratios)


def _iou_max(candidates: NDArray[np.float64], truth: NDArray[np.float64]) -> NDArray[np.float64]:
    from patternfind.metrics import box_iou

    return box_iou(candidates, truth).max(axis=1)
