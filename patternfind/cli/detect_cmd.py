"""``patternfind IMAGE [IMAGE ...] --filter F``: detect and report boxes."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
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
    dask_cluster,
    detection_options,
    output_names,
    positive_jobs,
)

__all__ = ["COMMANDS", "build_parser", "run"]

# The library (numpy, OpenCV, SciPy) is imported inside the functions that use
# it, so that building this parser (`patternfind --help`) stays instant.

#: Output formats (`patternfind.batch.outputs` writes them; named here so that
#: building the parser imports nothing numerical).
FORMATS = ("table", "jsonl", "csv", "json", "coco")

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
  patternfind samples/spoons.png --filter samples/spoon.npz --angles 0,360 --scales 1,1 \\
      --draw found.png                                   # parts at any angle
  patternfind samples/spoons.png --filter samples/spoon.npz --angles 0,360 --scales 1,1 \\
      --score shape --polarity ignore                    # gradient shape, either contrast

many images (folders, quoted globs, @list.txt; results written as each image is done):
  patternfind samples/many --recursive --filter samples/eye.npy --format jsonl \\
      -o found.jsonl --jobs 2
  patternfind samples/many --recursive --filter samples/eye.npy --format jsonl \\
      -o found.jsonl --resume                            # skip the images already in found.jsonl
  patternfind 'samples/many/*/*.jpg' --filter samples/eye.npy --format csv -o found.csv

Outputs never replace an input file, and their folders are checked before
the search starts. Images over 179 megapixels are refused before decoding
(--max-pixels N raises the limit). An image that cannot be read is reported
and the run goes on; the exit status is then 1. Add --debug to see the
traceback of an unexpected error.

sub-commands (each has its own --help):
  patternfind make-filter KIND --size N -o FILE     hand-crafted filter (eye, blob, edge, ...)
  patternfind crop IMAGE --box x,y,w,h -o FILE      filter cut out of an image
  patternfind evaluate --annotations FILE --filter F   precision, recall, AP
  patternfind compare --annotations FILE --filter A --filter B   side by side
  patternfind train ... -o FILE                     learn a filter
"""


#: Without --jobs, worker processes start only for runs of at least this many images per core.
_IMAGES_PER_CORE_FOR_PROCESSES = 4


def build_parser() -> Parser:
    parser = Parser(
        prog="patternfind",
        description="Find patterns in images: slide filters over an image pyramid, keep the "
                    "peaks above a threshold, remove overlaps, and print the boxes "
                    "(x, y = top-left corner; w, h = size; input-image pixels). "
                    "Images are searched in parallel and each image's results are written "
                    "as soon as it is done; an unreadable image is reported and skipped.",
        epilog=EXAMPLES,
    )
    add_version(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, folders, quoted glob patterns ('scans/*.tif') or "
                             "@list.txt (one path per line)")
    parser.add_argument("--filter", action="append", required=True, dest="filters",
                        metavar="F", help="filter file (.npy, .npz or an image); repeatable")
    parser.add_argument("--recursive", action="store_true",
                        help="also search the sub-folders of folders (and let ** match them)")
    add_detection_options(parser)
    parser.add_argument("--subpixel", action="store_true",
                        help="refine box positions to sub-pixel precision")
    parser.add_argument("--per-label", action="store_true",
                        help="let boxes of different filters overlap")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="threads per image (default: OpenCV's thread count, "
                             "shared among --jobs)")
    run_group = parser.add_argument_group("many images")
    run_group.add_argument("--jobs", type=positive_jobs, default=None, metavar="N",
                           help="worker processes (default: every core for runs of 4 or more images "
                                "per core; one process otherwise)")
    run_group.add_argument("--scheduler", metavar="ADDRESS",
                           help="run on a Dask cluster (tcp://host:8786), or 'local' for a "
                                'local Dask cluster; needs pip install "patternfind[dask]"')
    run_group.add_argument("--send-bytes", action="store_true",
                           help="with --scheduler: send file contents to the workers "
                                "(for clusters without a shared filesystem)")
    run_group.add_argument("--resume", action="store_true",
                           help="skip the images already in --output (jsonl or csv) and "
                                "append the rest")
    run_group.add_argument("--fail-fast", action="store_true",
                           help="stop at the first image that fails")
    run_group.add_argument("--progress", action="store_true",
                           help="show a progress bar on stderr (default: when stderr is a "
                                "terminal)")
    run_group.add_argument("--quiet", action="store_true",
                           help="no progress bar and no summary")
    output = parser.add_argument_group("output")
    output.add_argument("--format", choices=FORMATS, default="table",
                        help="table (default); jsonl (one object per image) and csv (one row "
                             "per detection) are written as images finish and can be resumed; "
                             "json and coco are written when the run completes")
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
    from patternfind.batch import available_cores, detect_many, expand_inputs
    from patternfind.batch.outputs import completed_images, open_results
    from patternfind.detection import DetectOptions, load_filters

    _check_run_options(args)
    inputs = expand_inputs(args.images, recursive=args.recursive)
    pictures = _check_outputs(args, list(inputs.paths))
    filters = load_filters(args.filters)
    options = DetectOptions(**detection_options(args), subpixel=args.subpixel,
                            per_label=args.per_label, workers=args.workers)
    done = completed_images(args.output, args.format) if args.resume else set()
    todo = [path for path in inputs.paths if path not in done]
    jobs = args.jobs
    if jobs is None and args.scheduler is None:
        # Starting worker processes costs about a second: worth it for a folder, not a few images.
        jobs = available_cores() if len(todo) >= _IMAGES_PER_CORE_FOR_PROCESSES * available_cores() else 1
    show_progress = not args.quiet and (args.progress or sys.stderr.isatty())
    started = time.perf_counter()
    counts = {"done": 0, "failed": 0, "detections": 0}
    # The output opens first: a folder that is missing fails before any work starts.
    with contextlib.suppress(_StoppedAtFailure), open_results(
            args.format, args.output, images=inputs.paths,
            filter_names=[f.name for f in filters], rotated=options.angles is not None,
            resume=args.resume) as writer, \
            dask_cluster(args.scheduler, args.jobs) as client, _terminate_as_interrupt():
        results = detect_many(todo, filters, options=options, jobs=jobs, client=client,
                              progress=show_progress, send_bytes=args.send_bytes,
                              pictures=pictures, max_pixels=args.max_pixels)
        for result in results:
            writer.write(result)
            counts["detections"] += len(result.detections)
            if result.ok:
                counts["done"] += 1
                continue
            counts["failed"] += 1
            if args.format == "table" or args.output is not None:
                print(f"patternfind: {result.image}: {result.error}", file=sys.stderr)
            if args.fail_fast:
                results.close()
                # Leaving the block by an exception discards a json or coco document
                # in the making: a stopped run is not a complete one.
                raise _StoppedAtFailure
    elapsed = time.perf_counter() - started
    if not args.quiet and (args.format == "table" or args.output is not None):
        summary = _summary(counts, len(done), inputs.skipped, elapsed, args)
        print(summary, file=sys.stdout if args.format == "table" and args.output is None
              else sys.stderr)
    return 1 if counts["failed"] else 0


class _StoppedAtFailure(Exception):
    """--fail-fast met a failed image."""


def _check_run_options(args: argparse.Namespace) -> None:
    if args.resume and (args.output is None or args.format not in ("jsonl", "csv")):
        msg = "--resume needs --format jsonl or csv and an --output file to resume"
        raise UsageError(msg)
    if args.send_bytes and args.scheduler is None:
        msg = "--send-bytes goes with --scheduler"
        raise UsageError(msg)
    if args.scheduler is not None and args.jobs is not None and args.scheduler != "local":
        msg = "--jobs sets local worker processes; a remote --scheduler has its own workers"
        raise UsageError(msg)
    if args.send_bytes and (args.draw is not None or args.heatmap is not None):
        msg = "--draw and --heatmap write on the workers' filesystem; not with --send-bytes"
        raise UsageError(msg)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so that workers stop and no temporary file is left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_outputs(args: argparse.Namespace, images: list[str]
                   ) -> Callable[[str], tuple[Path | None, Path | None]] | None:
    """Check every output against the inputs before any work; return where pictures go."""
    from patternfind.batch.outputs import coco_mapping_path

    inputs = [*images, *args.filters,
              *(name[1:] for name in args.images if name.startswith("@"))]
    draw_paths = _picture_targets(args.draw, "draw", images, "detections", inputs)
    heatmap_paths = _picture_targets(args.heatmap, "heatmap", images, "heatmap", inputs)
    mapping = coco_mapping_path(args.output) if args.output and args.format == "coco" else None
    if args.output is not None:
        check_output_file(args.output, "--output", inputs)
        if mapping is not None:
            check_output_file(mapping, "--output (its id mapping)", inputs)
    check_distinct([*(draw_paths or []), *(heatmap_paths or []), args.output, mapping])
    if draw_paths is None and heatmap_paths is None:
        return None
    draw = dict(zip(images, draw_paths or [], strict=False))
    heat = dict(zip(images, heatmap_paths or [], strict=False))
    for path in [*draw.values(), *heat.values()]:
        path.parent.mkdir(parents=True, exist_ok=True)  # a --draw folder, created as promised
    return lambda image: (draw.get(image), heat.get(image))


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


def _summary(counts: dict[str, int], skipped: int, ignored: int, elapsed: float,
             args: argparse.Namespace) -> str:
    processed = counts["done"] + counts["failed"]
    images = "1 image" if processed == 1 else f"{processed} images"
    notes = [f"{counts['failed']} failed"] if counts["failed"] else []
    if skipped:
        notes.append(f"{skipped} skipped as already in {args.output}")
    if ignored:
        notes.append(f"{ignored} non-image file{'s' if ignored > 1 else ''} ignored")
    tail = f"; {', '.join(notes)}" if notes else ""
    if not counts["detections"]:
        hint = "" if counts["failed"] else "; a lower --threshold or wider --scales may find more"
        return f"no detections in {images} ({elapsed:.2f} s){tail}{hint}"
    found = "1 detection" if counts["detections"] == 1 else f"{counts['detections']} detections"
    where = f" written to {args.output}" if args.output is not None else ""
    return f"{found} in {images} ({elapsed:.2f} s){where}{tail}"


COMMANDS = {"detect": (build_parser, run)}
