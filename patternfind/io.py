"""Reading and writing files: images, filters, and atomic output.

This is the only module (with the CLI and `patternfind.evaluation.annotations`) that
touches the file system. Everything it writes goes through `atomic_write`, so
an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind.pixels import to_float_image
from patternfind.structures import FILTER_FORMAT_VERSION, Filter

__all__ = [
    "IMAGE_SUFFIXES", "atomic_write", "load_filter", "load_image", "save_filter", "save_image",
    "write_text",
]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _current_umask()

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".ppm", ".pnm")


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary file keeps the suffix of ``path`` so that writers choosing
    the format by extension (cv2, numpy) behave as for ``path``.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        msg = f"cannot write {path}: folder {directory} does not exist"
        raise FileNotFoundError(msg)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=directory
    )
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp makes the file private (0600); give it the permissions any new file gets
        os.chmod(temporary_path, 0o666 & ~_UMASK)
        os.replace(temporary_path, path)
    finally:
        temporary_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def load_image(path: str | Path) -> NDArray[Any]:
    """Read an image file as it is stored.

    Parameters
    ----------
    path : str or Path
        PNG, JPEG, TIFF, BMP, WebP or PNM file.

    Returns
    -------
    image : (H, W), (H, W, 3) or (H, W, 4) array
        Grey, RGB or RGBA (channels in that order, not OpenCV's BGR), in the
        file's own dtype (uint8, uint16 or float32). Palette images come back
        as RGB, grey-with-alpha as RGBA.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable image (corrupt, truncated, not an image).
    """
    path = Path(path)
    if not path.is_file():
        msg = f"image file not found: {path}"
        raise FileNotFoundError(msg)
    data = np.fromfile(path, dtype=np.uint8)  # survives non-ASCII paths, unlike cv2.imread
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        msg = f"cannot read {path}: not an image file, or the file is corrupt or truncated"
        raise ValueError(msg)
    if image.size == 0:
        msg = f"image {path} is empty"
        raise ValueError(msg)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def save_image(path: str | Path, image: NDArray[Any]) -> None:
    """Write an RGB(A) or grey uint8/uint16 image atomically; the format follows the suffix."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        msg = f"cannot write image {path}: unknown suffix {suffix!r}; use one of {IMAGE_SUFFIXES}"
        raise ValueError(msg)
    ok, encoded = cv2.imencode(suffix, image)
    if not ok:
        msg = f"OpenCV could not encode an image of shape {image.shape} as {suffix}"
        raise ValueError(msg)
    with atomic_write(path) as temporary:
        encoded.tofile(temporary)


# ---------------------------------------------------------------- filters

_FILTER_FIELDS = ("name", "bias", "threshold", "score", "features", "window", "feature_options", "meta")


def load_filter(path: str | Path, *, name: str | None = None) -> Filter:
    """Read a `Filter` from ``.npy`` (weights only), ``.npz`` (`save_filter`) or an image.

    An image file becomes a pixel template scaled to [0, 1]; its alpha
    channel, if any, becomes the mask (alpha > 0 counts). The name defaults
    to the file's stem.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"filter file not found: {path}"
        raise FileNotFoundError(msg)
    default_name = name or path.stem
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            weights = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            msg = f"cannot read filter {path}: {error}"
            raise ValueError(msg) from None
        return _filter_or_error(path, weights, name=default_name, meta={"kind": "fixed"})
    if suffix == ".npz":
        return _load_filter_npz(path, name=name)
    if suffix in IMAGE_SUFFIXES:
        image = load_image(path)
        mask = None
        if image.ndim == 3 and image.shape[2] in (2, 4):
            mask = image[..., -1] > 0
            image = image[..., :-1]
        if image.ndim == 3 and image.shape[2] == 3 and _is_grey(image):
            image = image[..., 0]  # a grey template saved as RGB is a grey filter
        weights = to_float_image(image, "filter image")
        meta = {"kind": "fixed", "source": str(path.name)}
        return _filter_or_error(path, weights, name=default_name, mask=mask, meta=meta)
    msg = f"cannot read filter {path}: unknown suffix {suffix!r} (use .npy, .npz or an image)"
    raise ValueError(msg)


def _is_grey(image: NDArray[Any]) -> bool:
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]))


def _filter_or_error(path: Path, weights: Any, **fields: Any) -> Filter:
    try:
        return Filter(weights, **fields)
    except (ValueError, TypeError) as error:
        msg = f"{path}: {error}"
        raise ValueError(msg) from None


def _load_filter_npz(path: Path, *, name: str | None) -> Filter:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as error:
        msg = f"cannot read filter {path}: {error}"
        raise ValueError(msg) from None
    if "weights" not in arrays or "header" not in arrays:
        msg = f"{path} is not a patternfind filter: it lacks 'weights' or 'header'"
        raise ValueError(msg)
    try:
        header = json.loads(str(arrays["header"]))
    except json.JSONDecodeError as error:
        msg = f"{path}: corrupt filter header ({error})"
        raise ValueError(msg) from None
    version = header.get("format_version")
    if not isinstance(version, int) or version > FILTER_FORMAT_VERSION:
        msg = (
            f"{path} was saved by a newer patternfind (filter format {version!r}; "
            f"this version reads up to {FILTER_FORMAT_VERSION}); upgrade patternfind"
        )
        raise ValueError(msg)
    fields = {key: header[key] for key in _FILTER_FIELDS if key in header}
    if fields.get("window") is not None:
        fields["window"] = tuple(fields["window"])
    if name is not None:
        fields["name"] = name
    fields.setdefault("name", path.stem)
    return _filter_or_error(path, arrays["weights"], mask=arrays.get("mask"), **fields)


def save_filter(filter_: Filter, path: str | Path) -> None:
    """Write ``filter_`` atomically.

    ``.npz`` keeps every field (weights, mask and a JSON header with the
    rest); ``.npy`` keeps only the weights, the lecture's plain filter file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_write(path) as temporary, open(temporary, "wb") as stream:
            np.save(stream, filter_.weights)
        return
    if suffix != ".npz":
        msg = f"cannot save filter to {path}: use a .npz (all fields) or .npy (weights only) file"
        raise ValueError(msg)
    header = {key: getattr(filter_, key) for key in _FILTER_FIELDS}
    header["format_version"] = FILTER_FORMAT_VERSION
    try:
        header_text = json.dumps(header, default=_json_default)
    except TypeError as error:
        msg = f"filter {filter_.name!r} has metadata that cannot be saved as JSON: {error}"
        raise ValueError(msg) from None
    arrays: dict[str, NDArray[Any]] = {"weights": filter_.weights, "header": np.array(header_text)}
    if filter_.mask is not None:
        arrays["mask"] = filter_.mask
    with atomic_write(path) as temporary, open(temporary, "wb") as stream:
        np.savez_compressed(stream, **arrays)  # type: ignore[arg-type]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    msg = f"{type(value).__name__} is not JSON serialisable"
    raise TypeError(msg)
