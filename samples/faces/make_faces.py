"""Build the composite face set in samples/faces/: real faces pasted on real photographs.

No photograph with several hand-labelled faces can be obtained offline here
(see README.md in this folder), so this set is a stand-in built only from data
that ships inside scikit-image:

- faces: the 100 face crops of `skimage.data.lfw_subset()` (25 × 25 pixels,
  Labeled Faces in the Wild); faces 0-49 appear only in training scenes,
  faces 50-99 only in test scenes;
- distractors: the 100 non-face crops of the same set, pasted exactly like
  the faces, so that the paste itself (a soft ellipse) tells nothing;
- backgrounds: face-free scikit-image photographs, different ones for
  training (brick, chelsea, coffee, grass, moon) and testing (gravel,
  rocket, coins, immunohistochemistry, hubble_deep_field);
- negative-only training images: nine more face-free scikit-image pictures
  (`NEGATIVE_IMAGES`), listed in train.csv without boxes, as dlib users add
  face-free photos to their training sets: every window in them is a
  negative for hard-negative mining.

Each 375 × 500 grey scene holds 3-5 faces of 28-72 pixels and as many
distractors, blended in with a feathered elliptical mask. The boxes are the
paste rectangles, exact by construction; ``draw.png`` shows them.

Run:  python samples/faces/make_faces.py     (writes train/, test/, *.csv, draw.png)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import color, data

HERE = Path(__file__).resolve().parent
SCENE = (375, 500)
TRAIN_BACKGROUNDS = ("brick", "chelsea", "coffee", "grass", "moon")
TEST_BACKGROUNDS = ("gravel", "rocket", "coins", "immunohistochemistry", "hubble_deep_field")
#: Face-free pictures shipped with scikit-image, used whole (longer side 500 px) as
#: negative-only training images; none of them is a test background.
NEGATIVE_IMAGES = ("clock", "page", "text", "retina", "cell", "horse", "logo",
                   "stereo_motorcycle", "microaneurysms")


def background(name, rng):
    image = getattr(data, name)()
    image = color.rgb2gray(image[..., :3]) if image.ndim == 3 else image / 255.0
    image = image.astype(np.float32)
    scale = max(SCENE[0] / image.shape[0], SCENE[1] / image.shape[1]) * rng.uniform(1.0, 1.4)
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA
                       if scale < 1 else cv2.INTER_LINEAR)
    y = rng.integers(0, image.shape[0] - SCENE[0] + 1)
    x = rng.integers(0, image.shape[1] - SCENE[1] + 1)
    return image[y:y + SCENE[0], x:x + SCENE[1]].copy()


def soft_ellipse(size):
    """Alpha 1 inside an ellipse covering the crop, fading out towards its corners."""
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    radius = np.hypot((xx - centre) / (0.5 * size), (yy - centre) / (0.56 * size))
    return np.clip((1.05 - radius) / 0.2, 0, 1).astype(np.float32)


def paste(scene, crop, box):
    x, y, size, _ = box
    patch = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR if size > 25 else cv2.INTER_AREA)
    alpha = soft_ellipse(size)
    region = scene[y:y + size, x:x + size]
    region[:] = alpha * patch + (1 - alpha) * region


def place(rng, boxes, size):
    for _ in range(200):
        x = int(rng.integers(0, SCENE[1] - size))
        y = int(rng.integers(0, SCENE[0] - size))
        if all(x + size + 6 <= bx or bx + bs + 6 <= x or y + size + 6 <= by or by + bs + 6 <= y
               for bx, by, bs, _ in boxes):
            return (x, y, size, size)
    return None


def make_scenes(split, backgrounds, faces, others, count, rng, extra_rows=()):
    rows = []
    folder = HERE / split
    folder.mkdir(exist_ok=True)
    for k in range(count):
        scene = background(backgrounds[k % len(backgrounds)], rng)
        taken = []
        for kind, pool in (("face", faces), ("other", others)):
            for _ in range(int(rng.integers(3, 6))):
                box = place(rng, taken, int(rng.integers(28, 73)))
                if box is None:
                    continue
                taken.append(box)
                paste(scene, pool[rng.integers(len(pool))], box)
                if kind == "face":
                    rows.append(f"{split}/{k:02d}.png,{box[0]},{box[1]},{box[2]},{box[3]},face")
        cv2.imwrite(str(folder / f"{k:02d}.png"), np.round(np.clip(scene, 0, 1) * 255).astype(np.uint8))
    rows.extend(extra_rows)
    (HERE / f"{split}.csv").write_text("image,x,y,w,h,label\n" + "\n".join(rows) + "\n")


def negative_images():
    """Write the face-free negative-only images; return their train.csv rows (no box)."""
    rows = []
    for name in NEGATIVE_IMAGES:
        image = getattr(data, name)()
        image = image[0] if name == "stereo_motorcycle" else image  # (left, right, disparity)
        image = image[..., :3] if image.ndim == 3 else image
        image = color.rgb2gray(image) if image.ndim == 3 else image / float(np.iinfo(image.dtype).max
                                                                           if image.dtype.kind in "ui" else 1)
        scale = 500 / max(image.shape)
        image = cv2.resize(image.astype(np.float32), None, fx=scale, fy=scale,
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        path = f"train/negative_{name}.png"
        cv2.imwrite(str(HERE / path), np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
        rows.append(f"{path},,,,,")
    return rows


def draw(split, count=4):
    """A sheet of the first scenes with their boxes, to check them by eye."""
    rows = [line.split(",") for line in (HERE / f"{split}.csv").read_text().splitlines()[1:]
            if line.split(",")[1]]  # image-only rows (negative images) have no box
    tiles = []
    for k in range(count):
        image = cv2.cvtColor(cv2.imread(str(HERE / split / f"{k:02d}.png")), cv2.COLOR_BGR2RGB)
        for name, x, y, w, h, _ in rows:
            if name == f"{split}/{k:02d}.png":
                cv2.rectangle(image, (int(x), int(y)), (int(x) + int(w), int(y) + int(h)), (0, 200, 0), 2)
        tiles.append(image)
    return np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:4], axis=1)])


def main():
    rng = np.random.default_rng(2026)
    crops = data.lfw_subset().astype(np.float32)
    faces, others = crops[:100], crops[100:]
    make_scenes("train", TRAIN_BACKGROUNDS, faces[:50], others[:50], 16, rng,
                extra_rows=negative_images())
    make_scenes("test", TEST_BACKGROUNDS, faces[50:], others[50:], 10, rng)
    cv2.imwrite(str(HERE / "draw.png"), cv2.cvtColor(draw("test"), cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
