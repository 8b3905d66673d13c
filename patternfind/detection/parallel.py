"""A small thread pool for independent pieces of work.

cv2 and numpy release the GIL in their heavy calls, so threads over filters,
pyramid levels and row stripes use both cores without copying images into
other processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import cv2

from patternfind._validation import positive_int

__all__ = ["map_in_threads", "resolve_workers"]

T = TypeVar("T")


def resolve_workers(workers: Any) -> int:
    """Number of threads to use: ``workers``, else OpenCV's own thread setting.

    Following `cv2.setNumThreads` lets a user who capped OpenCV cap us too.
    """
    if workers is None:
        return max(1, cv2.getNumThreads())
    return positive_int(workers, "workers")


def map_in_threads(function: Callable[..., T], items: Iterable[Any], workers: int) -> list[T]:
    """``[function(item) for item in items]``, run in ``workers`` threads, order kept."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(function, items))
