"""``patternfind make-filter`` and ``patternfind crop``, run in-process with `main`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from patternfind import Filter, filters, io
from patternfind.cli import main

# ------------------------------------------------------------------ make-filter


def test_make_filter_writes_the_eye_weights_to_npy(tmp_path, capsys):
    out = tmp_path / "eye.npy"
    assert main(["make-filter", "eye", "--size", "24", "-o", str(out)]) == 0
    weights = np.load(out)
    assert weights.dtype == np.float32
    assert weights.shape == (24, 24)
    np.testing.assert_array_equal(weights, filters.eye(24).weights)
    assert str(out) in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_make_filter_npz_keeps_name_and_options(tmp_path):
    out = tmp_path / "edge.npz"
    status = main(["make-filter", "edge", "--size", "20x12", "--angle", "30", "--zero-mean",
                   "--name", "slope", "-o", str(out)])
    assert status == 0
    loaded = Filter.load(out)
    expected = filters.edge((12, 20), angle=30, zero_mean=True)
    np.testing.assert_array_equal(loaded.weights, expected.weights)
    assert loaded.name == "slope"
    assert loaded.meta == {"kind": "fixed", "source": "hand-crafted",
                           "options": {"size": [12, 20], "angle": 30.0, "zero_mean": True}}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["blob", "--size", "15", "--sigma", "2", "--ratio", "2", "--polarity", "dark"],
      filters.blob(15, sigma=2, ratio=2, polarity="dark")),
     (["bar", "--size", "13x9", "--angle", "90", "--width", "3"],  # WIDTHxHEIGHT
      filters.bar((9, 13), angle=90, width=3)),
     (["corner", "--size", "11", "--angle", "135"], filters.corner(11, angle=135)),
     (["ring", "--size", "21", "--radius", "6", "--width", "2", "--polarity", "dark"],
      filters.ring(21, radius=6, width=2, polarity="dark")),
     (["eye", "--size", "20", "--iris", "0.5", "--opening", "0.6", "--pupil", "0.3"],
      filters.eye(20, iris=0.5, opening=0.6, pupil=0.3))],
)
def test_make_filter_passes_the_shape_options_on(tmp_path, argv, expected):
    out = tmp_path / "made.npy"
    assert main(["make-filter", *argv, "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), expected.weights)


def test_make_filter_through_a_subprocess(tmp_path):
    out = tmp_path / "ring.npy"
    program = "import sys; from patternfind.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", program, "make-filter", "ring", "--size", "17", "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(out), filters.ring(17).weights)
    bad = subprocess.run([*command[:3], "make-filter", "ring", "--size", "2", "-o", str(out)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert len(bad.stderr.splitlines()) == 1
    assert "Traceback" not in bad.stderr


# ------------------------------------------------------------------ crop


@pytest.fixture
def rgb_png(tmp_path):
    """A 40×50 RGB uint8 image with distinct values in every pixel and channel."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    io.save_image(path, image)
    return path, image


def test_crop_writes_the_box_scaled_to_unit_range(tmp_path, rgb_png):
    path, image = rgb_png
    out = tmp_path / "part.npy"
    assert main(["crop", str(path), "--box", "7,5,12,9", "-o", str(out)]) == 0
    weights = np.load(out)
    # x=7, y=5, w=12, h=9: rows 5..13, columns 7..18, colour channels in RGB order
    np.testing.assert_allclose(weights, image[5:14, 7:19] / 255, atol=1e-6)


def test_crop_grey_npz_keeps_the_box(tmp_path, rgb_png):
    path, image = rgb_png
    out = tmp_path / "part.npz"
    status = main(["crop", str(path), "--box", "0,30,50,10", "--grey", "--name", "strip",
                   "-o", str(out)])
    assert status == 0
    loaded = Filter.load(out)
    assert loaded.name == "strip"
    assert loaded.weights.shape == (10, 50)
    # The detector's grey conversion is OpenCV's ITU-R 601 luma: 0.299 R + 0.587 G + 0.114 B
    luma = image[30:40].astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(loaded.weights, luma, atol=1e-5)
    assert loaded.meta["box"] == [0, 30, 50, 10]
    assert loaded.meta["source"] == "crop"


def test_crop_turns_alpha_into_the_mask(tmp_path):
    image = np.full((20, 20, 4), 200, dtype=np.uint8)
    image[..., 3] = 0
    image[4:8, 6:10, 3] = 255
    path = tmp_path / "sprite.png"
    io.save_image(path, image)
    out = tmp_path / "sprite.npz"
    assert main(["crop", str(path), "--box", "5,3,6,6", "-o", str(out)]) == 0
    loaded = Filter.load(out)
    assert loaded.weights.shape == (6, 6, 3)
    expected_mask = np.zeros((6, 6), bool)
    expected_mask[1:5, 1:5] = True
    np.testing.assert_array_equal(loaded.mask, expected_mask)


# ------------------------------------------------------------------ bad input


@pytest.fixture
def files(tmp_path, rgb_png):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    return {"photo": str(rgb_png[0]), "text": str(text), "out": str(tmp_path / "f.npy"),
            "missing_dir": str(tmp_path / "nowhere" / "f.npy")}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["make-filter", "nose", "--size", "9", "-o", "{out}"], "nose"),
     (["make-filter", "eye", "--size", "2", "-o", "{out}"], "`size`"),
     (["make-filter", "eye", "--size", "ten", "-o", "{out}"], "ten"),
     (["make-filter", "eye", "--size", "3,4,5", "-o", "{out}"], "3,4,5"),
     (["make-filter", "eye", "--size", "9", "--angle", "10", "-o", "{out}"], "--angle"),
     (["make-filter", "blob", "--size", "9", "--width", "2", "-o", "{out}"], "--width"),
     (["make-filter", "edge", "--size", "9", "--angle", "nan", "-o", "{out}"], "`angle`"),
     (["make-filter", "bar", "--size", "9", "--polarity", "grey", "-o", "{out}"], "grey"),
     (["make-filter", "blob", "--size", "9", "--sigma", "-1", "-o", "{out}"], "`sigma`"),
     (["make-filter", "eye", "--size", "9", "-o", "{out}.txt"], ".txt"),
     (["make-filter", "eye", "--size", "9", "-o", "{missing_dir}"], "nowhere"),
     (["make-filter", "eye", "--size", "9"], "-o"),
     (["crop", "{photo}", "--box", "1,2,3", "-o", "{out}"], "1,2,3"),
     (["crop", "{photo}", "--box", "40,30,20,20", "-o", "{out}"], "(40, 30, 20, 20)"),
     (["crop", "{photo}", "--box", "0,0,0,5", "-o", "{out}"], "(0, 0, 0, 5)"),
     (["crop", "{photo}.missing", "--box", "0,0,5,5", "-o", "{out}"], "not found"),
     (["crop", "{text}", "--box", "0,0,5,5", "-o", "{out}"], "notes.png"),
     (["crop", "{photo}", "-o", "{out}"], "--box")],
)
def test_bad_input_exits_2_with_one_line(files, capsys, argv, needle):
    argv = [arg.format(**files) for arg in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert needle in lines[0]
    assert "Traceback" not in captured.err
