"""Rebuild the detector samples: ``python samples/make_samples.py``.

- ``astronaut.png``: scikit-image's astronaut photo (Eileen Collins, NASA; public domain).
- ``eye.npy``: an RGB eye filter cut from it: the mean of the two eye crops,
  each 22×14 pixels centred on its iris (irises at (203, 100) and (246, 102),
  located by eye on an enlarged crop), so that it fits both eyes equally.
- ``eye_handmade.npy``: the hand-crafted eye of `patternfind.filters.eye`, 18×18.
- ``astronaut_eyes.png``: what ``patternfind samples/astronaut.png --filter
  samples/eye.npy`` finds, drawn (the picture in the README).
"""

from pathlib import Path

import numpy as np
import skimage.data

import patternfind
from patternfind import filters, io
from patternfind.pixels import to_float_image
from patternfind.show.draw import draw_detections

HERE = Path(__file__).resolve().parent
IRIS_CENTRES = ((203, 100), (246, 102))  # (x, y) of each iris
EYE_SIZE = (22, 14)  # (w, h)


def eye_crop(photo: np.ndarray) -> np.ndarray:
    """Mean of the two eye crops, each centred on its iris; float32 RGB in [0, 1]."""
    pixels = to_float_image(photo)
    width, height = EYE_SIZE
    crops = [
        pixels[y - height // 2 : y - height // 2 + height, x - width // 2 : x - width // 2 + width]
        for x, y in IRIS_CENTRES
    ]
    return np.mean(crops, axis=0, dtype=np.float32)


def main() -> None:
    photo = skimage.data.astronaut()
    io.save_image(HERE / "astronaut.png", photo)
    eye = patternfind.Filter(eye_crop(photo), name="eye")
    eye.save(HERE / "eye.npy")
    filters.make("eye", 18).save(HERE / "eye_handmade.npy")
    found = patternfind.detect(HERE / "astronaut.png", HERE / "eye.npy")
    io.save_image(HERE / "astronaut_eyes.png", draw_detections(photo, found))
    for detection in found:
        print(detection)


if __name__ == "__main__":
    main()
