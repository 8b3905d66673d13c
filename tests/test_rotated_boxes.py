"""Turned boxes: rotated IoU and NMS, angle annotations, angle errors, drawing and the CLI."""

import json
import math

import cv2
import numpy as np
import pytest

import patternfind
from patternfind import Box, Detection, Filter
from patternfind.cli import main
from patternfind.detection.nms import box_iou, non_max_suppression_rotated, rotated_box_iou
from patternfind.evaluation.annotations import load_annotations, save_annotations
from patternfind.evaluation.metrics import angle_error, evaluate, match_detections
from patternfind.show.draw import draw_detections
from patternfind.structures import rotated_corners


def polygon_area(points):
    x, y = np.asarray(points).T
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def clip_polygon(subject, clip):
    """Sutherland–Hodgman: the part of convex polygon ``subject`` inside convex ``clip``
    (both counter-clockwise in x-right, y-up terms, i.e. any consistent orientation)."""
    def side(a, b, p):
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

    orientation = np.sign(side(clip[0], clip[1], clip[2]))
    output = list(subject)
    for a, b in zip(clip, clip[1:] + clip[:1], strict=True):
        points, output = output, []
        for p, q in zip(points, points[1:] + points[:1], strict=True):
            p_in, q_in = side(a, b, p) * orientation >= 0, side(a, b, q) * orientation >= 0
            if p_in:
                output.append(p)
            if p_in != q_in:
                dp, dq = side(a, b, p), side(a, b, q)
                t = dp / (dp - dq)
                output.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        if not output:
            return []
    return output


def naive_rotated_iou(first, second):
    a, b = list(rotated_corners(*first)), list(rotated_corners(*second))
    inside = clip_polygon(a, b)
    intersection = polygon_area(inside) if len(inside) >= 3 else 0.0
    union = first[2] * first[3] + second[2] * second[3] - intersection
    return intersection / union


def random_boxes(rng, count):
    centres = rng.uniform(0, 60, size=(count, 2))
    sizes = rng.uniform(5, 40, size=(count, 2))
    angles = rng.uniform(-180, 360, size=count)
    return np.column_stack([centres - sizes / 2, sizes, angles])


def test_rotated_iou_matches_polygon_clipping_and_opencv_on_random_pairs():
    rng = np.random.default_rng(0)
    first, second = random_boxes(rng, 40), random_boxes(rng, 30)
    ious = rotated_box_iou(first, second)
    assert (ious > 0).sum() > 50  # the pairs overlap in many ways, not just not at all
    for i in range(len(first)):
        for j in range(len(second)):
            # both in float64: the same to rounding
            assert ious[i, j] == pytest.approx(naive_rotated_iou(first[i], second[j]),
                                               rel=1e-9, abs=1e-12)
    # and OpenCV's own intersection, called with its clockwise angle convention
    for i, j in zip(range(10), range(10), strict=True):
        x, y, w, h, angle = first[i]
        u, v, p, q, turn = second[j]
        _, points = cv2.rotatedRectangleIntersection(
            ((x + w / 2, y + h / 2), (w, h), -angle), ((u + p / 2, v + q / 2), (p, q), -turn))
        area = cv2.contourArea(cv2.convexHull(points)) if points is not None else 0.0
        # OpenCV intersects in float32: about 1e-4 of the area
        assert ious[i, j] == pytest.approx(area / (w * h + p * q - area), abs=1e-4)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ((0, 0, 10, 4, 33.0), (0, 0, 10, 4, 33.0), 1.0),  # the same box
        ((0, 0, 10, 4, 0.0), (0, 0, 10, 4, 180.0), 1.0),  # half a turn: the same rectangle
        ((0, 0, 10, 10, 0.0), (2, 2, 6, 6, 45.0), 36 / 100),  # inside the other
        ((0, 0, 10, 10, 0.0), (10, 0, 10, 10, 0.0), 0.0),  # sharing an edge
        ((0, 0, 10, 10, 0.0), (5, 0, 10, 10, 0.0), 50 / 150),
        ((0, 0, 10, 10, 0.0), (0, 0, 10, 10, 90.0), 1.0),  # a square turned a quarter
    ],
)
def test_rotated_iou_of_hand_made_cases_is_exact(first, second, expected):
    assert rotated_box_iou([first], [second])[0, 0] == pytest.approx(expected, abs=1e-12)
    assert rotated_box_iou([second], [first])[0, 0] == pytest.approx(expected, abs=1e-12)


def test_rotated_iou_of_far_coordinates_keeps_its_precision():
    # boxes far from the origin: float32 would lose the overlap's digits
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 20)
    shifted = boxes + np.array([1e5, 1e5, 0, 0, 0])
    np.testing.assert_allclose(rotated_box_iou(shifted, shifted[::-1]),
                               rotated_box_iou(boxes, boxes[::-1]), atol=1e-9)


def test_rotated_iou_of_upright_boxes_is_box_iou():
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 25)
    boxes[:, 4] = 0
    np.testing.assert_allclose(rotated_box_iou(boxes, boxes[:10]), box_iou(boxes[:, :4],
                                                                           boxes[:10, :4]),
                               atol=1e-6)
    # a half-turn is the same rectangle
    turned = boxes.copy()
    turned[:, 4] = 180
    np.testing.assert_allclose(np.diag(rotated_box_iou(boxes, turned)), 1, atol=1e-6)


def test_rotated_nms_matches_a_brute_force_greedy_loop():
    rng = np.random.default_rng(2)
    boxes = random_boxes(rng, 60)
    scores = rng.random(60)
    kept = non_max_suppression_rotated(boxes, scores, iou_threshold=0.3)
    expected = []
    for index in np.argsort(-scores, kind="stable"):
        if all(naive_rotated_iou(boxes[index], boxes[k]) <= 0.3 for k in expected):
            expected.append(index)
    assert kept.tolist() == expected


def test_csv_angle_column_and_coco_round_trip(tmp_path):
    path = tmp_path / "turned.csv"
    path.write_text("image,x,y,w,h,label,angle\na.png,10,20,30,15,part,33.5\n"
                    "a.png,50,20,30,15,part,\nb.png,,,,\n")
    loaded = load_annotations(path)
    assert loaded == {"a.png": [Box(10, 20, 30, 15, "part", angle=33.5),
                                Box(50, 20, 30, 15, "part")], "b.png": []}
    save_annotations(loaded, tmp_path / "turned.json")
    assert load_annotations(tmp_path / "turned.json") == loaded
    bad = tmp_path / "bad.csv"
    bad.write_text("image,x,y,w,h,angle\na.png,1,2,3,4,nan\n")
    with pytest.raises(ValueError, match="angle"):
        load_annotations(bad)


def test_voc_robndbox_reads_rolabelimg_convention(tmp_path):
    # roLabelImg writes the centre, the size, and an angle in radians that turns the box
    # clockwise on screen: its reader rotates the corners by -angle with
    # x' = cos·x + sin·y, y' = -sin·x + cos·y.
    cx, cy, w, h, radians = 100.0, 60.0, 40.0, 20.0, 0.5
    (tmp_path / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>200</width><height>120</height>"
        "</size><object><type>robndbox</type><name>part</name><difficult>0</difficult>"
        f"<robndbox><cx>{cx}</cx><cy>{cy}</cy><w>{w}</w><h>{h}</h><angle>{radians}</angle>"
        "</robndbox></object></annotation>")
    (box,) = load_annotations(tmp_path / "a.xml")["a.png"]
    assert (box.x, box.y, box.w, box.h) == (80, 50, 40, 20)
    assert box.angle == pytest.approx(360 - math.degrees(0.5))

    def rolabelimg_corner(xp, yp):
        theta = -radians
        xoff, yoff = xp - cx, yp - cy
        return (cx + math.cos(theta) * xoff + math.sin(theta) * yoff,
                cy - math.sin(theta) * xoff + math.cos(theta) * yoff)

    expected = [rolabelimg_corner(cx - w / 2, cy - h / 2), rolabelimg_corner(cx + w / 2, cy - h / 2),
                rolabelimg_corner(cx + w / 2, cy + h / 2), rolabelimg_corner(cx - w / 2, cy + h / 2)]
    np.testing.assert_allclose(rotated_corners(box.x, box.y, box.w, box.h, box.angle), expected,
                               atol=1e-9)


def test_angle_errors_on_hand_made_cases():
    assert angle_error(359, 1) == 2
    assert angle_error(-90, 270) == 0
    assert angle_error(10, 190) == 180
    truth = {"a": [Box(10, 10, 40, 20, angle=30.0), Box(100, 10, 40, 20, angle=1.0)],
             "b": [Box(10, 10, 40, 20)]}
    found = {
        "a": [Detection(13, 14, 40, 20, 0.9, angle=32.0),     # centre 5 px off, 2° off
              Detection(100, 10, 40, 20, 0.8, angle=359.0)],  # 2° off across 0
        "b": [Detection(11, 10, 40, 20, 0.7)],                # upright truth: no angle error
    }
    result = evaluate(found, truth)
    assert result.true_positives == 3
    assert result.mean_angle_error == pytest.approx(2.0)
    assert result.mean_centre_error == pytest.approx((5 + 0 + 1) / 3)
    assert result.summary()["mean_angle_error"] == pytest.approx(2.0)


def test_matching_uses_the_turned_rectangles():
    truth = [Box(0, 20, 60, 10, angle=0.0)]
    # the same box turned a quarter turn overlaps only its middle: IoU 100/1100
    crossing = [Detection(0, 20, 60, 10, 0.9, angle=90.0)]
    outcome, _ = match_detections(crossing, truth, iou=0.5)
    assert outcome.tolist() == [0]
    aligned = [Detection(0, 20, 60, 10, 0.9, angle=2.0)]
    outcome, _ = match_detections(aligned, truth, iou=0.5)
    assert outcome.tolist() == [1]


def test_turned_detections_are_drawn_as_turned_rectangles():
    image = np.zeros((100, 100), np.uint8)
    detection = Detection(30, 40, 40, 20, 0.9, angle=90.0)
    canvas = draw_detections(image, [detection], color=(255, 0, 0), thickness=1,
                             show_labels=False)
    drawn = canvas[..., 0] > 0
    # the turned box spans x 40..60, y 30..70; the upright box's left edge (x = 30) stays dark
    assert drawn[50, 39:42].any()
    assert drawn[50, 58:61].any()
    assert not drawn[45:55, 28:33].any()
    # the tick from the filter's top edge: after a quarter turn that edge is on the left
    assert drawn[50, 40:46].sum() >= 3


@pytest.fixture
def parts_image(tmp_path):
    rng = np.random.default_rng(4)
    part = cv2.GaussianBlur(rng.random((24, 24)).astype(np.float32), (0, 0), 1.5)
    part = (part - part.min()) / (part.max() - part.min())
    scene = cv2.GaussianBlur(rng.random((80, 120)).astype(np.float32), (0, 0), 3)
    scene = (scene - scene.min()) / (scene.max() - scene.min()) * 0.5 + 0.25
    matrix = cv2.getRotationMatrix2D((11.5, 11.5), 40, 1.0)
    matrix[:, 2] += (60 - 11.5, 40 - 11.5)
    warped = cv2.warpAffine(part, matrix, (120, 80))
    cover = cv2.warpAffine(np.ones_like(part), matrix, (120, 80))
    scene = scene * (1 - cover) + warped
    patternfind.io.save_image(tmp_path / "parts.png", (scene * 255).round().astype(np.uint8))
    np.save(tmp_path / "part.npy", part)
    return tmp_path


def test_cli_angles_add_angle_and_corners_to_every_format(parts_image, capsys):
    common = [str(parts_image / "parts.png"), "--filter", str(parts_image / "part.npy"),
              "--angles", "0,360", "--scales", "1,1"]
    assert main(common) == 0
    table = capsys.readouterr().out
    assert "angle" in table.splitlines()[0]
    assert main([*common, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert abs(row["angle"] - 40) < 1
    assert len(row["corners"]) == 4
    assert main([*common, "--format", "csv"]) == 0
    header, line = capsys.readouterr().out.strip().splitlines()
    # the batch csv ends with the error column of images that failed
    assert header.split(",")[-10:] == ["angle", "x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4",
                                       "error"]
    assert len(line.split(",")) == len(header.split(","))
    assert main([*common, "--score", "shape", "--polarity", "ignore", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert abs(row["angle"] - 40) < 1
    assert main([*common, "--draw", str(parts_image / "drawn.png"),
                 "--heatmap", str(parts_image / "heat.png")]) == 0
    assert patternfind.load_image(parts_image / "drawn.png").shape == (80, 120, 3)
    assert patternfind.load_image(parts_image / "heat.png").shape == (80, 120, 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--angles", "10,-20"], "start <= stop"),
        (["--angles", "nan,10"], "finite"),
        (["--angles", "0,360", "--angle-step", "0"], "angle_step"),
        (["--angles", "0,10", "--angle-step", "20"], "angle_step"),
        (["--angles", "0"], "START,STOP"),
        (["--score", "ncc", "--polarity", "ignore"], "polarity"),
        (["--score", "shape", "--min-contrast", "5"], "min_contrast"),
    ],
)
def test_cli_bad_rotation_options_are_one_line_and_exit_2(parts_image, capsys, extra, message):
    code = main([str(parts_image / "parts.png"), "--filter", str(parts_image / "part.npy"),
                 *extra])
    error = capsys.readouterr().err
    assert code == 2
    assert message in error
    assert len(error.strip().splitlines()) == 1


def test_crop_saves_a_filter_for_the_shape_score(parts_image, capsys):
    out = parts_image / "shape.npz"
    assert main(["crop", str(parts_image / "parts.png"), "--box", "48,28,24,24", "--score",
                 "shape", "-o", str(out)]) == 0
    assert Filter.load(out).score == "shape"
    flat = parts_image / "flat.png"
    patternfind.io.save_image(flat, np.full((30, 30), 128, np.uint8))
    assert main(["crop", str(flat), "--box", "0,0,20,20", "--score", "shape", "-o",
                 str(parts_image / "flat.npz")]) == 2
    assert "no edges to match" in capsys.readouterr().err
    assert not (parts_image / "flat.npz").exists()
    assert main(["make-filter", "ring", "--size", "21", "--score", "shape", "-o",
                 str(parts_image / "ring.npy")]) == 2
    assert ".npz" in capsys.readouterr().err


def test_cli_evaluate_with_rolabelimg_boxes_reports_pose_errors(parts_image, capsys):
    # the part is turned 40° counter-clockwise about (60, 40) (pixel centres): roLabelImg
    # writes the centre in edge coordinates and the angle clockwise, in radians
    (parts_image / "parts.xml").write_text(
        "<annotation><filename>parts.png</filename><object><type>robndbox</type>"
        "<name>part</name><robndbox><cx>60.5</cx><cy>40.5</cy><w>24</w><h>24</h>"
        f"<angle>{2 * math.pi - math.radians(40)}</angle></robndbox></object></annotation>")
    code = main(["evaluate", "--annotations", str(parts_image / "parts.xml"), "--filter",
                 str(parts_image / "part.npy"), "--angles", "0,360", "--scales", "1,1",
                 "--format", "json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["true_positives"] == 1
    assert summary["mean_angle_error"] < 1.0  # a 24×24 blurred part on uint8 pixels: 0.71° measured
    assert summary["mean_centre_error"] < 1.0
