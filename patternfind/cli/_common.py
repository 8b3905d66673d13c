"""Pieces every sub-command shares: the parser class and the detection options."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "Parser",
    "UsageError",
    "add_detection_options",
    "add_max_pixels",
    "add_version",
    "check_distinct",
    "check_folder_writable",
    "check_output_file",
    "check_output_folder",
    "dask_cluster",
    "detection_options",
    "output_names",
    "pixel_limit",
    "positive_jobs",
    "size_argument",
]


class UsageError(Exception):
    """A user mistake the CLI reports as one line on stderr with exit status 2."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


class _VersionAction(argparse.Action):
    """argparse's ``version`` action, reading the installed version only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default,
                         help=help or "show program's version number and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from patternfind import __version__

        print(f"patternfind {__version__}")  # to stdout, as argparse's own version action
        parser.exit()


def add_version(parser: argparse.ArgumentParser) -> None:
    """Add ``--version`` and ``--debug`` (every command has both)."""
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--debug", action="store_true",
                        help="on an unexpected error, print the full traceback")


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-pixels`` (commands that read images)."""
    # The numbers are patternfind.io's MAX_IMAGE_PIXELS and MAX_PIXELS_VARIABLE, written
    # out so that building a parser imports nothing numerical (a test keeps them equal).
    parser.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                        help="refuse images of more than N pixels before decoding them "
                             "(default 178,956,970, as Pillow, or the environment "
                             "variable PATTERNFIND_MAX_IMAGE_PIXELS)")


@contextlib.contextmanager
def pixel_limit(args: argparse.Namespace) -> Iterator[None]:
    """Apply ``--max-pixels`` (if the command has it) to every image read during the run."""
    from patternfind.io import MAX_PIXELS_VARIABLE

    limit = getattr(args, "max_pixels", None)
    if limit is None:
        yield
        return
    saved = os.environ.get(MAX_PIXELS_VARIABLE)
    os.environ[MAX_PIXELS_VARIABLE] = str(limit)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(MAX_PIXELS_VARIABLE, None)
        else:
            os.environ[MAX_PIXELS_VARIABLE] = saved


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        msg = f"expected a positive whole number, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def size_argument(text: str) -> tuple[int, int]:
    """``N`` (N×N) or ``WIDTHxHEIGHT``, the CLI's one size syntax; returns (height, width)."""
    parts = text.lower().split("x")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2):
        msg = f"expected N or WIDTHxHEIGHT in pixels, such as 24 or 32x16, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    width, height = numbers if len(numbers) == 2 else (numbers[0], numbers[0])
    if width <= 0 or height <= 0:
        msg = f"sizes must be positive, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return height, width


# ---------------------------------------------------------------- outputs


def check_output_file(path: Path, flag: str, inputs: Iterable[str | Path], *,
                      check_folder: bool = True) -> None:
    """Refuse, before any work, an output that is an input or that cannot be written.

    The comparison is by file identity (``os.path.samefile``), so a symlink
    or hard link to an input clashes too. ``check_folder=False`` skips the
    folder test, for files of an output folder `check_output_folder` checked.
    """
    if path.is_dir():
        msg = f"{flag} {path} is a folder; give a file name"
        raise UsageError(msg)
    if check_folder:
        check_folder_writable(path.parent if str(path.parent) else Path("."), f"{flag} {path}")
    if path.exists():
        for source in inputs:
            if Path(source).exists() and os.path.samefile(path, source):
                msg = f"{flag} {path} is the input {source}: refusing to write over an input"
                raise UsageError(msg)


def check_folder_writable(folder: Path, what: str) -> None:
    """Raise `UsageError` unless ``folder`` is an existing, writable folder."""
    if not folder.exists():
        msg = f"{what}: folder {folder} does not exist"
        raise UsageError(msg)
    if not folder.is_dir():
        msg = f"{what}: {folder} is not a folder"
        raise UsageError(msg)
    if not os.access(folder, os.W_OK | os.X_OK):
        msg = f"{what}: folder {folder} is not writable"
        raise UsageError(msg)


def check_output_folder(folder: Path, flag: str) -> None:
    """Refuse, before any work, an output folder that cannot be created or written.

    Nothing is created here (an error later leaves no empty folder behind);
    the caller creates the folder when it first writes into it.
    """
    if folder.exists():
        if not folder.is_dir():
            msg = f"{flag} {folder} exists and is not a folder"
            raise UsageError(msg)
        check_folder_writable(folder, flag)
        return
    ancestor = folder.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    check_folder_writable(ancestor, f"{flag} {folder}: cannot create it because")


def check_distinct(outputs: Iterable[Path | None]) -> None:
    """Refuse two outputs of one run that name the same file."""
    seen: dict[str, Path] = {}
    for path in outputs:
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            msg = f"two outputs would both write {path}: give them different names"
            raise UsageError(msg)
        seen[key] = path


def output_names(sources: Sequence[str | Path], tail: str) -> list[str]:
    """One distinct file name per source, for outputs written into one folder.

    The name is the source's path relative to the sources' common folder,
    with separators and unsafe characters replaced by ``_``, then ``tail``
    (e.g. ``"_detections.png"``). Sources that would still share a name
    (``x.png`` and ``x.jpg``) keep their suffix; a number settles the rest.
    """
    absolute = [os.path.abspath(source) for source in sources]
    common = os.path.commonpath([os.path.dirname(a) for a in absolute]) if absolute else ""
    relative = [Path(os.path.relpath(a, common)) for a in absolute]
    stems = [_safe(str(r.with_suffix(""))) for r in relative]
    repeated = {stem for stem in stems if stems.count(stem) > 1}
    names = [f"{stem}_{_safe(r.suffix[1:])}" if stem in repeated and r.suffix else stem
             for stem, r in zip(stems, relative, strict=True)]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count + 1}")
    while len(set(unique)) < len(unique):  # a numbered name met a real one: number again
        unique = [name if unique.count(name) == 1 else f"{name}_{index}"
                  for index, name in enumerate(unique)]
    return [name + tail for name in unique]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "image"


def _number_pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        msg = f"expected MIN,MAX, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        msg = f"expected two numbers MIN,MAX, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _angle_pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        start, stop = (float(part) for part in parts)
    except ValueError:
        msg = f"expected two angles in degrees START,STOP (such as 0,360 or 350,10), got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    return start, stop


def add_detection_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that control `patternfind.detect` (shared by detect, evaluate, compare)."""
    group = parser.add_argument_group("detection")
    group.add_argument("--threshold", type=float, default=None,
                       help="keep peaks scoring at least this (default: the filter's own, "
                            "else 0.8 for ncc, 0.95 for cosine; required for dot)")
    group.add_argument("--score", choices=("ncc", "dot", "cosine", "shape"), default=None,
                       help="score kind (default: the filter's own, else ncc); shape compares "
                            "gradient directions and survives lighting changes")
    group.add_argument("--scales", type=_number_pair, default=None, metavar="MIN,MAX",
                       help="object sizes to search, as multiples of the filter size (default: "
                            "the box sizes a learned filter was trained on, from 1/1.25 of "
                            "the smallest to 2 times the largest; else 0.5,2)")
    group.add_argument("--scale-step", type=float, default=None, metavar="S",
                       help="ratio between pyramid levels (default: the step a learned filter "
                            "was trained with, else 1.1)")
    group.add_argument("--nms", type=float, default=0.3, metavar="IOU",
                       help="overlap above which the weaker box is dropped (default 0.3)")
    group.add_argument("--max", type=int, default=None, metavar="N", dest="max_detections",
                       help="keep at most N detections per image")
    group.add_argument("--angles", type=_angle_pair, default=None, metavar="START,STOP",
                       help="search the filter turned by every angle in this range (degrees, "
                            "counter-clockwise; 0,360 for any angle, 350,10 through 0)")
    group.add_argument("--angle-step", type=float, default=None, metavar="DEG",
                       help="degrees between searched angles (default: from the filter size)")
    group.add_argument("--polarity", choices=("use", "ignore"), default="use",
                       help="shape score: 'ignore' also matches inverted contrast (default use)")
    group.add_argument("--min-contrast", type=float, default=None, metavar="G",
                       help="shape score: weakest edge that counts, in pixel range per pixel "
                            "(default 0.02)")


def detection_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for `patternfind.detect` from parsed `add_detection_options` flags."""
    return {
        "threshold": args.threshold,
        "score": args.score,
        "scales": args.scales,
        "scale_step": args.scale_step,
        "nms_iou": args.nms,
        "max_detections": args.max_detections,
        "angles": args.angles,
        "angle_step": args.angle_step,
        "polarity": args.polarity,
        **({} if args.min_contrast is None else {"min_contrast": args.min_contrast}),
    }


# ---------------------------------------------------------------- parallel runs


def positive_jobs(text: str) -> int:
    """``--jobs``: a whole number of worker processes, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"--jobs must be a whole number of processes, 1 or more; got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


@contextlib.contextmanager
def dask_cluster(scheduler: str | None, jobs: int | None) -> Iterator[Any]:
    """A Dask client for ``--scheduler`` (None without it), closed when the block ends."""
    if scheduler is None:
        yield None
        return
    from patternfind.batch.cluster import dask_client

    try:
        with dask_client(scheduler, workers=jobs) as client:
            yield client
    except ImportError as error:
        raise UsageError(str(error)) from None
