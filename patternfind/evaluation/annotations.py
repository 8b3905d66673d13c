"""Ground-truth boxes from annotation files: COCO JSON, Pascal VOC XML, dlib imglab XML, CSV.

`load_annotations` returns ``{image key: [Box, ...]}``. The **key** is the
image path exactly as the annotation file writes it (COCO ``file_name``, VOC
``filename``, dlib ``file``, the CSV ``image`` column), so keys stay stable
whatever folder the program runs in. `image_paths` turns the keys into real
paths: a relative key is resolved against the image root, by default the
folder holding the annotation file (for a folder of VOC files, that folder).
Keys that are absolute or climb out of the root with ``..`` are refused
unless ``allow_outside_root=True``.

Boxes are ``(x, y, w, h)`` in image pixels, top-left corner and size
(`patternfind.Box`). Pascal VOC's 1-based inclusive corners are converted:
``x = xmin - 1, w = xmax - xmin + 1``.

Bad input raises ``ValueError`` naming the file and the problem:

- malformed JSON or XML, or content in none of the four formats;
- an annotation file with no images;
- the same image listed twice (two COCO ``images`` entries, two dlib
  ``<image>`` elements, two VOC files for one image);
- a box with zero or negative width or height, non-numeric or non-finite
  coordinates, or lying wholly outside its image.

Boxes *partly* outside the image are clipped to it, and one
`AnnotationWarning` per file says how many were clipped. The image size is
taken from the annotation file where it has one (COCO ``width``/``height``,
VOC ``<size>``); dlib and CSV files carry no size, so `image_paths` does not
read images to check it; `clip_to_image` does that for callers that have
the images at hand (the ``evaluate`` command).

An image listed with no boxes is valid: every detection there is a false
positive.

**Turned boxes** keep ``x, y, w, h`` upright and add ``Box.angle``, in
degrees counter-clockwise on screen about the box's centre (as
`patternfind.Detection`): a CSV ``angle`` column (the header must name it),
a COCO ``angle`` key, or a VOC ``<robndbox>`` as roLabelImg writes it
(``cx, cy, w, h`` and ``angle`` in radians, turning clockwise on screen:
its corners are the box's turned by −angle, so ``Box.angle = −degrees(angle)``).
A turned box is not clipped to its image; only its centre must lie inside.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from patternfind.io import write_text
from patternfind.structures import Box

__all__ = [
    "AnnotationWarning",
    "clip_to_image",
    "image_paths",
    "load_annotations",
    "save_annotations",
]

#: Category written by `save_annotations` for boxes whose label is None.
DEFAULT_CATEGORY = "object"


class AnnotationWarning(UserWarning):
    """Annotation boxes were changed on loading (clipped to their image)."""


def load_annotations(path: str | Path) -> dict[str, list[Box]]:
    """Read ground-truth boxes, detecting the format from the content.

    Parameters
    ----------
    path : str or Path
        One of:

        - a COCO JSON file (``images``, ``annotations`` and optionally
          ``categories``). The category name becomes the label, ``iscrowd``
          or a non-zero ``ignore`` field becomes ``Box.ignore``;
        - a Pascal VOC XML file, or a folder of them (``*.xml``).
          ``difficult`` becomes ``Box.ignore``;
        - a dlib imglab XML file (``<dataset><images><image file=...>``
          ``<box top left width height ignore/>``); a ``<label>`` child is the label;
        - a CSV file with rows ``image,x,y,w,h[,label]``, with or without that
          header. A row with only the image name (``x,y,w,h`` empty) lists an
          image with no boxes. With a header, an ``angle`` column (degrees)
          may follow, e.g. ``image,x,y,w,h,label,angle``.

    Returns
    -------
    dict of str to list of Box
        Image key (the path as written in the file) to its boxes, in file
        order. Images listed without boxes map to an empty list.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is malformed, in an unknown format, lists no image or the
        same image twice, or has an invalid box (see the module docstring).
    """
    path = Path(path)
    if path.is_dir():
        return _load_voc_folder(path)
    if not path.is_file():
        msg = f"annotation file not found: {path}"
        raise FileNotFoundError(msg)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        msg = f"{path}: unknown annotation format (not a text file)"
        raise ValueError(msg) from None
    start = text.lstrip()[:1]
    if start in ("{", "["):
        return _load_coco(path, text)
    if start == "<":
        root = _parse_xml(path, text)
        if root.tag == "annotation":
            return _finish(path, [_voc_image(path, root)])
        if root.tag == "dataset":
            return _load_dlib(path, root)
        msg = (
            f"{path}: unknown XML annotation format (root element <{root.tag}>; "
            "expected Pascal VOC <annotation> or dlib <dataset>)"
        )
        raise ValueError(msg)
    return _load_csv(path, text)


def save_annotations(
    annotations: Mapping[str, Sequence[Box]],
    path: str | Path,
    *,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> None:
    """Write annotations as COCO JSON, atomically.

    Parameters
    ----------
    annotations : mapping of str to sequence of Box
        As returned by `load_annotations`. Keys are written as ``file_name``.
    path : str or Path
        The JSON file to write.
    image_sizes : mapping of str to (width, height), optional
        Written as each image's ``width`` and ``height`` (COCO requires them;
        without a size they are omitted).

    Notes
    -----
    Categories are the sorted distinct labels, with ids from 1; boxes whose
    label is None get the category ``"object"``. ``Box.ignore`` is written as
    both ``iscrowd`` and ``ignore``, so `load_annotations` reads it back.
    """
    if not isinstance(annotations, Mapping):
        msg = f"`annotations` must be a mapping of image to boxes, got {type(annotations).__name__}"
        raise TypeError(msg)
    image_sizes = {} if image_sizes is None else image_sizes
    for key, boxes in annotations.items():
        for box in boxes:
            if not isinstance(box, Box):
                msg = f"`annotations[{key!r}]` must hold Box objects, got {type(box).__name__}"
                raise TypeError(msg)
    labels = sorted({_label_of(box) for boxes in annotations.values() for box in boxes})
    category_ids = {label: number for number, label in enumerate(labels, start=1)}
    images: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for image_id, (key, boxes) in enumerate(annotations.items(), start=1):
        image: dict[str, Any] = {"id": image_id, "file_name": str(key)}
        if key in image_sizes:
            width, height = image_sizes[key]
            image["width"], image["height"] = int(width), int(height)
        images.append(image)
        for box in boxes:
            records.append({
                "id": len(records) + 1,
                "image_id": image_id,
                "category_id": category_ids[_label_of(box)],
                "bbox": [box.x, box.y, box.w, box.h],
                "area": box.w * box.h,
                "iscrowd": int(box.ignore),
                "ignore": int(box.ignore),
                **({} if box.angle is None else {"angle": box.angle}),
            })
    document = {
        "images": images,
        "annotations": records,
        "categories": [{"id": number, "name": label} for label, number in category_ids.items()],
    }
    write_text(path, json.dumps(document, indent=1) + "\n")


def image_paths(annotations: Iterable[str], annotation_path: str | Path, *,
                check: bool = True, image_root: str | Path | None = None,
                allow_outside_root: bool = False) -> dict[str, Path]:
    """Resolve image keys to paths under an image root (default: the annotation file's folder).

    Parameters
    ----------
    annotations : mapping or iterable of str
        Image keys, e.g. the dict from `load_annotations`.
    annotation_path : str or Path
        The annotation file (or VOC folder) the keys came from.
    check : bool
        Raise if any image file is missing.
    image_root : str or Path, optional
        The folder relative keys are resolved against, and that every image
        must lie in. Default: the folder holding the annotation file (for a
        folder of VOC files, that folder).
    allow_outside_root : bool
        Accept keys that are absolute or climb out of ``image_root`` with
        ``..``. Off by default: an annotation file is data, and should not be
        able to make the program read ``/etc/passwd`` or ``../../secret``.

    Returns
    -------
    dict of str to Path
        Key to image path.

    Raises
    ------
    ValueError
        If a key leaves ``image_root`` (unless ``allow_outside_root``), or if
        ``check`` and some images do not exist; the message names the
        annotation file and the first offending images.
    """
    annotation_path = Path(annotation_path)
    if image_root is None:
        base = annotation_path if annotation_path.is_dir() else annotation_path.parent
    else:
        base = Path(image_root)
    paths = {key: base / key for key in annotations}  # base / absolute key == key
    if not allow_outside_root:
        # Lexical check (no symlinks followed): it judges what the file says,
        # and a folder of symlinked images the user made stays usable.
        root = os.path.abspath(base)
        outside = [key for key, file in paths.items()
                   if os.path.commonpath([root, os.path.abspath(file)]) != root]
        if outside:
            more = f" and {len(outside) - 1} more" if len(outside) > 1 else ""
            msg = (
                f"{annotation_path}: image path {outside[0]!r}{more} lies outside the image "
                f"root {base} (absolute, or climbing out with '..'); pass --allow-outside-root "
                "(allow_outside_root=True) if you trust the file, or set --image-root"
            )
            raise ValueError(msg)
    if check:
        missing = [key for key, file in paths.items() if not file.is_file()]
        if missing:
            shown = ", ".join(repr(key) for key in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            msg = (
                f"{annotation_path} references {len(missing)} missing image(s): "
                f"{shown}{more} (looked in {base})"
            )
            raise ValueError(msg)
    return paths


def clip_to_image(boxes: Sequence[Box], width: int, height: int, *,
                  source: str = "annotations") -> tuple[list[Box], int]:
    """Clip boxes to a ``width`` × ``height`` image.

    Parameters
    ----------
    boxes : sequence of Box
    width, height : int
        Image size in pixels.
    source : str
        Named in the error message (e.g. ``"labels.csv, image a.png"``).

    Returns
    -------
    boxes : list of Box
        The boxes, clipped.
    clipped : int
        How many boxes were changed.

    Raises
    ------
    ValueError
        If a box lies wholly outside the image.
    """
    result, clipped = [], 0
    for box in boxes:
        if box.angle is not None:  # a turned box is not clipped: its centre must be inside
            centre_x, centre_y = box.x + box.w / 2, box.y + box.h / 2
            if not (0 <= centre_x <= width and 0 <= centre_y <= height):
                msg = (
                    f"{source}: turned box (x={box.x:g}, y={box.y:g}, w={box.w:g}, h={box.h:g}, "
                    f"angle={box.angle:g}) has its centre outside the {width}×{height} image"
                )
                raise ValueError(msg)
            result.append(box)
            continue
        x0, y0 = max(box.x, 0.0), max(box.y, 0.0)
        x1, y1 = min(box.x + box.w, float(width)), min(box.y + box.h, float(height))
        if x1 <= x0 or y1 <= y0:
            msg = (
                f"{source}: box (x={box.x:g}, y={box.y:g}, w={box.w:g}, h={box.h:g}) "
                f"lies outside the {width}×{height} image"
            )
            raise ValueError(msg)
        if (x0, y0, x1, y1) != box.xyxy:
            box = Box(x0, y0, x1 - x0, y1 - y0, label=box.label, ignore=box.ignore)
            clipped += 1
        result.append(box)
    return result, clipped


# ---------------------------------------------------------------- shared helpers


def _label_of(box: Box) -> str:
    return DEFAULT_CATEGORY if box.label is None else str(box.label)


def _number(path: Path, where: str, name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        msg = f"{path}: {where}: `{name}` must be a number, got {value!r}"
        raise ValueError(msg) from None
    if not math.isfinite(number):
        msg = f"{path}: {where}: `{name}` must be finite, got {value!r}"
        raise ValueError(msg)
    return number


def _box(path: Path, where: str, x: Any, y: Any, w: Any, h: Any, *,
         label: str | None = None, ignore: bool = False, angle: Any = None) -> Box:
    x, y = _number(path, where, "x", x), _number(path, where, "y", y)
    w, h = _number(path, where, "w", w), _number(path, where, "h", h)
    if w <= 0 or h <= 0:
        msg = f"{path}: {where}: box has zero or negative size (w={w:g}, h={h:g})"
        raise ValueError(msg)
    turn = None if angle is None else _number(path, where, "angle", angle)
    return Box(x, y, w, h, label=label, ignore=bool(ignore), angle=turn)


def _finish(path: Path, entries: Iterable[tuple[str, list[Box], tuple[int, int] | None]]
            ) -> dict[str, list[Box]]:
    """Check for duplicate and missing images, clip to known sizes, warn once."""
    annotations: dict[str, list[Box]] = {}
    clipped_total = 0
    for key, boxes, size in entries:
        if key in annotations:
            msg = f"{path}: image {key!r} is listed more than once"
            raise ValueError(msg)
        if size is not None:
            boxes, clipped = clip_to_image(boxes, *size, source=f"{path}, image {key!r}")
            clipped_total += clipped
        annotations[key] = boxes
    if not annotations:
        msg = f"{path}: the annotation file lists no images"
        raise ValueError(msg)
    if clipped_total:
        warnings.warn(
            f"{path}: clipped {clipped_total} box(es) that reached outside their image",
            AnnotationWarning,
            stacklevel=3,
        )
    return annotations


# ---------------------------------------------------------------- COCO


def _load_coco(path: Path, text: str) -> dict[str, list[Box]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        msg = f"{path}: malformed JSON: {error}"
        raise ValueError(msg) from None
    except RecursionError:
        msg = f"{path}: malformed JSON: nested too deeply to be an annotation file"
        raise ValueError(msg) from None
    if isinstance(document, list):
        msg = (
            f"{path}: a JSON list is not an annotation file (COCO annotations are an "
            "object with 'images' and 'annotations'; a list looks like detection results)"
        )
        raise ValueError(msg)  # noqa: TRY004 (bad file content, not a bad argument)
    missing = [key for key in ("images", "annotations") if key not in document]
    if missing:
        msg = f"{path}: not a COCO annotation file: no {' or '.join(repr(k) for k in missing)} key"
        raise ValueError(msg)
    images, records = document["images"], document["annotations"]
    if not isinstance(images, list) or not isinstance(records, list):
        msg = f"{path}: COCO 'images' and 'annotations' must be lists"
        raise ValueError(msg)  # noqa: TRY004 (bad file content, not a bad argument)
    categories = {}
    for number, category in enumerate(document.get("categories") or []):
        if isinstance(category, dict) and "id" in category:
            _check_id(path, f"categories[{number}]", "id", category["id"])
            categories[category["id"]] = str(category.get("name", category["id"]))
    by_id: dict[Any, tuple[str, tuple[int, int] | None]] = {}
    for number, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            msg = f"{path}: images[{number}] needs an 'id' and a 'file_name'"
            raise ValueError(msg)
        _check_id(path, f"images[{number}]", "id", image["id"])
        if image["id"] in by_id:
            msg = f"{path}: image id {image['id']!r} is listed more than once"
            raise ValueError(msg)
        size = None
        if image.get("width") is not None and image.get("height") is not None:
            where = f"image {image['file_name']!r}"
            size = (int(_number(path, where, "width", image["width"])),
                    int(_number(path, where, "height", image["height"])))
        by_id[image["id"]] = (str(image["file_name"]), size)
    boxes: dict[Any, list[Box]] = {image_id: [] for image_id in by_id}
    for number, record in enumerate(records):
        where = f"annotations[{number}]"
        if not isinstance(record, dict) or "bbox" not in record or "image_id" not in record:
            msg = f"{path}: {where} needs an 'image_id' and a 'bbox'"
            raise ValueError(msg)
        _check_id(path, where, "image_id", record["image_id"])
        if record.get("category_id") is not None:
            _check_id(path, where, "category_id", record["category_id"])
        if record["image_id"] not in by_id:
            msg = f"{path}: {where} refers to image id {record['image_id']!r}, which is not in 'images'"
            raise ValueError(msg)
        bbox = record["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            msg = f"{path}: {where}: 'bbox' must be [x, y, w, h], got {bbox!r}"
            raise ValueError(msg)
        category = record.get("category_id")
        label = None if category is None else categories.get(category, str(category))
        ignore = bool(record.get("iscrowd", 0)) or bool(record.get("ignore", 0))
        boxes[record["image_id"]].append(_box(path, where, *bbox, label=label, ignore=ignore,
                                              angle=record.get("angle")))
    return _finish(path, [(name, boxes[image_id], size) for image_id, (name, size) in by_id.items()])


def _check_id(path: Path, where: str, key: str, value: Any) -> None:
    """COCO ids are integers (strings are tolerated); anything else is a broken file."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        msg = f"{path}: {where}: {key!r} must be an integer or a string, got {value!r}"
        raise ValueError(msg)  # noqa: TRY004 (bad file content, not a bad argument)


# ---------------------------------------------------------------- XML: VOC and dlib


def _parse_xml(path: Path, text: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        msg = f"{path}: malformed XML: {error}"
        raise ValueError(msg) from None


def _voc_image(path: Path, root: ElementTree.Element) -> tuple[str, list[Box], tuple[int, int] | None]:
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        msg = f"{path}: Pascal VOC annotation has no <filename>"
        raise ValueError(msg)
    size = None
    size_element = root.find("size")
    if size_element is not None:
        width, height = size_element.findtext("width"), size_element.findtext("height")
        if width and height:
            size = (int(_number(path, "<size>", "width", width)),
                    int(_number(path, "<size>", "height", height)))
            if size[0] <= 0 or size[1] <= 0:
                size = None  # some tools write 0 when they do not know the size
    boxes = []
    for number, element in enumerate(root.iter("object")):
        where = f"object {number}"
        label = (element.findtext("name") or "").strip() or None
        difficult = (element.findtext("difficult") or "0").strip() not in ("0", "", "false")
        turned = element.find("robndbox")
        if turned is not None:
            boxes.append(_robndbox(path, where, turned, label=label, ignore=difficult))
            continue
        corners = element.find("bndbox")
        if corners is None:
            msg = f"{path}: {where} has no <bndbox> or <robndbox>"
            raise ValueError(msg)
        xmin, ymin, xmax, ymax = (
            _number(path, where, key, corners.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax")
        )
        # VOC corners are 1-based and inclusive
        boxes.append(_box(path, where, xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1,
                          label=label, ignore=difficult))
    return filename, boxes, size


def _robndbox(path: Path, where: str, element: ElementTree.Element, *,
              label: str | None, ignore: bool) -> Box:
    """roLabelImg's turned box: centre, size and a clockwise angle in radians."""
    centre_x, centre_y, w, h, radians = (
        _number(path, where, key, element.findtext(key)) for key in ("cx", "cy", "w", "h", "angle")
    )
    angle = -math.degrees(radians) % 360  # roLabelImg turns clockwise on screen, we counter-clockwise
    return _box(path, where, centre_x - w / 2, centre_y - h / 2, w, h, label=label, ignore=ignore,
                angle=angle)


def _load_voc_folder(folder: Path) -> dict[str, list[Box]]:
    entries = []
    sources: dict[str, Path] = {}
    for file in sorted(folder.glob("*.xml")):
        text = file.read_bytes().decode("utf-8-sig", errors="replace")
        root = _parse_xml(file, text)
        if root.tag != "annotation":
            msg = f"{file}: not a Pascal VOC annotation (root element <{root.tag}>)"
            raise ValueError(msg)
        entry = _voc_image(file, root)
        if entry[0] in sources:
            msg = f"{folder}: image {entry[0]!r} is annotated in both {sources[entry[0]].name} and {file.name}"
            raise ValueError(msg)
        sources[entry[0]] = file
        entries.append(entry)
    if not entries:
        msg = f"{folder}: the folder holds no Pascal VOC .xml files"
        raise ValueError(msg)
    return _finish(folder, entries)


def _load_dlib(path: Path, root: ElementTree.Element) -> dict[str, list[Box]]:
    entries = []
    for number, image in enumerate(root.iter("image")):
        file = image.get("file")
        if not file:
            msg = f"{path}: <image> number {number} has no 'file' attribute"
            raise ValueError(msg)
        boxes = []
        for box_number, element in enumerate(image.iter("box")):
            where = f"image {file!r}, box {box_number}"
            values = {key: element.get(key) for key in ("left", "top", "width", "height")}
            for key, value in values.items():
                if value is None:
                    msg = f"{path}: {where} has no '{key}' attribute"
                    raise ValueError(msg)
            label = (element.findtext("label") or "").strip() or None
            ignore = element.get("ignore", "0").strip() not in ("0", "", "false")
            boxes.append(_box(path, where, values["left"], values["top"], values["width"],
                              values["height"], label=label, ignore=ignore))
        entries.append((file, boxes, None))
    return _finish(path, entries)


# ---------------------------------------------------------------- CSV


_CSV_HEADER = ("image", "x", "y", "w", "h")


def _load_csv(path: Path, text: str) -> dict[str, list[Box]]:
    rows = [row for row in csv.reader(_io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        msg = f"{path}: the annotation file is empty"
        raise ValueError(msg)
    first = [cell.strip().lower() for cell in rows[0]]
    angle_column = None
    if tuple(first[:5]) == _CSV_HEADER:
        rows = rows[1:]
        extra = first[5:]
        if "angle" in extra:
            angle_column = 5 + extra.index("angle")
            label_column = 5 + extra.index("label") if "label" in extra else None
            return _load_csv_turned(path, rows, angle_column, label_column)
    elif len(first) < 5 or not _is_number(first[1]):
        msg = (
            f"{path}: unknown annotation format (expected COCO JSON, Pascal VOC XML, "
            "dlib XML, or CSV rows image,x,y,w,h[,label])"
        )
        raise ValueError(msg)
    boxes: dict[str, list[Box]] = {}
    for where, cells, image_boxes in _csv_box_rows(path, rows, boxes):
        if len(cells) not in (5, 6):
            msg = f"{path}: {where} must have 5 or 6 columns (image,x,y,w,h[,label]), got {len(cells)}"
            raise ValueError(msg)
        label = cells[5] or None if len(cells) == 6 else None
        image_boxes.append(_box(path, where, *cells[1:5], label=label))
    return _finish(path, [(key, value, None) for key, value in boxes.items()])


def _csv_box_rows(path: Path, rows: list[list[str]], boxes: dict[str, list[Box]]
                  ) -> Iterator[tuple[str, list[str], list[Box]]]:
    """``(where, cells, that image's box list)`` for each CSV row that holds a box.

    Every image named gets an entry in ``boxes``, also when its row has no box.
    """
    for number, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        where = f"row {number}"
        if not cells[0]:
            msg = f"{path}: {where} has no image name"
            raise ValueError(msg)
        image_boxes = boxes.setdefault(cells[0], [])
        if len(cells) == 1 or not any(cells[1:]):
            continue  # an image with no boxes
        yield where, cells, image_boxes


def _load_csv_turned(path: Path, rows: list[list[str]], angle_column: int,
                     label_column: int | None) -> dict[str, list[Box]]:
    """CSV rows whose header names an ``angle`` column (and maybe ``label``)."""
    width = 1 + max(angle_column, label_column or 0)
    boxes: dict[str, list[Box]] = {}
    for where, cells, image_boxes in _csv_box_rows(path, rows, boxes):
        if len(cells) != width:
            msg = f"{path}: {where} must have {width} columns like the header, got {len(cells)}"
            raise ValueError(msg)
        label = (cells[label_column] or None) if label_column is not None else None
        angle = cells[angle_column] or None  # an empty angle: an upright box
        image_boxes.append(_box(path, where, *cells[1:5], label=label, angle=angle))
    return _finish(path, [(key, value, None) for key, value in boxes.items()])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
