"""Which image files a run covers: files, folders, glob patterns and ``@list.txt`` files.

Inputs expand in a stable order: each argument in the order given, the files
an argument stands for sorted by path, and a file named twice is kept once.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from patternfind.io import IMAGE_SUFFIXES

__all__ = ["ExpandedInputs", "expand_inputs"]

_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class ExpandedInputs:
    """The image paths of a run, and how many files the expansion passed over.

    Attributes
    ----------
    paths : tuple of str
        Image paths, in run order, each once. Files named directly or in a
        list file are kept even when they are missing or not images: they get
        an error record when the run reaches them.
    skipped : int
        Files inside folders or matched by patterns that are not images (by
        their name's ending), and so were passed over.
    """

    paths: tuple[str, ...]
    skipped: int


def expand_inputs(items: Sequence[str | Path], *, recursive: bool = False) -> ExpandedInputs:
    """Expand image arguments into the list of image files to process.

    Parameters
    ----------
    items : sequence of str or Path
        Each is one of: an image file; a folder (its images; with
        ``recursive`` also those of its sub-folders); a glob pattern such as
        ``"plates/*.tif"`` (``**`` descends with ``recursive``); or
        ``"@list.txt"``, a text file with one path per line (blank lines and
        lines starting with ``#`` are ignored; relative paths are taken
        relative to the list file's folder).
    recursive : bool
        Descend into sub-folders of folders and let ``**`` match across them.

    Returns
    -------
    ExpandedInputs

    Raises
    ------
    ValueError
        If ``items`` is empty, a folder holds no image, a pattern matches no
        image, or a list file names nothing.
    FileNotFoundError
        If a list file does not exist.
    """
    if isinstance(items, (str, Path)):
        items = [items]
    if not items:
        msg = "no images given: name image files, folders, glob patterns or @list.txt"
        raise ValueError(msg)
    paths: list[str] = []
    skipped = 0
    for item in items:
        text = str(item)
        if text.startswith("@"):
            found = _list_file(Path(text[1:]))
        elif Path(text).is_dir():
            found, passed_over = _images_only(_folder_files(Path(text), recursive))
            skipped += passed_over
            if not found:
                msg = f"folder {text} holds no image file ({', '.join(IMAGE_SUFFIXES)})" + (
                    "" if recursive else "; use --recursive to search its sub-folders")
                raise ValueError(msg)
        elif _GLOB_CHARACTERS & set(text) and not Path(text).exists():
            matches = sorted(m for m in glob.glob(text, recursive=recursive) if Path(m).is_file())
            found, passed_over = _images_only(matches)
            skipped += passed_over
            if not found:
                msg = f"pattern {text!r} matches no image file"
                raise ValueError(msg)
        else:
            found = [text]
        paths.extend(found)
    return ExpandedInputs(tuple(dict.fromkeys(paths)), skipped)


def _folder_files(folder: Path, recursive: bool) -> list[str]:
    entries = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(str(path) for path in entries if path.is_file())


def _images_only(files: list[str]) -> tuple[list[str], int]:
    images = [name for name in files if Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return images, len(files) - len(images)


def _list_file(path: Path) -> list[str]:
    if not path.is_file():
        msg = f"list file not found: {path}"
        raise FileNotFoundError(msg)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        msg = f"list file {path} is not UTF-8 text: give one image path per line"
        raise ValueError(msg) from None
    entries = [line.strip() for line in lines]
    names = [entry for entry in entries if entry and not entry.startswith("#")]
    if not names:
        msg = f"list file {path} names no image"
        raise ValueError(msg)
    base = path.parent
    return [name if Path(name).is_absolute() else str(base / name) for name in names]
