"""Tests of patternfind.learn: objective, gradients, optimum, accuracy on real sets, bad input."""

from __future__ import annotations

import contextlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.optimize

from patternfind.evaluation.metrics import best_f1_threshold
from patternfind.layers.features import window_features
from patternfind.learn import (
    loss_forward,
    objective,
    train_detector,
    train_filter,
)
from patternfind.learn.optimize import L2_GRID
from patternfind.learn.patches import crop_window, patches_from_annotations, sample_negative_boxes
from patternfind.structures import Box, Filter

DIGITS = Path(__file__).resolve().parent / "data" / "digits.png"  # see tests/data/README.md


def _random_problem(rng, count=400, size=6):
    X = rng.standard_normal((count, size)).astype(np.float64)
    y = np.where(X @ rng.standard_normal(size) + 0.5 * rng.standard_normal(count) > 0, 1.0, -1.0)
    return X, y


def _randomish_patches(count, size, seed):
    """Smooth noise patches; 30 % carry a faint ring; 5 % of the labels are flipped."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((count, size, size)).astype(np.float32)
    noise = np.stack([cv2.GaussianBlur(p, (0, 0), 1.5) for p in noise])
    has_ring = rng.random(count) < 0.3
    radius = np.hypot(*(np.mgrid[:size, :size] - (size - 1) / 2))
    ring = np.exp(-((radius - size / 3.5) ** 2) / 4).astype(np.float32)
    patches = 0.5 + 0.15 * noise / noise.std() + 0.08 * has_ring[:, None, None] * ring
    labels = has_ring ^ (rng.random(count) < 0.05)
    return np.clip(patches, 0, 1).astype(np.float32), labels


def _digits():
    """(50, 100, 20, 20) cells of digits.png in [0, 1] and their (50, 100) labels."""
    sheet = cv2.imread(str(DIGITS), cv2.IMREAD_GRAYSCALE)
    assert sheet is not None, f"cannot read {DIGITS}"
    cells = sheet.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).astype(np.float32) / 255
    labels = np.repeat((np.arange(50) // 5)[:, None], 100, axis=1)
    return cells, labels


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _average_precision(scores, positive):
    """AP as the mean precision at the rank of each positive (independent of patternfind)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(positive)[order]
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hit.mean())


def _ncc(patches, template):
    a = patches.reshape(len(patches), -1) - patches.reshape(len(patches), -1).mean(1, keepdims=True)
    t = template.ravel() - template.mean()
    return (a @ t) / (np.linalg.norm(a, axis=1) * np.linalg.norm(t) + 1e-12)


# ---------------------------------------------------------------- objective and gradient


@pytest.mark.parametrize("loss", ["logistic", "hinge"])
def test_objective_value_matches_the_formula(loss):
    rng = np.random.default_rng(0)
    X, y = _random_problem(rng)
    w, b, l2 = rng.standard_normal(X.shape[1]), 0.3, 0.05
    margins = y * (X @ w + b)
    per_sample = np.log1p(np.exp(-margins)) if loss == "logistic" else np.maximum(0, 1 - margins)
    expected = per_sample.mean() + 0.5 * l2 * np.sum(w**2)
    assert objective(w, b, X, y, loss=loss, l2=l2)[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss", ["logistic", "hinge"])
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_gradient_matches_finite_differences(loss, l2):
    rng = np.random.default_rng(1)
    X, y = _random_problem(rng)
    w, b = rng.standard_normal(X.shape[1]), -0.2
    if loss == "hinge":  # keep every margin away from the kink at 1
        margins = y * (X @ w + b)
        keep = np.abs(margins - 1) > 1e-3
        X, y = X[keep], y[keep]
    _, grad_w, grad_b = objective(w, b, X, y, loss=loss, l2=l2)
    step = 1e-6
    numeric_w = np.empty_like(w)
    for k in range(len(w)):
        delta = np.zeros_like(w)
        delta[k] = step
        plus = objective(w + delta, b, X, y, loss=loss, l2=l2)[0]
        minus = objective(w - delta, b, X, y, loss=loss, l2=l2)[0]
        numeric_w[k] = (plus - minus) / (2 * step)
    numeric_b = (objective(w, b + step, X, y, loss=loss, l2=l2)[0]
                 - objective(w, b - step, X, y, loss=loss, l2=l2)[0]) / (2 * step)
    relative = np.abs(grad_w - numeric_w).max() / np.abs(numeric_w).max()
    assert relative < 1e-6
    assert grad_b == pytest.approx(numeric_b, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("loss", ["logistic", "hinge"])
def test_loss_slopes_match_finite_differences(loss):
    margins = np.array([-30.0, -2.0, -0.1, 0.4, 0.9, 1.3, 5.0, 40.0])
    values, slopes = loss_forward(margins, loss=loss)
    step = 1e-6
    numeric = (loss_forward(margins + step, loss=loss)[0]
               - loss_forward(margins - step, loss=loss)[0]) / (2 * step)
    np.testing.assert_allclose(slopes, numeric, rtol=1e-6, atol=1e-9)
    assert np.isfinite(values).all()


# ---------------------------------------------------------------- optimum


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("l2", [1e-3, 1e-2])
def test_fit_reaches_the_lbfgs_optimum(optimizer, l2):
    patches, labels = _randomish_patches(4000, 12, seed=3)
    X = patches.reshape(len(patches), -1).astype(np.float64)
    y = np.where(labels, 1.0, -1.0)

    def value_and_gradient(params):
        value, grad_w, grad_b = objective(params[:-1], params[-1], X, y, loss="logistic", l2=l2)
        return value, np.append(grad_w, grad_b)

    with _one_blas_thread():  # many-threaded OpenBLAS crawls on a busy 2-core machine
        reference = scipy.optimize.minimize(
            value_and_gradient, np.zeros(X.shape[1] + 1), jac=True, method="L-BFGS-B",
            options={"maxiter": 10_000, "gtol": 1e-10, "ftol": 1e-15})
    fitted = train_filter(patches, labels, l2=l2, optimizer=optimizer, val_fraction=0,
                          epochs=300, progress=False)
    reached = objective(fitted.weights.ravel().astype(np.float64), fitted.bias, X, y,
                        loss="logistic", l2=l2)[0]
    assert reached >= reference.fun * (1 - 1e-9)  # L-BFGS-B really found the optimum
    assert (reached - reference.fun) / reference.fun < 1e-3


def _lbfgs_optimum(X, y, l2):
    def value_and_gradient(params):
        value, grad_w, grad_b = objective(params[:-1], params[-1], X, y, loss="logistic", l2=l2)
        return value, np.append(grad_w, grad_b)

    with _one_blas_thread():
        return scipy.optimize.minimize(
            value_and_gradient, np.zeros(X.shape[1] + 1), jac=True, method="L-BFGS-B",
            options={"maxiter": 10_000, "gtol": 1e-10, "ftol": 1e-15})


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
@pytest.mark.parametrize("held_out", [3, 4])
def test_fit_on_one_batch_per_epoch_reaches_the_lbfgs_optimum(held_out, optimizer):
    """160 lfw_subset crops (one 256-batch per epoch), l2 = 1 / n as LogisticRegression().

    Patience counted in bare epochs (8 steps here) stopped the fit during Adam's
    early overshoot, at objective 0.29 for fold 3 where the optimum is 0.083.
    """
    from skimage.data import lfw_subset  # shipped inside scikit-image: no download

    images = lfw_subset().astype(np.float32)
    faces = np.arange(len(images)) < 100
    rng = np.random.default_rng(0)
    folds = np.empty(len(images), dtype=int)
    for label in (True, False):
        members = rng.permutation(np.flatnonzero(faces == label))
        folds[members] = np.arange(len(members)) % 5
    X = images[folds != held_out].reshape(160, -1).astype(np.float64)
    y = np.where(faces[folds != held_out], 1.0, -1.0)
    reference = _lbfgs_optimum(X, y, 1 / 160).fun
    fitted = train_filter(images[folds != held_out], faces[folds != held_out], l2=1 / 160,
                          val_fraction=0, optimizer=optimizer)
    reached = objective(fitted.weights.ravel().astype(np.float64), fitted.bias, X, y,
                        loss="logistic", l2=1 / 160)[0]
    assert reached >= reference * (1 - 1e-9)
    assert (reached - reference) / reference < 1e-3


# ---------------------------------------------------------------- real labelled sets


@pytest.mark.parametrize(("features", "min_ap", "min_accuracy"),
                         [("pixels", 0.85, 0.95), ("hog", 0.95, 0.98)])
def test_learned_filter_beats_the_mean_template_on_held_out_digits(features, min_ap, min_accuracy):
    cells, digit = _digits()
    train_patches, test_patches = cells[:, :50].reshape(-1, 20, 20), cells[:, 50:].reshape(-1, 20, 20)
    train_labels, test_labels = digit[:, :50].ravel() == 3, digit[:, 50:].ravel() == 3
    options = {"cell": 4} if features == "hog" else None
    learned = train_filter(train_patches, train_labels, features=features,
                           feature_options=options, progress=False)
    test_features = window_features(test_patches, kind=features, options=options)
    learned_scores = test_features.reshape(len(test_patches), -1) @ learned.weights.ravel() + learned.bias
    template = train_patches[train_labels].mean(axis=0)
    template_scores = _ncc(test_patches, template)

    learned_ap = _average_precision(learned_scores, test_labels)
    template_ap = _average_precision(template_scores, test_labels)
    assert template_ap < 0.75  # the mean "3" confuses 3 with 5 and 8 ...
    assert learned_ap > min_ap  # ... a learned filter much less so
    assert learned_ap > template_ap + 0.15
    accuracy = np.mean((learned_scores >= learned.threshold) == test_labels)
    assert accuracy > min_accuracy  # "never a 3" would score 0.90


def test_learned_filter_beats_the_mean_face_on_held_out_lfw():
    from skimage.data import lfw_subset  # shipped inside scikit-image: no download

    images = lfw_subset().astype(np.float32)
    faces = np.arange(len(images)) < 100  # the first 100 are faces, the rest are not
    train = np.arange(len(images)) % 2 == 0
    learned = train_filter(images[train], faces[train], features="hog",
                           feature_options={"cell": 5}, progress=False)
    features = window_features(images[~train], kind="hog", options={"cell": 5})
    scores = features.reshape(len(features), -1) @ learned.weights.ravel() + learned.bias
    template_scores = _ncc(images[~train], images[train & faces].mean(axis=0))
    learned_ap = _average_precision(scores, faces[~train])
    template_ap = _average_precision(template_scores, faces[~train])
    assert learned_ap > 0.99
    assert 1 - learned_ap < 0.5 * (1 - template_ap)  # at most half the template's AP loss


# ---------------------------------------------------------------- the returned filter


def test_returned_filter_carries_what_it_was_trained_with():
    patches, labels = _randomish_patches(600, 16, seed=5)
    fitted = train_filter(patches, labels, features="hog", feature_options={"cell": 4},
                          progress=False, epochs=20, l2=1e-3)
    assert isinstance(fitted, Filter)
    assert fitted.weights.shape == (4, 4, 36)
    assert fitted.score == "dot"
    assert fitted.features == "hog"
    assert fitted.window == (16, 16)
    # grey patches: the detector must turn colour photos grey for this filter
    assert fitted.feature_options == {"cell": 4, "bins": 9, "block_norm": "L2-Hys", "signed": False,
                                      "variant": "dalal-triggs", "color": False}
    meta = fitted.meta
    assert meta["kind"] == "learned"
    assert len(meta["loss"]) == meta["epochs"] <= 20
    assert 0 <= meta["val_accuracy"] <= 1
    assert 0 <= meta["train_accuracy"] <= 1
    assert meta["options"]["seed"] == 0
    assert meta["options"]["loss"] == "logistic"
    assert meta["options"]["val_samples"] == round(0.2 * labels.sum()) + round(0.2 * (~labels).sum())
    assert meta["options"]["l2"] == 1e-3  # a given l2 wins: no cross-validation
    assert "l2_selection" not in meta


def test_auto_l2_records_its_choice_and_uses_every_sample():
    cells, digit = _digits()
    patches, labels = cells[:, :20].reshape(-1, 20, 20), digit[:, :20].ravel() == 3
    fitted = train_filter(patches, labels, features="hog", feature_options={"cell": 4}, folds=3)
    selection = fitted.meta["l2_selection"]
    assert selection["grid"] == list(L2_GRID)
    assert selection["folds"] == 3
    assert selection["chosen"] == fitted.meta["options"]["l2"]
    # the rule: the lowest held-out loss
    assert selection["cv_loss"][selection["grid"].index(selection["chosen"])] == min(selection["cv_loss"])
    assert fitted.meta["options"]["val_samples"] == 0  # the folds did the validating
    assert 0.8 < fitted.meta["cv_ap"] <= 1  # held-out AP of the 3s among 200 digits


def test_grey_pixel_filter_has_two_dimensional_weights_and_scores_like_a_dot_product():
    patches, labels = _randomish_patches(500, 10, seed=6)
    fitted = train_filter(patches, labels, progress=False, epochs=5)
    assert fitted.weights.shape == (10, 10)
    assert fitted.window == (10, 10)
    # the detector's dot score of a patch is exactly the learned linear score
    from patternfind.detection.scores import score_map

    for patch in patches[:5]:
        expected = float(np.sum(patch.astype(np.float64) * fitted.weights)) + fitted.bias
        assert score_map(patch, fitted, score="dot")[0, 0] == pytest.approx(expected, abs=1e-4)


def test_best_f1_threshold_matches_brute_force():
    rng = np.random.default_rng(7)
    scores = np.round(rng.standard_normal(200), 1)  # many ties
    positive = rng.random(200) < 0.4 + 0.2 * (scores > 0)
    threshold, f1 = best_f1_threshold(scores, positive)
    best = -1.0
    for cut in np.unique(scores):
        accepted = scores >= cut
        tp = np.sum(accepted & positive)
        best = max(best, 2 * tp / (accepted.sum() + positive.sum()))
    assert f1 == pytest.approx(best)
    accepted = scores >= threshold
    assert 2 * np.sum(accepted & positive) / (accepted.sum() + positive.sum()) == pytest.approx(best)
    # with objects the detector never reported, recall counts them as misses
    missed = 30
    threshold, f1 = best_f1_threshold(scores, positive, total_positives=positive.sum() + missed)
    best = max(2 * np.sum((scores >= cut) & positive) / ((scores >= cut).sum() + positive.sum() + missed)
               for cut in np.unique(scores))
    assert f1 == pytest.approx(best)


def test_training_is_deterministic_per_seed():
    patches, labels = _randomish_patches(800, 12, seed=8)
    for options in ({}, {"l2": 1e-2}):  # L-BFGS for l2="auto", Adam on mini-batches
        first = train_filter(patches, labels, progress=False, seed=4, epochs=10, **options)
        again = train_filter(patches, labels, progress=False, seed=4, epochs=10, **options)
        np.testing.assert_array_equal(first.weights, again.weights)
        assert first.bias == again.bias
        assert first.threshold == again.threshold
    # the seed orders Adam's batches and splits the validation set
    other = train_filter(patches, labels, progress=False, seed=5, epochs=10, l2=1e-2)
    assert not np.array_equal(first.weights, other.weights)


def test_progress_callable_is_called_every_epoch():
    patches, labels = _randomish_patches(300, 8, seed=9)
    calls = []
    fitted = train_filter(patches, labels, epochs=4, progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == list(range(1, fitted.meta["epochs"] + 1))


def test_progress_bar_ends_full_and_says_when_it_stopped_early(capsys):
    patches, labels = _randomish_patches(300, 8, seed=9)
    fitted = train_filter(patches, labels, progress=True)
    cap = fitted.meta["options"]["epochs"]
    assert fitted.meta["epochs"] < cap  # early stopping
    last = capsys.readouterr().err.rstrip().split("\r")[-1]
    assert last.startswith("training: 100%")
    assert (f"stopped early at epoch {fitted.meta['epochs']} "
            f"(best {fitted.meta['best_epoch']})") in last


def test_hinge_loss_trains_a_useful_filter():
    patches, labels = _randomish_patches(2000, 12, seed=10)
    fitted = train_filter(patches, labels, loss="hinge", progress=False)
    assert fitted.meta["val_accuracy"] > 0.85


# ---------------------------------------------------------------- bad input


def test_one_class_is_an_error():
    patches = np.random.default_rng(0).random((20, 8, 8))
    with pytest.raises(ValueError, match="only one class"):
        train_filter(patches, np.ones(20), progress=False)


def test_mixed_sizes_are_an_error():
    patches = [np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((9, 8))]
    with pytest.raises(ValueError, match=r"mixed sizes.*patch 2 has shape \(9, 8\)"):
        train_filter(patches, [1, 0, 1], progress=False)


def test_nan_patches_are_an_error():
    patches = np.random.default_rng(0).random((20, 8, 8)).astype(np.float32)
    patches[3, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"`patches` contains 1 NaN.*index \(3, 2, 2\)"):
        train_filter(patches, np.arange(20) % 2, progress=False)


def test_constant_patches_are_valid_samples_but_all_identical_is_an_error():
    patches, labels = _randomish_patches(300, 8, seed=11)
    patches[:10] = 0.5
    fitted = train_filter(patches, labels, progress=False, epochs=3)
    assert np.isfinite(fitted.weights).all()
    with pytest.raises(ValueError, match="same features"):
        train_filter(np.full((30, 8, 8), 0.5), np.arange(30) % 2, progress=False)
    with pytest.raises(ValueError, match="same features"):  # flat patches have no gradients
        train_filter(np.stack([np.full((16, 16), v) for v in np.linspace(0, 1, 30)]),
                     np.arange(30) % 2, features="hog", progress=False)


def test_diverging_learning_rate_says_so():
    patches, labels = _randomish_patches(500, 8, seed=12)
    with pytest.raises(ValueError, match=r"learning rate `lr`=1e\+06 diverged"):
        # a given l2: with l2="auto" the fits are L-BFGS's, which takes no `lr`
        train_filter(patches, labels, optimizer="sgd", lr=1e6, l2=1e-3, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "squared"}, "`loss` must be one of"),
        ({"optimizer": "newton"}, "`optimizer` must be one of"),
        ({"features": "sift"}, "`features` must be one of"),
        ({"l2": -1.0}, r"`l2` must be ≥ 0 or 'auto', got -1.0"),
        ({"l2": "much"}, r"`l2` must be a number ≥ 0 or 'auto', got 'much'"),
        ({"folds": 1}, r"`folds` must be at least 2, got 1"),
        ({"lr": 0.0}, "`lr` must be positive"),
        ({"val_fraction": 1.0}, r"`val_fraction` must be in \[0, 1\)"),
        ({"feature_options": {"cells": 4}}, "unknown"),
    ],
)
def test_bad_options_name_the_parameter(kwargs, message):
    patches, labels = _randomish_patches(100, 8, seed=13)
    with pytest.raises(ValueError, match=message):
        train_filter(patches, labels, progress=False, **kwargs)


def test_labels_must_match_and_be_binary():
    patches = np.zeros((4, 8, 8))
    with pytest.raises(ValueError, match=r"`labels` must have shape \(4,\)"):
        train_filter(patches, [0, 1, 1], progress=False)
    with pytest.raises(ValueError, match=r"got \[0, 1, 2\]"):
        train_filter(patches, [0, 1, 2, 1], progress=False)
    with pytest.raises(ValueError, match="`patches` is empty"):
        train_filter([], [], progress=False)


def test_too_few_samples_for_the_validation_split():
    patches, labels = _randomish_patches(40, 8, seed=14)
    labels[:] = False
    labels[0] = True
    with pytest.raises(ValueError, match="no positive sample"):
        train_filter(patches, labels, progress=False, l2=1e-3)
    with pytest.raises(ValueError, match="cross-validation needs at least 2 groups"):
        train_filter(patches, labels, progress=False)  # l2="auto"


# ---------------------------------------------------------------- patches and train_detector


def _iou(a, b):
    """IoU of two (x, y, w, h) boxes, written out independently of patternfind."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _scene(seed):
    """A textured 240 × 320 image with up to four planted ring targets and their boxes."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.random((240, 320)).astype(np.float32), (0, 0), 2) * 0.6 + 0.2
    boxes = []
    for _ in range(4):
        size = int(rng.integers(24, 48))
        x, y = int(rng.integers(0, 320 - size)), int(rng.integers(0, 240 - size))
        if any(_iou((x, y, size, size), (b.x, b.y, b.w, b.h)) > 0 or
               (abs(x - b.x) < size + 8 and abs(y - b.y) < size + 8) for b in boxes):
            continue
        centre = (x + size // 2, y + size // 2)
        cv2.circle(image, centre, size // 3, 0.95, -1)
        cv2.circle(image, centre, size // 6, 0.1, -1)
        boxes.append(Box(x, y, size, size))
    return image, boxes


def test_crop_window_matches_slicing_and_resizing():
    image = np.random.default_rng(0).random((100, 120)).astype(np.float32)
    np.testing.assert_array_equal(crop_window(image, (10, 20, 30, 40), (40, 30)), image[20:60, 10:40])
    np.testing.assert_array_equal(crop_window(image, (10, 20, 30, 40), (40, 30), context=4),
                                  image[16:64, 6:44])
    halved = cv2.resize(image[20:100, 10:70], (30, 40), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(crop_window(image, (10, 20, 60, 80), (40, 30)), halved, atol=1e-6)
    outside = crop_window(image, (-5, -5, 30, 40), (40, 30))  # border pixels repeat
    np.testing.assert_array_equal(outside[5:, 5:], image[:35, :25])
    np.testing.assert_array_equal(outside[:5, 5:], np.repeat(image[:1, :25], 5, axis=0))


def test_patches_from_annotations_crop_boxes_and_sample_negatives_away_from_them():
    image, boxes = _scene(1)
    patches, labels = patches_from_annotations({"a": image}, {"a": boxes}, window=(16, 16),
                                               negatives_per_image=30, seed=2)
    assert labels.sum() == 2 * len(boxes)  # each box and its mirror image
    first = cv2.resize(image[int(boxes[0].y):int(boxes[0].y + boxes[0].h),
                             int(boxes[0].x):int(boxes[0].x + boxes[0].w)], (16, 16),
                       interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(patches[0], first, atol=1e-5)
    np.testing.assert_array_equal(patches[1], patches[0][:, ::-1])
    rng = np.random.default_rng(2)
    negatives = sample_negative_boxes(image.shape, boxes, (16, 16), 30, rng)
    assert len(negatives) == (~labels).sum() == 30
    for candidate in negatives:
        assert all(_iou(candidate, (b.x, b.y, b.w, b.h)) < 0.3 for b in boxes)
        assert candidate[0] >= 0
        assert candidate[1] >= 0
        assert candidate[0] + candidate[2] <= 320
        assert candidate[1] + candidate[3] <= 240


@pytest.mark.slow
def test_train_detector_finds_held_out_targets_on_whole_images():
    from patternfind.detection.detector import detect

    train = [_scene(seed) for seed in range(4)]
    fitted = train_detector([image for image, _ in train], [boxes for _, boxes in train],
                            progress=False)
    assert fitted.features == "hog"
    sides = [b.w for _, boxes in train for b in boxes]
    cell = fitted.feature_options["cell"]
    assert fitted.window[0] == fitted.window[1]  # the boxes are square
    assert fitted.window[0] % cell == 0
    # the median box size, but at least 8 cells a side: HOG needs the detail
    expected = min(max(np.median(sides), 8 * cell), 80)
    assert abs(fitted.window[0] - expected) <= cell / 2 + 1
    assert fitted.meta["window_rule"].startswith("median box")
    assert len(fitted.meta["rounds"]) == 1  # the default for a linear filter
    assert fitted.meta["rounds"][0]["hard_negatives"] > 0
    assert fitted.meta["image_f1"] > 0.9  # the threshold is set on whole held-out images
    assert "held-out images" in fitted.meta["threshold_rule"]
    assert fitted.threshold != fitted.meta["patch_threshold"]
    found = missed = false_alarms = 0
    for seed in range(100, 104):
        image, boxes = _scene(seed)
        detections = detect(image, fitted, scales=(0.5, 2.0))
        for box in boxes:
            hit = any(_iou((d.x, d.y, d.w, d.h), (box.x, box.y, box.w, box.h)) >= 0.5
                      for d in detections)
            found += hit
            missed += not hit
        false_alarms += sum(all(_iou((d.x, d.y, d.w, d.h), (b.x, b.y, b.w, b.h)) < 0.5
                                for b in boxes) for d in detections)
    # 14 targets; the threshold comes from 4 training images' folds, so a target or two
    # scoring just under it is in the noise (12/14 with the defaults, the two misses
    # within 0.5 of it, and no false alarm)
    assert found >= 0.85 * (found + missed)
    assert false_alarms <= 2


def test_train_detector_bad_input():
    image, boxes = _scene(1)
    with pytest.raises(ValueError, match="degenerate box"):
        train_detector([image], [[Box(5, 5, 0, 10)]], progress=False)
    with pytest.raises(ValueError, match="outside the 320×240 image"):
        train_detector([image], [[Box(400, 5, 20, 20)]], progress=False)
    with pytest.raises(ValueError, match=r"`window` 64x16 \(aspect 4.00\).*median aspect ratio 1.00"):
        train_detector([image], [boxes], window=(16, 64), progress=False)
    with pytest.raises(ValueError, match="no box to learn from"):
        train_detector([image], [[]], progress=False)
    with pytest.raises(ValueError, match="differ in length"):
        train_detector([image, image], [boxes], progress=False)


def test_detect_scores_equal_the_trained_score_of_the_window(tmp_path):
    """The detector's score at a box is ⟨w, φ(window)⟩ + b as training computes it."""
    from patternfind.detection.detector import detect
    from patternfind.layers.features import window_features

    train = [_scene(seed) for seed in range(3)]
    fitted = train_detector([image for image, _ in train], [boxes for _, boxes in train],
                            mine_rounds=1, progress=False)
    fitted.save(tmp_path / "ring.npz")
    loaded = Filter.load(tmp_path / "ring.npz")
    assert loaded.feature_options == fitted.feature_options
    assert loaded.window == fitted.window
    image, _ = _scene(200)
    cell = loaded.feature_options["cell"]
    detections = detect(image, loaded, threshold=-100.0, scales=(1, 1))
    inside = [d for d in detections if 2 * cell <= d.x <= 320 - d.w - 2 * cell
              and 2 * cell <= d.y <= 240 - d.h - 2 * cell]
    assert len(inside) >= 3
    for d in inside[:5]:
        patch = crop_window(image, (d.x, d.y, d.w, d.h), loaded.window, context=2 * cell)
        features = window_features(patch[None], kind="hog", options=loaded.feature_options,
                                   context=2 * cell)
        expected = float(np.sum(features[0] * loaded.weights)) + loaded.bias
        assert d.score == pytest.approx(expected, abs=1e-4)


def test_filter_trained_on_grey_scores_a_colour_photo_as_its_grey_conversion():
    """A grey-trained feature filter must not see colour features the training never saw."""
    from skimage import data

    from patternfind.detection.detector import detect
    from patternfind.pixels import prepare_image, to_grey

    train = [_scene(seed) for seed in range(3)]  # grey scenes
    fitted = train_detector([image for image, _ in train], [boxes for _, boxes in train],
                            mine_rounds=0, progress=False)
    assert fitted.feature_options["color"] is False
    colour = data.astronaut()[100:340, 100:420]
    on_colour = detect(colour, fitted, threshold=-5.0, scales=(1, 1))
    on_grey = detect(to_grey(prepare_image(colour)), fitted, threshold=-5.0, scales=(1, 1))
    assert on_colour
    assert [(d.x, d.y, d.score) for d in on_colour] == [
        pytest.approx((d.x, d.y, d.score), abs=1e-5) for d in on_grey
    ]


def test_validation_split_keeps_every_group_on_one_side():
    """A box's mirrored and jittered copies must not sit on both sides of the split."""
    from patternfind.learn.optimize import _stratified_split

    rng = np.random.default_rng(11)
    y = np.where(np.arange(120) < 40, 1.0, -1.0)
    groups = np.concatenate([np.arange(40) // 4, 100 + np.arange(80)])  # 10 boxes × 4 copies
    train, val = _stratified_split(y, groups, 0.2, rng)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(120))
    assert not set(groups[train]) & set(groups[val])
    assert len(set(groups[val][y[val] > 0])) == 2  # 20 % of the 10 positive groups


# ---------------------------------------------------------------- cross-validation and automatic choices


def test_folds_keep_every_group_whole_and_give_every_fold_a_positive():
    from patternfind.learn.selection import assign_folds

    rng = np.random.default_rng(3)
    # 12 boxes × 4 copies (mirrored, jittered), then 60 negatives
    groups = np.concatenate([np.arange(48) // 4, 100 + np.arange(60)])
    y = np.where(np.arange(108) < 48, 1.0, -1.0)
    folds = assign_folds(groups, y, 5, rng)
    for group in np.unique(groups):
        assert len(set(folds[groups == group])) == 1  # never on both sides of a split
    for fold in range(5):
        assert (y[folds == fold] > 0).any()
    # two images with boxes: at most two folds, whatever was asked
    images = np.array([0, 0, 1, 1, 2, 2])
    labels = np.array([1.0, -1.0, 1.0, -1.0, -1.0, -1.0])
    by_image = assign_folds(images, labels, 5, rng)
    assert len(set(by_image)) == 2
    for image in range(3):
        assert len(set(by_image[images == image])) == 1
    with pytest.raises(ValueError, match="at least 2 groups"):
        assign_folds(np.zeros(4, dtype=int), np.array([1.0, -1, -1, -1]), 5, rng)


def test_train_detector_holds_out_whole_images(monkeypatch):
    """Every fold fit of train_detector sees no row of the images it is judged on."""
    from patternfind.learn import selection

    seen = []
    original = selection.fit_linear

    def recording_fit(X, y, **kwargs):
        seen.append({bytes(row) for row in np.asarray(X, dtype=np.float32)[:, :64]})
        return original(X, y, **kwargs)

    monkeypatch.setattr(selection, "fit_linear", recording_fit)
    train = [_scene(seed) for seed in range(4)]
    images = [image for image, _ in train]
    fitted = train_detector(images, [boxes for _, boxes in train], mine_rounds=0, folds=2,
                            l2=0.01, negatives_per_image=10)
    assert fitted.meta["options"]["l2"] == 0.01  # a given l2 wins: no search over the grid
    # per fold: one fit for each kind of box copy (mirrored or repeated), then the threshold's
    assert len(seen) == 3 * 2
    # rows of each image: its positives' and negatives' features (first 64 values)
    from patternfind.layers.features import window_features
    from patternfind.learn.patches import annotated_patches

    context = 2 * fitted.feature_options["cell"]
    patches, labels, sources = annotated_patches(
        dict(enumerate(images)), dict(enumerate(b for _, b in train)), window=fitted.window,
        negatives_per_image=10, context=context)
    features = window_features(patches, kind="hog", options=fitted.feature_options, context=context)
    rows = [bytes(row) for row in features.reshape(len(features), -1)[:, :64]]
    # a box's mirrored copy is missing from the fits that repeat the box instead
    mirrors = np.zeros(len(rows), dtype=bool)
    mirrors[1:int(labels.sum()):2] = True
    rows = [row for row, mirror in zip(rows, mirrors, strict=True) if not mirror]
    sources = sources[~mirrors]
    for fit_rows in seen:
        used = {int(s) for row, s in zip(rows, sources, strict=True) if row in fit_rows}
        unused = {int(s) for row, s in zip(rows, sources, strict=True) if row not in fit_rows}
        assert used
        assert unused
        assert not used & unused  # an image is wholly in a fit, or wholly held out


def test_explicit_window_and_scales_win_over_the_automatic_choice():
    from patternfind.detection.detector import detect
    from patternfind.detection.options import filter_scales

    train = [_scene(seed) for seed in range(3)]
    fitted = train_detector([image for image, _ in train], [boxes for _, boxes in train],
                            window=(30, 30), mine_rounds=0, l2=0.01, folds=3)
    assert fitted.window == (30, 30)
    assert fitted.meta["window_rule"] == "given"
    low, high = fitted.meta["box_scales"]
    # down to the smallest box scale / 1.25, up to the largest × 2
    assert fitted.meta["search_scales"] == pytest.approx([low / 1.25, high * 2])
    assert filter_scales(fitted) == pytest.approx((low / 1.25, high * 2))
    assert filter_scales(fitted, (1.0, 1.0)) == (1.0, 1.0)
    image, _ = _scene(300)
    step = fitted.meta["scale_step"]
    assert step == 1.2  # the trained pyramid step, searched by default
    default = detect(image, fitted, threshold=-5.0)
    assert {round(d.scale, 6) for d in default} <= {
        round(step**k, 6) for k in range(-30, 30) if low / 1.25 <= step**k <= high * 2}
    finer = detect(image, fitted, threshold=-5.0, scale_step=1.05)  # an explicit step wins
    assert {round(d.scale, 6) for d in finer} <= {
        round(1.05**k, 6) for k in range(-60, 60) if low / 1.25 <= 1.05**k <= high * 2}
    assert {round(d.scale, 6) for d in finer} - {round(d.scale, 6) for d in default}
    explicit = detect(image, fitted, threshold=-5.0, scales=(1, 1))
    assert explicit
    assert {d.scale for d in explicit} == {1.0}
    # an explicit threshold wins over the filter's own
    lower = fitted.threshold - 2
    assert min(d.score for d in detect(image, fitted, threshold=lower)) < fitted.threshold


def _l_scene(seed, *, mirrored=False):
    """Like `_scene`, with L-shaped targets (a bar and a foot): not left-right symmetric."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.random((240, 320)).astype(np.float32), (0, 0), 2) * 0.6 + 0.2
    boxes = []
    for _ in range(4):
        size = int(rng.integers(30, 48))
        x, y = int(rng.integers(0, 320 - size)), int(rng.integers(0, 240 - size))
        if any(abs(x - b.x) < size + 8 and abs(y - b.y) < size + 8 for b in boxes):
            continue
        target = np.zeros((size, size), dtype=bool)
        target[size // 8:7 * size // 8, size // 8:size // 3] = True  # the bar, on the left
        target[5 * size // 8:7 * size // 8, size // 8:7 * size // 8] = True  # the foot
        image[y:y + size, x:x + size][target[:, ::-1] if mirrored else target] = 0.95
        boxes.append(Box(x, y, size, size))
    return image, boxes


def test_flip_auto_mirrors_symmetric_targets_and_repeats_asymmetric_ones():
    rings = [_scene(seed) for seed in range(4)]
    symmetric = train_detector([image for image, _ in rings], [boxes for _, boxes in rings],
                               mine_rounds=0, folds=4)
    chosen = symmetric.meta["flip_selection"]
    assert chosen["chosen"] == "mirrored"
    assert symmetric.meta["flip"] is True
    assert chosen["cv_loss"]["mirrored"] < chosen["cv_loss"]["repeated"]
    shapes = [_l_scene(seed) for seed in range(4)]
    asymmetric = train_detector([image for image, _ in shapes], [boxes for _, boxes in shapes],
                                mine_rounds=0, folds=4)
    assert asymmetric.meta["flip_selection"]["chosen"] == "repeated"
    assert asymmetric.meta["flip"] is False
    assert asymmetric.meta["positives"] == 2 * sum(len(boxes) for _, boxes in shapes)
    # what the choice buys: on held-out scenes, the filter tells an L from its mirror image
    context = 2 * asymmetric.feature_options["cell"]

    def scores(scenes):
        crops = np.stack([crop_window(image, (b.x, b.y, b.w, b.h), asymmetric.window,
                                      context=context) for image, boxes in scenes for b in boxes])
        features = window_features(crops, kind="hog", options=asymmetric.feature_options,
                                   context=context)
        return features.reshape(len(crops), -1) @ asymmetric.weights.ravel() + asymmetric.bias

    held_out = [_l_scene(seed) for seed in range(50, 54)]
    mirror_images = [_l_scene(seed, mirrored=True) for seed in range(50, 54)]
    assert np.median(scores(held_out)) > np.median(scores(mirror_images)) + 1


def test_explicit_flip_wins_and_a_bad_flip_is_named():
    rings = [_scene(seed) for seed in range(3)]
    images, boxes = [image for image, _ in rings], [b for _, b in rings]
    mirrored = train_detector(images, boxes, mine_rounds=0, l2=0.01, folds=3, flip=True)
    assert mirrored.meta["flip"] is True
    assert "flip_selection" not in mirrored.meta
    single = train_detector(images, boxes, mine_rounds=0, l2=0.01, folds=3, flip=False)
    assert single.meta["flip"] is False
    assert single.meta["positives"] == sum(len(b) for b in boxes)  # no copy at all
    with pytest.raises(ValueError, match="`flip` must be 'auto', True or False, got 'yes'"):
        train_detector(images, boxes, flip="yes")
    # one box: nothing to hold out, so "auto" keeps the mirror and says why
    lone = train_detector(images[:1], [boxes[0][:1]], mine_rounds=0, l2=0.01, val_fraction=0)
    assert lone.meta["flip_selection"] == {"chosen": "mirrored",
                                           "rule": "a single box: none to hold out"}
    assert lone.meta["positives"] == 2


def test_cross_validate_scores_only_the_scored_rows():
    from patternfind.learn.optimize import FitOptions, fit_linear
    from patternfind.learn.selection import cross_validate

    rng = np.random.default_rng(5)
    X = rng.normal(size=(90, 6)).astype(np.float32)
    y = np.where(X[:, 0] + 0.8 * rng.normal(size=90) > 0, 1.0, -1.0).astype(np.float32)
    fold_ids = np.arange(90) % 3
    groups = np.arange(90)
    scored = rng.random(90) < 0.6
    options = FitOptions(l2=0.1, optimizer="lbfgs", val_fraction=0)
    result = cross_validate(X, y, fold_ids, groups=groups, options=options, scored=scored)
    losses = []  # the reference: each fold's mean logistic loss over its scored rows
    for fold in range(3):
        held_out = fold_ids == fold
        fit = fit_linear(X[~held_out], y[~held_out], groups=groups[~held_out], options=options)
        counted = held_out & scored
        margins = y[counted] * (X[counted].astype(np.float64) @ fit["w"] + fit["b"])
        losses.append(np.mean(np.logaddexp(0, -margins)))
    assert result.loss == pytest.approx(np.mean(losses), rel=1e-5)
    every_row = cross_validate(X, y, fold_ids, groups=groups, options=options)
    assert every_row.loss != pytest.approx(result.loss, rel=1e-3)  # the mask changed the rows
    np.testing.assert_allclose(every_row.scores, result.scores)  # but not the fits


def test_a_filter_saved_before_it_knew_its_scales_detects_as_before():
    """tests/data/face_v0_1.npz was written by patternfind 0.1 (no search_scales in meta)."""
    from patternfind.detection.detector import detect
    from patternfind.detection.options import (
        DEFAULT_SCALE_STEP,
        DEFAULT_SCALES,
        filter_scale_step,
        filter_scales,
    )
    from patternfind.learn.patches import as_image

    old = Filter.load(Path(__file__).parent / "data" / "face_v0_1.npz")
    assert "search_scales" not in old.meta
    assert "scale_step" not in old.meta
    assert filter_scales(old) == DEFAULT_SCALES == (0.5, 2.0)
    assert filter_scale_step(old) == DEFAULT_SCALE_STEP == 1.1
    image = as_image(Path(__file__).parents[1] / "samples" / "faces" / "test" / "00.png")
    default = detect(image, old)
    assert default
    as_before = detect(image, old, scales=(0.5, 2.0), scale_step=1.1)
    assert [(d.x, d.y, d.w, d.score) for d in default] == [(d.x, d.y, d.w, d.score) for d in as_before]


@pytest.mark.slow
def test_auto_l2_matches_logistic_regression_defaults_on_lfw():
    """lfw_subset, 5-fold: train_filter's defaults reach the issue's AUC 0.99.

    The reference is scikit-learn's ``LogisticRegression()`` objective (l2 = 1 / n,
    an unpenalised bias) solved exactly by L-BFGS on the same folds: 0.993.
    """
    from scipy.stats import mannwhitneyu
    from skimage.data import lfw_subset  # shipped inside scikit-image: no download

    images = lfw_subset().astype(np.float32)
    faces = np.arange(len(images)) < 100
    folds = np.empty(len(images), dtype=int)
    rng = np.random.default_rng(0)
    for label in (True, False):
        members = rng.permutation(np.flatnonzero(faces == label))
        folds[members] = np.arange(len(members)) % 5
    auto, reference = np.zeros(len(images)), np.zeros(len(images))
    for fold in range(5):
        held_out = folds == fold
        learned = train_filter(images[~held_out], faces[~held_out])
        X_held = images[held_out].reshape(held_out.sum(), -1)
        auto[held_out] = X_held @ learned.weights.ravel()
        X = images[~held_out].reshape((~held_out).sum(), -1).astype(np.float64)
        y = np.where(faces[~held_out], 1.0, -1.0)
        reference[held_out] = X_held @ _lbfgs_optimum(X, y, 1 / len(X)).x[:-1]
    aucs = {name: mannwhitneyu(scores[faces], scores[~faces]).statistic / 100**2
            for name, scores in (("auto", auto), ("reference", reference))}
    assert aucs["reference"] > 0.99  # the reference is what the issue quotes
    assert aucs["auto"] >= 0.99
    assert aucs["auto"] > aucs["reference"] - 0.003


@pytest.mark.slow
def test_threshold_spread_across_seeds_is_smaller_than_with_the_old_defaults():
    """On the composite face set (train.csv), three seeds each.

    Before: l2 = 1e-3 and a 48-px window, the threshold the best F1 of the final
    filter on its own training scenes, which it fits almost perfectly (the old
    defaults, given explicitly). Now: the defaults, the threshold calibrated on
    held-out scenes of the folds.
    """
    from patternfind.detection.detector import detect
    from patternfind.evaluation.annotations import load_annotations
    from patternfind.evaluation.metrics import detection_threshold
    from patternfind.learn.patches import as_image

    folder = Path(__file__).parents[1] / "samples" / "faces"
    boxes = load_annotations(folder / "train.csv")
    images = {key: as_image(folder / key) for key in boxes}
    now, before = [], []
    for seed in (0, 1, 2):
        now.append(train_detector(images, boxes, seed=seed).threshold)
        old = train_detector(images, boxes, seed=seed, l2=1e-3, window=(48, 48))
        assert old.window == (48, 48)
        assert old.meta["options"]["l2"] == 1e-3
        ranked = {key: detect(image, old, threshold=-1.0, nms_iou=0.3)
                  for key, image in images.items()}
        before.append(detection_threshold(ranked, boxes)[0])
    assert np.ptp(now) < 0.75 * np.ptp(before)
