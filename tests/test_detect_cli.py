"""The main command, in-process through ``main([...])``: outputs parsed back, usage errors exit 2,
an image that fails is reported and the run exits 1."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from patternfind import io
from patternfind.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
ASTRONAUT = str(SAMPLES / "astronaut.png")
EYE = str(SAMPLES / "eye.npy")


def _detect_rows(capsys, *extra):
    assert main([ASTRONAUT, "--filter", EYE, *extra]) == 0
    return capsys.readouterr()


def test_table_lists_each_box_and_a_summary(capsys):
    out = _detect_rows(capsys).out
    lines = out.strip().splitlines()
    assert lines[0].split() == ["image", "label", "x", "y", "w", "h", "score", "scale"]
    assert len(lines) == 4  # header, two eyes, summary
    assert lines[-1].startswith("2 detections in 1 image")


@pytest.mark.slow
def test_json_csv_and_coco_agree_with_the_library(capsys, tmp_path):
    import patternfind

    expected = patternfind.detect(ASTRONAUT, EYE)
    rows = json.loads(_detect_rows(capsys, "--format", "json").out)
    assert [r["score"] for r in rows] == pytest.approx([d.score for d in expected])
    assert set(rows[0]) == {"image", "label", "x", "y", "w", "h", "score", "scale"}

    table = list(csv.DictReader(_detect_rows(capsys, "--format", "csv").out.splitlines()))
    assert [float(r["x"]) for r in table] == pytest.approx([d.x for d in expected])

    output = tmp_path / "results.json"
    _detect_rows(capsys, "--format", "coco", "--output", str(output))
    results = json.loads(output.read_text())
    mapping = json.loads((tmp_path / "results.mapping.json").read_text())
    assert [r["bbox"] for r in results] == [
        pytest.approx([d.x, d.y, d.w, d.h]) for d in expected
    ]
    assert {r["image_id"] for r in results} == {mapping["images"][0]["id"]}
    assert mapping["categories"][0]["name"] == "eye"


def test_draw_and_heatmap_write_pictures_of_the_image_size(capsys, tmp_path):
    _detect_rows(capsys, "--draw", str(tmp_path / "boxes.png"),
                 "--heatmap", str(tmp_path / "heat.png"))
    boxes = io.load_image(tmp_path / "boxes.png")
    heat = io.load_image(tmp_path / "heat.png")
    assert boxes.shape == heat.shape == (512, 512, 3)
    original = io.load_image(ASTRONAUT)
    changed = np.any(boxes != original, axis=2)
    assert changed[100, 192]  # the left box's edge is drawn
    assert not changed[400, 100]  # far from any box, the photo is untouched
    # The heat map is brightest near an eye centre.
    grey = cv2.cvtColor(heat, cv2.COLOR_RGB2GRAY).astype(float)
    y, x = np.unravel_index(np.argmax(grey), grey.shape)
    assert min(abs(x - 203) + abs(y - 100), abs(x - 246) + abs(y - 102)) < 8


def test_nothing_found_is_success_and_says_so(capsys):
    out = _detect_rows(capsys, "--threshold", "0.999").out
    assert "no detections" in out


def test_several_images_and_filters(capsys, tmp_path):
    shifted = tmp_path / "shifted.png"
    io.save_image(shifted, skimage.data.astronaut()[20:, 30:])  # eyes move 30 left, 20 up
    assert main([ASTRONAUT, str(shifted), "--filter", EYE, "--filter",
                 str(SAMPLES / "eye_handmade.npy"), "--threshold", "0.9",
                 "--format", "json", "--per-label"]) == 0
    rows = json.loads(capsys.readouterr().out)
    eyes = {image: sorted((r["x"], r["y"]) for r in rows if r["image"] == image)
            for image in (ASTRONAUT, str(shifted))}
    assert len(eyes[ASTRONAUT]) == len(eyes[str(shifted)]) == 2
    for (x, y), (x_shifted, y_shifted) in zip(eyes[ASTRONAUT], eyes[str(shifted)], strict=True):
        assert (x - x_shifted, y - y_shifted) == pytest.approx((30, 20), abs=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([ASTRONAUT, "--filter", str(SAMPLES / "missing.npy")], "not found"),
        ([ASTRONAUT, "--filter", EYE, "--score", "dot"], "threshold must be given"),
        ([ASTRONAUT, "--filter", EYE, "--threshold", "1.5"], "must be in [-1, 1]"),
        ([ASTRONAUT, "--filter", EYE, "--scales", "2,1"], "min <= max"),
        ([ASTRONAUT, "--filter", EYE, "--scales", "0,1"], "positive"),
        ([ASTRONAUT, "--filter", EYE, "--scale-step", "1"], "greater than 1"),
        ([ASTRONAUT, "--filter", EYE, "--scales", "x"], "MIN,MAX"),
        ([ASTRONAUT], "--filter"),
        ([ASTRONAUT, "--filter", EYE, "--draw", "out.txt"], "image file name"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["text", "truncated", "empty", "missing"])
def test_an_unreadable_image_is_reported_and_the_run_exits_1(capsys, tmp_path, kind):
    path = tmp_path / "bad.png"
    if kind == "text":
        path.write_text("this is not an image")
    elif kind == "truncated":
        data = (SAMPLES / "astronaut.png").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    assert main([str(path), ASTRONAUT, "--filter", EYE]) == 1
    captured = capsys.readouterr()
    error_lines = [line for line in captured.err.splitlines() if str(path) in line]
    assert len(error_lines) == 1
    assert ("not found" if kind == "missing" else "cannot read") in error_lines[0]
    assert "Traceback" not in captured.err
    assert captured.out.count("eye") == 2  # the good image was still searched
    assert "1 failed" in captured.out


def test_colour_filter_on_grey_image_fails_that_image(capsys, tmp_path):
    grey = tmp_path / "grey.png"
    io.save_image(grey, skimage.data.camera())
    assert main([str(grey), "--filter", EYE]) == 1
    assert "3 channels but the image is grey" in capsys.readouterr().err


def test_filter_larger_than_image_at_every_scale_fails_that_image(capsys, tmp_path):
    small = tmp_path / "small.png"
    io.save_image(small, skimage.data.astronaut()[:10, :10])
    assert main([str(small), "--filter", EYE]) == 1
    assert "larger than the image" in capsys.readouterr().err


def test_json_output_records_a_failed_image_and_fail_fast_leaves_no_file(capsys, tmp_path):
    output = tmp_path / "found.json"
    missing = str(tmp_path / "missing.png")
    assert main([ASTRONAUT, missing, "--filter", EYE, "--format", "json",
                 "--output", str(output)]) == 1
    rows = json.loads(output.read_text())
    assert [row for row in rows if "error" in row] == [
        {"image": missing, "error": f"image file not found: {missing}"}]
    assert sum(row.get("label") == "eye" for row in rows) == 2
    output.unlink()
    capsys.readouterr()
    # --fail-fast stops at the failure: the json document is never completed, so never written
    assert main([missing, ASTRONAUT, "--filter", EYE, "--format", "json",
                 "--output", str(output), "--fail-fast"]) == 1
    assert list(tmp_path.iterdir()) == []


def test_version_and_help(capsys):
    import patternfind

    assert main(["--version"]) == 0
    assert patternfind.__version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "examples:" in capsys.readouterr().out
