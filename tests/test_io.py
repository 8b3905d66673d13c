"""Image and filter files: round trips, odd formats, atomic writes, bad files.

Test images are written with cv2 or PIL directly, not with patternfind.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from patternfind.io import (
    atomic_write,
    load_filter,
    load_image,
    save_filter,
    save_image,
    write_text,
)
from patternfind.pixels import to_float_image
from patternfind.structures import FILTER_FORMAT_VERSION, Filter


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------- images


def test_load_rgb_png_written_by_pil(tmp_path, rng):
    rgb = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, rgb)  # RGB order, not BGR


def test_load_grey_8_and_16_bit(tmp_path, rng):
    grey8 = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g8.png"), grey8)
    cv2.imwrite(str(tmp_path / "g16.png"), grey16)
    np.testing.assert_array_equal(load_image(tmp_path / "g8.png"), grey8)
    loaded16 = load_image(str(tmp_path / "g16.png"))
    assert loaded16.dtype == np.uint16
    np.testing.assert_array_equal(loaded16, grey16)


def test_load_16_bit_rgb(tmp_path, rng):
    rgb16 = rng.integers(0, 65536, (7, 8, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])
    np.testing.assert_array_equal(load_image(tmp_path / "c16.png"), rgb16)


def test_load_rgba(tmp_path, rng):
    rgba = rng.integers(0, 256, (10, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgba)


def test_load_palette_comes_back_as_rgb(tmp_path):
    palette_image = Image.new("P", (5, 4))
    palette_image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette_image.putdata([0, 1, 2, 1, 0] * 4)
    palette_image.save(tmp_path / "p.png")
    loaded = load_image(tmp_path / "p.png")
    expected = np.array(palette_image.convert("RGB"))
    np.testing.assert_array_equal(loaded, expected)


def test_load_grey_with_alpha_comes_back_as_rgba(tmp_path, rng):
    grey_alpha = rng.integers(0, 256, (6, 7, 2), dtype=np.uint8)
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "la.png")
    loaded = load_image(tmp_path / "la.png")
    assert loaded.shape == (6, 7, 4)
    for channel in range(3):
        np.testing.assert_array_equal(loaded[..., channel], grey_alpha[..., 0])
    np.testing.assert_array_equal(loaded[..., 3], grey_alpha[..., 1])


def test_loaded_odd_formats_work_in_detect(tmp_path, rng):
    from patternfind.detection.detector import detect

    grey_alpha = rng.integers(0, 256, (40, 50, 2), dtype=np.uint8)
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "la.png")
    patch = grey_alpha[10:20, 15:27, 0]
    found = detect(tmp_path / "la.png", Filter(patch / 255.0), scales=(1, 1))
    assert (found[0].x, found[0].y) == (15.0, 10.0)
    assert found[0].score == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize(
    ("suffix", "channels"),
    [(".png", None), (".png", 3), (".png", 4), (".tif", None), (".tif", 3), (".tif", 4),
     (".bmp", None), (".bmp", 3)],
)
def test_save_image_round_trip(tmp_path, rng, suffix, channels):
    shape = (8, 9) if channels is None else (8, 9, channels)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    save_image(tmp_path / f"out{suffix}", image)
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / f"out{suffix}")), image)
    np.testing.assert_array_equal(load_image(tmp_path / f"out{suffix}"), image)
    assert [p.name for p in tmp_path.iterdir()] == [f"out{suffix}"]


def test_save_image_16_bit(tmp_path, rng):
    image = rng.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    save_image(tmp_path / "out.png", image)
    np.testing.assert_array_equal(load_image(tmp_path / "out.png"), image)


def test_save_image_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"unknown suffix '\.gifx'"):
        save_image(tmp_path / "out.gifx", np.zeros((3, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_non_ascii_path(tmp_path, rng):
    image = rng.integers(0, 256, (4, 5), dtype=np.uint8)
    path = tmp_path / "ÿœil – 目.png"
    save_image(path, image)
    np.testing.assert_array_equal(load_image(path), image)


# ----------------------------------------------------------------- bad image files


def test_missing_image(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*missing.png"):
        load_image(tmp_path / "missing.png")


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image file not found"):
        load_image(tmp_path)


def test_text_file_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("this is not a picture\n")
    with pytest.raises(ValueError, match=r"cannot read .*notes\.png: not an image file"):
        load_image(tmp_path / "notes.png")


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot read .*empty.png"):
        load_image(tmp_path / "empty.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path, rng, suffix):
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(suffix, image)
    assert ok
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(encoded.tobytes()[: len(encoded) // 3])
    with pytest.raises(ValueError, match=r"corrupt or truncated"):
        load_image(path)


def test_corrupt_image(tmp_path, rng):
    ok, encoded = cv2.imencode(".png", rng.integers(0, 256, (32, 32), dtype=np.uint8))
    assert ok
    data = bytearray(encoded.tobytes())
    data[40:80] = bytes(40)  # zero part of the compressed stream (and its CRC)
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt or truncated"):
        load_image(tmp_path / "bad.png")


# ----------------------------------------------------------------- to_float_image


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array([[0, 51, 255]], np.uint8), [[0, 0.2, 1]]),
        (np.array([[0, 13107, 65535]], np.uint16), [[0, 0.2, 1]]),
        (np.array([[False, True]]), [[0, 1]]),
        (np.array([[0.25, 1.05]], np.float64), [[0.25, 1.05]]),  # resampling overshoot is kept
    ],
)
def test_to_float_image(array, expected):
    result = to_float_image(array)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_to_float_image_rejects_ambiguous_integers():
    with pytest.raises(TypeError, match=r"`picture` has dtype int32; pass uint8, uint16"):
        to_float_image(np.zeros((2, 2), np.int32), "picture")


# ----------------------------------------------------------------- filters


def _full_filter():
    rng = np.random.default_rng(1)
    mask = rng.random((5, 6)) > 0.3
    return Filter(
        rng.standard_normal((5, 6, 3)), bias=-0.25, name="eye", threshold=0.6, score="cosine",
        mask=mask, meta={"kind": "learned", "loss": [0.5, 0.25], "box": (1, 2, 3, 4)},
    )


def test_npz_round_trip_keeps_every_field(tmp_path):
    original = _full_filter()
    save_filter(original, tmp_path / "eye.npz")
    loaded = load_filter(tmp_path / "eye.npz")
    np.testing.assert_array_equal(loaded.weights, original.weights)
    assert loaded.weights.dtype == np.float32
    np.testing.assert_array_equal(loaded.mask, original.mask)
    for field in ("bias", "name", "threshold", "score", "features", "window", "feature_options"):
        assert getattr(loaded, field) == getattr(original, field), field
    assert loaded.meta == {"kind": "learned", "loss": [0.5, 0.25], "box": [1, 2, 3, 4]}
    assert [p.name for p in tmp_path.iterdir()] == ["eye.npz"]


def test_npz_round_trip_via_methods_and_name_override(tmp_path):
    original = Filter(np.eye(4), name="diag")
    original.save(tmp_path / "d.npz")
    assert Filter.load(tmp_path / "d.npz").name == "diag"
    assert Filter.load(tmp_path / "d.npz", name="other").name == "other"
    assert Filter.load(tmp_path / "d.npz").mask is None


def test_npz_feature_filter_round_trip(tmp_path):
    original = Filter(np.ones((3, 3, 9)), features="hog", window=(24, 24),
                      feature_options={"cell": 8, "bins": 9}, score="dot", threshold=1.5)
    save_filter(original, tmp_path / "h.npz")
    loaded = load_filter(tmp_path / "h.npz")
    assert loaded.window == (24, 24)
    assert loaded.features == "hog"
    assert dict(loaded.feature_options) == {"cell": 8, "bins": 9}


def test_npy_keeps_weights_only(tmp_path):
    original = _full_filter()
    save_filter(original, tmp_path / "w.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), original.weights)
    loaded = load_filter(tmp_path / "w.npy")
    assert loaded.name == "w"
    assert loaded.bias == 0
    assert loaded.mask is None


def test_lecture_npy_from_numpy(tmp_path):
    weights = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.save(tmp_path / "lecture.npy", weights)
    loaded = load_filter(tmp_path / "lecture.npy")
    np.testing.assert_array_equal(loaded.weights, weights.astype(np.float32))
    assert loaded.meta == {"kind": "fixed"}


def test_filter_from_rgba_image_uses_alpha_as_mask(tmp_path, rng):
    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[1:5, 2:6, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    loaded = load_filter(tmp_path / "t.png")
    assert loaded.weights.shape == (6, 7, 3)
    np.testing.assert_array_equal(loaded.mask, rgba[..., 3] > 0)
    np.testing.assert_allclose(loaded.weights[loaded.mask], rgba[..., :3][loaded.mask] / 255,
                               rtol=1e-6)
    assert (loaded.weights[~loaded.mask] == 0).all()


def test_filter_from_grey_alpha_image_is_grey(tmp_path, rng):
    grey_alpha = rng.integers(1, 256, (5, 5, 2), dtype=np.uint8)
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "g.png")
    loaded = load_filter(tmp_path / "g.png")
    assert loaded.weights.shape == (5, 5)
    np.testing.assert_allclose(loaded.weights, grey_alpha[..., 0] / 255, rtol=1e-6)
    assert loaded.mask.all()


def test_filter_from_16_bit_image(tmp_path, rng):
    grey16 = rng.integers(0, 65536, (4, 5), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "f.png"), grey16)
    loaded = load_filter(tmp_path / "f.png")
    np.testing.assert_allclose(loaded.weights, grey16 / 65535, rtol=1e-6)


def test_newer_format_version(tmp_path):
    header = json.dumps({"name": "x", "format_version": FILTER_FORMAT_VERSION + 1})
    np.savez(tmp_path / "new.npz", weights=np.eye(3), header=np.array(header))
    with pytest.raises(ValueError, match=r"saved by a newer patternfind \(filter format 2"):
        load_filter(tmp_path / "new.npz")


def test_npz_without_header(tmp_path):
    np.savez(tmp_path / "plain.npz", weights=np.eye(3))
    with pytest.raises(ValueError, match=r"is not a patternfind filter: it lacks 'weights' or 'header'"):
        load_filter(tmp_path / "plain.npz")


def test_npz_with_corrupt_header(tmp_path):
    np.savez(tmp_path / "c.npz", weights=np.eye(3), header=np.array("{not json"))
    with pytest.raises(ValueError, match=r"corrupt filter header"):
        load_filter(tmp_path / "c.npz")


def test_missing_filter(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"filter file not found: .*nope.npz"):
        load_filter(tmp_path / "nope.npz")


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".png"])
def test_text_file_as_filter(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_text("hello\n")
    with pytest.raises(ValueError, match=rf"cannot read .*notes\{suffix}"):
        load_filter(path)


def test_truncated_npy_filter(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((20, 20)))
    data = (tmp_path / "w.npy").read_bytes()
    (tmp_path / "w.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read filter .*w\.npy"):
        load_filter(tmp_path / "w.npy")


def test_pickled_npy_filter_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"cannot read filter .*obj\.npy"):
        load_filter(tmp_path / "obj.npy")


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (np.full((3, 3), np.nan), r"NaN or inf"),
        (np.array([[1.0, np.inf], [0, 1]]), r"NaN or inf"),
        (np.ones(5), r"must be \(h, w\) or \(h, w, C\)"),
        (np.ones((0, 3)), "empty shape"),
    ],
)
def test_bad_npy_filter_names_the_file(tmp_path, weights, match):
    np.save(tmp_path / "bad.npy", weights)
    with pytest.raises(ValueError, match=rf"bad\.npy: .*{match}"):
        load_filter(tmp_path / "bad.npy")


def test_unknown_filter_suffix(tmp_path):
    (tmp_path / "f.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"unknown suffix '\.txt'"):
        load_filter(tmp_path / "f.txt")


def test_save_filter_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"use a \.npz .* or \.npy"):
        save_filter(Filter(np.eye(3)), tmp_path / "f.mat")
    assert list(tmp_path.iterdir()) == []


def test_save_filter_with_unsaveable_meta(tmp_path):
    with pytest.raises(ValueError, match=r"'m' has metadata that cannot be saved as JSON"):
        save_filter(Filter(np.eye(3), name="m", meta={"f": object()}), tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- atomic writes


def _write_half_then_fail(target):
    with atomic_write(target) as temporary:
        temporary.write_text("half a file")
        msg = "disk on fire"
        raise RuntimeError(msg)


def test_atomic_write_leaves_nothing_when_the_writer_raises(tmp_path):
    with pytest.raises(RuntimeError, match=r"disk on fire"):
        _write_half_then_fail(tmp_path / "out.txt")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_the_old_file_when_the_writer_raises(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match=r"disk on fire"):
        _write_half_then_fail(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_save_filter_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_savez(stream, **arrays):
        stream.write(b"PK partial")
        msg = "no space left on device"
        raise OSError(msg)

    monkeypatch.setattr(np, "savez_compressed", broken_savez)
    with pytest.raises(OSError, match=r"no space left"):
        save_filter(Filter(np.eye(3)), tmp_path / "f.npz")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_into_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"folder .*missing does not exist"):
        save_image(tmp_path / "missing" / "x.png", np.zeros((2, 2), np.uint8))
