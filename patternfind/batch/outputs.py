"""Writing a run's results as they come, and reading back what a killed run finished.

Every format is written while the run goes on, so memory stays flat:

- ``jsonl``: one JSON object per image, appended and flushed as soon as the
  image is done. A killed run loses at most the line being written.
- ``csv``: one row per detection; an image with no detection gets one row
  with only ``image`` filled, and a failed image one row with ``error``, so
  that every image processed is on record.
- ``table``: the human-readable table, one line per detection.
- ``json`` and ``coco``: one document, streamed into a temporary file beside
  the output and renamed onto it only when the run completes, so an
  interrupted run leaves no half-written file.

`completed_images` reads a jsonl or csv output back for ``--resume``: it drops
a partial last line (and, for csv, every row of the last image, which may be
incomplete) and returns the images already on record.
"""

from __future__ import annotations

import csv
import io as text_io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from patternfind import io
from patternfind.batch.engine import ImageResult
from patternfind.structures import Detection

__all__ = ["CSV_FIELDS", "FORMATS", "ROTATED_CSV_FIELDS", "STREAMING_FORMATS", "ResultWriter",
           "coco_mapping_path", "completed_images", "detection_record", "open_results"]

FORMATS = ("table", "jsonl", "csv", "json", "coco")
#: Formats written line by line to the final file, and so resumable.
STREAMING_FORMATS = ("jsonl", "csv")
_BOX_FIELDS = ("label", "x", "y", "w", "h", "score", "scale")
CSV_FIELDS = ("image", *_BOX_FIELDS, "error")
#: With a rotation search, rows also hold the angle and the turned box's corners.
_CORNER_FIELDS = ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")
ROTATED_CSV_FIELDS = ("image", *_BOX_FIELDS, "angle", *_CORNER_FIELDS, "error")


def detection_record(detection: Detection, *, rotated: bool) -> dict[str, Any]:
    """A detection as a JSON object: the box, and with ``rotated`` its angle and corners."""
    record = {key: getattr(detection, key) for key in _BOX_FIELDS}
    if rotated:
        record["angle"] = detection.angle
        record["corners"] = [list(corner) for corner in detection.corners]
    return record


class ResultWriter:
    """Writes `ImageResult` records in one format to an open text stream.

    Use `open_results` to get one; call `write` once per image.
    """

    def __init__(self, stream: IO[str], kind: str, *, images: Sequence[str],
                 filter_names: Sequence[str], rotated: bool = False, header: bool = True) -> None:
        self.stream, self.kind, self.rotated = stream, kind, rotated
        self.fields = ROTATED_CSV_FIELDS if rotated else CSV_FIELDS
        self.images_written = 0
        self.detections_written = 0
        self._first = True
        self._image_ids = {name: index for index, name in enumerate(images, start=1)}
        self._category_ids = {name: index for index, name in
                              enumerate(sorted(set(filter_names)), start=1)}
        if kind == "csv" and header:
            self._put(",".join(self.fields) + "\n")
        elif kind in ("json", "coco"):
            self._put("[")

    def write(self, result: ImageResult) -> None:
        """Write one image's result and flush it to the operating system."""
        self._put(self._render(result))
        self.images_written += 1
        self.detections_written += len(result.detections)

    def finish(self) -> None:
        """Close the document of the json and coco formats."""
        if self.kind in ("json", "coco"):
            self._put("\n]\n" if not self._first else "]\n")

    def coco_mapping(self) -> dict[str, Any]:
        """The image and category ids a coco output refers to."""
        return {
            "images": [{"id": i, "file_name": name} for name, i in self._image_ids.items()],
            "categories": [{"id": i, "name": name} for name, i in self._category_ids.items()],
        }

    def _put(self, text: str) -> None:
        if text:
            # One write per image, then flush: a killed run keeps every finished image.
            self.stream.write(text)
            self.stream.flush()

    def _render(self, result: ImageResult) -> str:
        if self.kind == "jsonl":
            return json.dumps(self._jsonl_record(result)) + "\n"
        if self.kind == "csv":
            return self._csv_rows(result)
        if self.kind == "table":
            return self._table_rows(result)
        items = self._json_items(result)
        if not items:
            return ""
        text = ",\n  ".join(json.dumps(item) for item in items)
        separator = "\n  " if self._first else ",\n  "
        self._first = False
        return separator + text

    def _jsonl_record(self, result: ImageResult) -> dict[str, Any]:
        if result.error is not None:
            return {"image": result.image, "error": result.error}
        return {"image": result.image, "width": result.width, "height": result.height,
                "detections": [detection_record(d, rotated=self.rotated)
                               for d in result.detections]}

    def _csv_rows(self, result: ImageResult) -> str:
        buffer = text_io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, lineterminator="\n")
        if result.error is not None:
            writer.writerow({"image": result.image, "error": result.error})
        elif not result.detections:
            writer.writerow({"image": result.image})
        for d in result.detections:
            row = {"image": result.image, **detection_record(d, rotated=self.rotated)}
            if self.rotated:
                corners = row.pop("corners")
                row.update(zip(_CORNER_FIELDS, (v for corner in corners for v in corner),
                               strict=True))
            writer.writerow(row)
        return buffer.getvalue()

    def _json_items(self, result: ImageResult) -> list[dict[str, Any]]:
        if self.kind == "json":
            if result.error is not None:
                return [{"image": result.image, "error": result.error}]
            return [{"image": result.image, **detection_record(d, rotated=self.rotated)}
                    for d in result.detections]
        for d in result.detections:
            self._category_ids.setdefault(d.label, len(self._category_ids) + 1)
        return [{"image_id": self._image_ids[result.image],
                 "category_id": self._category_ids[d.label],
                 "bbox": [d.x, d.y, d.w, d.h], "score": d.score} for d in result.detections]

    def _table_rows(self, result: ImageResult) -> str:
        if result.error is not None:
            return f"{_clip(result.image, 24):<24} error: {result.error}\n"
        lines = []
        if result.detections and self._first:
            self._first = False
            lines.append(f"{'image':<24} {'label':<14} {'x':>8} {'y':>8} {'w':>7} {'h':>7} "
                         f"{'score':>7} {'scale':>6}" + (f" {'angle':>7}" if self.rotated else ""))
        for d in result.detections:
            lines.append(f"{_clip(result.image, 24):<24} {_clip(d.label, 14):<14} "
                         f"{d.x:8.1f} {d.y:8.1f} {d.w:7.1f} {d.h:7.1f} {d.score:7.3f} "
                         f"{d.scale:6.2f}" + (f" {d.angle:7.2f}" if self.rotated else ""))
        return "".join(line + "\n" for line in lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


@contextmanager
def open_results(kind: str, output: Path | None, *, images: Sequence[str],
                 filter_names: Sequence[str], rotated: bool = False,
                 resume: bool = False) -> Iterator[ResultWriter]:
    """A `ResultWriter` for ``kind`` on ``output`` (None: standard output).

    jsonl and csv go straight to ``output`` (appended to when ``resume``); json
    and coco go to a temporary file that replaces ``output`` only when the
    block ends without an error. With ``rotated`` (a search over angles) every
    detection also has its angle and corners. The coco id mapping goes beside the output
    as ``NAME.mapping.json`` (or to stderr without an output file).
    """
    if kind not in FORMATS:
        msg = f"`kind` must be one of {FORMATS}, got {kind!r}"
        raise ValueError(msg)
    if output is None:
        writer = ResultWriter(sys.stdout, kind, images=images, filter_names=filter_names,
                              rotated=rotated)
        yield writer
        writer.finish()
        if kind == "coco":
            print(f"# id mapping: {json.dumps(writer.coco_mapping())}", file=sys.stderr)
        return
    if kind in STREAMING_FORMATS:
        appending = resume and output.exists() and output.stat().st_size > 0
        with open(output, "a" if appending else "w", encoding="utf-8", newline="") as stream:
            writer = ResultWriter(stream, kind, images=images, filter_names=filter_names,
                                  rotated=rotated, header=not appending)
            yield writer
        return
    with io.atomic_write(output) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        writer = ResultWriter(stream, kind, images=images, filter_names=filter_names,
                              rotated=rotated)
        yield writer
        writer.finish()
    if kind == "coco":
        mapping_path = coco_mapping_path(output)
        io.write_text(mapping_path, json.dumps(writer.coco_mapping(), indent=2) + "\n")
        print(f"image and category ids: {mapping_path}", file=sys.stderr)


def coco_mapping_path(output: Path) -> Path:
    """Where the id mapping of a coco ``output`` goes: ``NAME.mapping.json`` beside it."""
    return output.with_name(output.stem + ".mapping.json")


def completed_images(output: Path, kind: str) -> set[str]:
    """The images an earlier run of ``kind`` (jsonl or csv) recorded in ``output``.

    A partial last line, left by a killed run, is cut off the file first; for
    csv, every row of the last image is, since a csv image spans several
    lines and its rows may be cut between two of them. That image is then
    done again in full.

    Raises
    ------
    ValueError
        If ``kind`` cannot be resumed, or the file is not output of this kind
        (a line that does not parse, other than the last).
    """
    if kind not in STREAMING_FORMATS:
        msg = f"only {' and '.join(STREAMING_FORMATS)} output can be resumed, not {kind}"
        raise ValueError(msg)
    if not output.exists():
        return set()
    data = output.read_bytes()
    if kind == "jsonl":
        keep, images = _jsonl_records(output, data)
    else:
        keep, images = _csv_records(output, data)
    if keep < len(data):
        with open(output, "r+b") as stream:
            stream.truncate(keep)
            os.fsync(stream.fileno())
    return images


def _jsonl_records(output: Path, data: bytes) -> tuple[int, set[str]]:
    lines = data.split(b"\n")  # the last piece is b"" or the line a killed run was writing
    images = set()
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            images.add(str(json.loads(line)["image"]))
        except (ValueError, KeyError, TypeError):
            msg = f"{output} line {number} is not a jsonl record of patternfind; cannot resume"
            raise ValueError(msg) from None
    return len(data) - len(lines[-1]), images


def _csv_records(output: Path, data: bytes) -> tuple[int, set[str]]:
    headers = [(",".join(fields) + "\n").encode() for fields in (CSV_FIELDS, ROTATED_CSV_FIELDS)]
    header = next((h for h in headers if data.startswith(h)), b"")
    if not header:
        msg = (f"{output} is not csv output of patternfind (its first line is not "
               f"{headers[0].decode().strip()}); cannot resume")
        raise ValueError(msg)
    lines = data[len(header):].split(b"\n")  # the last piece is b"" or a partial line
    names = [_first_field(line) for line in lines[:-1]]
    # The last image's rows may be incomplete even when the file ends with a
    # newline (a write cut between two of its rows): drop them all, always, and
    # redo that one image. Its rows are the trailing run of its name.
    dropped = names[-1] if names else None
    while names and names[-1] == dropped:
        names.pop()
    kept = len(header) + sum(len(line) + 1 for line in lines[:len(names)])
    return kept, set(names)


def _first_field(line: bytes) -> str:
    return next(csv.reader([line.decode("utf-8", errors="replace")]), [""])[0]
