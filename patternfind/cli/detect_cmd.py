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
    add_version,
    detection_options,
)

__all__ = ["COMMANDS", "build_parser", "run"]

# The library (numpy, OpenCV, SciPy) is imported inside the functions that use
# it, so that building this parser (`patternfind --help`) stays instant.

EXAMPLES = """\
examples:
  patternfind samples/astronaut.png --filter samples/eye.npy
  patternfind photo.jpg --filter eye.npy --filter mouth.npz --threshold 0.6 --draw boxes.png
  patternfind a.png b.png --filter part.npy --format json --output found.json
  patternfind photo.png --filter eye.npy --scales 1,1 --heatmap heat.png

sub-commands (each has its own --help):
  patternfind make-filter KIND --size N -o FILE     hand-crafted filter (eye, blob, edge, ...)
  patternfind crop IMAGE --box x,y,w,h -o FILE      filter cut out of an image
  patternfind evaluate --annotations FILE --filter F   precision, recall, AP
  patternfind compare --annotations FILE --filter A --filter B   side by side
  patternfind train ... -o FILE                     learn a filter
"""

FIELDS = ("image", "label", "x", "y", "w", "h", "score", "scale")


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
    output.add_argument("--draw", type=Path, metavar="OUT.png",
                        help="write the image with boxes (a folder when several images)")
    output.add_argument("--heatmap", type=Path, metavar="OUT.png",
                        help="write the best score per pixel, colour-mapped "
                             "(a folder when several images)")
    return parser


def run(args: argparse.Namespace) -> int:
    from patternfind import io
    from patternfind.detection.detector import load_filters, scan
    from patternfind.show.draw import draw_detections, heatmap

    filters = load_filters(args.filters)
    options = detection_options(args)
    for flag in ("draw", "heatmap"):
        _check_picture_target(getattr(args, flag), flag, len(args.images))
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for image_path in args.images:
        image = io.load_image(image_path)
        detections, level_maps = scan(
            image, filters, **options, subpixel=args.subpixel, per_label=args.per_label,
            workers=args.workers, keep_maps=args.heatmap is not None,
        )
        rows.extend({"image": image_path, **d.to_dict()} for d in detections)
        if args.draw is not None:
            io.save_image(_picture_path(args.draw, image_path, "detections"),
                          draw_detections(image, detections))
        if args.heatmap is not None:
            normalised = all((args.score or f.score or "ncc") != "dot" for f in filters) and all(
                f.features == "pixels" for f in filters)
            picture = heatmap(image.shape, level_maps, value_range=(-1, 1) if normalised else None)
            io.save_image(_picture_path(args.heatmap, image_path, "heatmap"), picture)
    elapsed = time.perf_counter() - started
    args.filter_names = [f.name for f in filters]
    _write(_format(rows, args.format, args), args.output)
    if args.format == "table" or args.output is not None:
        print(_summary(rows, len(args.images), elapsed, args), file=sys.stderr
              if args.format != "table" else sys.stdout)
    return 0


def _check_picture_target(target: Path | None, flag: str, image_count: int) -> None:
    from patternfind.io import IMAGE_SUFFIXES

    if target is None:
        return
    if image_count > 1 and not target.is_dir():
        msg = f"--{flag} must be an existing folder when several images are given, got {target}"
        raise UsageError(msg)
    if image_count == 1 and target.suffix.lower() not in IMAGE_SUFFIXES and not target.is_dir():
        msg = f"--{flag} needs an image file name such as out.png, got {target}"
        raise UsageError(msg)


def _picture_path(target: Path, image_path: str, kind: str) -> Path:
    return target / f"{Path(image_path).stem}_{kind}.png" if target.is_dir() else target


def _format(rows: list[dict[str, Any]], kind: str, args: argparse.Namespace) -> str:
    if kind == "json":
        return json.dumps(rows, indent=2) + "\n"
    if kind == "csv":
        buffer = text_io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    if kind == "coco":
        return _coco(rows, args)
    return _table(rows)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    header = f"{'image':<24} {'label':<14} {'x':>8} {'y':>8} {'w':>7} {'h':>7} {'score':>7} {'scale':>6}"
    lines = [header]
    for row in rows:
        lines.append(
            f"{_clip(str(row['image']), 24):<24} {_clip(row['label'], 14):<14} "
            f"{row['x']:8.1f} {row['y']:8.1f} {row['w']:7.1f} {row['h']:7.1f} "
            f"{row['score']:7.3f} {row['scale']:6.2f}"
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
        mapping_path = args.output.with_name(args.output.stem + ".mapping.json")
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
