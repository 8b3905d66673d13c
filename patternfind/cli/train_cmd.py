"""``patternfind train``: learn a filter from pos/neg folders or from annotated images."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from patternfind.cli._common import (
    Parser,
    UsageError,
    add_max_pixels,
    add_version,
    check_output_file,
    size_argument,
)

__all__ = ["COMMANDS", "build_parser", "run"]

EXAMPLES = """\
examples:
  patternfind train --annotations samples/faces/train.csv -o face.npz
  patternfind samples/faces/test/00.png --filter face.npz   # the features travel inside the filter
  patternfind train --annotations samples/faces/train.csv --window 48x48 \\
      --features hog --mine-rounds 0 -o face_quick.npz
  patternfind train --pos pos/ --neg neg/ --window 24x24 -o part.npz
      (pos/ and neg/ stand for your own folders of object and background crops)
  patternfind train --pos pos/ --neg neg/ --window 24x24 --features cnn \\
      --layers conv:8:5,relu,maxpool:2,conv:16:3,relu,maxpool:2 --epochs 5 -o part_cnn.npz

--features cnn learns the features too: a small network of conv, ReLU and
pooling layers (--layers, default conv:8:5,relu,maxpool:2,conv:16:3,relu,maxpool:2)
trained together with the filter on top; its weights go into the same .npz.

With --pos/--neg, every image in the folders is resized to the window.
With --annotations (COCO JSON, Pascal VOC XML, dlib XML or CSV), positives are
the boxes and negatives are windows away from them, then hard negatives are
mined with the detector. Image paths in the annotations are relative to the
file (or to --image-root) and may not leave that folder unless
--allow-outside-root is given. A summary (epochs, loss, accuracy, threshold,
time) ends the run; progress goes to stderr.
"""

#: Largest training window side in pixels: every patch is a window-sized
#: float32 array, so a 5000×5000 window would need 100 MB per patch.
MAX_WINDOW_SIDE = 512


def build_parser() -> Parser:
    """The ``patternfind train`` parser."""
    parser = Parser(prog="patternfind train", epilog=EXAMPLES,
                    description="Learn a linear filter by gradient descent (logistic or hinge "
                                "loss + L2) on pixel, gradient or HOG features, or on the "
                                "features of small conv layers learned with it (cnn).")
    source = parser.add_argument_group("training data (either --pos/--neg or --annotations)")
    source.add_argument("--pos", metavar="DIR", help="folder of object images")
    source.add_argument("--neg", metavar="DIR", help="folder of background images")
    source.add_argument("--annotations", metavar="FILE",
                        help="boxes on full images: COCO JSON, VOC XML, dlib XML or CSV")
    source.add_argument("--images", "--image-root", metavar="DIR", dest="images",
                        help="folder the annotated images are in (default: beside the file)")
    source.add_argument("--allow-outside-root", action="store_true",
                        help="accept image paths in the annotations that are absolute or "
                             "climb out of the image folder with '..'")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="where to write the filter (.npz)")
    parser.add_argument("--window", type=_window, default=None, metavar="N|WxH",
                        help="window size in pixels, e.g. 32 or 48x32 (default: the --pos "
                             "images' median size, or chosen from the boxes)")
    parser.add_argument("--features", choices=("hog", "gradients", "pixels", "cnn"), default=None,
                        help="feature channels (default: hog for annotations, pixels for folders)")
    parser.add_argument("--layers", type=_layers, default=None, metavar="SPEC",
                        help="cnn layers, comma-separated: conv:K:F[:STRIDE[:PADDING]], relu, "
                             "maxpool:F[:STRIDE], avgpool:F[:STRIDE], contrast:F (local "
                             "contrast normalisation over FxF) (default "
                             "conv:8:5,relu,maxpool:2,conv:16:3,relu,maxpool:2)")
    parser.add_argument("--cell", type=int, default=None,
                        help="HOG cell size in pixels (default 6 for annotations, else 8)")
    parser.add_argument("--bins", type=int, default=None, help="HOG orientation bins (default 9)")
    parser.add_argument("--hog-variant", choices=("felzenszwalb", "dalal-triggs"), default=None,
                        help="HOG layout (default felzenszwalb for annotations, else dalal-triggs)")
    parser.add_argument("--mine-rounds", type=int, default=None, metavar="N",
                        help="rounds of hard-negative mining (annotations only; default 1, "
                             "2 for --features cnn)")
    parser.add_argument("--flip", choices=("auto", "yes", "no"), default="auto",
                        help="add a left-right mirrored copy of every box: auto (default) lets "
                             "cross-validation choose it or the box counted twice; no adds "
                             "no copy (annotations only)")
    parser.add_argument("--no-flip", action="store_const", const="no", dest="flip",
                        help=argparse.SUPPRESS)  # the option's name before --flip (0.2)
    parser.add_argument("--jitter", type=int, default=0, metavar="N",
                        help="extra shifted and scaled copies of every box (annotations only; "
                             "default 0)")
    parser.add_argument("--negatives-per-image", type=int, default=40, metavar="N",
                        help="random background windows per image (annotations only; default 40)")
    parser.add_argument("--hard-negatives-per-image", type=int, default=50, metavar="N",
                        help="mined windows per image and round (annotations only; default 50)")
    parser.add_argument("--ensemble", type=int, default=None, metavar="N",
                        help="cnn: train N networks (seeds --seed, --seed + 1, ...) and "
                             "score by the mean of their scores (annotations only; default 2)")
    parser.add_argument("--upsample", type=float, default=None, metavar="F",
                        help="enlarge every annotated image by F before training (e.g. 2 for "
                             "faces smaller than the window); the filter is scaled back, so "
                             "it detects on the original images")
    parser.add_argument("--loss", choices=("logistic", "hinge"), default="logistic")
    parser.add_argument("--optimizer", choices=("adam", "sgd", "lbfgs"), default="adam",
                        help="for a given --l2 (default adam); with --l2 auto and the logistic "
                             "loss the fits are L-BFGS's")
    parser.add_argument("--l2", type=_l2, default="auto", metavar="auto|VALUE",
                        help="L2 penalty weight, or auto: chosen by cross-validation (default)")
    parser.add_argument("--folds", type=int, default=5, metavar="K",
                        help="cross-validation folds for --l2 auto and the threshold (default 5)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: automatic)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="maximum epochs (default: enough for about 3000 gradient steps, "
                             "at least 100 and at most 1000; early stopping usually ends sooner)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--name", default=None, help="filter name (default: the output's stem)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_max_pixels(parser)
    add_version(parser)
    return parser


def _window(text: str) -> tuple[int, int]:
    height, width = size_argument(text)
    if max(height, width) > MAX_WINDOW_SIDE:
        msg = (f"windows are at most {MAX_WINDOW_SIDE} pixels on a side, got {text!r}: every "
               "training patch is one window of float32 pixels; downscale the images instead")
        raise argparse.ArgumentTypeError(msg)
    return height, width


def _layers(text: str) -> list[dict[str, Any]]:
    """``conv:8:5,relu,maxpool:2`` → layer spec dicts (checked by building the layers)."""
    from patternfind.layers.network import layer_from_spec

    specs = []
    for item in text.split(","):
        kind, *numbers = item.strip().lower().split(":")
        names = {"conv": ("k", "f", "stride", "padding"), "relu": (),
                 "maxpool": ("f", "stride"), "avgpool": ("f", "stride"),
                 "contrast": ("f",)}.get(kind)
        if names is None or len(numbers) > len(names):
            msg = (f"bad layer {item!r}: use conv:K:F[:STRIDE[:PADDING]], relu, "
                   "maxpool:F[:STRIDE], avgpool:F[:STRIDE] or contrast:F")
            raise argparse.ArgumentTypeError(msg)
        spec: dict[str, Any] = {"type": kind}
        for name, number in zip(names, numbers, strict=False):
            try:
                spec[name] = number if name == "padding" and number in ("same", "valid") else int(number)
            except ValueError:
                msg = f"bad layer {item!r}: {name} must be an integer, got {number!r}"
                raise argparse.ArgumentTypeError(msg) from None
        try:
            specs.append(layer_from_spec(spec).spec())
        except ValueError as error:
            msg = f"bad layer {item!r}: {error}"
            raise argparse.ArgumentTypeError(msg) from None
    return specs


def _l2(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        msg = f"expected auto or a number >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not (math.isfinite(value) and value >= 0):
        msg = f"expected auto or a number >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def run(args: argparse.Namespace) -> int:
    """Train, save, and print the summary."""
    from patternfind.learn import train_detector, train_filter

    folders = args.pos is not None or args.neg is not None
    if folders == (args.annotations is not None):
        msg = "give either --pos DIR and --neg DIR, or --annotations FILE"
        raise UsageError(msg)
    if folders and (args.pos is None or args.neg is None):
        msg = "--pos and --neg go together"
        raise UsageError(msg)
    if folders and Path(args.pos).resolve() == Path(args.neg).resolve():
        msg = f"--pos and --neg are the same folder ({args.pos}): nothing tells objects apart"
        raise UsageError(msg)
    output = Path(args.output)
    if output.suffix.lower() != ".npz":
        msg = f"--output must end in .npz (the filter keeps its features and threshold), got {output}"
        raise UsageError(msg)
    inputs = [args.annotations] if args.annotations is not None else []
    for folder in (args.pos, args.neg):
        if folder is not None and Path(folder).is_dir():
            inputs += [path for path in Path(folder).iterdir() if path.is_file()]
    check_output_file(output, "--output", inputs)
    _check_numbers_early(args)
    features = args.features or ("pixels" if folders else "hog")
    given = {k: v for k, v in (("cell", args.cell), ("bins", args.bins),
                               ("variant", args.hog_variant)) if v is not None}
    if given and features != "hog":
        msg = f"--cell, --bins and --hog-variant apply to hog features, not {features}"
        raise UsageError(msg)
    if args.layers is not None and features != "cnn":
        msg = f"--layers applies to cnn features, not {features}"
        raise UsageError(msg)
    if args.ensemble is not None and (features != "cnn" or folders):
        msg = ("--ensemble applies to cnn features trained from --annotations, not "
               + ("--pos/--neg folders" if folders else f"{features} features"))
        raise UsageError(msg)
    options: dict[str, Any] | None = None
    if features == "cnn" and args.layers is not None:
        options = {"layers": args.layers}
    if features == "hog":
        from patternfind.learn import DETECTOR_HOG_OPTIONS

        options = {**(DETECTOR_HOG_OPTIONS if not folders else {}), **given}
    common = {"loss": args.loss, "optimizer": args.optimizer, "l2": args.l2, "lr": args.lr,
              "epochs": args.epochs, "seed": args.seed, "folds": args.folds,
              "progress": not args.quiet,
              "features": features, "feature_options": options,
              "name": args.name or output.stem}
    started = time.perf_counter()
    if folders:
        filter_ = _train_from_folders(args, common, train_filter)
    else:
        filter_ = _train_from_annotations(args, common, train_detector)
    seconds = time.perf_counter() - started
    filter_.save(output)
    print(_summary(filter_, output, seconds))
    return 0


def _check_numbers_early(args: argparse.Namespace) -> None:
    """Refuse bad numbers before reading a single image (training may take a while)."""
    if args.epochs is not None and args.epochs <= 0:
        msg = f"--epochs must be a positive integer, got {args.epochs}"
        raise UsageError(msg)
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        msg = f"--lr must be a positive number, got {args.lr}"
        raise UsageError(msg)
    if args.folds < 2:
        msg = f"--folds must be at least 2, got {args.folds}"
        raise UsageError(msg)
    for flag in ("jitter", "negatives_per_image", "hard_negatives_per_image"):
        if getattr(args, flag) < 0:
            msg = f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}"
            raise UsageError(msg)
    if args.ensemble is not None and args.ensemble < 1:
        msg = f"--ensemble must be a positive integer, got {args.ensemble}"
        raise UsageError(msg)
    if args.upsample is not None and not (math.isfinite(args.upsample) and args.upsample > 0):
        msg = f"--upsample must be a positive number, got {args.upsample}"
        raise UsageError(msg)
    if args.seed < 0:
        msg = f"--seed must be >= 0, got {args.seed}"
        raise UsageError(msg)


def _train_from_folders(args: argparse.Namespace, common: dict[str, Any], train_filter: Any) -> Any:
    from patternfind.learn.patches import patches_from_folders

    # without --window: the median size of the positives
    patches, labels = patches_from_folders(args.pos, args.neg, window=args.window)
    print(f"{labels.sum()} positive and {(~labels).sum()} negative patches of "
          f"{patches.shape[2]}x{patches.shape[1]} pixels", file=sys.stderr)
    return train_filter(patches, labels, **common)


def _train_from_annotations(args: argparse.Namespace, common: dict[str, Any],
                            train_detector: Any) -> Any:
    from patternfind.evaluation.annotations import image_paths, load_annotations

    annotations = load_annotations(args.annotations)
    if args.images is not None:
        base = Path(args.images)
        if not base.is_dir():
            msg = f"--images folder not found: {base}"
            raise UsageError(msg)
        image_paths(annotations, args.annotations, check=False, image_root=base,
                    allow_outside_root=args.allow_outside_root)  # refuses keys leaving base
        paths = {key: base / Path(key).name if not (base / key).is_file() else base / key
                 for key in annotations}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            msg = f"{len(missing)} annotated image(s) not found in {base}, e.g. {missing[0]}"
            raise UsageError(msg)
    else:
        paths = image_paths(annotations, args.annotations,
                            allow_outside_root=args.allow_outside_root)
    boxes = sum(len(b) for b in annotations.values())
    print(f"{boxes} boxes on {len(annotations)} images", file=sys.stderr)
    return train_detector({key: str(path) for key, path in paths.items()}, annotations,
                          window=args.window, mine_rounds=args.mine_rounds,
                          flip={"auto": "auto", "yes": True, "no": False}[args.flip],
                          jitter=args.jitter,
                          negatives_per_image=args.negatives_per_image,
                          hard_negatives_per_image=args.hard_negatives_per_image,
                          upsample=args.upsample,
                          **({"ensemble": args.ensemble} if args.ensemble is not None else {}),
                          **common)


def _summary(filter_: Any, output: Path, seconds: float) -> str:
    meta = filter_.meta
    height, width = filter_.window
    lines = [
        (f"wrote {output}: {filter_.features} filter {filter_.weights.shape} over "
        f"{width}x{height}-pixel windows"),
        f"{_fit_line(meta)}, threshold {filter_.threshold:.3f}, time {seconds:.1f} s",
    ]
    if filter_.features == "cnn":
        from patternfind.layers.network import Network

        network = Network.from_filter(filter_)
        lines.append(f"network: {network!r}, {network.num_params} parameters, receptive field "
                     f"{network.receptive_field} px, stride {network.total_stride} px")
        if "members" in meta:
            seeds = ", ".join(str(member["seed"]) for member in meta["members"])
            lines.append(f"ensemble of {len(meta['members'])} networks side by side (seeds "
                         f"{seeds}), scored by the mean of their scores; the fit and mining "
                         "figures are the first network's")
    if "rounds" in meta:
        mined = ", ".join(str(r["hard_negatives"]) for r in meta["rounds"]) or "none"
        lines.append(f"{meta['positives']} positives, {meta['negatives']} negatives "
                     f"(hard negatives mined per round: {mined}); box scales "
                     f"{meta['box_scales'][0]:.2f}-{meta['box_scales'][1]:.2f} of the window")
    lines.extend(_choices(filter_))
    return "\n".join(lines)


def _fit_line(meta: dict[str, Any]) -> str:
    """The final fit's length, loss and accuracies, in the fit's own terms.

    L-BFGS counts iterations, not epochs; a fit with no validation split (the
    final fit after cross-validation) has no validation accuracy to report:
    its ``val_accuracy`` is measured on the training samples.
    """
    options = meta.get("options", {})
    steps = "iterations" if options.get("optimizer") == "lbfgs" else "epochs"
    line = (f"{steps} {meta['epochs']} (best {meta['best_epoch']}), final loss {meta['loss'][-1]:.4f}, "
            f"train accuracy {meta['train_accuracy']:.3f}")
    if options.get("val_samples", 1):
        line += f", val accuracy {meta['val_accuracy']:.3f}"
    return line


def _choices(filter_: Any) -> list[str]:
    """The automatic choices, each with the evidence it rests on."""
    meta = filter_.meta
    height, width = filter_.window
    lines = []
    if "window_rule" in meta:
        lines.append(f"window {width}x{height}: {meta['window_rule']}")
    selection = meta.get("l2_selection")
    if selection:
        scores = ", ".join(f"{l2:g}: AP {ap:.3f} loss {loss:.4f}" for l2, ap, loss in
                           zip(selection["grid"], selection["cv_ap"], selection["cv_loss"],
                               strict=True))
        lines.append(f"l2 {selection['chosen']:g} by {selection['folds']}-fold cross-validation "
                     f"({selection['rule']}; {scores})")
    else:
        lines.append(f"l2 {meta['options']['l2']:g} (given)")
    flip = meta.get("flip_selection")
    if flip and "cv_loss" not in flip:
        lines.append(f"box copies {flip['chosen']}: {flip['rule']}")
    elif flip:
        losses = ", ".join(f"{name}: loss {loss:.4f}" for name, loss in flip["cv_loss"].items())
        lines.append(f"box copies {flip['chosen']} by {flip['folds']}-fold cross-validation "
                     f"({flip['rule']}; {losses})")
    rule = meta.get("threshold_rule", "best F1 on the validation split")
    cv_ap = f", cross-validated AP {meta['cv_ap']:.3f}" if "cv_ap" in meta else ""
    lines.append(f"threshold {filter_.threshold:.3f}: {rule}{cv_ap}")
    return lines


COMMANDS = {"train": (build_parser, run)}
