"""``patternfind IMAGE [IMAGE ...] --filter F``: detect and report boxes."""

from __future__ import annotations

import argparse
import csv
import io as text_io
import json
import sys
import time
from pathlib import Path
from typing import Any

from patternfind.cli._common import (
    Parser,
    UsageError,
    add_detection_options,
    add_max_pixels,
    add_version,
    check_distinct,
    check_output_file,
    check_output_folder,
    detection_options,
    output_names,
)

__all__ = ["COMMANDS", "build_parser", "run"]

# The library (numpy, OpenCV, SciPy) is imported inside the functions that use
# it, so that building this parser (`patternfind --help`) stays instant.

EXAMPLES = """\
examples:
  patternfind samples/astronaut.png --filter samples/eye.npy
  patternfind samples/astronaut.png --filter samples/eye.npy \\
      --filter samples/eye_handmade.npy --threshold 0.6 --draw boxes.png
  patternfind samples/coins/top_left.png samples/coins/bottom.png \\
      --filter samples/coins/coin.npz --format json --output found.json
  patternfind samples/coins/top_left.png samples/coins/bottom.png \\
      --filter samples/coins/coin.npz --draw drawn/     # a folder: one picture per image
  patternfind samples/astronaut.png --filter samples/eye.npy --scales 1,1 --heatmap heat.png

Outputs never replace an input file, and their folders are checked before
the search starts. Images over 179 megapixels are refused before decoding
(--max-pixels N raises the limit). Add --debug to see the traceback of an
unexpected error.

sub-commands (each has its own --help):
  patternfind make-filter KIND --size N -o FILE     hand-crafted filter (eye, blob, edge, ...)
  patternfind crop IMAGE --box x,y,w,h -o FILE      filter cut out of an image
  patternfind evaluate --annotations FILE --filter F   precision, recall, AP
  patternfind compare --annotations FILE --filter A --filter B   side by side
  patternfind train ... -o FILE                     learn a filter
"""

FIELDS = ("image", "label", "x", "y", "w", "h", "score", "scale")
#: With a rotation search (``--angles``) rows also have the angle and the turned box's corners.
CORNER_FIELDS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")
ROTATED_FIELDS = (*FIELDS, "angle", *CORNER_FIELDS)


def build_parser() -> Parser:
    parser = Parser(
        prog="patternfind",
        description="Find patterns in images: slide filters over an image pyramid, keep the "
                    "peaks above a threshold, remove overlaps, and print the boxes "
                    "(x, y = top-left corner; w, h = size; input-image pixels).",
        epilog=EXAMPLES,
    )
    add_version(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to search")
    parser.add_argument("--filter", action="append", required=True, dest="filters",
                        metavar="F", help="filter file (.npy, .npz or an image); repeatable")
    add_detection_options(parser)
    parser.add_argument("--subpixel", action="store_true",
                        help="refine box positions to sub-pixel precision")
    parser.add_argument("--per-label", action="store_true",
                        help="let boxes of different filters overlap")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="threads to use (default: OpenCV's thread count)")
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=("table", "json", "csv", "coco"), default="table")
    output.add_argument("--output", "-o", type=Path, metavar="FILE",
                        help="write the results here instead of stdout")
    output.add_argument("--draw", type=Path, metavar="OUT.png|DIR",
                        help="write the image with boxes: OUT.png for one image, or a folder "
                             "(created if missing) of one picture per image")
    output.add_argument("--heatmap", type=Path, metavar="OUT.png|DIR",
                        help="write the best score per pixel, colour-mapped: OUT.png for one "
                             "image, or a folder (created if missing)")
    add_max_pixels(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from patternfind import io
    from patternfind.detection.detector import load_filters, scan
    from patternfind.show.draw import draw_detections, heatmap

    inputs = [*args.images, *args.filters]
    draw_paths = _picture_targets(args.draw, "draw", args.images, "detections", inputs)
    heatmap_paths = _picture_targets(args.heatmap, "heatmap", args.images, "heatmap", inputs)
    if args.output is not None:
        check_output_file(args.output, "--output", inputs)
        if args.format == "coco":
            check_output_file(_mapping_path(args.output), "--output (its id mapping)", inputs)
    check_distinct([*(draw_paths or []), *(heatmap_paths or []), args.output,
                    _mapping_path(args.output) if args.output and args.format == "coco" else None])
    filters = load_filters(args.filters)
    options = detection_options(args)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for index, image_path in enumerate(args.images):
        image = io.load_image(image_path)
        detections, level_maps = scan(
            image, filters, **options, subpixel=args.subpixel, per_label=args.per_label,
            workers=args.workers, keep_maps=args.heatmap is not None,
        )
        rows.extend(_row(image_path, d, rotated=args.angles is not None) for d in detections)
        if draw_paths is not None:
            _save_picture(draw_paths[index], draw_detections(image, detections))
        if heatmap_paths is not None:
            normalised = all((args.score or f.score or "ncc") != "dot" for f in filters) and all(
                f.features == "pixels" for f in filters)
            picture = heatmap(image.shape, level_maps, value_range=(-1, 1) if normalised else None)
            _save_picture(heatmap_paths[index], picture)
        del image, level_maps  # one image in memory at a time
    elapsed = time.perf_counter() - started
    args.filter_names = [f.name for f in filters]
    _write(_format(rows, args.format, args), args.output)
    if args.format == "table" or args.output is not None:
        print(_summary(rows, len(args.images), elapsed, args), file=sys.stderr
              if args.format != "table" else sys.stdout)
    return 0


def _row(image_path: str, detection: Any, *, rotated: bool) -> dict[str, Any]:
    """One output row; the angle and corners only with a rotation search."""
    row = {"image": image_path, **detection.to_dict()}
    if not rotated:
        row.pop("angle")
        return row
    row["corners"] = [list(corner) for corner in detection.corners]
    return row


def _picture_targets(target: Path | None, flag: str, images: list[str], kind: str,
                     inputs: list[str]) -> list[Path] | None:
    """Where ``--draw``/``--heatmap`` write each image's picture, checked before any work.

    A name with an image suffix is one file (one image only); an existing
    folder or a name without a suffix is a folder, created if missing (as
    ``evaluate --draw`` does), holding one distinctly named picture per image.
    """
    from patternfind import io

    if target is None:
        return None
    if target.suffix and target.suffix.lower() not in io.IMAGE_SUFFIXES and not target.is_dir():
        msg = f"--{flag} needs an image file name such as out.png, or a folder, got {target}"
        raise UsageError(msg)
    if target.suffix.lower() in io.IMAGE_SUFFIXES and not target.is_dir():
        if len(images) > 1:
            msg = (f"--{flag} {target} is one image file, but {len(images)} images are given: "
                   "give a folder (it is created if missing)")
            raise UsageError(msg)
        check_output_file(target, f"--{flag}", inputs)
        return [target]
    check_output_folder(target, f"--{flag}")
    paths = [target / name for name in output_names(images, f"_{kind}.png")]
    for path in paths:
        check_output_file(path, f"--{flag}", inputs, check_folder=False)
    return paths


def _save_picture(path: Path, picture: Any) -> None:
    from patternfind import io

    path.parent.mkdir(parents=True, exist_ok=True)
    io.save_image(path, picture)


def _mapping_path(output: Path) -> Path:
    """The COCO id mapping written beside ``--output``."""
    return output.with_name(output.stem + ".mapping.json")


def _format(rows: list[dict[str, Any]], kind: str, args: argparse.Namespace) -> str:
    if kind == "json":
        return json.dumps(rows, indent=2) + "\n"
    if kind == "csv":
        buffer = text_io.StringIO()
        rotated = args.angles is not None
        writer = csv.DictWriter(buffer, fieldnames=ROTATED_FIELDS if rotated else FIELDS,
                                lineterminator="\n")
        writer.writeheader()
        for row in rows:
            flat = {key: value for key, value in row.items() if key != "corners"}
            if rotated:
                flat.update(zip(CORNER_FIELDS, (v for corner in row["corners"] for v in corner),
                                strict=True))
            writer.writerow(flat)
        return buffer.getvalue()
    if kind == "coco":
        return _coco(rows, args)
    return _table(rows)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    rotated = "angle" in rows[0]
    header = f"{'image':<24} {'label':<14} {'x':>8} {'y':>8} {'w':>7} {'h':>7} {'score':>7} {'scale':>6}"
    lines = [header + (f" {'angle':>7}" if rotated else "")]
    for row in rows:
        lines.append(
            f"{_clip(str(row['image']), 24):<24} {_clip(row['label'], 14):<14} "
            f"{row['x']:8.1f} {row['y']:8.1f} {row['w']:7.1f} {row['h']:7.1f} "
            f"{row['score']:7.3f} {row['scale']:6.2f}"
            + (f" {row['angle']:7.2f}" if rotated else "")
        )
    return "\n".join(lines) + "\n"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _coco(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """COCO results (image_id, category_id, bbox, score); the id mapping goes beside it."""
    from patternfind.io import write_text

    image_ids = {path: index for index, path in enumerate(args.images, start=1)}
    labels = sorted(set(args.filter_names) | {row["label"] for row in rows})
    category_ids = {label: index for index, label in enumerate(labels, start=1)}
    results = [
        {
            "image_id": image_ids[row["image"]],
            "category_id": category_ids[row["label"]],
            "bbox": [row["x"], row["y"], row["w"], row["h"]],
            "score": row["score"],
        }
        for row in rows
    ]
    mapping = {
        "images": [{"id": i, "file_name": p} for p, i in image_ids.items()],
        "categories": [{"id": i, "name": name} for name, i in category_ids.items()],
    }
    if args.output is not None:
        mapping_path = _mapping_path(args.output)
        write_text(mapping_path, json.dumps(mapping, indent=2) + "\n")
        print(f"image and category ids: {mapping_path}", file=sys.stderr)
    else:
        print(f"# id mapping: {json.dumps(mapping)}", file=sys.stderr)
    return json.dumps(results, indent=2) + "\n"


def _write(text: str, output: Path | None) -> None:
    from patternfind.io import write_text

    if output is None:
        sys.stdout.write(text)
    else:
        write_text(output, text)


def _summary(rows: list[dict[str, Any]], image_count: int, elapsed: float,
             args: argparse.Namespace) -> str:
    images = "1 image" if image_count == 1 else f"{image_count} images"
    if not rows:
        return (f"no detections in {images} ({elapsed:.2f} s); "
                "a lower --threshold or wider --scales may find more")
    found = "1 detection" if len(rows) == 1 else f"{len(rows)} detections"
    where = f" written to {args.output}" if args.output is not None else ""
    return f"{found} in {images} ({elapsed:.2f} s){where}"


COMMANDS = {"detect": (build_parser, run)}
