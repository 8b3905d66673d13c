"""Reading and writing files: images, filters, and atomic output.

This is the only module (with the CLI and `patternfind.evaluation.annotations`) that
touches the file system. Everything it writes goes through `atomic_write`, so
an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

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

#: Largest image `load_image` decodes by default, in pixels (width × height):
#: Pillow's decompression-bomb error level. A few hundred bytes of PNG can
#: decode to gigabytes, so the size is read from the file's header first.
MAX_IMAGE_PIXELS = 178_956_970

#: Environment variable that overrides `MAX_IMAGE_PIXELS` (a whole number of pixels).
MAX_PIXELS_VARIABLE = "PATTERNFIND_MAX_IMAGE_PIXELS"

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


def max_image_pixels() -> int:
    """The decoded-size limit in force: `MAX_PIXELS_VARIABLE` if set, else `MAX_IMAGE_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return MAX_IMAGE_PIXELS
    try:
        limit = int(float(text))
    except ValueError:
        limit = 0
    if limit <= 0:
        msg = f"environment variable {MAX_PIXELS_VARIABLE} must be a positive number of pixels, got {text!r}"
        raise ValueError(msg)
    return limit


def load_image(path: str | Path, *, max_pixels: int | None = None) -> NDArray[Any]:
    """Read an image file as it is stored, turned upright as its EXIF orientation says.

    Parameters
    ----------
    path : str or Path
        PNG, JPEG, TIFF, BMP, WebP or PNM file.
    max_pixels : int, optional
        Refuse images of more pixels (width × height) than this, before
        decoding them. Default: `max_image_pixels()`, i.e. the environment
        variable ``PATTERNFIND_MAX_IMAGE_PIXELS`` or `MAX_IMAGE_PIXELS`
        (about 179 megapixels, as Pillow).

    Returns
    -------
    image : (H, W), (H, W, 3) or (H, W, 4) array
        Grey, RGB or RGBA (channels in that order, not OpenCV's BGR), in the
        file's own dtype (uint8, uint16 or float32). Palette images come back
        as RGB, grey-with-alpha as RGBA. A JPEG's EXIF orientation (as
        phones write it) is applied, as image viewers do.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable image (corrupt, truncated, not an
        image), or decodes to more than ``max_pixels`` pixels.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"image file not found: {path}"
        raise FileNotFoundError(msg)
    limit = max_image_pixels() if max_pixels is None else max_pixels
    with open(path, "rb") as stream:
        header = _read_header(stream)
    if header is not None:
        _check_pixels(path, header.width, header.height, limit)
    data = np.fromfile(path, dtype=np.uint8)  # survives non-ASCII paths, unlike cv2.imread
    # IMREAD_UNCHANGED keeps alpha and 16 bits but ignores the EXIF orientation;
    # JPEG has neither alpha nor 16 bits, so it is read with flags that apply it.
    flags = (cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
             if header is not None and header.format == "jpeg" else cv2.IMREAD_UNCHANGED)
    try:
        image = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as error:  # e.g. beyond OpenCV's own pixel limit, for formats not parsed here
        msg = f"cannot read {path}: {' '.join(str(error).split())}"
        raise ValueError(msg) from None
    if image is None:
        msg = f"cannot read {path}: not an image file, or the file is corrupt or truncated"
        raise ValueError(msg)
    if image.size == 0:
        msg = f"image {path} is empty"
        raise ValueError(msg)
    _check_pixels(path, image.shape[1], image.shape[0], limit)  # formats without a parsed header
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of the image `load_image` would return, read without decoding.

    The size comes from the file's header (PNG, JPEG with its EXIF
    orientation, BMP, PNM, WebP, TIFF); other files are decoded.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"image file not found: {path}"
        raise FileNotFoundError(msg)
    with open(path, "rb") as stream:
        header = _read_header(stream)
    if header is None:
        height, width = load_image(path).shape[:2]
        return width, height
    if header.orientation >= 5:  # rotated by a quarter turn
        return header.height, header.width
    return header.width, header.height


def _check_pixels(path: Path, width: int, height: int, limit: int) -> None:
    if width * height > limit:
        msg = (
            f"image {path} is {width}×{height} = {width * height / 1e6:.0f} megapixels, more than "
            f"the limit of {limit / 1e6:.0f} megapixels (a guard against decompression bombs); "
            f"if you trust the file, raise the limit (--max-pixels, max_pixels=, or the "
            f"environment variable {MAX_PIXELS_VARIABLE})"
        )
        raise ValueError(msg)


class _Header(NamedTuple):
    """Format and size read from an image file's header, without decoding it."""

    format: str
    width: int
    height: int
    orientation: int = 1  # EXIF orientation (JPEG); 5 to 8 swap width and height


def _read_header(stream: BinaryIO) -> _Header | None:
    """The size of a PNG, JPEG, BMP, PNM, WebP or TIFF image; None if unknown or unreadable."""
    start = stream.read(32)
    try:
        if start.startswith(b"\x89PNG\r\n\x1a\n") and start[12:16] == b"IHDR":
            width, height = struct.unpack(">II", start[16:24])
            return _Header("png", width, height)
        if start.startswith(b"\xff\xd8"):
            return _jpeg_header(stream)
        if start.startswith(b"BM"):
            width, height = struct.unpack("<ii", start[18:26])
            return _Header("bmp", abs(width), abs(height))
        if start[:1] == b"P" and start[1:2] in b"123456" and len(start) > 2:
            stream.seek(2)
            return _pnm_header(stream.read(4096))
        if start.startswith(b"RIFF") and start[8:12] == b"WEBP":
            return _webp_header(start + stream.read(32))
        if start[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_header(stream, "<" if start[:2] == b"II" else ">")
    except (struct.error, ValueError, IndexError):
        return None  # a damaged header: let the decoder say what is wrong
    return None


def _jpeg_header(stream: BinaryIO) -> _Header | None:
    stream.seek(2)
    orientation = 1
    while True:
        marker = stream.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            stream.seek(-1, os.SEEK_CUR)
            continue
        if kind in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            continue
        (length,) = struct.unpack(">H", stream.read(2))
        # start of frame: every SOFn but DHT (C4), JPG (C8) and DAC (CC)
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">xHH", stream.read(5))
            return _Header("jpeg", width, height, orientation)
        if kind in (0xD9, 0xDA):  # end of image or start of scan before any frame
            return None
        segment = stream.read(length - 2)
        if kind == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            orientation = _exif_orientation(segment[6:])


def _exif_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of an EXIF block's first IFD; 1 if absent."""
    order = "<" if tiff[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    for index in range(count):
        tag, _, _, value = struct.unpack_from(order + "HHIH", tiff, offset + 2 + 12 * index)
        if tag == 0x0112:
            return value if 1 <= value <= 8 else 1
    return 1


def _pnm_header(text: bytes) -> _Header | None:
    tokens: list[int] = []
    for line in text.split(b"\n"):
        tokens += [int(token) for token in line.split(b"#")[0].split()]
        if len(tokens) >= 2:
            return _Header("pnm", tokens[0], tokens[1])
    return None


def _webp_header(start: bytes) -> _Header | None:
    chunk = start[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(start[24:27], "little") + 1
        height = int.from_bytes(start[27:30], "little") + 1
        return _Header("webp", width, height)
    if chunk == b"VP8L":
        bits = int.from_bytes(start[21:25], "little")
        return _Header("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", start[26:30])
        return _Header("webp", width & 0x3FFF, height & 0x3FFF)
    return None


def _tiff_header(stream: BinaryIO, order: str) -> _Header | None:
    stream.seek(4)
    (offset,) = struct.unpack(order + "I", stream.read(4))
    stream.seek(offset)
    (count,) = struct.unpack(order + "H", stream.read(2))
    size: dict[int, int] = {}
    for _ in range(min(count, 4096)):
        tag, kind, _, value = struct.unpack(order + "HHI4s", stream.read(12))
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[: 2 if kind == 3 else 4])[0]
    if 256 in size and 257 in size:
        return _Header("tiff", size[256], size[257])
    return None


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
    try:
        ok, encoded = cv2.imencode(suffix, image)
    except cv2.error as error:
        msg = f"cannot write image {path}: {' '.join(str(error).split())}"
        raise ValueError(msg) from None
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
