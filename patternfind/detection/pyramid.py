"""Image pyramids: resize the image, keep the filter.

An object ``s`` times the filter's size shrinks to the filter's size when the
image is resized by ``1 / s``; scanning every level then finds objects of
every size in ``scales``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind._validation import finite_float

__all__ = [
    "MAX_LEVELS",
    "MEMORY_VARIABLE",
    "MIN_SCALE",
    "check_memory",
    "feature_pyramid_bytes",
    "memory_limit",
    "pyramid_scales",
    "resize_to_scale",
    "scan_memory",
]

#: Smallest object scale: a pyramid level is at most 1 / MIN_SCALE = 10 times
#: the input per side (100 times its pixels). Enlarging further invents no
#: detail, and at 0.01 a 12-megapixel photo would need a 480-gigabyte level.
MIN_SCALE = 0.1

#: Most pyramid levels one search may have (the default search has 15).
MAX_LEVELS = 256

#: Default limit on the memory one search may plan for, in bytes.
DEFAULT_MEMORY_LIMIT = 4 * 2**30

#: Environment variable that overrides `DEFAULT_MEMORY_LIMIT` (bytes; K, M, G suffixes allowed).
MEMORY_VARIABLE = "PATTERNFIND_MAX_MEMORY"


def pyramid_scales(scales: Any = (0.5, 2.0), *, scale_step: Any = 1.1) -> list[float]:
    """Object scales to search: the whole powers of ``scale_step`` within ``scales``.

    Parameters
    ----------
    scales : (min, max) of float
        Smallest and largest object size, as multiples of the filter size;
        the smallest at least `MIN_SCALE`.
    scale_step : float
        Ratio between neighbouring scales; must be > 1 (unless min == max),
        and large enough that the range holds at most `MAX_LEVELS` levels.

    Returns
    -------
    list of float
        Increasing scales ``step**k`` with min ≤ step**k ≤ max, so 1 is
        included whenever it lies in range; ``[min]`` when min == max or
        when no power falls in the range.
    """
    if not isinstance(scales, (tuple, list, np.ndarray)) or len(scales) != 2:
        msg = f"`scales` must be a pair (min, max), got {scales!r}"
        raise ValueError(msg)
    low, high = (finite_float(value, "scales") for value in scales)
    if low <= 0 or high <= 0:
        msg = f"`scales` must be positive, got {tuple(scales)!r}"
        raise ValueError(msg)
    if low > high:
        msg = f"`scales` must be (min, max) with min <= max, got {tuple(scales)!r}"
        raise ValueError(msg)
    if low < MIN_SCALE:
        msg = (
            f"`scales` minimum {low:g} would enlarge the image {1 / low:.3g} times per side; "
            f"the smallest scale is {MIN_SCALE:g} (levels at most {1 / MIN_SCALE:g}× the input "
            "per side): objects that small are below the filter's resolution"
        )
        raise ValueError(msg)
    step = finite_float(scale_step, "scale_step")
    if low == high:
        return [low]
    if step <= 1:
        msg = f"`scale_step` must be greater than 1, got {scale_step!r}"
        raise ValueError(msg)
    # Whole powers of the step, so that scale 1 (the input itself) is always
    # searched when it lies in range; 1e-9 absorbs rounding at the ends.
    first = math.ceil(math.log(low) / math.log(step) - 1e-9)
    last = math.floor(math.log(high) / math.log(step) + 1e-9)
    if last - first + 1 > MAX_LEVELS:
        needed = math.exp(math.log(high / low) / (MAX_LEVELS - 1))
        msg = (
            f"`scale_step` {scale_step!r} gives {last - first + 1} pyramid levels between scales "
            f"{low:g} and {high:g}, more than {MAX_LEVELS}; use a scale_step of at least "
            f"{math.ceil(needed * 1000) / 1000:g} (the default is 1.1) or a narrower range"
        )
        raise ValueError(msg)
    found = [step**power for power in range(first, last + 1)]
    return found or [low]


def resize_to_scale(image: NDArray[np.float32], scale: float) -> NDArray[np.float32]:
    """Resize ``image`` by ``1 / scale`` (area averaging to shrink, bilinear to enlarge).

    Parameters
    ----------
    image : (H, W) or (H, W, C) float32 array
    scale : float
        Object scale; the level has ``round(H / scale)`` rows.

    Returns
    -------
    (round(H / scale), round(W / scale)[, C]) float32 array
        The input itself when ``scale`` is 1.
    """
    if scale == 1:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width / scale)), max(1, round(height / scale)))
    interpolation = cv2.INTER_AREA if scale > 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def scan_memory(
    image_shape: tuple[int, ...],
    scales: list[float],
    *,
    filters: int = 1,
    workers: int = 1,
    keep_maps: bool = False,
) -> int:
    """Estimated peak memory, in bytes, of scanning an image over a pyramid.

    Counts the float32 copy of the image; for each of the ``workers``
    largest levels in flight at once, the level, its grey view and one
    float32 score map per filter; the bounded scratch of the score stripes;
    and, with ``keep_maps``, every level's score maps, which are all kept.

    Parameters
    ----------
    image_shape : (H, W) or (H, W, C) tuple of int
    scales : list of float
        The pyramid's object scales (`pyramid_scales`).
    filters : int
        Number of filters scanned.
    workers : int
        Levels scanned at the same time.
    keep_maps : bool
        Whether every score map is kept (heat maps).

    Returns
    -------
    int
        Bytes.
    """
    height, width = image_shape[:2]
    channels = image_shape[2] if len(image_shape) == 3 else 1
    level_pixels = sorted(
        (max(1, round(height / s)) * max(1, round(width / s)) for s in scales), reverse=True
    )
    # float32 values held per level pixel: the level, its grey view, one map per filter
    per_level = 4 * (channels + 1 + filters)
    in_flight = sum(level_pixels[: max(1, workers)]) * per_level
    stripe_scratch = max(1, workers) * 3 * 8 * 4 * 2**20  # three float64 stripes of 4 Mi values
    kept = sum(level_pixels) * 4 * filters if keep_maps else 0
    return 4 * height * width * channels + in_flight + stripe_scratch + kept


def feature_pyramid_bytes(image_shape: tuple[int, ...], scales: list[float], *, cell: int,
                          channels: int) -> int:
    """Bytes of float32 feature maps over a pyramid: ``channels`` per ``cell`` × ``cell`` pixels.

    What a `patternfind.detection.detector.scan` ``feature_cache`` holds for
    one image and one feature kind.
    """
    height, width = image_shape[:2]
    cells = sum(max(1, round(height / s / cell)) * max(1, round(width / s / cell)) for s in scales)
    return 4 * channels * cells


def memory_limit() -> int:
    """The memory limit in force: `MEMORY_VARIABLE` if set, else `DEFAULT_MEMORY_LIMIT`."""
    text = os.environ.get(MEMORY_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MEMORY_LIMIT
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    number, unit = (text[:-1], units[text[-1].upper()]) if text[-1].upper() in units else (text, 1)
    try:
        limit = float(number) * unit
    except ValueError:
        limit = 0
    if not limit > 0 or not math.isfinite(limit):
        msg = f"environment variable {MEMORY_VARIABLE} must be a positive size such as 8G, got {text!r}"
        raise ValueError(msg)
    return int(limit)


def check_memory(needed: int, what: str, advice: str) -> None:
    """Raise ``ValueError`` if ``needed`` bytes exceed `memory_limit`, saying how to proceed."""
    limit = memory_limit()
    if needed > limit:
        msg = (
            f"{what} needs about {needed / 2**30:.1f} GiB of memory, more than the limit of "
            f"{limit / 2**30:.1f} GiB; {advice}, or raise the limit with the environment "
            f"variable {MEMORY_VARIABLE} (e.g. {MEMORY_VARIABLE}=16G)"
        )
        raise ValueError(msg)
