"""Rebuild the folder of the README's "Many images" example: ``python samples/make_many.py``.

``samples/many/`` holds 24 JPEGs of 200×160 pixels cut from scikit-image's
astronaut photo (Eileen Collins, NASA; public domain), each framing her face
at a different offset, in two sub-folders (``a/`` and ``b/``) so that
``--recursive`` has something to descend into. Each shows both eyes, so
``samples/eye.npy`` finds two boxes per image.
"""

from pathlib import Path

import numpy as np
import skimage.data

from patternfind import io

HERE = Path(__file__).resolve().parent
COUNT = 24
SIZE = (160, 200)  # (height, width)


def main() -> None:
    photo = skimage.data.astronaut()
    rng = np.random.default_rng(0)
    for index in range(COUNT):
        top, left = int(rng.integers(20, 50)), int(rng.integers(120, 170))
        crop = photo[top:top + SIZE[0], left:left + SIZE[1]]
        folder = HERE / "many" / ("a" if index < COUNT // 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        io.save_image(folder / f"face_{index:02d}.jpg", crop)


if __name__ == "__main__":
    main()
