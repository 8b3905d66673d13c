"""Tests of ``patternfind train`` on real digits (folders and an annotated sheet)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from patternfind.cli import main
from patternfind.structures import Filter

DIGITS = Path(__file__).resolve().parent / "data" / "digits.png"  # see tests/data/README.md


@pytest.fixture(scope="module")
def sheet():
    image = cv2.imread(str(DIGITS), cv2.IMREAD_GRAYSCALE)
    assert image is not None, f"cannot read {DIGITS}"
    return image


@pytest.fixture(scope="module")
def folders(tmp_path_factory, sheet):
    """pos/: 60 "3"s; neg/: 120 other digits; as PNG files of 20 × 20 pixels."""
    root = tmp_path_factory.mktemp("digits")
    for name in ("pos", "neg"):
        (root / name).mkdir()
    rng = np.random.default_rng(0)
    for k, column in enumerate(range(60)):
        row = 15 + k % 5  # rows 15-19 hold the 3s
        cv2.imwrite(str(root / "pos" / f"{k}.png"), sheet[20 * row:20 * row + 20, 20 * column:20 * column + 20])
    others = [r for r in range(50) if r // 5 != 3]
    for k in range(120):
        row, column = others[rng.integers(len(others))], int(rng.integers(60))
        cv2.imwrite(str(root / "neg" / f"{k}.png"), sheet[20 * row:20 * row + 20, 20 * column:20 * column + 20])
    return root


def test_train_from_folders_writes_a_working_filter(folders, tmp_path, capsys):
    output = tmp_path / "three.npz"
    status = main(["train", "--pos", str(folders / "pos"), "--neg", str(folders / "neg"),
                   "-o", str(output), "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "threshold" in captured.out
    filter_ = Filter.load(output)
    # the fit line speaks the optimiser's terms: L-BFGS runs iterations, the others epochs
    steps = "iterations" if filter_.meta["options"]["optimizer"] == "lbfgs" else "epochs"
    assert f"{steps} {filter_.meta['epochs']} (best" in captured.out
    assert filter_.weights.shape == (20, 20)
    assert filter_.features == "pixels"
    assert filter_.score == "dot"
    assert filter_.meta["kind"] == "learned"
    assert filter_.meta["val_accuracy"] > 0.8


@pytest.fixture
def threes_csv(sheet, tmp_path):
    """A 200 × 400 piece of the sheet (rows 10-19: digits 2 and 3) with a box on every "3"."""
    cv2.imwrite(str(tmp_path / "piece.png"), sheet[200:400, 0:400])
    rows = ["image,x,y,w,h"] + [f"piece.png,{20 * c},{20 * r},20,20"
                                for r in range(5, 10) for c in range(20)]
    (tmp_path / "threes.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "threes.csv"


def test_train_from_annotations_with_hog_and_mining(threes_csv, tmp_path, capsys):
    output = tmp_path / "three_hog.npz"
    status = main(["train", "--annotations", str(threes_csv), "--window", "16x16",
                   "--cell", "4", "--mine-rounds", "1", "-o", str(output)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "hard negatives mined per round" in captured.out
    assert "training: " in captured.err  # the progress bar
    filter_ = Filter.load(output)
    # the final fit after cross-validation holds nothing out: no validation accuracy is claimed
    assert filter_.meta["options"]["val_samples"] == 0
    assert "val accuracy" not in captured.out
    assert "train accuracy" in captured.out
    assert filter_.features == "hog"
    assert filter_.window == (16, 16)
    assert filter_.weights.shape == (4, 4, 31)  # Felzenszwalb's 31 channels by default
    assert filter_.feature_options["variant"] == "felzenszwalb"
    assert filter_.feature_options["cell"] == 4
    # the automatic choices, each with its evidence
    assert "window 16x16: given" in captured.out
    chosen = filter_.meta["l2_selection"]["chosen"]
    assert f"l2 {chosen:g} by 5-fold cross-validation" in captured.out
    copies = filter_.meta["flip_selection"]["chosen"]
    assert f"box copies {copies} by 5-fold cross-validation" in captured.out
    assert filter_.meta["flip"] == (copies == "mirrored")
    # a single image: the threshold falls back to it, and says so
    assert f"threshold {filter_.threshold:.3f}: best F1 over the training image" in captured.out


def test_train_options_reach_train_detector(threes_csv, tmp_path, capsys):
    output = tmp_path / "three.npz"
    status = main(["train", "--annotations", str(threes_csv), "--window", "16x16",
                   "--cell", "4", "--mine-rounds", "0", "--jitter", "1", "--negatives-per-image", "30",
                   "--l2", "0.05", "--folds", "2", "--upsample", "2", "--flip", "no",
                   "-o", str(output), "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    filter_ = Filter.load(output)
    assert filter_.meta["options"]["l2"] == 0.05
    assert "l2 0.05 (given)" in captured.out
    assert filter_.meta["positives"] == 100 * 2  # each box and a jittered copy, no mirror
    assert filter_.meta["flip"] is False
    assert "flip_selection" not in filter_.meta  # a given choice is not cross-validated
    assert "box copies" not in captured.out
    assert filter_.meta["negatives"] == 30
    assert filter_.meta["upsample"] == 2.0
    # boxes of 20 px upsampled to 40 px on a 16-px window: scale 2.5, back to 1.25 on the input
    assert filter_.meta["box_scales"] == pytest.approx([1.25, 1.25])
    assert "a single image" in filter_.meta["threshold_rule"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "-o", "x.npz"], "either --pos DIR and --neg DIR, or --annotations"),
        (["train", "--pos", "a", "-o", "x.npz"], "--pos and --neg go together"),
        (["train", "--pos", "a", "--neg", "b", "-o", "x.npy"], "must end in .npz"),
        (["train", "--pos", "/nonexistent/pos", "--neg", "/nonexistent/neg", "--window", "8x8",
          "-o", "x.npz"], "folder not found"),
        (["train", "--annotations", "a.csv", "--window", "abc", "-o", "x.npz"], "WIDTHxHEIGHT"),
        (["train", "--annotations", "a.csv", "--l2", "much", "-o", "x.npz"], "auto or a number"),
        (["train", "--annotations", "a.csv", "--l2", "-1", "-o", "x.npz"], "auto or a number"),
        (["train", "--annotations", "a.csv", "--folds", "1", "-o", "x.npz"], "--folds must be at least 2"),
        (["train", "--annotations", "a.csv", "--jitter", "-1", "-o", "x.npz"], "--jitter must be >= 0"),
        (["train", "--annotations", "a.csv", "--upsample", "0", "-o", "x.npz"],
         "--upsample must be a positive"),
    ],
)
def test_usage_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_empty_folder_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "pos").mkdir()
    (tmp_path / "neg").mkdir()
    status = main(["train", "--pos", str(tmp_path / "pos"), "--neg", str(tmp_path / "neg"),
                   "--window", "8x8", "-o", str(tmp_path / "x.npz")])
    assert status == 2
    assert "holds no images" in capsys.readouterr().err


def test_window_far_from_the_boxes_aspect_names_both(sheet, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "piece.png"), sheet[:100, :100])
    (tmp_path / "a.csv").write_text("piece.png,0,0,20,20\npiece.png,40,40,20,20\n")
    status = main(["train", "--annotations", str(tmp_path / "a.csv"), "--window", "64x16",
                   "-o", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err
    assert status == 2
    assert "64x16 (aspect 4.00)" in err
    assert "median aspect ratio 1.00" in err


def test_subprocess_help_ends_with_examples():
    result = subprocess.run([sys.executable, "-m", "patternfind", "train", "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "patternfind train --pos" in result.stdout
