"""compare(), the report, and the `evaluate` / `compare` commands, on planted patterns and the coins."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from patternfind.cli import main
from patternfind.evaluation.annotations import save_annotations
from patternfind.evaluation.comparison import compare
from patternfind.io import load_image, save_image
from patternfind.show.plot import COLORS
from patternfind.structures import Box, Filter

COINS = Path(__file__).resolve().parent.parent / "samples" / "coins"


def square_pattern(size: int = 16) -> np.ndarray:
    """A bright ring-like square with a dark centre: a pattern with contrast at every scale."""
    pattern = np.zeros((size, size), dtype=np.float32)
    pattern[2:-2, 2:-2] = 1.0
    pattern[5:-5, 5:-5] = 0.2
    return pattern


@pytest.fixture
def planted(tmp_path):
    """Two images with the pattern planted at known places, one image with nothing, and labels.

    image a has 2 patterns (both labelled), image b has 1 pattern that is labelled plus one
    labelled box with nothing in it (a guaranteed miss), and image c has no boxes.
    """
    rng = np.random.default_rng(0)
    pattern = (square_pattern() * 200 + 30).astype(np.uint8)
    truth = {"a.png": [(10, 12), (60, 40)], "b.png": [(30, 30)], "c.png": []}
    annotations = {}
    for name, corners in truth.items():
        image = rng.integers(60, 80, size=(96, 112), dtype=np.uint8)
        for x, y in corners:
            image[y:y + 16, x:x + 16] = pattern
        save_image(tmp_path / name, image)
        annotations[name] = [Box(float(x), float(y), 16.0, 16.0, label="square") for x, y in corners]
    annotations["b.png"].append(Box(80.0, 70.0, 16.0, 16.0, label="square"))  # nothing there
    save_annotations(annotations, tmp_path / "labels.json")
    good = Filter(square_pattern(), name="square", meta={"kind": "fixed"})
    inverted = Filter(1 - square_pattern(), name="inverted", meta={"kind": "learned"})
    good.save(tmp_path / "square.npz")
    inverted.save(tmp_path / "inverted.npz")
    return tmp_path


OPTIONS = {"threshold": 0.8, "scales": (1.0, 1.0)}


def test_compare_scores_each_filter_on_the_same_images(planted):
    good, inverted = compare([planted / "square.npz", planted / "inverted.npz"],
                             planted / "labels.json", **OPTIONS)
    # 3 planted patterns found, the empty labelled box missed, nothing else fires
    assert (good.true_positives, good.false_positives, good.false_negatives) == (3, 0, 1)
    assert good.recall == pytest.approx(3 / 4)
    assert good.precision == 1.0
    assert good.ap == pytest.approx(3 / 4)
    assert (good.name, good.kind) == ("square", "fixed")
    assert inverted.true_positives == 0
    assert inverted.kind == "learned"
    assert set(good.images) == set(inverted.images) == {"a.png", "b.png", "c.png"}
    assert good.seconds_per_image > 0


def test_compare_with_in_memory_images_and_subset(planted):
    image = load_image(planted / "a.png")
    annotations = {"a.png": [Box(10, 12, 16, 16), Box(60, 40, 16, 16)], "b.png": []}
    [result] = compare(Filter(square_pattern(), name="square"), annotations,
                       images={"a.png": image}, **OPTIONS)
    assert set(result.images) == {"a.png"}
    assert (result.true_positives, result.false_positives) == (2, 0)


def test_compare_rejects_unknown_images_and_no_filters(planted):
    with pytest.raises(ValueError, match=r"'x.png' has no entry in the annotations"):
        compare(Filter(square_pattern()), {"a.png": []}, images={"x.png": np.zeros((20, 20))})
    with pytest.raises(ValueError, match="at least one filter"):
        compare([], planted / "labels.json")


def test_rank_thresholds_widen_the_ap_ranking_but_keep_the_operating_point(planted):
    labels, square = planted / "labels.json", planted / "square.npz"
    [above] = compare(square, labels, **OPTIONS)
    [ranked] = compare(square, labels, rank_thresholds=[0.2], **OPTIONS)
    [wide] = compare(square, labels, threshold=0.2, scales=(1.0, 1.0))
    assert wide.false_positives > above.false_positives  # the floor adds detections
    counts = ("true_positives", "false_positives", "false_negatives", "precision", "recall")
    assert [getattr(ranked, c) for c in counts] == [getattr(above, c) for c in counts]
    assert ranked.threshold == OPTIONS["threshold"]
    assert ranked.ap == pytest.approx(wide.ap)  # AP over every detection above the floor
    np.testing.assert_array_equal(ranked.recall_curve, wide.recall_curve)
    [same] = compare(square, labels, rank_thresholds=[None], **OPTIONS)
    assert same.ap == above.ap
    with pytest.raises(ValueError, match="one entry per filter"):
        compare(square, labels, rank_thresholds=[0.2, 0.3], **OPTIONS)
    with pytest.raises(ValueError, match=r"above its operating threshold 0\.8"):
        compare(square, labels, rank_thresholds=[0.9], **OPTIONS)


def test_compare_names_missing_images(tmp_path):
    save_annotations({"gone.png": [Box(0, 0, 5, 5)]}, tmp_path / "labels.json")
    with pytest.raises(ValueError, match=r"labels.json references 1 missing image\(s\): 'gone.png'"):
        compare(Filter(square_pattern()), tmp_path / "labels.json")


# ---------------------------------------------------------------- CLI, in process


def test_evaluate_table(planted, capsys):
    status = main(["evaluate", "--annotations", str(planted / "labels.json"),
                   "--filter", str(planted / "square.npz"), "--threshold", "0.8", "--scales", "1,1"])
    out = capsys.readouterr().out
    assert status == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:5]}
    assert rows == {"a.png": ["2", "0", "0"], "b.png": ["1", "0", "1"], "c.png": ["0", "0", "0"],
                    "total": ["3", "0", "1"]}
    assert "precision 1.000  recall 0.750  F1 0.857  AP 0.750" in out


def test_evaluate_json_and_image_subset(planted, capsys):
    status = main(["evaluate", "--annotations", str(planted / "labels.json"),
                   "--filter", str(planted / "square.npz"), "--threshold", "0.8",
                   "--scales", "1,1", "--format", "json", str(planted / "b.png")])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["images"]) == {"b.png"}
    assert (result["true_positives"], result["false_negatives"]) == (1, 1)
    assert result["recall"] == 0.5


def test_evaluate_draw_uses_three_colours(planted, tmp_path, capsys):
    out_dir = tmp_path / "drawn"
    status = main(["evaluate", "--annotations", str(planted / "labels.json"),
                   "--filter", str(planted / "square.npz"), "--threshold", "0.8",
                   "--scales", "1,1", "--draw", str(out_dir)])
    assert status == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.png", "b.png", "c.png"]
    drawn = load_image(out_dir / "b.png")
    assert drawn.shape == (96, 112, 3)
    # the found pattern's box edge is green, the missed box's edge blue
    assert tuple(drawn[30, 38]) == (0, 190, 0)
    assert tuple(drawn[70, 88]) == (30, 110, 255)


@pytest.mark.slow
def test_compare_table_and_reports(planted, tmp_path, capsys):
    for suffix in ("png", "html"):
        report = tmp_path / f"report.{suffix}"
        status = main(["compare", "--annotations", str(planted / "labels.json"),
                       "--filter", str(planted / "square.npz"),
                       "--filter", str(planted / "inverted.npz"),
                       "--threshold", "0.8", "--scales", "1,1", "--report", str(report)])
        assert status == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["filter", "kind", "P", "R", "F1", "AP", "TP", "FP", "FN", "ms/image"]
    assert lines[1].split()[:9] == ["square", "fixed", "1.000", "0.750", "0.857", "0.750", "3", "0", "1"]
    assert lines[2].split()[:2] == ["inverted", "learned"]
    picture = load_image(tmp_path / "report.png")[..., :3]
    height, width = picture.shape[:2]
    assert 400 < height < 4000
    assert 400 < width < 4000
    # the example image's boxes are drawn in the outcome colours: a found box, a missed one
    for name in ("true_positive", "missed"):
        near = np.abs(picture.astype(int) - COLORS[name]).max(axis=2) <= 30
        assert near.sum() > 20, name
    page = (tmp_path / "report.html").read_text()
    # the HTML table carries the same numbers as the printed one
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    cells = [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in rows]
    assert cells[0][:6] == ["filter", "kind", "P", "R", "F1", "AP"]
    assert cells[1][:7] == [*lines[1].split()[:6], "3/0/1"]  # TP/FP/FN in one cell
    assert cells[2][:2] == ["inverted", "learned"]
    # and the same picture as the PNG report, embedded
    embedded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert embedded is not None
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(embedded.group(1)), np.uint8),
                           cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (height, width)
    assert "<td>square</td><td>fixed</td><td>1.000</td>" in page


def test_compare_json(planted, capsys):
    status = main(["compare", "--annotations", str(planted / "labels.json"),
                   "--filter", str(planted / "square.npz"), "--filter", str(planted / "inverted.npz"),
                   "--threshold", "0.8", "--scales", "1,1", "--format", "json"])
    assert status == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in results] == ["square", "inverted"]
    assert results[0]["ap"] == pytest.approx(0.75)


@pytest.mark.parametrize(("argv", "message"), [
    (["evaluate", "--annotations", "{dir}/nope.json", "--filter", "{dir}/square.npz"],
     "annotation file not found"),
    (["evaluate", "--annotations", "{dir}/broken.json", "--filter", "{dir}/square.npz"],
     "broken.json: malformed JSON"),
    (["evaluate", "--annotations", "{dir}/labels.json", "--filter", "{dir}/nope.npz"],
     "filter file not found"),
    (["evaluate", "--annotations", "{dir}/labels.json", "--filter", "{dir}/square.npz",
      "{dir}/square.npz"], "is not listed in the annotations"),
    (["evaluate", "--annotations", "{dir}/labels.json", "--filter", "{dir}/square.npz",
      "--iou", "0"], "--iou must be in (0, 1]"),
    (["evaluate", "--annotations", "{dir}/missing.json", "--filter", "{dir}/square.npz"],
     "missing.json references 1 missing image(s): 'gone.png'"),
    (["compare", "--annotations", "{dir}/labels.json", "--filter", "{dir}/square.npz",
      "--report", "{dir}/r.pdf"], "use a .png or .html file"),
    (["compare", "--annotations", "{dir}/labels.json"], "--filter"),
    (["compare", "--annotations", "{dir}/labels.json", "--filter", "{dir}/square.npz",
      "--filter", "{dir}/inverted.npz", "--rank-threshold", "0.2"],
     "--rank-threshold must be given once per --filter (2), got 1"),
])
def test_usage_errors_are_one_line_with_exit_2(planted, capsys, argv, message):
    (planted / "broken.json").write_text('{"images": [')
    save_annotations({"gone.png": []}, planted / "missing.json")
    status = main([arg.format(dir=planted) for arg in argv])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_help_ends_with_examples(capsys):
    for command in ("evaluate", "compare"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "examples:" in out
        assert f"patternfind {command} --annotations" in out


# ---------------------------------------------------------------- the README's commands


@pytest.mark.slow
def test_readme_compare_on_the_coins_through_a_subprocess(tmp_path):
    report = tmp_path / "report.png"
    completed = subprocess.run(
        [sys.executable, "-m", "patternfind", "compare", "--annotations", "coins.json",
         "--filter", "coin.npz", "--filter", "disc.npz", "--report", str(report)],
        cwd=COINS, capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    rows = {line.split()[0]: line.split() for line in completed.stdout.splitlines()[1:3]}
    assert set(rows) == {"coin", "disc"}
    for row in rows.values():
        assert row[1] == "fixed"
        assert float(row[3]) >= 0.9  # recall: nearly every one of the 24 coins is found
    assert report.is_file()


# ---------------------------------------------------------------- plotting on a given Axes


def _axes():
    from matplotlib.figure import Figure

    return Figure().add_subplot()


def test_plot_filter_is_centred_on_zero_and_shows_each_channel():
    from patternfind.show.plot import plot_filter

    weights = np.zeros((4, 8, 3), dtype=np.float32)
    weights[..., 0], weights[..., 1], weights[..., 2] = 0.5, -2.0, 1.0
    picture = plot_filter(_axes(), Filter(weights, name="rgb"), colorbar=False)
    low, high = picture.get_clim()
    assert (low, high) == (-2.0, 2.0)
    shown = np.ma.filled(picture.get_array(), np.nan)
    assert shown.shape == (4, 3 * 8 + 2 * 1)  # three channels with one-pixel gaps
    np.testing.assert_array_equal(shown[:, :8], 0.5)
    np.testing.assert_array_equal(shown[:, 9:17], -2.0)
    assert np.isnan(shown[:, 8]).all()
    centred = plot_filter(_axes(), Filter(np.array([[1.0, 3.0]])), subtract_mean=True,
                          colorbar=False)
    np.testing.assert_array_equal(np.ma.filled(centred.get_array()), [[-1.0, 1.0]])


def test_hog_glyphs_run_along_the_edge():
    from patternfind.show.plot import hog_glyphs

    weights = np.zeros((1, 2, 2))
    weights[0, 0, 0] = 1.0  # gradient along +x: a vertical edge, drawn as a vertical line
    weights[0, 1, 1] = 0.5  # gradient along +y: a horizontal edge, half as bright
    glyphs = hog_glyphs(weights, np.array([0.0, 90.0]), cell_pixels=21)
    assert glyphs.shape == (21, 42)
    left, right = glyphs[:, :21], glyphs[:, 21:]
    assert left[:, 10].min() > 0.5  # vertical line
    assert left[10, :5].max() == 0
    assert right[10, 3:19].min() > 0.2  # horizontal line
    assert right[:5, 10].max() == 0
    assert left.max() == pytest.approx(1.0, abs=0.05)
    assert right.max() == pytest.approx(0.5, abs=0.05)


def test_plot_filter_draws_hog_filters_as_positive_and_negative_glyphs():
    from patternfind.show.plot import plot_filter

    weights = np.zeros((2, 3, 31), dtype=np.float32)
    weights[0, 0, 18] = 1.0   # unsigned bin 0: vertical edge, positive
    weights[1, 2, 22] = -1.0  # unsigned bin 4: horizontal edge, negative
    filter_ = Filter(weights, features="hog", window=(12, 18), name="hog",
                     feature_options={"cell": 6, "variant": "felzenszwalb"})
    shown = np.ma.filled(plot_filter(_axes(), filter_).get_array(), np.nan)
    width = 3 * 21
    positive, negative = shown[:, :width], shown[:, -width:]
    assert positive[:21, :21].max() > 0.9
    assert positive[21:].max() == 0
    assert negative[21:, 42:].max() > 0.9
    assert negative[:21].max() == 0
    assert np.isnan(shown[:, width]).all()


def test_plot_detections_colours_by_outcome():
    from patternfind.show.plot import COLORS, plot_detections
    from patternfind.structures import Detection

    ax = _axes()
    boxes = [Box(0, 0, 10, 10), Box(30, 30, 10, 10)]
    found = [Detection(0, 0, 10, 10, score=0.9), Detection(60, 0, 10, 10, score=0.8)]
    plot_detections(ax, np.zeros((80, 80), dtype=np.uint8), found, boxes)
    colours = [tuple(round(c * 255) for c in patch.get_edgecolor()[:3]) for patch in ax.patches]
    # the missed box first, then the detections in order
    assert colours == [COLORS["missed"], COLORS["true_positive"], COLORS["false_positive"]]


def test_plot_pr_curves_labels_and_length_check():
    from patternfind.evaluation.metrics import evaluate
    from patternfind.show.plot import plot_pr_curves
    from patternfind.structures import Detection

    result = evaluate({"a": [Detection(0, 0, 10, 10, score=1.0)]}, {"a": [Box(0, 0, 10, 10)]})
    ax = _axes()
    plot_pr_curves(ax, [result], ["mine"])
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["mine  AP 1.000"]
    with pytest.raises(ValueError, match="one entry per evaluation"):
        plot_pr_curves(_axes(), [result], ["a", "b"])


def test_boxes_reaching_outside_the_image_are_clipped_with_a_one_line_warning(planted, capsys):
    (planted / "edge.csv").write_text("image,x,y,w,h\na.png,10,12,16,16\na.png,100,80,40,40\n")
    status = main(["evaluate", "--annotations", str(planted / "edge.csv"),
                   "--filter", str(planted / "square.npz"), "--threshold", "0.8", "--scales", "1,1",
                   "--format", "json"])
    captured = capsys.readouterr()
    assert status == 0
    assert captured.err.strip() == (
        "patternfind evaluate: warning: clipped 1 annotation box(es) that reached outside their image"
    )
    # the clipped box (100..112 × 80..96) has no pattern: a miss; the other pattern in a.png is
    # unlabelled in this file, so it is a false positive
    result = json.loads(captured.out)
    assert (result["true_positives"], result["false_positives"], result["false_negatives"]) == (1, 1, 1)


def test_box_wholly_outside_its_image_is_an_error(planted, capsys):
    (planted / "out.csv").write_text("a.png,200,10,5,5\n")
    status = main(["evaluate", "--annotations", str(planted / "out.csv"),
                   "--filter", str(planted / "square.npz")])
    err = capsys.readouterr().err
    assert status == 2
    assert "lies outside the 112×96 image" in err
    assert "'a.png'" in err
