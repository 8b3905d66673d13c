"""Pieces every sub-command shares: the parser class and the detection options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["Parser", "UsageError", "add_detection_options", "add_version", "detection_options"]


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
    """Add ``--version``."""
    parser.add_argument("--version", action=_VersionAction)


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


def add_detection_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that control `patternfind.detect` (shared by detect, evaluate, compare)."""
    group = parser.add_argument_group("detection")
    group.add_argument("--threshold", type=float, default=None,
                       help="keep peaks scoring at least this (default: the filter's own, "
                            "else 0.8 for ncc, 0.95 for cosine; required for dot)")
    group.add_argument("--score", choices=("ncc", "dot", "cosine"), default=None,
                       help="score kind (default: the filter's own, else ncc)")
    group.add_argument("--scales", type=_number_pair, default=(0.5, 2.0), metavar="MIN,MAX",
                       help="object sizes to search, as multiples of the filter size (default 0.5,2)")
    group.add_argument("--scale-step", type=float, default=1.1, metavar="S",
                       help="ratio between pyramid levels (default 1.1)")
    group.add_argument("--nms", type=float, default=0.3, metavar="IOU",
                       help="overlap above which the weaker box is dropped (default 0.3)")
    group.add_argument("--max", type=int, default=None, metavar="N", dest="max_detections",
                       help="keep at most N detections per image")


def detection_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for `patternfind.detect` from parsed `add_detection_options` flags."""
    return {
        "threshold": args.threshold,
        "score": args.score,
        "scales": args.scales,
        "scale_step": args.scale_step,
        "nms_iou": args.nms,
        "max_detections": args.max_detections,
    }
