"""``patternfind evaluate`` and ``patternfind compare``: score filters on labelled images."""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from patternfind.cli._common import (
    Parser,
    UsageError,
    add_detection_options,
    add_max_pixels,
    add_version,
    check_output_file,
    check_output_folder,
    dask_cluster,
    detection_options,
    output_names,
    positive_jobs,
)

__all__ = [
    "COMMANDS", "build_compare_parser", "build_evaluate_parser", "run_compare", "run_evaluate",
]

EVALUATE_EXAMPLES = """\
examples:
  patternfind evaluate --annotations samples/coins/coins.json --filter samples/coins/coin.npz
  patternfind evaluate --annotations samples/coins/coins.json --filter samples/coins/coin.npz \\
      --threshold 0.6 samples/coins/bottom.png samples/coins/top_left.png
  patternfind evaluate --annotations samples/coins/coins.json --filter samples/coins/disc.npz \\
      --format json
  patternfind evaluate --annotations samples/coins/coins.json --filter samples/coins/coin.npz \\
      --draw out/

Annotations: COCO JSON, Pascal VOC XML (a file or a folder), dlib imglab XML,
or CSV rows image,x,y,w,h[,label]; the format is read from the content. Image
paths in the file are relative to the file (or to --image-root), and may not
leave that folder unless --allow-outside-root is given. --draw writes into a
folder, created if missing; true positives are drawn green, false positives
red, missed boxes blue.
"""

COMPARE_EXAMPLES = """\
examples:
  patternfind compare --annotations samples/coins/coins.json \\
      --filter samples/coins/coin.npz --filter samples/coins/disc.npz
  patternfind compare --annotations samples/coins/coins.json \\
      --filter samples/coins/coin.npz --filter samples/coins/disc.npz --report report.png
  patternfind compare --annotations samples/coins/coins.json \\
      --filter samples/coins/coin.npz --filter samples/coins/disc.npz --report report.html
  patternfind compare --annotations samples/coins/coins.json \\
      --filter samples/coins/coin.npz --filter samples/coins/disc.npz --format json
  patternfind compare --annotations samples/faces/test.csv --filter samples/faces/face.npz \\
      --filter samples/faces/mean_face.npz --scales 0.5,2.5 --rank-threshold -3 --rank-threshold 0

Every filter runs on the same images with the same detection options.
P, R and F1 are at each filter's threshold; AP is over all its detections
(above its threshold, or above --rank-threshold when given).
"""


def _add_common(parser: Parser) -> None:
    parser.add_argument("--annotations", required=True, metavar="FILE",
                        help="ground truth: COCO JSON, VOC XML (file or folder), dlib XML or CSV")
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="images to evaluate on (default: every image the annotations list)")
    parser.add_argument("--iou", type=float, default=0.5,
                        help="overlap a detection needs with a true box to count (default 0.5)")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="output on stdout (default table)")
    parser.add_argument("--image-root", metavar="DIR", default=None,
                        help="folder the image paths in the annotations are relative to, and "
                             "that they may not leave (default: the annotation file's folder)")
    parser.add_argument("--allow-outside-root", action="store_true",
                        help="accept image paths in the annotations that are absolute or "
                             "climb out of the image root with '..'")
    add_detection_options(parser)
    add_max_pixels(parser)
    parser.add_argument("--jobs", type=positive_jobs, default=None, metavar="N",
                        help="worker processes for the detection (default: this process only)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="detect on a Dask cluster (tcp://host:8786, or 'local'); "
                             'needs pip install "patternfind[dask]"')
    add_version(parser)


def build_evaluate_parser() -> Parser:
    """Parser of ``patternfind evaluate``."""
    parser = Parser(prog="patternfind evaluate",
                    description="Detect with one filter on labelled images and print "
                                "precision, recall, F1, AP and the counts.",
                    epilog=EVALUATE_EXAMPLES)
    parser.add_argument("--filter", required=True, metavar="F",
                        help="filter file (.npy, .npz or an image)")
    parser.add_argument("--draw", metavar="DIR",
                        help="write each image with true positives, false positives and misses "
                             "into this folder (created if missing)")
    _add_common(parser)
    parser.set_defaults(prog=parser.prog)
    return parser


def build_compare_parser() -> Parser:
    """Parser of ``patternfind compare``."""
    parser = Parser(prog="patternfind compare",
                    description="Run several filters on the same labelled images and print "
                                "one table: filter, kind, P, R, F1, AP, time per image.",
                    epilog=COMPARE_EXAMPLES)
    parser.add_argument("--filter", required=True, action="append", metavar="F", dest="filters",
                        help="a filter file; give --filter two or more times")
    parser.add_argument("--rank-threshold", action="append", type=float, metavar="T",
                        dest="rank_thresholds",
                        help="rank detections down to score T for AP and the PR curve, while "
                             "P, R and F1 stay at the filter's threshold; give it once per "
                             "--filter, in the same order (default: each filter's threshold)")
    parser.add_argument("--report", metavar="FILE",
                        help="write a one-page report (.png or .html): filters, PR curves, "
                             "detections on an example image")
    _add_common(parser)
    parser.set_defaults(prog=parser.prog)
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``patternfind evaluate``; return the exit status."""
    from patternfind.io import load_filter

    sources = _sources(args)
    draw_paths = None
    if args.draw is not None:
        folder = Path(args.draw)
        check_output_folder(folder, "--draw")
        draw_paths = dict(zip(sources, (folder / name for name in output_names(
            list(sources), ".png")), strict=True))
        inputs = [*sources.values(), args.filter, args.annotations]
        for path in draw_paths.values():
            check_output_file(path, "--draw", inputs, check_folder=False)
    filter_ = load_filter(args.filter)
    [evaluation], pixels = _run(args, [filter_], sources)
    if args.format == "json":
        summary = {**evaluation.summary(), "detect_options": detection_options(args)}
        print(json.dumps(summary, indent=1, allow_nan=False))
    else:
        print(_evaluation_table(evaluation))
    if draw_paths is not None:
        _draw(Path(args.draw), draw_paths, evaluation, pixels)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Run ``patternfind compare``; return the exit status."""
    from patternfind.io import load_filter

    if args.report is not None and Path(args.report).suffix.lower() not in (".png", ".html", ".htm"):
        msg = f"--report {args.report}: use a .png or .html file"
        raise UsageError(msg)
    if args.report is not None:
        _require_matplotlib()
    if args.rank_thresholds is not None and len(args.rank_thresholds) != len(args.filters):
        msg = (f"--rank-threshold must be given once per --filter ({len(args.filters)}), "
               f"got {len(args.rank_thresholds)}")
        raise UsageError(msg)
    sources = _sources(args)
    if args.report is not None:
        check_output_file(Path(args.report), "--report",
                          [*sources.values(), *args.filters, args.annotations])
    filters = [load_filter(path) for path in args.filters]
    evaluations, pixels = _run(args, filters, sources)
    if args.format == "json":
        options = detection_options(args)
        summaries = [{**e.summary(), "detect_options": options} for e in evaluations]
        print(json.dumps(summaries, indent=1, allow_nan=False))
    else:
        print(_compare_table(evaluations))
    if args.report is not None:
        from patternfind.show.plot import write_report

        example = write_report(args.report, evaluations, filters, pixels, score=args.score,
                               title=f"patternfind compare on {Path(args.annotations).name}")
        if args.format == "table":
            print(f"report written to {args.report} (example image {example})")
    return 0


def _require_matplotlib() -> None:
    """Fail before the comparison runs, not after it, when the report cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        msg = '--report needs matplotlib, which is not installed: pip install "patternfind[plot]"'
        raise UsageError(msg) from None


def _sources(args: argparse.Namespace) -> dict[str, Path]:
    """Annotation key -> image path of the images to run on (checked, nothing decoded)."""
    from patternfind.evaluation.annotations import AnnotationWarning, image_paths, load_annotations

    if not 0 < args.iou <= 1:
        msg = f"--iou must be in (0, 1], got {args.iou:g}"
        raise UsageError(msg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnnotationWarning)
        args.loaded_annotations = load_annotations(args.annotations)
    _print_warnings(args, caught)
    annotations = args.loaded_annotations
    if args.images:
        return _select_images(args, annotations)
    return image_paths(annotations, args.annotations, image_root=args.image_root,
                       allow_outside_root=args.allow_outside_root)


def _print_warnings(args: argparse.Namespace, caught: list[warnings.WarningMessage]) -> None:
    for warning in caught:  # one line each, not Python's two-line warning format
        print(f"{args.prog}: warning: {warning.message}", file=sys.stderr)


def _run(args: argparse.Namespace, filters: list[Any], sources: dict[str, Path]
         ) -> tuple[list[Any], Any]:
    """Compare the filters on the images, decoding one image at a time."""
    from patternfind.evaluation.annotations import AnnotationWarning
    from patternfind.evaluation.comparison import compare, load_labelled_images

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnnotationWarning)
        ground_truth, pixels = load_labelled_images(args.loaded_annotations, images=sources)
    _print_warnings(args, caught)
    with dask_cluster(args.scheduler, args.jobs) as client:
        search = None
        if client is not None or (args.jobs or 1) > 1:
            from patternfind.batch import search_images

            search = functools.partial(search_images, jobs=args.jobs, client=client)
        evaluations = compare(filters, ground_truth, images=pixels, iou=args.iou,
                              rank_thresholds=getattr(args, "rank_thresholds", None),
                              search=search, **detection_options(args))
    return evaluations, pixels


def _select_images(args: argparse.Namespace, annotations: dict[str, Any]) -> dict[str, Path]:
    """Map image paths from the command line to annotation keys."""
    from patternfind.evaluation.annotations import image_paths

    known = {path.resolve(): key
             for key, path in image_paths(annotations, args.annotations, check=False,
                                          image_root=args.image_root,
                                          allow_outside_root=args.allow_outside_root).items()}
    selected = {}
    for image in args.images:
        path = Path(image)
        if not path.is_file():
            msg = f"image file not found: {image}"
            raise UsageError(msg)
        key = known.get(path.resolve())
        if key is None:
            msg = f"image {image} is not listed in the annotations {args.annotations}"
            raise UsageError(msg)
        selected[key] = path
    return selected


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _format_rows(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    )


def _evaluation_table(evaluation: Any) -> str:
    rows = [["image", "TP", "FP", "FN"]]
    for key, image in evaluation.images.items():
        rows.append([key, str(image.true_positives), str(image.false_positives),
                     str(image.false_negatives)])
    rows.append(["total", str(evaluation.true_positives), str(evaluation.false_positives),
                 str(evaluation.false_negatives)])
    summary = (
        f"filter {evaluation.name} ({evaluation.kind or '?'}) on {len(evaluation.images)} image(s), "
        f"{evaluation.positives} true box(es), IoU >= {evaluation.iou:g}\n"
        f"precision {_number(evaluation.precision)}  recall {_number(evaluation.recall)}  "
        f"F1 {_number(evaluation.f1)}  AP {_number(evaluation.ap)}  "
        f"({1000 * evaluation.seconds_per_image:.1f} ms per image)"
    )
    if evaluation.mean_angle_error is not None:
        summary += (f"\nmean centre error {_number(evaluation.mean_centre_error, 2)} px  "
                    f"mean angle error {_number(evaluation.mean_angle_error, 2)} degrees")
    return _format_rows(rows, right={1, 2, 3}) + "\n\n" + summary


def _compare_table(evaluations: list[Any]) -> str:
    rows = [["filter", "kind", "P", "R", "F1", "AP", "TP", "FP", "FN", "ms/image"]]
    for e in evaluations:
        rows.append([e.name, e.kind or "?", _number(e.precision), _number(e.recall),
                     _number(e.f1), _number(e.ap), str(e.true_positives), str(e.false_positives),
                     str(e.false_negatives), f"{1000 * e.seconds_per_image:.1f}"])
    first = evaluations[0]
    footer = (f"{len(first.images)} image(s), {first.positives} true box(es), "
              f"IoU >= {first.iou:g}; P, R, F1 at each filter's threshold, AP over all detections")
    return _format_rows(rows, right=set(range(2, 10))) + "\n" + footer


def _draw(folder: Path, paths: dict[str, Path], evaluation: Any, pixels: Any) -> None:
    from patternfind.io import save_image
    from patternfind.show.plot import draw_evaluation

    folder.mkdir(parents=True, exist_ok=True)
    for key, image in evaluation.images.items():
        counted = [d for d, keep in zip(image.detections, image.counted, strict=True) if keep]
        picture = draw_evaluation(pixels[key], counted, list(image.boxes), iou=evaluation.iou)
        save_image(paths[key], picture)
    print(f"drew {len(evaluation.images)} image(s) into {folder}/ "
          "(green: true positive, red: false positive, blue: missed)")


COMMANDS = {
    "evaluate": (build_evaluate_parser, run_evaluate),
    "compare": (build_compare_parser, run_compare),
}
