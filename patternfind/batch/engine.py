"""Detection over many images: one process, a pool of local processes, or a Dask cluster.

`detect_many` yields one `ImageResult` per image as soon as it is done. The
filters are loaded once in the caller and sent once to each worker; the
workers read their own images, so only paths (or, with ``send_bytes``, the
encoded files) cross process boundaries. At most a few images per worker are
in flight at any time, so memory stays flat however many images there are.
A failure is a property of one image: it becomes an error record and the run
goes on.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from patternfind import io
from patternfind._validation import flag, positive_int
from patternfind.detection import DetectOptions, LevelMap, load_filters
from patternfind.detection.detector import operating_point, scan
from patternfind.show.draw import draw_detections, heatmap
from patternfind.structures import Detection, Filter

__all__ = ["ImageResult", "available_cores", "detect_many", "search_images"]

#: Images in flight per worker: enough to keep each worker busy while results
#: travel back, few enough that memory does not grow with the image count.
_IN_FLIGHT_PER_WORKER = 2
#: Images per Dask task: each task costs the scheduler several milliseconds,
#: so a task carries a few images (PERFORMANCE.md measured about 9 ms a task).
_IMAGES_PER_DASK_TASK = 4
#: Thread-count variables read once by numerical libraries when they load;
#: set for worker processes so that N workers do not each start every core's
#: worth of threads.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

ImageSource = str | Path | NDArray[Any]


@dataclass(frozen=True)
class ImageResult:
    """What one image of a batch produced: its detections, or why it failed.

    Attributes
    ----------
    image : str
        The image's path as given (for arrays, their position in the input).
    width, height : int
        Image size in pixels (0 when the image could not be read).
    detections : tuple of Detection
        Best score first; empty on failure.
    error : str or None
        One line saying why the image failed, or None.
    """

    image: str
    width: int = 0
    height: int = 0
    detections: tuple[Detection, ...] = field(default=())
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the image was read and searched."""
        return self.error is None



@dataclass(frozen=True)
class _Task:
    """One image to process: its position, its name and where its pixels come from."""

    index: int
    name: str
    source: str | bytes | NDArray[Any]
    draw_to: str | None = None
    heatmap_to: str | None = None
    max_pixels: int | None = None


def available_cores() -> int:
    """Cores this process may run on (the CPU affinity, where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def detect_many(
    images: Iterable[ImageSource],
    filters: Filter | str | Path | Sequence[Filter | str | Path],
    *,
    jobs: int | None = None,
    client: Any = None,
    progress: bool = False,
    ordered: bool = False,
    send_bytes: bool = False,
    pictures: Callable[[str], tuple[str | Path | None, str | Path | None]] | None = None,
    max_pixels: int | None = None,
    options: DetectOptions | None = None,
    **search_options: Any,
) -> Generator[ImageResult, None, None]:
    """Detect the filters in every image, in parallel, yielding each image's result.

    Parameters
    ----------
    images : iterable of path or (H, W[, C]) array
        Image files (see `patternfind.batch.expand_inputs` for folders, glob
        patterns and list files), or arrays already in memory.
    filters : Filter, path, or a list of them
        Loaded once here, then sent once to each worker.
    jobs : int, optional
        Worker processes on this machine. Default: every core. 1 runs in
        this process. Ignored when ``client`` is given.
    client : distributed.Client, optional
        Run on this Dask cluster instead (``pip install "patternfind[dask]"``).
        The workers read image paths themselves, so they must see the same
        files as this process, unless ``send_bytes``.
    progress : bool
        Draw a progress bar on stderr (images done, images per second,
        time left, failures).
    ordered : bool
        Yield results in input order instead of completion order.
    send_bytes : bool
        Read each file here and send its bytes to the worker: for clusters
        without a shared filesystem.
    pictures : callable, optional
        ``pictures(image) -> (draw_path, heatmap_path)``, either may be None:
        where the worker that searched ``image`` writes the image with its
        boxes drawn, and the heat map of its best score per pixel.
    max_pixels : int, optional
        Refuse images of more pixels than this before decoding them (see
        `patternfind.io.load_image`); applied on every worker, remote ones too.
    options : DetectOptions, optional
        Detection options, as for `patternfind.detect`; keywords override it.
    **search_options
        Any `DetectOptions` field by keyword (``threshold=0.7``).

    Yields
    ------
    ImageResult
        One per image; an unreadable image gives a result with ``error`` set.
        The results do not depend on ``jobs`` or ``client``.

    Raises
    ------
    ValueError, TypeError
        For bad options or filters, before any image is read.
    """
    options = DetectOptions.build(options, search_options)
    loaded = load_filters(filters)
    for filter_ in loaded:  # a bad threshold or score fails here, not once per image
        operating_point(filter_, threshold=options.threshold, score=options.score)
    ordered, progress, send_bytes = (flag(ordered, "ordered"), flag(progress, "progress"),
                                     flag(send_bytes, "send_bytes"))
    processes = 1
    if client is None:
        processes = available_cores() if jobs is None else positive_int(jobs, "jobs")
    images = list(images) if not isinstance(images, Sequence) else images
    if max_pixels is not None:
        max_pixels = positive_int(max_pixels, "max_pixels")
    tasks = (_task(index, image, send_bytes, pictures, max_pixels)
             for index, image in enumerate(images))
    if client is not None:
        numbered = _on_dask(tasks, loaded, options, client)
    elif processes == 1:
        numbered = (_numbered(task, loaded, options) for task in tasks)
    else:
        numbered = _on_processes(tasks, loaded, options, processes)
    if ordered:
        numbered = _in_input_order(numbered)
    results: Iterator[ImageResult] = (result for _, result in numbered)
    if progress:
        results = _with_progress_bar(results, total=len(images))
    yield from results


def search_images(images: Mapping[str, ImageSource], filter_: Filter,
                  options: Mapping[str, Any], *, jobs: int | None = None,
                  client: Any = None) -> dict[str, list[Detection]]:
    """One filter over keyed images with `detect_many`: `patternfind.compare`'s ``search``.

    Parameters
    ----------
    images : mapping of str to path or (H, W[, C]) array
        The images, keyed as their annotations.
    filter_ : Filter
    options : mapping
        `patternfind.detect`'s options.
    jobs, client
        As in `detect_many`.

    Returns
    -------
    dict of str to list of Detection
        Each key's detections, best first.

    Raises
    ------
    ValueError
        If an image cannot be read or searched (naming its key), as the
        serial comparison would.
    """
    keys = list(images)
    results = detect_many([images[key] for key in keys], filter_, jobs=jobs, client=client,
                          ordered=True, **options)
    found = {}
    for key, result in zip(keys, results, strict=True):
        if result.error is not None:
            results.close()
            msg = f"image {key!r}: {result.error}"
            raise ValueError(msg)
        found[key] = list(result.detections)
    return found


def _task(index: int, image: ImageSource, send_bytes: bool,
          pictures: Callable[[str], tuple[str | Path | None, str | Path | None]] | None,
          max_pixels: int | None) -> _Task:
    name = str(image) if isinstance(image, (str, Path)) else str(index)
    source: str | bytes | NDArray[Any] = name
    if not isinstance(image, (str, Path)):
        source = np.asarray(image)
    elif send_bytes:
        try:
            source = Path(image).read_bytes()
        except OSError as error:  # the worker reports it, like any unreadable image
            source = f"\0{_one_line(error)}"
    draw_to, heatmap_to = pictures(name) if pictures is not None else (None, None)
    return _Task(index, name, source, None if draw_to is None else str(draw_to),
                 None if heatmap_to is None else str(heatmap_to), max_pixels)


# ---------------------------------------------------------------- one image


def _process(task: _Task, filters: list[Filter], options: DetectOptions) -> ImageResult:
    """Read and search one image; any failure becomes the result's ``error``."""
    try:
        image = _read(task)
        detections, maps = scan(image, filters, options=options,
                                keep_maps=task.heatmap_to is not None)
        _write_pictures(task, image, detections, maps, filters, options)
    except Exception as error:  # noqa: BLE001 - one bad image must not end a run of thousands
        return ImageResult(task.name, error=_one_line(error))
    return ImageResult(task.name, width=int(image.shape[1]), height=int(image.shape[0]),
                       detections=tuple(detections))


def _numbered(task: _Task, filters: list[Filter], options: DetectOptions
              ) -> tuple[int, ImageResult]:
    return task.index, _process(task, filters, options)


def _write_pictures(task: _Task, image: NDArray[Any], detections: list[Detection],
                    maps: list[LevelMap], filters: list[Filter], options: DetectOptions) -> None:
    if task.draw_to is not None:
        io.save_image(task.draw_to, draw_detections(image, detections))
    if task.heatmap_to is not None:
        # ncc and cosine maps share the range [-1, 1]; dot scores have no fixed range
        bounded = all((options.score or f.score or "ncc") != "dot" and f.features == "pixels"
                      for f in filters)
        picture = heatmap(image.shape, maps, value_range=(-1, 1) if bounded else None)
        io.save_image(task.heatmap_to, picture)


def _read(task: _Task) -> NDArray[Any]:
    source = task.source
    if isinstance(source, str):
        if source.startswith("\0"):  # the client could not read the file
            raise OSError(source[1:])
        return io.load_image(source, max_pixels=task.max_pixels)
    if isinstance(source, bytes):
        # Decode through the same reader as a local file, with its checks.
        suffix = Path(task.name).suffix
        with tempfile.TemporaryDirectory(prefix="patternfind-") as folder:
            path = Path(folder) / f"image{suffix}"
            path.write_bytes(source)
            try:
                return io.load_image(path, max_pixels=task.max_pixels)
            except (ValueError, OSError) as error:  # name the user's file, not the copy
                raise type(error)(str(error).replace(str(path), task.name)) from None
    return source


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "no message"
    if isinstance(error, (ValueError, OSError)):
        return text
    return f"{type(error).__name__}: {text}"


# ---------------------------------------------------------------- local processes

# Set in each worker process by `_start_worker`.
_worker_filters: list[Filter] = []
_worker_options = DetectOptions()


def _start_worker(filters: list[Filter], options: DetectOptions, threads: int) -> None:
    global _worker_filters, _worker_options  # per-process state of a pool worker
    cv2.setNumThreads(threads)
    _worker_filters = filters
    _worker_options = options


def _process_in_worker(task: _Task) -> tuple[int, ImageResult]:
    return _numbered(task, _worker_filters, _worker_options)


def _on_processes(tasks: Iterator[_Task], filters: list[Filter], options: DetectOptions,
                  jobs: int) -> Iterator[tuple[int, ImageResult]]:
    threads = max(1, available_cores() // jobs)
    if options.workers is None:
        options = replace(options, workers=threads)
    # spawn, not fork: a forked child can inherit a locked mutex from a thread
    # pool (OpenCV's, OpenBLAS's) of the parent and hang.
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                                   initializer=_start_worker, initargs=(filters, options, threads))
    pending: set[Future[tuple[int, ImageResult]]] = set()
    try:
        with _thread_limits(threads):  # the workers start during the first submissions
            for task in _take(tasks, jobs * _IN_FLIGHT_PER_WORKER):
                pending.add(executor.submit(_process_in_worker, task))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for task in _take(tasks, len(done)):
                pending.add(executor.submit(_process_in_worker, task))
            for future in done:
                yield future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _thread_limits(threads: int) -> Iterator[None]:
    """Cap the thread pools of processes started inside the block (unless the user set them)."""
    added = [name for name in _THREAD_VARIABLES if name not in os.environ]
    os.environ.update(dict.fromkeys(added, str(threads)))
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _take(tasks: Iterator[_Task], count: int) -> list[_Task]:
    taken = []
    for task in tasks:
        taken.append(task)
        if len(taken) == count:
            break
    return taken


# ---------------------------------------------------------------- Dask


def _process_chunk(tasks: list[_Task], filters: list[Filter], options: DetectOptions
                   ) -> list[tuple[int, ImageResult]]:
    cv2.setNumThreads(1)  # Dask runs one task per worker thread
    return [_numbered(task, filters, options) for task in tasks]


def _on_dask(tasks: Iterator[_Task], filters: list[Filter], options: DetectOptions,
             client: Any) -> Iterator[tuple[int, ImageResult]]:
    from distributed import as_completed

    if options.workers is None:
        options = replace(options, workers=1)
    workers = max(1, sum(client.nthreads().values()))
    # hash=False: a key of its own per run, so that one run releasing its copy
    # cannot drop the filters another run of the same filters still uses
    shared_filters = client.scatter(filters, broadcast=True, hash=False)
    in_flight = workers * _IN_FLIGHT_PER_WORKER

    def submit(chunk: list[_Task]) -> Any:
        return client.submit(_process_chunk, chunk, shared_filters, options, pure=False)

    futures = [submit(chunk) for chunk in _chunks(tasks, _IMAGES_PER_DASK_TASK, in_flight)]
    queue = as_completed(futures)
    try:
        for future in queue:
            for chunk in _chunks(tasks, _IMAGES_PER_DASK_TASK, 1):
                queue.add(submit(chunk))
            yield from future.result()
            future.release()
    finally:
        for future in futures:
            future.cancel()


def _chunks(tasks: Iterator[_Task], size: int, count: int) -> Iterator[list[_Task]]:
    for _ in range(count):
        chunk = _take(tasks, size)
        if not chunk:
            return
        yield chunk


# ---------------------------------------------------------------- order and progress


def _in_input_order(numbered: Iterator[tuple[int, ImageResult]]
                    ) -> Iterator[tuple[int, ImageResult]]:
    """Numbered results re-ordered by their input position."""
    waiting: dict[int, ImageResult] = {}
    next_index = 0
    for index, result in numbered:
        waiting[index] = result
        while next_index in waiting:
            yield next_index, waiting.pop(next_index)
            next_index += 1


def _with_progress_bar(results: Iterator[ImageResult], *, total: int) -> Iterator[ImageResult]:
    from tqdm import tqdm

    failed = 0
    with tqdm(total=total, unit="image", file=sys.stderr, dynamic_ncols=True) as bar:
        for result in results:
            if not result.ok:
                failed += 1
                bar.set_postfix(failed=failed, refresh=False)
            bar.update()
            yield result
