"""Rebuild the rotation samples: ``python samples/make_rotated_parts.py``.

- ``spoon.npz``: a 48×48 colour filter cut from scikit-image's coffee photo
  (Rachel Michetti; CC0), resized to 480×360: the spoon's bowl, with a round
  mask (radius 20 px) so that only the spoon and the saucer under it count.
- ``spoons.png``: the same photo with three more copies of that crop pasted
  on the table and the saucer, turned by 35°, 150° and 290°
  (counter-clockwise), as discs of radius 23 px blended over a 2-pixel soft
  edge (the pasted edge stays outside the filter's mask).
- ``spoons_found.png``: what ``patternfind samples/spoons.png --filter
  samples/spoon.npz --angles 0,360 --scales 1,1 --draw ...`` finds, drawn
  (the picture in the README's "Rotated parts").
"""

from pathlib import Path

import cv2
import numpy as np
import skimage.data

import patternfind
from patternfind import io
from patternfind.show.draw import draw_detections

HERE = Path(__file__).resolve().parent
SIZE = (480, 360)  # (w, h) of the photo
PART = 48
SPOON_TOP_LEFT = (255, 217)  # (x, y) of the spoon's bowl crop in the resized photo
RADIUS = 20  # the filter's mask
PASTE_RADIUS = 23
PASTES = (((70, 80), 35.0), ((405, 70), 150.0), ((90, 290), 290.0))  # (centre (x, y), angle)


def main() -> None:
    photo = cv2.resize(skimage.data.coffee(), SIZE, interpolation=cv2.INTER_AREA)
    photo = photo.astype(np.float32) / 255
    left, top = SPOON_TOP_LEFT
    part = photo[top : top + PART, left : left + PART].copy()
    middle = (PART - 1) / 2
    yy, xx = np.mgrid[:PART, :PART]
    distance = np.hypot(xx - middle, yy - middle)
    mask = distance <= RADIUS
    soft = np.clip(PASTE_RADIUS + 1 - distance, 0, 2).astype(np.float32) / 2  # 2-pixel soft edge
    scene = photo.copy()
    for (centre_x, centre_y), angle in PASTES:
        matrix = cv2.getRotationMatrix2D((middle, middle), angle, 1.0)
        matrix[:, 2] += (centre_x - middle, centre_y - middle)
        size = (scene.shape[1], scene.shape[0])
        warped = cv2.warpAffine(part, matrix, size, flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(soft, matrix, size, flags=cv2.INTER_LINEAR)[..., None]
        scene = scene * (1 - alpha) + warped * alpha
    scene8 = np.clip(scene * 255 + 0.5, 0, 255).astype(np.uint8)
    spoon = patternfind.Filter(part, mask=mask, name="spoon",
                               meta={"kind": "fixed", "source": "coffee photo, spoon's bowl"})
    io.save_image(HERE / "spoons.png", scene8)
    spoon.save(HERE / "spoon.npz")
    found = patternfind.detect(scene8, spoon, angles=(0, 360), scales=(1, 1))
    for detection in found:
        print(f"{detection.label} at ({detection.x:.1f}, {detection.y:.1f}) "
              f"turned {detection.angle:.1f}°, score {detection.score:.3f}")
    io.save_image(HERE / "spoons_found.png", draw_detections(scene8, found, thickness=2))


if __name__ == "__main__":
    main()
