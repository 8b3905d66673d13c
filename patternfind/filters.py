"""Hand-crafted filters: the lecture's eye written by hand, and a few classic shapes.

Every function returns a `patternfind.Filter` with float32 weights, ``name`` set
to the kind and ``meta = {"kind": "fixed", "source": "hand-crafted",
"options": {...}}``. `make` dispatches on the kind's name.

Conventions
-----------
``size``
    An int ``n`` for an ``(n, n)`` filter, or a pair ``(h, w)``; each side ≥ 3.
Angles
    In degrees, counter-clockwise on screen from the +x axis (x to the right,
    y up as seen, i.e. *against* the row index). ``angle=90`` points up.
Templates and zero mean
    ``eye``, ``edge``, ``bar``, ``corner`` and ``ring`` are *templates*: their
    weights are pixel values in [0, 1] (0 black, 1 white), so they can be
    viewed as images, compared with crops of photographs and scored with
    ``"ncc"`` (which removes the mean anyway). Pass ``zero_mean=True`` to
    subtract the mean, which makes ``"dot"`` scores ignore the window's
    brightness. ``blob`` is a difference of Gaussians: a band-pass filter
    rather than a picture, so it is always zero-mean.
Anti-aliasing
    Shapes are drawn by averaging 4×4 sub-pixel samples per pixel, so edges at
    any angle are smooth and rotating a shape changes its weights continuously.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from patternfind._validation import finite_float, flag, one_of, pair_of, positive_int
from patternfind.structures import Filter

__all__ = ["KINDS", "bar", "blob", "corner", "edge", "eye", "make", "ring"]

POLARITIES = ("bright", "dark")

# Grey levels of the hand-drawn eye, on pixel values in [0, 1]. In grey
# photographs the sclera is only a little lighter than the skin, while the
# iris, the pupil and the lash line of the upper lid are clearly darker.
_SKIN = 0.6
_SCLERA = 0.75
_LASH_LINE = 0.3
_IRIS = 0.25
_PUPIL = 0.05

_OVERSAMPLE = 4

# Weight range under which a drawn shape is invisible (a quarter of one 8-bit
# grey level): e.g. a ring whose radius lies outside the filter.
_MIN_CONTRAST = 1e-3


# Shapes are drawn at 4×4 samples a pixel in float64: cap the side so a typo
# (size 100000) is an error, not a terabyte allocation.
MAX_SIZE = 4096


def _check_size(size: Any) -> tuple[int, int]:
    height, width = pair_of(size, "size", positive_int)
    if min(height, width) < 3:
        msg = f"`size` must be at least 3 pixels on each side, got {size!r}"
        raise ValueError(msg)
    if max(height, width) > MAX_SIZE:
        msg = f"`size` must be at most {MAX_SIZE} pixels on each side, got {size!r}"
        raise ValueError(msg)
    return height, width


def _positive_float(value: Any, name: str) -> float:
    value = finite_float(value, name)
    if value <= 0:
        msg = f"`{name}` must be positive, got {value!r}"
        raise ValueError(msg)
    return value


def _fraction(value: Any, name: str) -> float:
    value = finite_float(value, name)
    if not 0 < value <= 1:
        msg = f"`{name}` must be in (0, 1], got {value!r}"
        raise ValueError(msg)
    return value


def _draw(
    shape: tuple[int, int], coverage: Callable[[NDArray[np.float64], NDArray[np.float64]], Any]
) -> NDArray[np.float64]:
    """Average ``coverage(x, y)`` over sub-pixel samples of every pixel.

    ``x`` and ``y`` are measured in pixels from the filter's centre, with y
    pointing *up* so that angles are counter-clockwise on screen.
    """
    height, width = shape
    offsets = (np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
    rows = (np.arange(height)[:, None] + offsets[None, :]).ravel() - (height - 1) / 2
    cols = (np.arange(width)[:, None] + offsets[None, :]).ravel() - (width - 1) / 2
    x, y = np.meshgrid(cols, -rows)
    values = np.asarray(coverage(x, y), dtype=np.float64)
    values = np.broadcast_to(values, x.shape)
    return values.reshape(height, _OVERSAMPLE, width, _OVERSAMPLE).mean(axis=(1, 3))


def _rotate(
    x: NDArray[np.float64], y: NDArray[np.float64], angle: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Coordinates along (``u``) and across (``v``) the direction ``angle``."""
    theta = np.deg2rad(angle)
    cos, sin = np.cos(theta), np.sin(theta)
    return x * cos + y * sin, -x * sin + y * cos


def _finish(
    kind: str,
    weights: NDArray[np.float64],
    options: dict[str, Any],
    *,
    zero_mean: bool = False,
) -> Filter:
    if float(weights.max() - weights.min()) < _MIN_CONTRAST:
        shown = ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value!r}"
                          for key, value in options.items()
                          if key not in ("size", "polarity", "zero_mean"))
        height, width = weights.shape
        msg = (
            f"the {kind} filter ({shown}) draws nothing inside a {height}×{width} filter: "
            "every weight is the same; choose options that fit the size"
        )
        raise ValueError(msg)
    if zero_mean:
        weights = weights - weights.mean()
    return Filter(
        weights.astype(np.float32),
        name=kind,
        meta={"kind": "fixed", "source": "hand-crafted", "options": options},
    )


def _template(weights: NDArray[np.float64], polarity: str) -> NDArray[np.float64]:
    """Map a coverage in [0, 1] to a bright (1 on 0) or dark (0 on 1) template."""
    return weights if polarity == "bright" else 1.0 - weights


def eye(
    size: int | tuple[int, int],
    *,
    opening: float = 0.45,
    iris: float = 0.4,
    pupil: float = 0.4,
    zero_mean: bool = False,
) -> Filter:
    """An eye drawn by hand: a dark iris and pupil inside a lighter almond.

    The almond (the open eyelids) spans the filter's width, its corners on the
    left and right edges; its lids are two parabolas. Inside it lie the light
    sclera and, at the centre, the dark iris disc (clipped by the lids, as in
    a real eye) with a darker pupil. A dark lash line follows the upper lid;
    skin surrounds it all.

    Parameters
    ----------
    size : int or (h, w) of int
        Filter size in pixels; each side at least 3. For an eye about 20 px
        wide in a photograph, ``size=20`` or ``(12, 20)`` fits.
    opening : float, optional
        Height of the almond as a fraction of the filter's height, in (0, 1].
    iris : float, optional
        Iris diameter as a fraction of the filter's width, in (0, 1].
    pupil : float, optional
        Pupil diameter as a fraction of the iris diameter, in (0, 1].
    zero_mean : bool, optional
        Subtract the mean (see the module notes).

    Returns
    -------
    Filter
        ``(h, w)`` float32 weights: pixel values in [0, 1] (unless
        ``zero_mean``), skin 0.6, sclera 0.75, lash line 0.3, iris 0.25,
        pupil 0.05.
    """
    height, width = _check_size(size)
    opening = _fraction(opening, "opening")
    iris = _fraction(iris, "iris")
    pupil = _fraction(pupil, "pupil")
    zero_mean = flag(zero_mean, "zero_mean")

    half_width = width / 2
    half_opening = opening * height / 2
    iris_radius = iris * width / 2
    pupil_radius = pupil * iris_radius
    lash = max(1.0, 0.12 * height)  # the lash line is a pixel or two thick at eye scale

    def lid(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return half_opening * np.clip(1 - (x / half_width) ** 2, 0, None)

    def level(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
        lids = lid(x)
        inside = np.abs(y) < lids
        radius = np.hypot(x, y)
        values = np.full(x.shape, _SKIN)
        values[(y >= lids) & (y < lids + lash) & (lids > 0)] = _LASH_LINE
        values[inside] = _SCLERA
        values[inside & (radius < iris_radius)] = _IRIS
        values[inside & (radius < pupil_radius)] = _PUPIL
        return values

    weights = _draw((height, width), level)
    options = {"size": [height, width], "opening": opening, "iris": iris, "pupil": pupil,
               "zero_mean": zero_mean}
    return _finish("eye", weights, options, zero_mean=zero_mean)


def blob(
    size: int | tuple[int, int],
    *,
    sigma: float | None = None,
    ratio: float = 1.6,
    polarity: str = "bright",
) -> Filter:
    """A centred blob: a difference of Gaussians (DoG).

    Parameters
    ----------
    size : int or (h, w) of int
        Filter size in pixels; each side at least 3.
    sigma : float, optional
        Standard deviation of the inner Gaussian, in pixels. Default: a sixth
        of the smaller side, so the outer Gaussian still fits in the filter.
    ratio : float, optional
        Outer over inner standard deviation, greater than 1 (1.6 approximates
        the Laplacian of Gaussian).
    polarity : {"bright", "dark"}, optional
        ``"bright"`` responds to a bright blob on a dark surround (positive
        centre), ``"dark"`` to a dark blob (negative centre).

    Returns
    -------
    Filter
        ``(h, w)`` float32 weights summing to zero, scaled so that the largest
        absolute weight (at the centre) is 1.
    """
    height, width = _check_size(size)
    sigma = min(height, width) / 6 if sigma is None else _positive_float(sigma, "sigma")
    ratio = finite_float(ratio, "ratio")
    if ratio <= 1:
        msg = f"`ratio` must be greater than 1, got {ratio!r}"
        raise ValueError(msg)
    polarity = one_of(polarity, "polarity", POLARITIES)

    def gaussian(x: NDArray[np.float64], y: NDArray[np.float64], s: float) -> Any:
        return np.exp(-(x**2 + y**2) / (2 * s**2)) / (2 * np.pi * s**2)

    weights = _draw((height, width), lambda x, y: gaussian(x, y, sigma)
                    - gaussian(x, y, ratio * sigma))
    weights -= weights.mean()  # truncating the outer Gaussian leaves a small positive sum
    weights /= np.abs(weights).max()
    if polarity == "dark":
        weights = -weights
    options = {"size": [height, width], "sigma": sigma, "ratio": ratio, "polarity": polarity}
    return _finish("blob", weights, options)


def edge(
    size: int | tuple[int, int],
    *,
    angle: float = 0.0,
    zero_mean: bool = False,
) -> Filter:
    """A straight step edge through the centre, dark on one side, bright on the other.

    Parameters
    ----------
    size : int or (h, w) of int
        Filter size in pixels; each side at least 3.
    angle : float, optional
        Direction in which the pixels get brighter, in degrees counter-clockwise
        from +x: ``0`` is dark on the left and bright on the right, ``90`` dark
        below and bright above.
    zero_mean : bool, optional
        Subtract the mean (see the module notes).

    Returns
    -------
    Filter
        ``(h, w)`` float32 weights: 0 on the dark side, 1 on the bright side,
        in between on pixels the edge crosses.
    """
    height, width = _check_size(size)
    angle = finite_float(angle, "angle")
    zero_mean = flag(zero_mean, "zero_mean")
    weights = _draw((height, width), lambda x, y: _rotate(x, y, angle)[0] > 0)
    options = {"size": [height, width], "angle": angle, "zero_mean": zero_mean}
    return _finish("edge", weights, options, zero_mean=zero_mean)


def bar(
    size: int | tuple[int, int],
    *,
    angle: float = 0.0,
    width: float | None = None,
    polarity: str = "bright",
    zero_mean: bool = False,
) -> Filter:
    """A straight line (bar) of some width through the centre.

    Parameters
    ----------
    size : int or (h, w) of int
        Filter size in pixels; each side at least 3.
    angle : float, optional
        Direction of the bar, in degrees counter-clockwise from +x: ``0`` is
        horizontal, ``90`` vertical.
    width : float, optional
        Thickness of the bar in pixels. Default: a fifth of the smaller side
        (at least 1).
    polarity : {"bright", "dark"}, optional
        A bright bar (1) on a dark background (0), or the reverse.
    zero_mean : bool, optional
        Subtract the mean (see the module notes).

    Returns
    -------
    Filter
        ``(h, w)`` float32 weights in [0, 1].
    """
    height, width_px = _check_size(size)
    angle = finite_float(angle, "angle")
    width = max(1.0, min(height, width_px) / 5) if width is None else _positive_float(width,
                                                                                      "width")
    polarity = one_of(polarity, "polarity", POLARITIES)
    zero_mean = flag(zero_mean, "zero_mean")
    coverage = _draw((height, width_px),
                     lambda x, y: np.abs(_rotate(x, y, angle)[1]) < width / 2)
    options = {"size": [height, width_px], "angle": angle, "width": width,
               "polarity": polarity, "zero_mean": zero_mean}
    return _finish("bar", _template(coverage, polarity), options, zero_mean=zero_mean)


def corner(
    size: int | tuple[int, int],
    *,
    angle: float = 45.0,
    polarity: str = "bright",
    zero_mean: bool = False,
) -> Filter:
    """A right-angled corner at the centre: one quadrant against the other three.

    Parameters
    ----------
    size : int or (h, w) of int
        Filter size in pixels; each side at least 3.
    angle : float, optional
        Direction of the corner's bisector (pointing into the quadrant), in
        degrees counter-clockwise from +x. The default 45 puts the quadrant at
        the top right.
    polarity : {"bright", "dark"}, optional
        A bright quadrant (1) on a dark background (0), or the reverse.
    zero_mean : bool, optional
        Subtract the mean (see the module notes).

    Returns
    -------
    Filter
        ``(h, w)`` float32 weights in [0, 1].
    """
    height, width = _check_size(size)
    angle = finite_float(angle, "angle")
    polarity = one_of(polarity, "polarity", POLARITIES)
    zero_mean = flag(zero_mean, "zero_mean")

    def quadrant(x: NDArray[np.float64], y: NDArray[np.float64]) -> Any:
        along, across = _rotate(x, y, angle)
        return along > np.abs(across)  # within 45° of the bisector

    coverage = _draw((height, width), quadrant)
    options = {"size": [height, width], "angle": angle, "polarity": polarity,
               "zero_mean": zero_mean}
    return _finish("corner", _template(coverage, polarity), options, zero_mean=zero_mean)


def ring(
    size: int | tuple[int, int],
    *,
    radius: float | None = None,
    width: float | None = None,
    polarity: str = "bright",
    zero_mean: bool = False,
) -> Filter:
    """An annulus centred in the filter.

    Parameters
    ----------
    size : int or (h, w) of int
        Filter size in pixels; each side at least 3.
    radius : float, optional
        Radius of the ring's mid-line in pixels. Default: 0.3 × the smaller side.
    width : float, optional
        Thickness of the ring in pixels, at most ``2 * radius``. Default: a
        third of the radius (at least 1).
    polarity : {"bright", "dark"}, optional
        A bright ring (1) on a dark background (0), or the reverse.
    zero_mean : bool, optional
        Subtract the mean (see the module notes).

    Returns
    -------
    Filter
        ``(h, w)`` float32 weights in [0, 1].
    """
    height, width_px = _check_size(size)
    radius = 0.3 * min(height, width_px) if radius is None else _positive_float(radius, "radius")
    width = max(1.0, radius / 3) if width is None else _positive_float(width, "width")
    if width > 2 * radius:
        msg = f"`width` must be at most 2 * radius = {2 * radius!r}, got {width!r}"
        raise ValueError(msg)
    polarity = one_of(polarity, "polarity", POLARITIES)
    zero_mean = flag(zero_mean, "zero_mean")
    coverage = _draw((height, width_px),
                     lambda x, y: np.abs(np.hypot(x, y) - radius) < width / 2)
    options = {"size": [height, width_px], "radius": radius, "width": width,
               "polarity": polarity, "zero_mean": zero_mean}
    return _finish("ring", _template(coverage, polarity), options, zero_mean=zero_mean)


#: The kinds `make` knows, mapped to the functions that draw them.
KINDS: dict[str, Callable[..., Filter]] = {
    "eye": eye,
    "blob": blob,
    "edge": edge,
    "bar": bar,
    "corner": corner,
    "ring": ring,
}


def make(kind: str, size: int | tuple[int, int], **options: Any) -> Filter:
    """Make a hand-crafted filter by name.

    Parameters
    ----------
    kind : {"eye", "blob", "edge", "bar", "corner", "ring"}
        Which filter; the function of that name documents its options.
    size : int or (h, w) of int
        Filter size in pixels; each side at least 3.
    **options
        Keyword options of that kind, e.g. ``angle=30`` for ``"edge"``.

    Returns
    -------
    Filter
        The filter, named `kind`.

    Examples
    --------
    >>> from patternfind import filters
    >>> filters.make("edge", 15, angle=30).weights.shape
    (15, 15)
    """
    if not isinstance(kind, str) or kind not in KINDS:
        known = ", ".join(repr(name) for name in KINDS)
        msg = f"`kind` must be one of {known}; got {kind!r}"
        raise ValueError(msg)
    function = KINDS[kind]
    try:
        return function(size, **options)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        msg = f"{error}".replace(f"{function.__name__}()", f"filter kind {kind!r}")
        raise TypeError(msg) from None
