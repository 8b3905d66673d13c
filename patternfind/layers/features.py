"""Feature channels shared by training and detection: pixels, gradients and dense HOG.

Every kind maps an image to a *feature map* of shape ``(h', w', D)`` together
with a cell size ``cell`` in pixels: ``map[i, j]`` describes the ``cell × cell``
pixel cell whose top-left corner is at row ``i * cell``, column ``j * cell``.
A linear filter of shape ``(fh, fw, D)`` slid over the map therefore covers
windows of ``(fh * cell, fw * cell)`` pixels, and a score at ``map[i, j]``
belongs to the window whose top-left pixel is ``(i * cell, j * cell)``.

Kinds
-----
``"pixels"``
    The image itself with a channel axis (``D = 1`` grey, ``D = 3`` RGB), cell 1.
``"gradients"``
    Three channels per pixel (cell 1): the central differences ``gx``, ``gy``
    and the gradient magnitude, computed on the grey image (OpenCV's luma).
``"hog"``
    A dense map of oriented-gradient cell histograms in the Dalal–Triggs
    style, computed exactly as `skimage.feature.hog` computes them (central
    differences, zero gradient on the image border, colour images use the
    channel with the largest gradient at each pixel, unsigned orientations
    hard-binned into ``bins`` bins of ``180 / bins`` degrees, each cell's
    histogram the *mean* magnitude per bin). Blocks of 2 × 2 cells are
    normalised with ``"L2-Hys"`` (or ``"L2"``, ``"L1"``); because every cell
    belongs to four blocks, the map holds the four normalised copies of each
    cell histogram, so ``D = 4 * bins`` (36 by default). The cell grid is
    padded by one empty cell on each side so that border cells also get four
    copies. Away from the border, ``map[r + a, c + b, 2a + b :: 4]`` is exactly
    skimage's block ``(r, c)``, cell ``(a, b)``: see ``hog_blocks_like_skimage``.

``"cnn"``
    A learned network (`patternfind.layers.network`): nested conv → ReLU →
    pool layers, given by the option ``layers`` (a list of layer specs,
    default `patternfind.layers.network.DEFAULT_LAYERS`) and the learned
    ``parameters`` (`Filter.feature_params`). ``D`` is the last conv layer's
    filter count and the cell is the network's total stride; ``map[i, j]``
    belongs to the window whose top-left pixel is ``(i * cell, j * cell)``
    (padding included: the window is cut and padded as the whole image is).
    Colour input gives a 3-channel network (``color=True``), grey a 1-channel one.

Every kind takes the option ``color`` (default True): False turns colour
input grey (OpenCV's luma) before anything else. Training records it, so a
filter learned from grey patches also sees grey features on colour photos.

Options (``options=`` mapping) for ``"hog"``: ``cell`` (int, default 8),
``bins`` (int, default 9), ``block_norm`` (default ``"L2-Hys"``) and
``signed`` (default False: orientations modulo 180°; True spreads the bins
over 360°, telling a dark-on-light edge from a light-on-dark one, which
scikit-image does not offer) and ``variant``: ``"dalal-triggs"`` (default, as
above) or ``"felzenszwalb"``, the 31-channel features of Felzenszwalb et al.
(2 × bins signed + bins unsigned orientations, each summed over the four
block normalisations, plus 4 texture channels; ``block_norm`` and ``signed``
do not apply), with the same hard-binned cell histograms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind._validation import as_float_array, flag, non_negative_int, one_of, positive_int
from patternfind.layers.network import DEFAULT_LAYERS, Network, layer_from_spec
from patternfind.pixels import to_grey
from patternfind.structures import FEATURE_KINDS

__all__ = [
    "BLOCK_NORMS", "HOG_VARIANTS", "feature_cell", "feature_channels", "feature_map",
    "feature_options", "hog_blocks_like_skimage", "hog_orientation_weights", "window_features",
]

BLOCK_NORMS = ("L2-Hys", "L2", "L1")
HOG_VARIANTS = ("dalal-triggs", "felzenszwalb")
_HOG_DEFAULTS: dict[str, Any] = {"cell": 8, "bins": 9, "block_norm": "L2-Hys", "signed": False,
                                 "variant": "dalal-triggs"}
# Every kind: ``color=False`` turns colour input grey first (OpenCV's luma, the
# detector's own conversion), so a filter trained on grey patches sees grey
# features on colour photos too. True uses the input as it is.
_COMMON_DEFAULTS: dict[str, Any] = {"color": True}
_EPS = 1e-5  # skimage's block-normalisation epsilon


def feature_options(kind: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the complete, checked options of feature ``kind`` (defaults filled in).

    Parameters
    ----------
    kind : {"pixels", "gradients", "hog", "cnn"}
        The feature kind.
    options : mapping, optional
        Options to override; unknown keys are an error.

    Returns
    -------
    options : dict
        Every option of ``kind`` with its value; ``{}`` for kinds without options.
    """
    one_of(kind, "kind", FEATURE_KINDS)
    options = dict(options or {})
    defaults = {**_COMMON_DEFAULTS, **(_HOG_DEFAULTS if kind == "hog" else {})}
    if kind == "cnn":
        defaults["layers"] = [dict(spec) for spec in DEFAULT_LAYERS]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        msg = f"`options` for {kind!r} features accept {sorted(defaults)}, got unknown {unknown}"
        raise ValueError(msg)
    merged = {**defaults, **options}
    merged["color"] = flag(merged["color"], "options['color']")
    if kind == "cnn":
        layers = merged["layers"]
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            msg = f"options['layers'] must be a list of layer specs, got {layers!r}"
            raise ValueError(msg)
        # Layer objects or spec dicts; stored as JSON-ready specs
        merged["layers"] = [(spec if hasattr(spec, "spec") else layer_from_spec(spec)).spec()
                            for spec in layers]
    if kind == "hog":
        merged["cell"] = positive_int(merged["cell"], "options['cell']")
        merged["bins"] = positive_int(merged["bins"], "options['bins']")
        merged["block_norm"] = one_of(merged["block_norm"], "options['block_norm']", BLOCK_NORMS)
        merged["signed"] = flag(merged["signed"], "options['signed']")
        merged["variant"] = one_of(merged["variant"], "options['variant']", HOG_VARIANTS)
    return merged


def feature_cell(kind: str, options: Mapping[str, Any] | None = None) -> int:
    """Return the cell size in pixels of feature ``kind`` (1 for pixels and gradients).

    For ``"cnn"`` it is the network's total stride.
    """
    options = feature_options(kind, options)
    if kind == "cnn":
        return _architecture(options).total_stride
    return int(options["cell"]) if kind == "hog" else 1


def feature_window(kind: str, options: Mapping[str, Any] | None,
                   feature_shape: tuple[int, ...]) -> tuple[int, int]:
    """Return the window ``(height, width)`` in pixels that ``feature_shape[:2]`` cells cover."""
    options = feature_options(kind, options)
    rows, cols = int(feature_shape[0]), int(feature_shape[1])
    if kind == "cnn":
        geometry = _architecture(options).geometry
        return geometry.input_size(rows), geometry.input_size(cols)
    cell = feature_cell(kind, options)
    return rows * cell, cols * cell


def cnn_network(options: Mapping[str, Any] | None,
                parameters: Mapping[str, NDArray[Any]] | None) -> Network:
    """The `Network` of ``"cnn"`` features with these options and learned parameters."""
    options = feature_options("cnn", options)
    if not parameters:
        msg = "'cnn' features need the network's learned `parameters` (Filter.feature_params)"
        raise ValueError(msg)
    return Network.from_parameters(options["layers"], parameters,
                                   channels=3 if options["color"] else 1)


def _architecture(options: Mapping[str, Any]) -> Network:
    """The network of these (complete) options with throw-away weights: for its geometry."""
    return Network(options["layers"], channels=3 if options["color"] else 1)


def feature_channels(kind: str, options: Mapping[str, Any] | None = None, *,
                     image_channels: int = 1) -> int:
    """Return the number of feature channels D for an image with ``image_channels`` channels."""
    options = feature_options(kind, options)
    if kind == "pixels":
        return int(image_channels)
    if kind == "gradients":
        return 3
    if kind == "cnn":
        return _architecture(options).out_channels
    if options["variant"] == "felzenszwalb":
        return 3 * int(options["bins"]) + 4
    return 4 * int(options["bins"])


def feature_map(image: NDArray[Any], *, kind: str,
                options: Mapping[str, Any] | None = None,
                parameters: Mapping[str, NDArray[Any]] | None = None,
                ) -> tuple[NDArray[np.float32], int]:
    """Compute the dense feature map of one image.

    Parameters
    ----------
    image : (H, W) or (H, W, 3) array
        Pixel values in [0, 1] (float32 preferred; other dtypes are converted).
    kind : {"pixels", "gradients", "hog"}
        The feature kind (see the module docstring).
    options : mapping, optional
        Options of the kind, e.g. ``{"cell": 8, "bins": 9}`` for ``"hog"``.
    parameters : mapping of str to array, optional
        The learned parameters of ``"cnn"`` features (`Filter.feature_params`).

    Returns
    -------
    features : (H // cell, W // cell, D) float32 array
        ``features[i, j]`` describes the pixel cell starting at row ``i * cell``,
        column ``j * cell``. Pixels beyond the last whole cell are ignored.
    cell : int
        Cell size in pixels (1 for pixels and gradients).
    """
    image = _check_images(image, "image", batch=False)
    features = _batch_features(image[None], kind, feature_options(kind, options), parameters)
    return features[0], feature_cell(kind, options)


def window_features(patches: NDArray[Any], *, kind: str,
                    options: Mapping[str, Any] | None = None,
                    context: int = 0,
                    parameters: Mapping[str, NDArray[Any]] | None = None) -> NDArray[np.float32]:
    """Compute the features of a stack of equally sized windows.

    Each patch is treated exactly as `feature_map` treats an image (the batch
    is computed in one vectorised pass; the result equals
    ``feature_map(patch, ...)`` for each patch). Because the gradient at an
    image border is zero and border blocks are normalised with empty
    neighbours, a window cut out of a larger image scores slightly differently
    from the same window seen inside the image by the detector; pass patches
    with ``context`` extra pixels on every side to get the features the
    detector sees, with the context stripped from the result.

    Parameters
    ----------
    patches : (N, h, w) or (N, h, w, 3) array
        Pixel values in [0, 1].
    kind : {"pixels", "gradients", "hog"}
        The feature kind.
    options : mapping, optional
        Options of the kind.
    context : int, default 0
        Pixels of surrounding context on each side of every patch; a multiple
        of the cell size.
    parameters : mapping of str to array, optional
        The learned parameters of ``"cnn"`` features (`Filter.feature_params`).

    Returns
    -------
    features : (N, fh, fw, D) float32 array
        With ``fh = (h - 2 * context) // cell``, ``fw = (w - 2 * context) // cell``.
    """
    patches = _check_images(patches, "patches", batch=True)
    options = feature_options(kind, options)
    cell = feature_cell(kind, options)
    context = non_negative_int(context, "context")
    if context % cell:
        msg = f"`context` must be a multiple of the cell size {cell}, got {context}"
        raise ValueError(msg)
    features = _batch_features(patches, kind, options, parameters)
    margin = context // cell
    if margin:
        features = features[:, margin:-margin, margin:-margin]
    if 0 in features.shape[1:3]:
        msg = (f"`patches` of {patches.shape[1]}×{patches.shape[2]} pixels with context "
               f"{context} hold no whole {cell}-pixel cell")
        raise ValueError(msg)
    return np.ascontiguousarray(features)


def _check_images(images: Any, name: str, *, batch: bool) -> NDArray[np.float32]:
    array = as_float_array(images, name, dtype=np.float32)
    base = 3 if batch else 2
    if array.ndim == base + 1 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (base, base + 1) or (array.ndim == base + 1 and array.shape[-1] != 3):
        shape = "(N, h, w) or (N, h, w, 3)" if batch else "(H, W) or (H, W, 3)"
        msg = f"`{name}` must have shape {shape}, got {array.shape}"
        raise ValueError(msg)
    if 0 in array.shape:
        msg = f"`{name}` is empty, shape {array.shape}"
        raise ValueError(msg)
    return array


def _batch_features(images: NDArray[np.float32], kind: str, options: Mapping[str, Any],
                    parameters: Mapping[str, NDArray[Any]] | None = None) -> NDArray[np.float32]:
    """(N, H, W[, 3]) float32 → (N, h', w', D) float32."""
    if not options["color"] and images.ndim == 4:
        images = _grey(images)
    if kind == "cnn":
        network = cnn_network(options, parameters)
        if network.channels == 3 and images.ndim == 3:  # grey input to a colour network
            images = np.repeat(images[..., None], 3, axis=-1)
        return network.forward(images[..., None] if images.ndim == 3 else images)[0]
    if kind == "pixels":
        return images[..., None] if images.ndim == 3 else images
    if kind == "gradients":
        grey = _grey(images)
        g_row, g_col = _central_gradients(grey)
        magnitude = np.hypot(g_col, g_row)
        return np.stack([g_col, g_row, magnitude], axis=-1)
    if options["variant"] == "felzenszwalb":
        return _felzenszwalb(images, options["cell"], options["bins"])
    return _hog(images, options["cell"], options["bins"], options["block_norm"], options["signed"])


def _grey(images: NDArray[np.float32]) -> NDArray[np.float32]:
    """The detector's grey (`patternfind.pixels.to_grey`) of (N, H, W[, 3]) images."""
    if images.ndim == 3:
        return images
    count, height, width = images.shape[:3]
    # one OpenCV call for the whole batch: stack the images into one tall image
    tall = np.ascontiguousarray(images).reshape(count * height, width, 3)
    return to_grey(tall).reshape(count, height, width)


def _central_gradients(images: NDArray[np.float32]) -> tuple[NDArray[np.float32], ...]:
    """Row and column central differences of (N, H, W[, C]), zero on the border (as skimage)."""
    g_row = np.zeros_like(images)
    g_col = np.zeros_like(images)
    g_row[:, 1:-1] = images[:, 2:] - images[:, :-2]
    g_col[:, :, 1:-1] = images[:, :, 2:] - images[:, :, :-2]
    return g_row, g_col


def _hog(images: NDArray[np.float32], cell: int, bins: int,
         block_norm: str, signed: bool = False) -> NDArray[np.float32]:
    histograms = _cell_histograms(images, cell, bins, signed=signed)
    return _normalise_blocks(histograms, block_norm)


def _felzenszwalb(images: NDArray[np.float32], cell: int, bins: int) -> NDArray[np.float32]:
    """Felzenszwalb et al. (PAMI 2010) features: (N, h, w, 3 bins + 4), 31 for 9 bins.

    Each cell's ``2 bins`` signed and ``bins`` unsigned histograms are divided
    by the gradient energy of each of the four 2×2 blocks around it and
    clipped at 0.2; the four results are summed (× 0.5), and four texture
    features hold the sums of the clipped signed bins per block (× 0.2357).
    """
    signed = _cell_histograms(images, cell, 2 * bins, signed=True)
    count, rows, cols = signed.shape[:3]
    # signed and unsigned bins side by side: one pass per block over all 3 · bins channels
    histograms = np.empty((count, rows, cols, 3 * bins), dtype=np.float32)
    histograms[..., :2 * bins] = signed
    np.add(signed[..., :bins], signed[..., bins:], out=histograms[..., 2 * bins:])
    energy = np.zeros((count, rows + 2, cols + 2), dtype=np.float32)
    energy[:, 1:-1, 1:-1] = np.square(histograms[..., 2 * bins:]).sum(axis=-1)
    blocks = energy[:, :-1, :-1] + energy[:, 1:, :-1] + energy[:, :-1, 1:] + energy[:, 1:, 1:]
    clip = np.float32(0.2)
    summed = np.zeros_like(histograms)
    clipped = np.empty_like(histograms)
    texture = np.empty((count, rows, cols, 4), dtype=np.float32)
    for a in (0, 1):
        for c in (0, 1):  # cell (i, j) is cell (a, c) of padded block (i + 1 - a, j + 1 - c)
            norm = 1 / np.sqrt(blocks[:, 1 - a:1 - a + rows, 1 - c:1 - c + cols, None]
                               + np.float32(_EPS**2))
            np.multiply(histograms, norm, out=clipped)
            np.minimum(clipped, clip, out=clipped)
            summed += clipped
            texture[..., 2 * a + c] = clipped[..., :2 * bins].sum(axis=-1)
    summed *= np.float32(0.5)
    texture *= np.float32(0.2357)
    return np.concatenate([summed, texture], axis=-1)


def _cell_histograms(images: NDArray[np.float32], cell: int, bins: int, *,
                     signed: bool = False) -> NDArray[np.float32]:
    """(N, H, W[, 3]) → (N, H // cell, W // cell, bins): mean gradient magnitude per bin."""
    count, height, width = images.shape[:3]
    rows, cols = height // cell, width // cell
    if rows == 0 or cols == 0:
        msg = f"images of {height}×{width} pixels hold no whole {cell}-pixel HOG cell"
        raise ValueError(msg)
    # Pixels past the last whole cell vote for nothing; keep one more row and column
    # so that the gradients of the last used ones are still central differences.
    images = images[:, : min(height, rows * cell + 1), : min(width, cols * cell + 1)]
    g_row, g_col = _central_gradients(images)
    g_row = np.ascontiguousarray(g_row[:, : rows * cell, : cols * cell])
    g_col = np.ascontiguousarray(g_col[:, : rows * cell, : cols * cell])
    if images.ndim == 4:  # the channel with the strongest gradient at each pixel, as skimage
        strongest = (np.square(g_row) + np.square(g_col)).argmax(axis=-1)[..., None]
        g_row = np.take_along_axis(g_row, strongest, axis=-1)[..., 0]
        g_col = np.take_along_axis(g_col, strongest, axis=-1)[..., 0]
    magnitude, degrees = _polar(g_row, g_col)
    orientation_bin = _orientation_bins(g_row, g_col, degrees, bins, signed)
    cell_index = (np.arange(count)[:, None, None] * rows
                  + np.arange(rows * cell)[None, :, None] // cell) * cols \
        + np.arange(cols * cell)[None, None, :] // cell
    votes = np.bincount((cell_index * bins + orientation_bin).ravel(),
                        weights=magnitude.ravel(), minlength=count * rows * cols * bins)
    histograms = votes.astype(np.float32).reshape(count, rows, cols, bins)
    histograms /= np.float32(cell * cell)
    return histograms


def _polar(g_row: NDArray[np.float32], g_col: NDArray[np.float32]
           ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Gradient magnitude and approximate direction in degrees [0, 360) (`cv2.cartToPolar`)."""
    shape = g_row.shape
    magnitude, degrees = cv2.cartToPolar(g_col.reshape(-1, shape[-1]), g_row.reshape(-1, shape[-1]),
                                         angleInDegrees=True)
    return magnitude.reshape(shape), degrees.reshape(shape)


def _orientation_bins(g_row: NDArray[np.float32], g_col: NDArray[np.float32],
                      degrees: NDArray[np.float32], bins: int, signed: bool) -> NDArray[np.intp]:
    """Bin of ``degrees(arctan2(g_row, g_col)) % span`` (span 180 or 360), as skimage bins it.

    ``degrees`` comes from `cv2.cartToPolar` (SIMD, accurate to a fraction of a
    degree); the few pixels within half a degree of a bin edge are re-binned
    from the exact float64 ``arctan2`` that skimage uses, so the bins equal
    skimage's.
    """
    span = 360.0 if signed else 180.0
    if not signed:
        degrees = np.where(degrees >= 180, degrees - np.float32(180), degrees)
    position = degrees * np.float32(bins / span)  # in bin widths
    index = np.minimum(position.astype(np.intp), bins - 1)
    near = np.abs(position - np.round(position)) < np.float32(0.5 * bins / span)  # < 0.5°
    exact = np.rad2deg(np.arctan2(g_row[near].astype(np.float64), g_col[near])) % span
    index[near] = np.minimum((exact * (bins / span)).astype(np.intp), bins - 1)
    return index


def _normalise_blocks(histograms: NDArray[np.float32], block_norm: str) -> NDArray[np.float32]:
    """(N, h, w, b) cell histograms → (N, h, w, 4b): each cell normalised in its four 2×2 blocks.

    Channel ``(2a + c) * b + k`` of cell (i, j) is bin k of that cell as cell
    ``(a, c)`` of the block whose top-left cell is ``(i - a, j - c)``.
    """
    count, rows, cols, bins = histograms.shape
    padded = np.zeros((count, rows + 2, cols + 2, bins), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = histograms
    # blocks[n, R, C, a, c] = padded[n, R + a, C + c]: (N, rows + 1, cols + 1, 2, 2, bins)
    blocks = np.stack([np.stack([padded[:, a:a + rows + 1, c:c + cols + 1] for c in (0, 1)],
                                axis=3) for a in (0, 1)], axis=3)
    eps = np.float32(_EPS)
    if block_norm == "L1":
        blocks = blocks / (np.abs(blocks).sum(axis=(3, 4, 5), keepdims=True) + eps)
    else:
        blocks = blocks / np.sqrt(np.square(blocks).sum(axis=(3, 4, 5), keepdims=True) + eps**2)
        if block_norm == "L2-Hys":
            np.minimum(blocks, np.float32(0.2), out=blocks)
            blocks /= np.sqrt(np.square(blocks).sum(axis=(3, 4, 5), keepdims=True) + eps**2)
    # cell (i, j) is cell (a, c) of padded block (i + 1 - a, j + 1 - c)
    copies = [blocks[:, 1 - a:1 - a + rows, 1 - c:1 - c + cols, a, c] for a in (0, 1) for c in (0, 1)]
    return np.ascontiguousarray(np.concatenate(copies, axis=-1), dtype=np.float32)


def hog_blocks_like_skimage(features: NDArray[np.float32], bins: int) -> NDArray[np.float32]:
    """Rearrange a dense HOG map into `skimage.feature.hog`'s block array.

    Parameters
    ----------
    features : (h, w, 4 * bins) array
        A ``"hog"`` feature map.
    bins : int
        Orientation bins.

    Returns
    -------
    blocks : (h - 1, w - 1, 2, 2, bins) array
        What ``skimage.feature.hog(..., cells_per_block=(2, 2), feature_vector=False)``
        returns for the same image and options.
    """
    rows, cols = features.shape[0] - 1, features.shape[1] - 1
    out = np.empty((rows, cols, 2, 2, bins), dtype=features.dtype)
    for a in (0, 1):
        for c in (0, 1):
            slot = 2 * a + c
            out[:, :, a, c] = features[a:a + rows, c:c + cols, slot * bins:(slot + 1) * bins]
    return out


def hog_orientation_weights(weights: NDArray[Any], options: Mapping[str, Any] | None = None
                            ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Fold HOG-shaped weights into one weight per cell and orientation.

    Every channel that counts gradients of one orientation is summed into
    that orientation: for ``"dalal-triggs"`` the four block-normalised copies
    of each bin; for ``"felzenszwalb"`` the unsigned bin and its two signed
    bins (θ and θ + 180°). Felzenszwalb's four texture channels belong to no
    orientation and are dropped. This is what a HOG glyph picture draws.

    Parameters
    ----------
    weights : (h, w, D) array
        A filter over (or the feature map of) ``"hog"`` features with these ``options``.
    options : mapping, optional
        The ``"hog"`` options (as in `feature_options`), e.g. ``Filter.feature_options``.

    Returns
    -------
    orientation_weights : (h, w, n) float64 array
        The folded weights; ``n = bins`` (Felzenszwalb or unsigned Dalal–Triggs
        orientations over 180°, or signed ones over 360°).
    angles : (n,) float64 array
        The gradient direction at the centre of each orientation bin, in
        degrees, measured from the +x (column) axis towards +y (row, downwards).
        The edge itself runs at ``angles + 90``.
    """
    options = feature_options("hog", options)
    bins = int(options["bins"])
    array = np.asarray(weights, dtype=np.float64)
    expected = feature_channels("hog", options)
    if array.ndim != 3 or array.shape[2] != expected:
        msg = (f"`weights` must have shape (h, w, {expected}) for HOG options {options}, "
               f"got {array.shape}")
        raise ValueError(msg)
    if options["variant"] == "felzenszwalb":
        folded = array[..., :bins] + array[..., bins:2 * bins] + array[..., 2 * bins:3 * bins]
        span = 180.0
    else:
        folded = array.reshape(*array.shape[:2], 4, bins).sum(axis=2)
        span = 360.0 if options["signed"] else 180.0
    angles = (np.arange(bins, dtype=np.float64) + 0.5) * np.float64(span / bins)
    return folded, angles
