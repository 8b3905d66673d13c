"""Training patches for `patternfind.train_filter`: from folders and from annotated images.

Every function returns ``(patches, labels)``: an ``(N, h, w)`` (or
``(N, h, w, 3)``) float32 array of windows in [0, 1] and an ``(N,)`` bool
array, True for the object. Windows are ``window = (height, width)`` pixels,
plus ``context`` pixels on every side when asked (see
`patternfind.layers.features.window_features`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind._validation import non_negative_int, pair_of, positive_int
from patternfind.detection.nms import box_iou
from patternfind.io import IMAGE_SUFFIXES, load_image
from patternfind.pixels import prepare_image, to_float_image, to_grey, to_rgb
from patternfind.structures import Box

__all__ = [
    "NEGATIVE_IOU",
    "annotated_patches",
    "as_image",
    "check_boxes",
    "check_labels",
    "check_patches",
    "crop_window",
    "image_files",
    "patches_from_annotations",
    "patches_from_arrays",
    "patches_from_folders",
    "sample_negative_boxes",
]

#: Negatives overlap every box by less than this IoU.
NEGATIVE_IOU = 0.3


def as_image(image: Any, name: str = "image", *, color: bool = False) -> NDArray[np.float32]:
    """A path or an array as a float32 image in [0, 1]: grey unless ``color`` (then RGB).

    The same conversion the detector applies (`patternfind.pixels.prepare_image`),
    so that training and detection see the same pixels.
    """
    if isinstance(image, (str, Path)):
        image = load_image(image)
    pixels = prepare_image(image, name)
    return to_rgb(pixels) if color else to_grey(pixels)


def patches_from_arrays(patches: Any, labels: Any) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Check and convert ready-made patches: ``(N, h, w[, 3])`` plus ``(N,)`` labels."""
    array = check_patches(patches)
    return array, check_labels(labels, len(array))


def check_patches(patches: Any) -> NDArray[np.float32]:
    """Check ready-made patches and scale them to [0, 1].

    Parameters
    ----------
    patches : (N, h, w), (N, h, w, 1) or (N, h, w, 3) array, or a list of equal-sized patches

    Returns
    -------
    (N, h, w[, 3]) float32 array
    """
    if isinstance(patches, (list, tuple)):
        if not patches:
            msg = "`patches` is empty"
            raise ValueError(msg)
        shapes = [np.shape(p) for p in patches]
        for index, shape in enumerate(shapes):
            if shape != shapes[0]:
                msg = (f"`patches` have mixed sizes: patch 0 has shape {shapes[0]}, patch "
                       f"{index} has shape {shape}; resize them to one window first")
                raise ValueError(msg)
        patches = np.stack([np.asarray(p) for p in patches])
    array = np.asarray(patches)
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3)):
        msg = f"`patches` must have shape (N, h, w) or (N, h, w, 3), got {array.shape}"
        raise ValueError(msg)
    if array.shape[0] == 0:
        msg = "`patches` is empty"
        raise ValueError(msg)
    return to_float_image(array, "patches")


def check_labels(labels: Any, count: int) -> NDArray[np.bool_]:
    """Check ``count`` labels (1/True object, 0/False or −1 background) with both classes present.

    Returns
    -------
    (count,) bool array
        True for objects.
    """
    array = np.asarray(labels)
    if array.ndim != 1 or len(array) != count:
        msg = f"`labels` must have shape ({count},) to match `patches`, got {array.shape}"
        raise ValueError(msg)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        msg = f"`labels` must be numbers or booleans, got dtype {array.dtype}"
        raise TypeError(msg)
    values = set(np.unique(array).tolist())
    if not values <= {0, 1, -1}:  # True == 1 and False == 0
        msg = f"`labels` must be 1/True (object) and 0/False or -1 (background), got {sorted(values)}"
        raise ValueError(msg)
    positive = array > 0
    if positive.all() or not positive.any():
        which = "positive" if positive.all() else "negative"
        msg = f"`labels` hold only one class ({which}, {count} samples); training needs both"
        raise ValueError(msg)
    return positive


def patches_from_folders(pos: str | Path, neg: str | Path, *, window: Any = None,
                         color: bool = False) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Read every image in ``pos`` (objects) and ``neg`` (background), resized to the window.

    Parameters
    ----------
    pos, neg : str or Path
        Folders of image files (PNG, JPEG, TIFF, BMP, WebP, PNM), any sizes.
    window : int or (height, width), optional
        Patch size in pixels. Default: the median size of the positives.
    color : bool
        Keep RGB (True) or convert to grey (default).

    Returns
    -------
    patches : (N, height, width[, 3]) float32 array
    labels : (N,) bool array

    Raises
    ------
    ValueError
        If a folder is missing or holds no images, or a file is not an image.
    """
    images = {folder_label: [as_image(path, str(path), color=color) for path in image_files(folder)]
              for folder_label, folder in ((True, pos), (False, neg))}
    if window is None:
        sizes = np.array([image.shape[:2] for image in images[True]])
        window = tuple(int(side) for side in np.median(sizes, axis=0))
    height, width = pair_of(window, "window", positive_int)
    patches = [_resize(image, height, width) for label in (True, False) for image in images[label]]
    labels = np.repeat([True, False], [len(images[True]), len(images[False])])
    return np.stack(patches), labels


def image_files(folder: str | Path) -> list[Path]:
    """The image files in ``folder``, sorted by name; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"folder not found: {folder}"
        raise ValueError(msg)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        msg = f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})"
        raise ValueError(msg)
    return files


def _resize(image: NDArray[np.float32], height: int, width: int) -> NDArray[np.float32]:
    shrink = image.shape[0] > height or image.shape[1] > width
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def check_boxes(boxes: Sequence[Box], shape: tuple[int, ...], source: str) -> list[Box]:
    """Drop nothing silently: raise on degenerate boxes or boxes wholly outside the image.

    Boxes partly outside are kept as they are (their crops are padded by
    repeating the border pixels, as the detector cannot see outside either).
    """
    height, width = shape[:2]
    checked = []
    for box in boxes:
        values = np.array([box.x, box.y, box.w, box.h], dtype=np.float64)
        if not np.isfinite(values).all() or box.w <= 0 or box.h <= 0:
            msg = f"{source}: degenerate box (x={box.x}, y={box.y}, w={box.w}, h={box.h})"
            raise ValueError(msg)
        if box.x >= width or box.y >= height or box.x + box.w <= 0 or box.y + box.h <= 0:
            msg = (f"{source}: box (x={box.x:g}, y={box.y:g}, w={box.w:g}, h={box.h:g}) lies "
                   f"outside the {width}×{height} image")
            raise ValueError(msg)
        checked.append(box)
    return checked


def crop_window(image: NDArray[np.float32], box: tuple[float, float, float, float],
                window: tuple[int, int], *, context: int = 0) -> NDArray[np.float32]:
    """Cut ``box`` out of ``image`` and resize it to ``window``, with context around it.

    Parameters
    ----------
    image : (H, W[, 3]) float32 array
    box : (x, y, w, h)
        Region in image pixels; it may reach outside the image (border pixels repeat).
    window : (height, width)
        Output size of the box's region, in pixels.
    context : int
        Extra output pixels on every side, taken from around the box at the
        same scale.

    Returns
    -------
    (height + 2 context, width + 2 context[, 3]) float32 array
    """
    x, y, w, h = (float(v) for v in box)
    height, width = window
    scale_y, scale_x = h / height, w / width  # image pixels per output pixel
    x0, y0 = x - context * scale_x, y - context * scale_y
    out_h, out_w = height + 2 * context, width + 2 * context
    left, top = int(np.floor(x0)), int(np.floor(y0))
    right = int(np.ceil(x0 + out_w * scale_x))
    bottom = int(np.ceil(y0 + out_h * scale_y))
    pad = [max(0, -top), max(0, bottom - image.shape[0]), max(0, -left), max(0, right - image.shape[1])]
    region = image[max(top, 0):min(bottom, image.shape[0]), max(left, 0):min(right, image.shape[1])]
    if any(pad):
        region = cv2.copyMakeBorder(region, *pad, cv2.BORDER_REPLICATE)
    # sub-pixel offset of the box inside the integer region, as an affine map output → region
    if scale_x > 1.5 or scale_y > 1.5:  # area-average first so that shrinking does not alias
        factor_x, factor_y = max(1.0, scale_x), max(1.0, scale_y)
        small = (max(1, round(region.shape[1] / factor_x)), max(1, round(region.shape[0] / factor_y)))
        factor_x, factor_y = region.shape[1] / small[0], region.shape[0] / small[1]
        region = cv2.resize(region, small, interpolation=cv2.INTER_AREA)
    else:
        factor_x = factor_y = 1.0
    matrix = np.array([[scale_x / factor_x, 0, (x0 - left) / factor_x + 0.5 * scale_x / factor_x - 0.5],
                       [0, scale_y / factor_y, (y0 - top) / factor_y + 0.5 * scale_y / factor_y - 0.5]])
    return cv2.warpAffine(region, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def patches_from_annotations(
    images: Mapping[str, Any],
    annotations: Mapping[str, Sequence[Box]],
    *,
    window: Any,
    flip: bool = True,
    negatives_per_image: int = 20,
    jitter: int = 0,
    context: int = 0,
    color: bool = False,
    seed: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Positive crops of every box and random background windows from annotated images.

    Parameters
    ----------
    images : mapping of str to (H, W[, C]) array or path
        The images, keyed like ``annotations``.
    annotations : mapping of str to sequence of Box
        True boxes per image (`patternfind.evaluation.annotations.load_annotations`).
        Boxes marked ``ignore`` give no positive, and no negative overlaps them.
    window : int or (height, width)
        Patch size in pixels; every box is resized to it.
    flip : bool
        Also add each positive mirrored left-right.
    jitter : int
        Extra copies of every positive, each cut from the box shifted by up to
        5 % of its size and scaled by up to ±5 % (and flipped too if ``flip``).
    negatives_per_image : int
        Random windows per image, at random positions and sizes (from the
        window size up to the image size, with the window's aspect ratio),
        each overlapping every box by IoU < 0.3.
    context : int
        Pixels of context around every patch (for `window_features`).
    color : bool
        Keep RGB (True) or convert to grey (default).
    seed : int
        Seeds the negative sampling.

    Returns
    -------
    patches : (N, height + 2 context, width + 2 context[, 3]) float32 array
    labels : (N,) bool array
        Positives first (each box's copies together, in box order), then negatives.
    """
    patches, labels, _ = annotated_patches(
        images, annotations, window=window, flip=flip, negatives_per_image=negatives_per_image,
        jitter=jitter, context=context, color=color, seed=seed)
    return patches, labels


def annotated_patches(
    images: Mapping[str, Any],
    annotations: Mapping[str, Sequence[Box]],
    *,
    window: Any,
    flip: bool = True,
    negatives_per_image: int = 20,
    jitter: int = 0,
    context: int = 0,
    color: bool = False,
    seed: int = 0,
) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.intp]]:
    """`patches_from_annotations`, also returning the image each patch comes from.

    Returns
    -------
    patches, labels
        As `patches_from_annotations`.
    sources : (N,) int array
        Index of each patch's image in the order of ``annotations``.
    """
    height, width = pair_of(window, "window", positive_int)
    negatives_per_image = non_negative_int(negatives_per_image, "negatives_per_image")
    jitter = non_negative_int(jitter, "jitter")
    context = non_negative_int(context, "context")
    rng = np.random.default_rng(seed)
    positives, negatives = [], []
    positive_sources: list[int] = []
    negative_sources: list[int] = []
    for index, (key, boxes) in enumerate(annotations.items()):
        if key not in images:
            msg = f"`images` has no image for annotation key {key!r}"
            raise ValueError(msg)
        image = as_image(images[key], f"image {key!r}", color=color)
        boxes = check_boxes(boxes, image.shape, f"image {key!r}")
        for box in boxes:
            if box.ignore:
                continue
            for xywh in [(box.x, box.y, box.w, box.h), *_jittered(box, jitter, rng)]:
                crop = crop_window(image, xywh, (height, width), context=context)
                positives.append(crop)
                if flip:
                    positives.append(crop[:, ::-1].copy())
        positive_sources.extend([index] * (len(positives) - len(positive_sources)))
        for xywh in sample_negative_boxes(image.shape, boxes, (height, width),
                                          negatives_per_image, rng):
            negatives.append(crop_window(image, tuple(xywh), (height, width), context=context))
            negative_sources.append(index)
    if not positives:
        msg = "the annotations hold no box to learn from"
        raise ValueError(msg)
    if not negatives:
        msg = "no background window could be sampled away from the boxes (IoU < 0.3)"
        raise ValueError(msg)
    patches = np.stack(positives + negatives)
    labels = np.arange(len(patches)) < len(positives)
    return patches, labels, np.array(positive_sources + negative_sources, dtype=np.intp)


def _jittered(box: Box, count: int, rng: np.random.Generator
              ) -> list[tuple[float, float, float, float]]:
    boxes: list[tuple[float, float, float, float]] = []
    for shift_x, shift_y, log_scale in rng.uniform(-0.05, 0.05, (count, 3)):
        w, h = box.w * np.exp(log_scale), box.h * np.exp(log_scale)
        x = box.x + (box.w - w) / 2 + shift_x * box.w
        y = box.y + (box.h - h) / 2 + shift_y * box.h
        boxes.append((x, y, w, h))
    return boxes


def sample_negative_boxes(shape: tuple[int, ...], boxes: Sequence[Box], window: tuple[int, int],
                          count: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Up to ``count`` random ``(x, y, w, h)`` windows inside the image, IoU < 0.3 with every box."""
    image_h, image_w = shape[:2]
    height, width = window
    largest = min(image_h / height, image_w / width)
    if count == 0 or largest < 1:
        return np.zeros((0, 4))
    candidates = 20 * count
    sizes = np.exp(rng.uniform(0, np.log(largest), candidates))
    w, h = width * sizes, height * sizes
    x = rng.uniform(0, 1, candidates) * (image_w - w)
    y = rng.uniform(0, 1, candidates) * (image_h - h)
    xywh = np.stack([x, y, w, h], axis=1)
    if boxes:
        truth = np.array([[b.x, b.y, b.w, b.h] for b in boxes])
        xywh = xywh[box_iou(xywh, truth).max(axis=1) < NEGATIVE_IOU]
    return xywh[:count]
