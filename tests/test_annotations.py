"""Annotation files: every format read from files written here, round trips, and bad input."""

from __future__ import annotations

import json
import warnings

import pytest

from patternfind.evaluation.annotations import (
    AnnotationWarning,
    clip_to_image,
    image_paths,
    load_annotations,
    save_annotations,
)
from patternfind.structures import Box

EXPECTED = {
    "a.png": [Box(10, 20, 30, 40, label="coin"), Box(50, 5, 8, 9, label="coin", ignore=True)],
    "sub/b.png": [Box(0, 0, 12, 14, label="ring")],
    "c.png": [],
}


def write_coco(path, annotations=EXPECTED, *, size=(200, 100)):
    names = sorted({box.label for boxes in annotations.values() for box in boxes})
    document = {
        "images": [{"id": 7 + i, "file_name": key, "width": size[0], "height": size[1]}
                   for i, key in enumerate(annotations)],
        "annotations": [
            {"id": 100 + j, "image_id": 7 + i, "category_id": 3 + names.index(box.label),
             "bbox": [box.x, box.y, box.w, box.h], "iscrowd": int(box.ignore)}
            for i, boxes in enumerate(annotations.values()) for j, box in enumerate(boxes)
        ],
        "categories": [{"id": 3 + k, "name": name} for k, name in enumerate(names)],
    }
    path.write_text(json.dumps(document))
    return path


def voc_xml(filename, boxes, *, size=(200, 100)):
    objects = "".join(
        f"<object><name>{b.label}</name><difficult>{int(b.ignore)}</difficult><bndbox>"
        f"<xmin>{b.x + 1:g}</xmin><ymin>{b.y + 1:g}</ymin>"
        f"<xmax>{b.x + b.w:g}</xmax><ymax>{b.y + b.h:g}</ymax></bndbox></object>"
        for b in boxes
    )
    return (f"<annotation><folder>x</folder><filename>{filename}</filename><size>"
            f"<width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
            f"{objects}</annotation>")


IGNORE_ATTRIBUTE = ' ignore="1"'


def write_dlib(path, annotations=EXPECTED):
    images = "".join(
        f"<image file='{key}'>" + "".join(
            f"<box top='{b.y:g}' left='{b.x:g}' width='{b.w:g}' height='{b.h:g}'"
            f"{IGNORE_ATTRIBUTE if b.ignore else ''}><label>{b.label}</label></box>"
            for b in boxes
        ) + "</image>"
        for key, boxes in annotations.items()
    )
    path.write_text(f"<?xml version='1.0'?>\n<dataset><name>t</name><images>{images}</images></dataset>")
    return path


def without_ignore(annotations):
    return {key: [Box(b.x, b.y, b.w, b.h, label=b.label) for b in boxes]
            for key, boxes in annotations.items()}


def test_coco(tmp_path):
    assert load_annotations(write_coco(tmp_path / "labels.json")) == EXPECTED


def test_voc_file_and_folder(tmp_path):
    folder = tmp_path / "voc"
    folder.mkdir()
    for number, (key, boxes) in enumerate(EXPECTED.items()):
        (folder / f"{number}.xml").write_text(voc_xml(key, boxes))
    assert load_annotations(folder) == EXPECTED
    assert load_annotations(folder / "0.xml") == {"a.png": EXPECTED["a.png"]}


def test_voc_corners_are_one_based_and_inclusive(tmp_path):
    text = ("<annotation><filename>a.png</filename><object><name>c</name><bndbox>"
            "<xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>")
    (tmp_path / "a.xml").write_text(text)
    assert load_annotations(tmp_path / "a.xml") == {"a.png": [Box(0, 0, 10, 20, label="c")]}


def test_dlib(tmp_path):
    assert load_annotations(write_dlib(tmp_path / "training.xml")) == EXPECTED


@pytest.mark.parametrize("header", [True, False])
def test_csv(tmp_path, header):
    lines = ["image,x,y,w,h,label"] if header else []
    lines += ["a.png,10,20,30,40,coin", "a.png,50,5,8,9,coin", "sub/b.png,0,0,12,14,ring", "c.png,,,,"]
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    assert load_annotations(path) == without_ignore(EXPECTED)


def test_csv_without_label_column(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image,x,y,w,h\nq.png,1,2,3,4\n")
    assert load_annotations(path) == {"q.png": [Box(1, 2, 3, 4)]}


@pytest.mark.parametrize("writer", ["coco", "dlib", "csv"])
def test_save_round_trip(tmp_path, writer):
    if writer == "coco":
        source = write_coco(tmp_path / "in.json")
    elif writer == "dlib":
        source = write_dlib(tmp_path / "in.xml")
    else:
        source = tmp_path / "in.csv"
        source.write_text("a.png,10,20,30,40,coin\nsub/b.png,0,0,12,14,ring\nc.png\n")
    loaded = load_annotations(source)
    save_annotations(loaded, tmp_path / "out.json", image_sizes={"a.png": (200, 100)})
    assert load_annotations(tmp_path / "out.json") == loaded
    document = json.loads((tmp_path / "out.json").read_text())
    assert {"images", "annotations", "categories"} <= document.keys()
    assert document["images"][0]["width"] == 200
    assert not list(tmp_path.glob(".*partial*"))  # the atomic writer cleaned up


def test_save_unlabelled_boxes_get_default_category(tmp_path):
    save_annotations({"a.png": [Box(1, 2, 3, 4)]}, tmp_path / "out.json")
    assert load_annotations(tmp_path / "out.json") == {"a.png": [Box(1, 2, 3, 4, label="object")]}


def test_save_rejects_non_boxes(tmp_path):
    with pytest.raises(TypeError, match=r"Box"):
        save_annotations({"a.png": [(1, 2, 3, 4)]}, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_image_paths_resolve_relative_to_the_annotation_file(tmp_path):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    for key in EXPECTED:
        (tmp_path / "data" / key).write_bytes(b"")
    annotation = write_coco(tmp_path / "data" / "labels.json")
    paths = image_paths(load_annotations(annotation), annotation)
    assert paths == {key: tmp_path / "data" / key for key in EXPECTED}


def test_image_paths_names_missing_images(tmp_path):
    annotation = write_coco(tmp_path / "labels.json")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"labels.json references 2 missing image\(s\): 'sub/b.png'"):
        image_paths(load_annotations(annotation), annotation)
    assert set(image_paths(["a.png", "zz.png"], annotation, check=False)) == {"a.png", "zz.png"}


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.json"):
        load_annotations(tmp_path / "nope.json")


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.json", '{"images": [', "bad.json: malformed JSON"),
    ("bad.xml", "<annotation><filename>a.png</filename>", "bad.xml: malformed XML"),
    ("bad.xml", "<dataset><images><image file='a.png'><box top='1'", "bad.xml: malformed XML"),
    ("other.xml", "<svg></svg>", r"other.xml: unknown XML annotation format \(root element <svg>"),
    ("notes.txt", "just some words\n", "notes.txt: unknown annotation format"),
    ("data.bin", None, r"data.bin: unknown annotation format \(not a text file\)"),
    ("list.json", "[]", "list.json: a JSON list is not an annotation file"),
    ("other.json", '{"foo": 1}', "other.json: not a COCO annotation file: no 'images' or 'annotations'"),
    ("empty.csv", "", "empty.csv: the annotation file is empty"),
])
def test_malformed_or_unknown(tmp_path, name, text, message):
    path = tmp_path / name
    if text is None:
        path.write_bytes(bytes([0x89, 0xFF, 0xFE, 0x00, 0x81]))
    else:
        path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_annotations(path)


def test_no_images(tmp_path):
    (tmp_path / "e.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(ValueError, match=r"e.json: the annotation file lists no images"):
        load_annotations(tmp_path / "e.json")
    (tmp_path / "e.xml").write_text("<dataset><images></images></dataset>")
    with pytest.raises(ValueError, match=r"e.xml: the annotation file lists no images"):
        load_annotations(tmp_path / "e.xml")
    (tmp_path / "h.csv").write_text("image,x,y,w,h\n")
    with pytest.raises(ValueError, match=r"h.csv: the annotation file lists no images"):
        load_annotations(tmp_path / "h.csv")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match=r"holds no Pascal VOC"):
        load_annotations(tmp_path / "folder")


def test_duplicate_images(tmp_path):
    document = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.png"}],
                "annotations": []}
    (tmp_path / "d.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"d.json: image 'a.png' is listed more than once"):
        load_annotations(tmp_path / "d.json")
    document["images"][1] = {"id": 1, "file_name": "b.png"}
    (tmp_path / "d.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"image id 1 is listed more than once"):
        load_annotations(tmp_path / "d.json")
    write_dlib(tmp_path / "d.xml", {"a.png": []})
    text = (tmp_path / "d.xml").read_text().replace("</images>", "<image file='a.png'/></images>")
    (tmp_path / "d.xml").write_text(text)
    with pytest.raises(ValueError, match=r"d.xml: image 'a.png' is listed more than once"):
        load_annotations(tmp_path / "d.xml")
    folder = tmp_path / "voc"
    folder.mkdir()
    (folder / "1.xml").write_text(voc_xml("a.png", []))
    (folder / "2.xml").write_text(voc_xml("a.png", []))
    with pytest.raises(ValueError, match=r"'a.png' is annotated in both 1.xml and 2.xml"):
        load_annotations(folder)


@pytest.mark.parametrize(("w", "h"), [(0, 5), (5, 0), (-3, 5), (5, -1)])
def test_zero_or_negative_size(tmp_path, w, h):
    path = tmp_path / "s.csv"
    path.write_text(f"a.png,1,1,{w},{h}\n")
    with pytest.raises(ValueError, match=r"s.csv: row 1: box has zero or negative size"):
        load_annotations(path)
    write_coco(tmp_path / "s.json", {"a.png": [Box(1, 1, 1, 1, label="x")]})
    text = (tmp_path / "s.json").read_text().replace('"bbox": [1, 1, 1, 1]', f'"bbox": [1, 1, {w}, {h}]')
    (tmp_path / "s.json").write_text(text)
    with pytest.raises(ValueError, match=r"s.json: annotations\[0\]: box has zero or negative size"):
        load_annotations(tmp_path / "s.json")


def test_voc_inverted_corners(tmp_path):
    text = ("<annotation><filename>a.png</filename><object><name>c</name><bndbox>"
            "<xmin>10</xmin><ymin>1</ymin><xmax>5</xmax><ymax>20</ymax></bndbox></object></annotation>")
    (tmp_path / "v.xml").write_text(text)
    with pytest.raises(ValueError, match=r"v.xml: object 0: box has zero or negative size"):
        load_annotations(tmp_path / "v.xml")


@pytest.mark.parametrize("value", ["abc", "nan", "inf"])
def test_non_numeric_coordinates(tmp_path, value):
    (tmp_path / "n.csv").write_text(f"image,x,y,w,h\na.png,{value},1,2,3\n")
    with pytest.raises(ValueError, match=r"n.csv: row 1: `x` must be"):
        load_annotations(tmp_path / "n.csv")


def test_csv_wrong_column_count(tmp_path):
    (tmp_path / "c.csv").write_text("image,x,y,w,h\na.png,1,2,3\n")
    with pytest.raises(ValueError, match=r"c.csv: row 1 must have 5 or 6 columns"):
        load_annotations(tmp_path / "c.csv")


def test_coco_annotation_for_unknown_image(tmp_path):
    document = {"images": [{"id": 1, "file_name": "a.png"}],
                "annotations": [{"image_id": 9, "bbox": [0, 0, 1, 1]}]}
    (tmp_path / "u.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"refers to image id 9, which is not in 'images'"):
        load_annotations(tmp_path / "u.json")


def test_boxes_partly_outside_are_clipped_with_a_warning(tmp_path):
    annotations = {"a.png": [Box(-5, 10, 20, 20, label="c"), Box(190, 90, 20, 20, label="c"),
                             Box(5, 5, 5, 5, label="c")]}
    path = write_coco(tmp_path / "o.json", annotations, size=(200, 100))
    with pytest.warns(AnnotationWarning, match=r"o.json: clipped 2 box\(es\)"):
        loaded = load_annotations(path)
    assert loaded == {"a.png": [Box(0, 10, 15, 20, label="c"), Box(190, 90, 10, 10, label="c"),
                                Box(5, 5, 5, 5, label="c")]}


def test_boxes_inside_give_no_warning(tmp_path):
    path = write_coco(tmp_path / "i.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_annotations(path)


def test_box_wholly_outside_is_an_error(tmp_path):
    path = write_coco(tmp_path / "o.json", {"a.png": [Box(300, 10, 20, 20, label="c")]},
                      size=(200, 100))
    with pytest.raises(ValueError, match=r"o.json, image 'a.png': box .* lies outside the 200×100 image"):
        load_annotations(path)


def test_clip_to_image():
    boxes, clipped = clip_to_image([Box(-2, -2, 6, 6), Box(1, 1, 2, 2)], 3, 3)
    assert boxes == [Box(0, 0, 3, 3), Box(1, 1, 2, 2)]
    assert clipped == 1
    with pytest.raises(ValueError, match=r"here: box .* outside the 3×3 image"):
        clip_to_image([Box(3, 0, 1, 1)], 3, 3, source="here")


@pytest.mark.parametrize("where", ["images", "annotations", "category"])
def test_coco_ids_that_are_not_numbers_or_strings_name_the_file(tmp_path, where):
    document = {
        "images": [{"id": [1] if where == "images" else 1, "file_name": "a.png"}],
        "annotations": [{"image_id": 1, "bbox": [0, 0, 4, 4],
                         "category_id": {"x": 1} if where == "category" else 1}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    if where == "annotations":
        document["annotations"][0]["image_id"] = [1]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"bad\.json: .* must be an integer or a string"):
        load_annotations(path)
