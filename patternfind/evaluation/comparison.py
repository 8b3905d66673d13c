"""Run several filters on the same labelled images with the same settings, and score each."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from patternfind._validation import finite_float
from patternfind.detection.detector import detect, operating_point
from patternfind.evaluation.annotations import (
    AnnotationWarning,
    clip_to_image,
    image_paths,
    load_annotations,
)
from patternfind.evaluation.metrics import Evaluation, evaluate
from patternfind.io import image_size, load_filter, load_image
from patternfind.structures import Box, Detection, Filter

__all__ = ["LabelledImages", "compare", "load_labelled_images"]


#: Runs one filter over a mapping of images: ``search(images, filter_, options)``
#: returns ``{key: [Detection, ...]}`` (see `compare`).
Search = Callable[[Mapping[str, Any], Filter, Mapping[str, Any]], dict[str, list[Detection]]]

def compare(
    filters: Filter | str | Path | Sequence[Filter | str | Path],
    annotations: Mapping[str, Sequence[Box]] | str | Path,
    *,
    images: Mapping[str, NDArray[Any] | str | Path] | None = None,
    iou: float = 0.5,
    rank_thresholds: Sequence[float | None] | None = None,
    search: Search | None = None,
    **detect_options: Any,
) -> list[Evaluation]:
    """Detect with each filter on the same images and evaluate each against the ground truth.

    Parameters
    ----------
    filters : Filter, path, or sequence of them
        The filters to compare; paths are read with `patternfind.io.load_filter`.
    annotations : mapping of str to sequence of Box, or path
        Ground truth, as from `patternfind.load_annotations`, or the
        annotation file itself (its images then resolve relative to it).
    images : mapping of str to (H, W[, C]) array or path, optional
        The images to run on, keyed as in ``annotations``; only these are
        evaluated. Default: every image of ``annotations``, read from its
        key (resolved relative to the annotation file when a path was given,
        else to the working folder).
    iou : float
        Overlap a detection needs with a true box to count as found.
    rank_thresholds : sequence of float or None, optional
        One per filter: the score down to which detections are kept for the
        ranking that AP and the PR curve are computed over, while precision,
        recall, F1 and the counts stay at the filter's operating threshold.
        Default (or None for a filter): the operating threshold, so AP only
        ranks the detections above it, and a filter with a high threshold gets
        a PR curve cut short at its operating recall.
    search : callable, optional
        ``search(images, filter_, options) -> {key: [Detection, ...]}``: runs
        one filter over all the images (a mapping of key to path or array)
        with `patternfind.detect`'s ``options``, for example in parallel with
        `patternfind.batch.search_images`. It must raise on an image it cannot
        read. Default: `patternfind.detect` on one image after another, in
        this process.
    **detect_options
        Passed to `patternfind.detect` unchanged for every filter
        (``threshold``, ``score``, ``scales``, ``scale_step``, ``nms_iou``,
        ``max_detections``, ``subpixel``).

    Returns
    -------
    list of Evaluation
        One per filter, in order, with ``name``, ``kind`` (the filter's
        ``meta["kind"]``) and ``seconds_per_image`` filled in. Without
        ``search`` this is detection only: each image is decoded once, outside
        the timing, and dropped after all the filters have run on it. With
        ``search`` it is the wall time of the filter's whole run over the
        images (reading included) divided by their number.

    Raises
    ------
    ValueError
        If there are no filters, an image key is not in ``annotations``, an
        image is missing, or a box lies outside its image. Boxes partly
        outside are clipped with an `AnnotationWarning`.
    """
    if isinstance(filters, (Filter, str, Path)):
        filters = [filters]
    loaded = [f if isinstance(f, Filter) else load_filter(f) for f in filters]
    if not loaded:
        msg = "`filters` must hold at least one filter, got none"
        raise ValueError(msg)
    floors = _rank_thresholds(rank_thresholds, loaded, detect_options)
    ground_truth, pixels = load_labelled_images(annotations, images=images)
    if search is None:
        found, elapsed = _image_by_image(pixels, loaded, floors, detect_options)
    else:
        found, elapsed = [], []
        for filter_, (floor, _) in zip(loaded, floors, strict=True):
            start = time.perf_counter()
            found.append(search(pixels.sources, filter_, _ranked(detect_options, floor)))
            elapsed.append(time.perf_counter() - start)
    evaluations = []
    for index, (filter_, (_, operating)) in enumerate(zip(loaded, floors, strict=True)):
        evaluation = evaluate(found[index], ground_truth, iou=iou, threshold=operating)
        evaluations.append(replace(
            evaluation,
            name=filter_.name,
            kind=filter_.meta.get("kind"),
            seconds_per_image=elapsed[index] / len(pixels),
        ))
    return evaluations


def _ranked(detect_options: Mapping[str, Any], floor: float | None) -> dict[str, Any]:
    """The detection options with the threshold lowered to ``floor`` for ranking."""
    return dict(detect_options) if floor is None else {**detect_options, "threshold": floor}


def _image_by_image(pixels: LabelledImages, filters: Sequence[Filter],
                    floors: Sequence[tuple[float | None, float | None]],
                    detect_options: Mapping[str, Any],
                    ) -> tuple[list[dict[str, list[Detection]]], list[float]]:
    """Every filter on every image, images outermost; detections and detection seconds."""
    found: list[dict[str, list[Detection]]] = [{} for _ in filters]
    elapsed = [0.0] * len(filters)
    # Each image is decoded once and dropped before the next, so memory holds
    # one image whatever the number of images and filters.
    for key in pixels:
        image = pixels[key]
        for index, (filter_, (floor, _)) in enumerate(zip(filters, floors, strict=True)):
            start = time.perf_counter()
            found[index][key] = detect(image, filter_, **_ranked(detect_options, floor))
            elapsed[index] += time.perf_counter() - start
        del image
    return found, elapsed


def _rank_thresholds(rank_thresholds: Sequence[float | None] | None, filters: Sequence[Filter],
                     detect_options: Mapping[str, Any]) -> list[tuple[float | None, float | None]]:
    """(detection threshold, operating threshold or None) per filter; None: detect as given."""
    if rank_thresholds is None:
        return [(None, None)] * len(filters)
    if len(rank_thresholds) != len(filters):
        msg = (f"`rank_thresholds` must have one entry per filter ({len(filters)}), "
               f"got {len(rank_thresholds)}")
        raise ValueError(msg)
    floors: list[tuple[float | None, float | None]] = []
    for filter_, floor in zip(filters, rank_thresholds, strict=True):
        if floor is None:
            floors.append((None, None))
            continue
        _, operating = operating_point(filter_, threshold=detect_options.get("threshold"),
                                       score=detect_options.get("score"),
                                       **{key: detect_options[key] for key in ("polarity", "min_contrast")
                                          if key in detect_options})
        floor = finite_float(floor, "rank_thresholds")
        if floor > operating:
            msg = (f"`rank_thresholds` {floor:g} of filter {filter_.name!r} is above its "
                   f"operating threshold {operating:g}")
            raise ValueError(msg)
        floors.append((floor, operating))
    return floors


class LabelledImages(Mapping[str, NDArray[Any]]):
    """Images keyed as their annotations, decoded only when asked for.

    A read-only mapping of key to (H, W[, C]) array. Image files are decoded
    on access and only the last one is kept, so iterating over the images
    holds one decoded image at a time (60 photos of 12 megapixels need the
    memory of one, not 2.5 GB). Arrays given as sources are returned as they are.
    """

    def __init__(self, sources: Mapping[str, NDArray[Any] | str | Path]) -> None:
        # another LabelledImages: take its sources, not its (decoded) values
        self._sources: dict[str, Any] = dict(
            sources._sources if isinstance(sources, LabelledImages) else sources)
        self._last: tuple[str, NDArray[Any]] | None = None

    def __getitem__(self, key: str) -> NDArray[Any]:
        source = self._sources[key]
        if not isinstance(source, (str, Path)):
            return np.asarray(source)
        if self._last is None or self._last[0] != key:
            self._last = None  # drop the previous image before decoding the next
            self._last = (key, load_image(source))
        return self._last[1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    @property
    def sources(self) -> dict[str, NDArray[Any] | str | Path]:
        """Where each image comes from: its file, or the array given."""
        return dict(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def size(self, key: str) -> tuple[int, int]:
        """``(width, height)`` of an image, from its file header when it is a file."""
        source = self._sources[key]
        if isinstance(source, (str, Path)):
            return image_size(source)
        shape = np.shape(source)
        return shape[1], shape[0]


def load_labelled_images(
    annotations: Mapping[str, Sequence[Box]] | str | Path,
    *,
    images: Mapping[str, NDArray[Any] | str | Path] | None = None,
    image_root: str | Path | None = None,
    allow_outside_root: bool = False,
) -> tuple[dict[str, list[Box]], LabelledImages]:
    """The images of an annotation set, and its boxes clipped to them.

    Parameters
    ----------
    annotations : mapping of str to sequence of Box, or path
        Ground truth, or the annotation file.
    images : mapping of str to array or path, optional
        The images to use, keyed as in ``annotations`` (default: all of them).
    image_root : str or Path, optional
        With an annotation file: the folder its image paths are relative to
        (default: the file's folder); see `patternfind.evaluation.annotations.image_paths`.
    allow_outside_root : bool
        With an annotation file: accept image paths outside ``image_root``.

    Returns
    -------
    ground_truth : dict of str to list of Box
        The boxes of the chosen images, clipped to the image size (read from
        the file headers, without decoding).
    pixels : LabelledImages
        Mapping of key to (H, W[, C]) array, as stored; image files are
        decoded when accessed, one at a time.
    """
    if isinstance(annotations, (str, Path)):
        annotation_path = Path(annotations)
        annotations = load_annotations(annotation_path)
        sources: Mapping[str, Any] = (
            image_paths(annotations, annotation_path, image_root=image_root,
                        allow_outside_root=allow_outside_root)
            if images is None else images
        )
    else:
        sources = {key: Path(key) for key in annotations} if images is None else images
    if not sources:
        msg = "`images` must name at least one image, got none"
        raise ValueError(msg)
    unknown = [key for key in sources if key not in annotations]
    if unknown:
        msg = f"image {unknown[0]!r} has no entry in the annotations"
        raise ValueError(msg)
    missing = [str(v) for v in sources.values()
               if isinstance(v, (str, Path)) and not Path(v).is_file()]
    if missing:
        msg = f"{len(missing)} annotated image(s) not found, e.g. {missing[0]}"
        raise ValueError(msg)
    pixels = LabelledImages(sources)
    ground_truth, clipped = {}, 0
    for key in pixels:
        width, height = pixels.size(key)
        ground_truth[key], changed = clip_to_image(
            annotations[key], width, height, source=f"annotations of image {key!r}"
        )
        clipped += changed
    if clipped:
        warnings.warn(f"clipped {clipped} annotation box(es) that reached outside their image",
                      AnnotationWarning, stacklevel=2)
    return ground_truth, pixels
