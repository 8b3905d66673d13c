"""Rebuild the labelled coins sample set in samples/coins/ (deterministic).

The photograph is scikit-image's ``coins`` (``skimage.data.coins()``: Greek
coins from Pompeii, from the Brooklyn Museum Collection, no known copyright
restrictions). The boxes are
derived, not drawn by hand: the coins are segmented with the watershed on the
Sobel gradient (scikit-image's own coins tutorial), each region's bounding box
grown by one pixel, and the result checked by eye (``--check``, below).

The photo is cut into three images along gaps between the coins, so that no
coin is split and the set has more than one image. Written:

- ``top_left.png``, ``top_right.png``, ``bottom.png``: the images;
- ``coins.json``: COCO annotations (24 coins, label "coin");
- ``coin.npz``: a fixed filter cut out of one coin (``Filter.from_image``);
- ``disc.npz``: a hand-made fixed filter, a bright disc on a dark surround;
- ``report.png``: the report of ``patternfind compare`` on these two filters
  (as ``--report`` writes it, then reduced to 256 colours to keep it small;
  the times per image in it differ from run to run);
- with ``--check PICTURE``, also the whole photo with the derived boxes and
  the tile cuts drawn, for checking them by eye (not kept in the repository).

Run from the repository root: ``python samples/make_coins.py [--check boxes.png]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage
from skimage import data, filters, measure, segmentation

from patternfind import Box, Filter
from patternfind.evaluation.annotations import save_annotations
from patternfind.io import save_image

OUTPUT = Path(__file__).resolve().parent / "coins"

# (name, x0, y0, x1, y1): cuts along gaps between coins (checked on boxes.png)
TILES = [
    ("top_left.png", 0, 0, 180, 150),
    ("top_right.png", 180, 0, 384, 150),
    ("bottom.png", 0, 150, 384, 303),
]
COIN_FILTER_CENTRE = (206, 125)  # photo pixel inside the coin cut out as the filter (42×41)
COIN_THRESHOLD = 0.5  # ncc; one coin's face matches other faces only loosely
DISC_THRESHOLD = 0.6  # ncc
DISC_SIZE, DISC_RADIUS = 32, 12.5


def coin_boxes(photo: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes ``(x, y, w, h)`` of the coins, by watershed segmentation, in reading order."""
    elevation = filters.sobel(photo)
    markers = np.zeros(photo.shape, dtype=np.uint8)
    markers[photo < 30] = 1  # surely background
    markers[photo > 150] = 2  # surely coin
    regions = ndimage.binary_fill_holes(segmentation.watershed(elevation, markers) == 2)
    boxes = []
    height, width = photo.shape
    for region in measure.regionprops(measure.label(regions)):
        if region.area < 200:  # specks
            continue
        y0, x0, y1, x1 = region.bbox
        x0, y0 = max(x0 - 1, 0), max(y0 - 1, 0)
        x1, y1 = min(x1 + 1, width), min(y1 + 1, height)
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return sorted(boxes, key=lambda box: (round(box[1] / 60), box[0]))


def disc_filter() -> Filter:
    """A bright disc (1) on a dark surround (0), anti-aliased at the edge."""
    centre = (DISC_SIZE - 1) / 2
    rows, columns = np.mgrid[:DISC_SIZE, :DISC_SIZE]
    distance = np.hypot(rows - centre, columns - centre)
    weights = np.clip(DISC_RADIUS + 0.5 - distance, 0, 1).astype(np.float32)
    return Filter(weights, name="disc", threshold=DISC_THRESHOLD, score="ncc",
                  meta={"kind": "fixed", "source": "hand-made disc"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="PICTURE", help="also draw the boxes on the photo")
    args = parser.parse_args()
    OUTPUT.mkdir(exist_ok=True)
    photo = data.coins()
    boxes = coin_boxes(photo)
    annotations: dict[str, list[Box]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    tiles: dict[str, np.ndarray] = {}
    for name, x0, y0, x1, y1 in TILES:
        inside = [(x - x0, y - y0, w, h) for x, y, w, h in boxes
                  if x >= x0 and y >= y0 and x + w <= x1 and y + h <= y1]
        annotations[name] = [Box(float(x), float(y), float(w), float(h), label="coin")
                             for x, y, w, h in inside]
        tiles[name] = photo[y0:y1, x0:x1]
        sizes[name] = (x1 - x0, y1 - y0)
        save_image(OUTPUT / name, tiles[name])
    kept = sum(len(v) for v in annotations.values())
    if kept != len(boxes):
        msg = f"a tile cut splits a coin: {len(boxes)} coins found, {kept} inside the tiles"
        raise RuntimeError(msg)
    save_annotations(annotations, OUTPUT / "coins.json", image_sizes=sizes)

    x, y, w, h = next(box for box in boxes if _contains(box, COIN_FILTER_CENTRE))
    coin = Filter.from_image(photo, (x, y, w, h), name="coin", threshold=COIN_THRESHOLD, score="ncc",
                             meta={"box_in_photo": [x, y, w, h]})
    coin.save(OUTPUT / "coin.npz")
    disc_filter().save(OUTPUT / "disc.npz")

    _write_report(coin)
    if args.check:
        save_image(args.check, _check_picture(photo, boxes))
    print(f"wrote {len(TILES)} images with {len(boxes)} coins, 2 filters to {OUTPUT}")


def _write_report(coin: Filter) -> None:
    import tempfile

    from PIL import Image  # Pillow comes with matplotlib

    from patternfind.evaluation.comparison import compare, load_labelled_images
    from patternfind.io import atomic_write
    from patternfind.show.plot import write_report

    filters = [coin, disc_filter()]
    ground_truth, images = load_labelled_images(OUTPUT / "coins.json")
    evaluations = compare(filters, ground_truth, images=images)
    with tempfile.TemporaryDirectory() as folder:
        full = Path(folder) / "report.png"
        write_report(full, evaluations, filters, images, dpi=80,
                     title="patternfind compare on coins.json")
        with Image.open(full) as picture:
            small = picture.convert("RGB").quantize(
                256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
            )
    with atomic_write(OUTPUT / "report.png") as temporary:
        small.save(temporary, format="PNG", optimize=True)


def _contains(box: tuple[int, int, int, int], point: tuple[int, int]) -> bool:
    x, y, w, h = box
    return x <= point[0] < x + w and y <= point[1] < y + h


def _check_picture(photo: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    picture = cv2.cvtColor(photo, cv2.COLOR_GRAY2RGB)
    for x, y, w, h in boxes:
        cv2.rectangle(picture, (x, y), (x + w - 1, y + h - 1), (255, 0, 0), 1)
    for _, x0, y0, x1, y1 in TILES:
        cv2.rectangle(picture, (x0, y0), (x1 - 1, y1 - 1), (0, 200, 255), 1)
    return picture


if __name__ == "__main__":
    main()
