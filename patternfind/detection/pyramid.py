"""Image pyramids: resize the image, keep the filter.

An object ``s`` times the filter's size shrinks to the filter's size when the
image is resized by ``1 / s``; scanning every level then finds objects of
every size in ``scales``.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind._validation import finite_float

__all__ = ["pyramid_scales", "resize_to_scale"]


def pyramid_scales(scales: Any = (0.5, 2.0), *, scale_step: Any = 1.1) -> list[float]:
    """Object scales to search: the whole powers of ``scale_step`` within ``scales``.

    Parameters
    ----------
    scales : (min, max) of float
        Smallest and largest object size, as multiples of the filter size.
    scale_step : float
        Ratio between neighbouring scales; must be > 1 (unless min == max).

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
