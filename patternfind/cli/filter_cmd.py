"""``patternfind make-filter`` and ``patternfind crop``: write a filter file.

``make-filter`` draws one of the hand-crafted filters of `patternfind.filters`;
``crop`` cuts a filter out of a photograph. Both write ``.npy`` (the weights
only, the lecture's plain filter file) or ``.npz`` (every field of the
`Filter`, including its metadata), chosen by the output's suffix.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patternfind.cli._common import (
    Parser,
    UsageError,
    add_max_pixels,
    add_version,
    check_output_file,
    size_argument,
)

if TYPE_CHECKING:
    from patternfind.structures import Filter

__all__ = [
    "COMMANDS", "build_crop_parser", "build_make_filter_parser", "run_crop", "run_make_filter",
]

# The library is imported inside the functions, so that importing this module
# loads no numerical code.

MAKE_FILTER_EPILOG = """\
examples:
  patternfind make-filter eye --size 24 -o eye.npy
  patternfind make-filter eye --size 24x12 -o eye.npz       # 24 wide, 12 high
  patternfind make-filter edge --size 15 --angle 30 -o edge30.npy
  patternfind make-filter bar --size 21 --angle 90 --width 3 --polarity dark -o bar.npy
  patternfind make-filter blob --size 17 --sigma 2.5 --polarity dark -o blob.npz
  patternfind make-filter corner --size 31 --score shape -o corner.npz   # for the shape score

Angles are degrees counter-clockwise from +x (x right, up on screen).
.npy keeps the weights only; .npz keeps every field and the options used.
"""

CROP_EPILOG = """\
examples:
  patternfind crop samples/astronaut.png --box 192,91,22,20 -o eye.npy
  patternfind crop samples/astronaut.png --box 180,80,60,40 --grey --name eyes -o eyes.npz
  patternfind crop samples/astronaut.png --box 180,80,60,40 --score shape -o eyes_shape.npz

The box is x,y,w,h: top-left corner and size, in image pixels. Pixel values
are scaled to [0, 1]; an alpha channel becomes the filter's mask.
"""

# make-filter flag -> keyword of the filters functions. Each flag is passed on
# only when given, and only kinds whose function takes that keyword accept it.
_OPTION_FLAGS = {
    "angle": "--angle",
    "width": "--width",
    "polarity": "--polarity",
    "sigma": "--sigma",
    "ratio": "--ratio",
    "radius": "--radius",
    "opening": "--opening",
    "iris": "--iris",
    "pupil": "--pupil",
    "zero_mean": "--zero-mean",
}


def _box(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 4:
        msg = f"expected four integers x,y,w,h, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    x, y, w, h = numbers
    return x, y, w, h


def _add_score_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("score the filter is made for (kept in .npz files)")
    group.add_argument("--score", choices=("ncc", "dot", "cosine", "shape"), default=None,
                       help="the score detect uses with this filter by default; 'shape' "
                            "compares gradient directions (robust to lighting and inversion)")
    group.add_argument("--min-contrast", type=float, default=None, metavar="G",
                       help="with --score shape: check that the filter has edges at least this "
                            "strong (default 0.02)")


def _with_score(filter_: Filter, args: argparse.Namespace) -> Filter:
    """The filter with ``--score`` recorded; a shape filter must have edges to match."""
    if args.score is None:
        if args.min_contrast is not None:
            msg = "--min-contrast applies to --score shape only"
            raise UsageError(msg)
        return filter_
    if args.output.suffix.lower() != ".npz":
        msg = f"--score is kept in .npz files only; write {args.output.with_suffix('.npz')}"
        raise UsageError(msg)
    if args.score == "shape":
        from patternfind.detection.shape import DEFAULT_MIN_CONTRAST, shape_model

        min_contrast = DEFAULT_MIN_CONTRAST if args.min_contrast is None else args.min_contrast
        shape_model(filter_, min_contrast=min_contrast)  # raises if the filter has no edges
    elif args.min_contrast is not None:
        msg = "--min-contrast applies to --score shape only"
        raise UsageError(msg)
    return filter_.replace(score=args.score)


#: `patternfind.filters.KINDS` and `POLARITIES`, named here so that building the
#: parser imports no numerical module (a test keeps them equal to the filter bank's).
FILTER_KINDS = ("eye", "blob", "edge", "bar", "corner", "ring")
POLARITIES = ("bright", "dark")


def build_make_filter_parser() -> Parser:
    """Parser of ``patternfind make-filter``."""
    parser = Parser(
        prog="patternfind make-filter",
        description="Draw a hand-crafted filter and write it to a .npy or .npz file.",
        epilog=MAKE_FILTER_EPILOG,
    )
    parser.add_argument("kind", choices=FILTER_KINDS, help="which filter to draw")
    parser.add_argument("--size", type=size_argument, required=True, metavar="N|WxH",
                        help="filter size in pixels: N for N×N, or WIDTHxHEIGHT such as 24x12")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="FILE",
                        help="where to write the filter (.npy weights only, .npz all fields)")
    parser.add_argument("--name", default=None,
                        help="label of the filter's detections (default: the kind)")
    shape = parser.add_argument_group("shape options (each applies to some kinds only)")
    shape.add_argument("--angle", type=float, help="edge, bar, corner: direction in degrees")
    shape.add_argument("--width", type=float, help="bar, ring: thickness in pixels")
    shape.add_argument("--polarity", choices=POLARITIES,
                       help="blob, bar, corner, ring: bright or dark shape")
    shape.add_argument("--sigma", type=float, help="blob: inner Gaussian's sigma in pixels")
    shape.add_argument("--ratio", type=float, help="blob: outer over inner sigma (> 1)")
    shape.add_argument("--radius", type=float, help="ring: radius of the mid-line in pixels")
    shape.add_argument("--opening", type=float, help="eye: almond height / filter height")
    shape.add_argument("--iris", type=float, help="eye: iris diameter / filter width")
    shape.add_argument("--pupil", type=float, help="eye: pupil diameter / iris diameter")
    shape.add_argument("--zero-mean", action="store_true", default=None,
                       help="subtract the mean (all kinds but blob, which always is)")
    _add_score_options(parser)
    add_version(parser)
    return parser


def run_make_filter(args: argparse.Namespace) -> int:
    """Draw the filter ``args`` describe and save it."""
    from patternfind import filters, io

    function = filters.KINDS[args.kind]
    accepted = inspect.signature(function).parameters
    options: dict[str, Any] = {}
    for key, flag in _OPTION_FLAGS.items():
        value = getattr(args, key)
        if value is None:
            continue
        if key not in accepted:
            msg = f"{flag} does not apply to filter kind {args.kind!r}"
            raise UsageError(msg)
        options[key] = value
    check_output_file(args.output, "--output", [])
    filter_ = function(args.size, **options)
    if args.name is not None:
        filter_ = filter_.replace(name=args.name)
    filter_ = _with_score(filter_, args)
    io.save_filter(filter_, args.output)
    height, width = filter_.weights.shape[:2]
    print(f"wrote {args.kind} filter {filter_.name!r} ({height}×{width}) to {args.output}")
    return 0


def build_crop_parser() -> Parser:
    """Parser of ``patternfind crop``."""
    parser = Parser(
        prog="patternfind crop",
        description="Cut a filter out of an image and write it to a .npy or .npz file.",
        epilog=CROP_EPILOG,
    )
    parser.add_argument("image", type=Path, help="image file (PNG, JPEG, TIFF, ...)")
    parser.add_argument("--box", type=_box, required=True, metavar="X,Y,W,H",
                        help="the crop: top-left corner and size in pixels")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="FILE",
                        help="where to write the filter (.npy weights only, .npz all fields)")
    parser.add_argument("--grey", action="store_true",
                        help="convert a colour image to grey first (as the detector does for "
                             "grey filters)")
    parser.add_argument("--name", default=None,
                        help="label of the filter's detections (default: the output's stem)")
    add_max_pixels(parser)
    _add_score_options(parser)
    add_version(parser)
    return parser


def run_crop(args: argparse.Namespace) -> int:
    """Crop the box out of the image and save it as a filter."""
    import numpy as np

    from patternfind import io
    from patternfind.pixels import to_float_image, to_grey
    from patternfind.structures import Filter

    check_output_file(args.output, "--output", [args.image])
    image = io.load_image(args.image)
    if args.grey and image.ndim == 3 and image.shape[2] in (3, 4):
        # the detector's own grey conversion, so that the crop scores 1 at its source;
        # an alpha channel rides along and becomes the mask in Filter.from_image
        grey = to_grey(to_float_image(image[..., :3]))
        alpha = to_float_image(image[..., 3:])
        image = np.dstack([grey, alpha]) if alpha.size else grey
    name = args.name if args.name is not None else args.output.stem
    filter_ = Filter.from_image(image, args.box, name=name,
                                meta={"image": args.image.name, "grey": bool(args.grey)})
    filter_ = _with_score(filter_, args)
    io.save_filter(filter_, args.output)
    shape = "×".join(str(n) for n in filter_.weights.shape)
    print(f"wrote {shape} filter {filter_.name!r} from {args.image} to {args.output}")
    return 0


COMMANDS = {
    "make-filter": (build_make_filter_parser, run_make_filter),
    "crop": (build_crop_parser, run_crop),
}
