"""The training objective and its optimiser: losses, L2, Adam/SGD, mini-batches, early stopping.

A learned filter scores a window ``x`` as ``⟨w, φ(x)⟩ + b``. For labels
``y ∈ {−1, +1}`` and scores ``s = X w + b`` the objective is

    J(w, b) = mean_i ℓ(y_i s_i) + (l2 / 2) ‖w‖²

with the logistic loss ``ℓ(m) = log(1 + e^(−m))`` or the hinge loss
``ℓ(m) = max(0, 1 − m)``; the bias is not penalised. `objective` returns ``J``
and its (sub)gradient, and `fit_linear` minimises it on feature rows with the
options of a `FitOptions` record (one record for every training entry point,
as dlib's training options are).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from patternfind._validation import (
    finite_float,
    non_negative_int,
    one_of,
    positive_int,
    with_keywords,
)
from patternfind.evaluation.metrics import best_f1_threshold

__all__ = ["L2_GRID", "LOSSES", "OPTIMIZERS", "FitOptions", "fit_linear", "loss_forward", "objective"]

LOSSES = ("logistic", "hinge")
OPTIMIZERS = ("adam", "sgd", "lbfgs")
_DEFAULT_ADAM_LR = 0.03  # sgd: 1 / (estimated Lipschitz constant)
_DEFAULT_EPOCHS = 100
_DEFAULT_STEPS = 3000  # default epochs: at least 100, and enough for this many steps ...
_MAX_EPOCHS = 1000  # ... but no more than this
_PATIENCE = 8  # epochs without a better validation loss before stopping
_MIN_PROGRESS = 1e-5  # relative decrease of the training loss per epoch below which lr halves
#: Patience and annealing count stretches of at least this many steps, not bare epochs: with
#: one full batch per epoch (a few hundred samples), Adam's early overshoot outlasted
#: _PATIENCE single steps and stopped the fit far from the optimum (on lfw_subset one fold
#: ended at objective 0.29 where the optimum is 0.083; with 10-step stretches every fold
#: reaches L-BFGS's optimum to 1e-4).
_CHECK_STEPS = 10
#: The L2 strengths that ``l2="auto"`` chooses from (features are centred, not scaled).
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)
_CONVERGED = 1e-4
_DIVERGED = 1e3  # the loss has diverged once it exceeds this many times its starting value

Progress = bool | Callable[[int, int, float], None]


@dataclass(frozen=True)
class FitOptions:
    """How `fit_linear` (and so `train_filter` and `train_detector`) fits a filter.

    Attributes
    ----------
    loss : {"logistic", "hinge"}
        Per-sample loss (see the module docstring).
    l2 : float or "auto", default "auto"
        Weight of the L2 penalty ``(l2 / 2) ‖w‖²`` (≥ 0). ``"auto"`` picks it
        from `L2_GRID` by cross-validation over ``folds`` folds
        (`patternfind.learn.selection.choose_l2`); `train_filter` and
        `train_detector` resolve it, `fit_linear` needs a number.
    optimizer : {"adam", "sgd", "lbfgs"}
        Adam (β = 0.9, 0.999), SGD with momentum 0.9 (not Nesterov), both on
        mini-batches, or full-batch L-BFGS (`scipy.optimize.minimize`, which
        ignores ``lr`` and ``batch_size``; ``epochs`` caps its iterations).
        With ``l2="auto"`` and the logistic loss, the cross-validation fits
        and the final fit always use L-BFGS: they must reach the optimum of
        a smooth convex objective, which it does in tens of passes over the
        data where Adam took hundreds (on the composite face set, 0.1-0.2 s
        against 2-16 s per fold fit, to a lower objective).
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
    val_fraction : float, default 0.2
        Share of each class held out (stratified) for early stopping and the
        threshold. With 0, both use the training split.
    seed : int, default 0
        Seeds `numpy.random.default_rng` for the split and the batch order; the
        same inputs and seed give the same filter.
    folds : int, default 5
        Cross-validation folds for ``l2="auto"`` and for the threshold
        (whole groups or images per fold; fewer when there are fewer groups).
    progress : bool or callable, default False
        True draws a progress bar on stderr; a callable is called as
        ``progress(epoch, max_epochs, train_loss)`` after every epoch. A
        library prints nothing unless asked: the CLI turns the bar on.
    """

    loss: str = "logistic"
    l2: float | str = "auto"
    optimizer: str = "adam"
    lr: float | None = None
    epochs: int | None = None
    batch_size: int | None = 256
    val_fraction: float = 0.2
    seed: int = 0
    folds: int = 5
    progress: Progress = False

    def __post_init__(self) -> None:
        one_of(self.loss, "loss", LOSSES)
        one_of(self.optimizer, "optimizer", OPTIMIZERS)
        if self.l2 != "auto":
            if isinstance(self.l2, str):
                msg = f"`l2` must be a number ≥ 0 or 'auto', got {self.l2!r}"
                raise ValueError(msg)
            l2 = finite_float(self.l2, "l2")
            if l2 < 0:
                msg = f"`l2` must be ≥ 0 or 'auto', got {l2!r}"
                raise ValueError(msg)
        if positive_int(self.folds, "folds") < 2:
            msg = f"`folds` must be at least 2, got {self.folds!r}"
            raise ValueError(msg)
        if self.epochs is not None:
            positive_int(self.epochs, "epochs")
        if self.batch_size is not None:
            positive_int(self.batch_size, "batch_size")
        val_fraction = finite_float(self.val_fraction, "val_fraction")
        if not 0 <= val_fraction < 1:
            msg = f"`val_fraction` must be in [0, 1), got {val_fraction!r}"
            raise ValueError(msg)
        non_negative_int(self.seed, "seed")
        if self.lr is not None and finite_float(self.lr, "lr") <= 0:
            msg = f"`lr` must be positive, got {self.lr!r}"
            raise ValueError(msg)

    @classmethod
    def build(cls, options: FitOptions | None, keywords: Mapping[str, Any]) -> FitOptions:
        """``options`` (default: the defaults) with the fields named in ``keywords`` replaced.

        Raises
        ------
        TypeError
            If ``options`` is not a FitOptions, or a keyword names no field.
        """
        return with_keywords(cls, options, keywords)


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
    # einsum (numpy's own single-threaded loop), not `@` (BLAS gemv), in this per-step
    # product: with the other core busy, OpenBLAS's threads made `X @ w` 4-20× slower
    # (20000×576 float32: 22 ms against 5 ms). The few products outside the training
    # loop (`_smoothness`, the final scores) use `@`, the latter under fit_linear's
    # one-thread BLAS limit.
    scores = np.einsum("ij,j->i", X, w) + dtype.type(b)
    values, slopes = loss_forward(y * scores, loss=loss)
    upstream = (slopes * y) / dtype.type(len(y))  # dJ/ds_i
    grad_w = np.einsum("i,ij->j", upstream, X) + dtype.type(l2) * w
    value = float(values.mean(dtype=np.float64)) + 0.5 * l2 * float(np.dot(w, w))
    return value, grad_w, float(upstream.sum(dtype=np.float64))


# ---------------------------------------------------------------- fitting


def fit_linear(
    X: NDArray[np.floating],
    y: NDArray[np.floating],
    *,
    options: FitOptions | None = None,
    groups: NDArray[np.integer] | None = None,
    **fit_options: Any,
) -> dict[str, Any]:
    """Minimise `objective` over ``(w, b)`` for feature rows ``X`` and labels ``y``.

    This is the engine of `train_filter` and `train_detector` on ready-made features.

    Parameters
    ----------
    X : (N, D) array
        Feature rows (converted to float32).
    y : (N,) array
        Labels in {−1, +1}.
    options : FitOptions, optional
        Loss, L2, optimiser, learning rate, epochs, batch size, validation
        share, seed and progress; keywords (``l2=0.1``) override its fields.
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
    options = FitOptions.build(options, fit_options)
    if options.l2 == "auto":
        msg = ("`l2='auto'` is chosen by cross-validation in train_filter and train_detector "
               "(or patternfind.learn.selection.choose_l2); fit_linear needs a number")
        raise ValueError(msg)
    loss, optimizer, lr = options.loss, options.optimizer, options.lr
    l2 = float(options.l2)
    epochs, batch_size, seed = options.epochs, options.batch_size, options.seed
    val_fraction, progress = options.val_fraction, options.progress
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
    if lr is None and optimizer != "lbfgs":  # L-BFGS finds its own steps
        lr = _DEFAULT_ADAM_LR if optimizer == "adam" else 1.0 / _smoothness(X_train, loss, l2, rng)

    start = time.perf_counter()
    # One BLAS thread for the fit: its products are matrix-vector ones, too small to
    # share, and with the other core busy OpenBLAS's threads made them many times
    # slower (L-BFGS-B's own BLAS calls included: 10 cross-validation fits of the
    # composite face set took 1.6 s with two threads and 0.25 s with one, load 3).
    with threadpool_limits(limits=1, user_api="blas"):
        if optimizer == "lbfgs":
            w, b, best_epoch, history, val_history = _lbfgs(
                X_train, y_train, X_val, y_val, loss=loss, l2=l2, max_iter=epochs or _MAX_EPOCHS,
                validate=len(val) > 0, progress=progress)
        else:
            assert lr is not None  # set above for Adam and SGD
            w, b, best_epoch, history, val_history = _descend(
                X_train, y_train, X_val, y_val, loss=loss, l2=l2, optimizer=optimizer, lr=lr,
                batch=batch, max_epochs=max_epochs, validate=len(val) > 0, progress=progress,
                rng=rng)
        bias = b - float(np.dot(w, mean))
        X_val = X_val + mean
        X_train_raw = X_train + mean
        val_scores = X_val @ w + np.float32(bias)
        train_scores = X_train_raw @ w + np.float32(bias)
    return fit_record(
        w, bias, train_scores=train_scores, y_train=y_train, val_scores=val_scores, y_val=y_val,
        history=history, val_history=val_history, best_epoch=best_epoch, started=start,
        objective=float(objective(w, b, X_train, y_train, loss=loss, l2=l2)[0]),
        options={"loss": loss, "l2": l2, "optimizer": optimizer,
                 "lr": None if lr is None else float(lr), "epochs": max_epochs,
                 "batch_size": batch_size, "val_fraction": val_fraction, "seed": seed,
                 "train_samples": len(train), "val_samples": len(val)})


def fit_record(w: NDArray[np.float32], b: float, *, train_scores: NDArray[np.floating],
               y_train: NDArray[np.floating], val_scores: NDArray[np.floating],
               y_val: NDArray[np.floating], history: list[float], val_history: list[float],
               best_epoch: int, started: float, objective: float,
               options: dict[str, Any]) -> dict[str, Any]:
    """The result of a fit, as `fit_linear` and the network's fit return it.

    The threshold is the best F1 of the validation scores; both accuracies
    are taken at it. ``started`` is the fit's `time.perf_counter` start.
    """
    threshold, f1 = best_f1_threshold(val_scores, y_val > 0)
    return {
        "w": w,
        "b": float(b),
        "threshold": threshold,
        "loss": [float(v) for v in history],
        "val_loss": [float(v) for v in val_history],
        "objective": objective,
        "train_accuracy": float(np.mean((train_scores >= threshold) == (y_train > 0))),
        "val_accuracy": float(np.mean((val_scores >= threshold) == (y_val > 0))),
        "val_f1": f1,
        "epochs": len(history),
        "best_epoch": best_epoch,
        "seconds": time.perf_counter() - started,
        "options": options,
    }


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


def _descend(X_train: NDArray[np.float32], y_train: NDArray[np.float32],
             X_val: NDArray[np.float32], y_val: NDArray[np.float32], *, loss: str, l2: float,
             optimizer: str, lr: float, batch: int, max_epochs: int, validate: bool,
             progress: Progress, rng: np.random.Generator
             ) -> tuple[NDArray[np.float32], float, int, list[float], list[float]]:
    """Adam or SGD over mini-batches, with annealing and early stopping (`fit_linear`)."""
    steps_per_epoch = -(-len(X_train) // batch)
    state = _Optimizer(optimizer, X_train.shape[1], lr)
    w = np.zeros(X_train.shape[1], dtype=np.float32)
    b = 0.0
    order = rng.permutation(len(X_train))  # batches are fixed slices of one shuffle ...
    X_train, y_train = X_train[order], y_train[order]
    starts = np.arange(0, len(X_train), batch)
    initial = objective(w, b, X_train, y_train, loss=loss, l2=l2)[0]
    history, val_history = [], []
    best = (math.inf, w.copy(), b, 0)
    previous = initial
    report, finish = _progress_reporter(progress, max_epochs)
    # Without a validation split the "validation" loss is the smooth training loss, which
    # creeps down for ever: stop once it gains less than this share per _PATIENCE epochs.
    tolerance = _CONVERGED if not validate else 1e-6
    span = -(-_CHECK_STEPS // steps_per_epoch)  # epochs per check of progress
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
        # without a split the "validation" rows are the training rows: reuse the value
        val_value = objective(w, b, X_val, y_val, loss=loss, l2=l2)[0] if validate else value
        history.append(value)
        val_history.append(val_value)
        report(epoch, value)
        if best[3] == 0 or val_value < best[0] - tolerance * abs(best[0]):
            best = (val_value, w.copy(), b, epoch)
        if epoch % span == 0:
            if value > previous * (1 - _MIN_PROGRESS):  # too little progress: anneal the rate
                state.lr *= 0.5
            previous = min(previous, value)
        if epoch - best[3] >= _PATIENCE * span or state.lr < lr * 1e-4:
            break
    _, w, b, best_epoch = best
    finish(len(history), best_epoch, history[-1])
    return w, b, best_epoch, history, val_history


def _lbfgs(X_train: NDArray[np.float32], y_train: NDArray[np.float32],
           X_val: NDArray[np.float32], y_val: NDArray[np.float32], *, loss: str, l2: float,
           max_iter: int, validate: bool, progress: Progress
           ) -> tuple[NDArray[np.float32], float, int, list[float], list[float]]:
    """Full-batch L-BFGS-B on `objective` (`fit_linear` with ``optimizer="lbfgs"``).

    With a validation split the iterate with the lowest validation loss is
    kept, and the search stops after ``_PATIENCE * _CHECK_STEPS`` iterations
    without a better one; without one it runs to convergence.
    """
    size = X_train.shape[1]
    report, finish = _progress_reporter(progress, max_iter)
    history: list[float] = []
    val_history: list[float] = []
    best: list[Any] = [math.inf, np.zeros(size, dtype=np.float32), 0.0, 0]

    def value_and_gradient(params: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        value, grad_w, grad_b = objective(params[:-1].astype(np.float32), float(params[-1]),
                                          X_train, y_train, loss=loss, l2=l2)
        return value, np.append(grad_w.astype(np.float64), grad_b)

    def record(params: NDArray[np.float64], value: float) -> None:
        w, b = params[:-1].astype(np.float32), float(params[-1])
        val_value = objective(w, b, X_val, y_val, loss=loss, l2=l2)[0] if validate else value
        history.append(value)
        val_history.append(val_value)
        report(len(history), value)
        if val_value < best[0]:
            best[:] = [val_value, w, b, len(history)]

    def after_iteration(intermediate_result: Any) -> None:
        record(intermediate_result.x, float(intermediate_result.fun))
        if validate and len(history) - best[3] >= _PATIENCE * _CHECK_STEPS:
            raise StopIteration  # scipy ends the search and returns the last iterate

    result = scipy.optimize.minimize(value_and_gradient, np.zeros(size + 1), jac=True,
                                     method="L-BFGS-B", callback=after_iteration,
                                     options={"maxiter": max_iter})
    if not history:  # converged before the first iteration (e.g. a zero gradient)
        record(result.x, float(result.fun))
    _, w, b, best_epoch = best
    finish(len(history), best_epoch, history[-1])
    return w, b, best_epoch, history, val_history


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
    """``(step(epoch, loss), finish(epochs, best_epoch, loss))`` for `fit_linear`.

    ``progress=True`` draws a tqdm bar on stderr (epochs done, rate, time
    left, the loss), as the batch runs do.
    """
    if callable(progress):
        def call(epoch: int, value: float) -> None:
            progress(epoch, total, value)
        return call, lambda epochs, best, value: None
    if not progress:
        return lambda epoch, value: None, lambda epochs, best, value: None
    bar = tqdm(total=total, desc="training", unit="epoch", file=sys.stderr, dynamic_ncols=True)

    def draw(epoch: int, value: float) -> None:
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        bar.update(epoch - bar.n)

    def finish(epochs: int, best: int, value: float) -> None:
        # Early stopping usually ends far below the epoch cap: the run is complete,
        # so the bar ends full and says why it stopped.
        how = f"stopped early at epoch {epochs}" if epochs < total else f"epoch {epochs}/{total}"
        bar.total = bar.n = epochs
        bar.set_postfix_str(f"{how} (best {best}) loss {value:.4f}", refresh=False)
        bar.close()
    return draw, finish
