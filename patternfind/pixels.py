"""Pixel conversion: what an image is to patternfind, in one place.

Every stage sees pixels the same way: values scaled to [0, 1] as float32
(`to_float_image`), alpha dropped (`prepare_image`), OpenCV's luma for grey
(`to_grey`), grey repeated for colour (`to_rgb`), and uint8 RGB for drawing
(`as_rgb8`). This module reads no file and imports nothing from patternfind but
argument checks.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind._validation import check_finite

__all__ = ["FLOAT_RANGE_MARGIN", "as_rgb8", "prepare_image", "to_float_image", "to_grey", "to_rgb"]

#: How far float pixel values may stray beyond [0, 1] (resampling with cubic
#: kernels overshoots at sharp edges by a few percent); anything further is
#: taken to be on another scale (0-255, 0-65535) and refused, never rescaled.
FLOAT_RANGE_MARGIN = 0.1


def to_float_image(image: Any, name: str = "image") -> NDArray[np.float32]:
    """Scale pixel values to [0, 1] as float32, whatever the input dtype.

    uint8 is divided by 255, uint16 by 65535, bool becomes 0/1; float input
    is kept as it is, and must be in [0, 1] already (as in scikit-image's
    `img_as_float` convention), give or take `FLOAT_RANGE_MARGIN`. A float
    image on another scale (0-255, or 0-65535 in a float TIFF) raises
    instead of being guessed at: its scores would look valid and be wrong.
    Other integer types are ambiguous (is an int64 image 8-bit or 16-bit?)
    and raise too.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array
    name : str
        Parameter name used in error messages.

    Returns
    -------
    (H, W) or (H, W, C) float32 array

    Raises
    ------
    ValueError
        If a float image holds NaN or inf, or values outside [0, 1] by more
        than `FLOAT_RANGE_MARGIN`; the message says how to rescale it.
    TypeError
        If the dtype is not uint8, uint16, bool or float.
    """
    array = np.asarray(image)
    if array.dtype in (np.uint8, np.uint16):
        pixels = array.astype(np.float32)
        pixels *= np.float32(1 / np.iinfo(array.dtype).max)  # in place: no second image-sized copy
        return pixels
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        array = np.ascontiguousarray(array, dtype=np.float32)
        check_finite(array, name)
        _check_float_range(array, name)
        return array
    msg = (
        f"`{name}` has dtype {array.dtype}; pass uint8, uint16, bool or float "
        f"(e.g. `{name}.astype(np.uint8)` for 0-255 values)"
    )
    raise TypeError(msg)


def _check_float_range(array: NDArray[np.float32], name: str) -> None:
    if array.size == 0:
        return
    low, high = float(array.min()), float(array.max())
    if low >= -FLOAT_RANGE_MARGIN and high <= 1 + FLOAT_RANGE_MARGIN:
        return
    if low >= 0 and high <= 255:
        hint = f"if these are 8-bit values (0-255), pass `{name} / 255` (or the uint8 array itself)"
    elif low >= 0 and high <= 65535:
        hint = f"if these are 16-bit values (0-65535), pass `{name} / 65535` (or the uint16 array itself)"
    else:
        hint = (f"rescale it first, e.g. `({name} - {name}.min()) / ({name}.max() - {name}.min())`"
                " or skimage.exposure.rescale_intensity")
    msg = (f"`{name}` is a float image with values from {low:g} to {high:g}; float pixels "
           f"must be in [0, 1]: {hint}. A float image file (TIFF) must hold values in [0, 1], "
           "or be saved as 8- or 16-bit integers")
    raise ValueError(msg)


def prepare_image(image: Any, name: str = "image") -> NDArray[np.float32]:
    """Pixel values scaled to [0, 1] as float32, with any alpha channel dropped.

    Parameters
    ----------
    image : (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4) array
        Grey, grey+alpha, RGB or RGBA; uint8, uint16, bool or float.

    Returns
    -------
    (H, W) or (H, W, 3) float32 array
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (2, 4):
        array = array[..., :-1]  # alpha says where the photo is opaque, not what it shows
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        msg = f"`{name}` must be (H, W) grey or (H, W, 3|4) colour, got shape {array.shape}"
        raise ValueError(msg)
    if 0 in array.shape:
        msg = f"`{name}` is empty (shape {array.shape})"
        raise ValueError(msg)
    return np.ascontiguousarray(to_float_image(array, name))


def to_grey(image: NDArray[np.float32]) -> NDArray[np.float32]:
    """ITU-R 601 luma (OpenCV's RGB→grey) of an (H, W, 3) float32 image; grey passes through."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def to_rgb(image: NDArray[np.float32]) -> NDArray[np.float32]:
    """An (H, W) grey image repeated into (H, W, 3); RGB passes through."""
    if image.ndim == 3:
        return image
    return np.repeat(image[..., None], 3, axis=2)


def as_rgb8(image: Any) -> NDArray[np.uint8]:
    """A uint8 RGB copy of a grey, RGB or RGBA image of any supported dtype."""
    pixels = to_rgb(prepare_image(image))
    return np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8)
