"""Issue 9, hardening: one test (or a few) per item, each reproducing the reported failure.

Every reproduction runs on real files written in a temporary folder: real
PNG/JPEG/TIFF files, a real PNG that decodes to 30000×30000, a real JPEG with
an EXIF orientation, a real pipe whose reader is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import patternfind
from patternfind import io
from patternfind.cli import main
from patternfind.detection.pyramid import MAX_LEVELS, MIN_SCALE, pyramid_scales, scan_memory
from patternfind.evaluation.annotations import image_paths, save_annotations
from patternfind.evaluation.comparison import compare, load_labelled_images
from patternfind.evaluation.metrics import evaluate
from patternfind.structures import Box

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
ASTRONAUT = SAMPLES / "astronaut.png"
EYE = SAMPLES / "eye.npy"  # a colour filter
GREY_EYE = SAMPLES / "eye_handmade.npy"  # a grey one
COINS = SAMPLES / "coins"


# ---------------------------------------------------------------- helpers


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


#: Exit status of the main command when an image fails: the image is reported in one
#: line and the run goes on over the other images (a usage error is 2).
IMAGE_FAILED = 1


def assert_one_line_error(status: int, err: str, expected: str, code: int = 2) -> None:
    assert status == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert expected in lines[0], lines[0]


def write_png_bomb(path: Path, width: int, height: int) -> None:
    """A real 1-bit grey PNG of zeros: a small file that decodes to width × height bytes.

    Written by streaming zlib, so making it takes a few MB of memory whatever its size.
    """
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    parts += [compressor.compress(row * (height % 1000)), compressor.flush()]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def jpeg_with_orientation(image_rgb: np.ndarray, orientation: int) -> bytes:
    """A JPEG of ``image_rgb`` with an APP1 EXIF segment holding only the Orientation tag."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = encoded.tobytes()
    # big-endian TIFF: header, one IFD entry (0x0112, SHORT, count 1, value), no next IFD
    tiff = (b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    body = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    return data[:2] + segment + data[2:]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with a copy of the astronaut and the eye filter, made the working folder."""
    (tmp_path / "a.png").write_bytes(ASTRONAUT.read_bytes())
    (tmp_path / "eye.npy").write_bytes(EYE.read_bytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def labelled(tmp_path):
    """The three coin images and their COCO labels, copied into tmp_path/imgs."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("top_left.png", "top_right.png", "bottom.png", "coins.json"):
        (folder / name).write_bytes((COINS / name).read_bytes())
    return folder


# ---------------------------------------------------------------- 1. no output replaces an input


@pytest.mark.parametrize(
    "extra",
    [
        ["-o", "a.png"],
        ["--draw", "a.png"],
        ["--heatmap", "a.png"],
        ["-o", "eye.npy"],
        ["--draw", "link.png"],       # a symlink to the input
        ["--heatmap", "hard.png"],    # a hard link to the input
        ["--format", "coco", "-o", "a.json"],  # a.mapping.json is the filter below
    ],
)
def test_item1_no_output_replaces_an_input(workdir, capsys, extra):
    (workdir / "link.png").symlink_to(workdir / "a.png")
    os.link(workdir / "a.png", workdir / "hard.png")
    (workdir / "a.mapping.json").write_bytes(EYE.read_bytes())
    filters = ["--filter", "eye.npy"]
    if "coco" in extra:
        filters += ["--filter", "a.mapping.json"]
    before = {p.name: digest(p) for p in workdir.iterdir()}
    status, _, err = run_cli(capsys, ["a.png", *filters, *extra])
    assert_one_line_error(status, err, "refusing to write over an input")
    assert {p.name: digest(p) for p in workdir.iterdir()} == before


def test_item1_evaluate_draw_into_the_image_folder_is_refused(labelled, capsys):
    before = {p.name: digest(p) for p in labelled.iterdir()}
    status, out, err = run_cli(capsys, ["evaluate", "--annotations", labelled / "coins.json",
                                        "--filter", COINS / "coin.npz", "--draw", labelled])
    assert_one_line_error(status, err, "refusing to write over an input")
    assert out == ""  # refused before any work
    assert {p.name: digest(p) for p in labelled.iterdir()} == before


def test_item1_compare_report_crop_and_train_outputs_are_checked(labelled, tmp_path, capsys):
    image = labelled / "bottom.png"
    before = digest(image)
    status, _, err = run_cli(capsys, ["compare", "--annotations", labelled / "coins.json",
                                      "--filter", COINS / "coin.npz", "--filter",
                                      COINS / "disc.npz", "--report", image])
    assert_one_line_error(status, err, "refusing to write over an input")
    # a hard link named like a filter file is still the image
    os.link(image, tmp_path / "crop.npy")
    status, _, err = run_cli(capsys, ["crop", image, "--box", "0,0,20,20", "-o",
                                      tmp_path / "crop.npy"])
    assert_one_line_error(status, err, "refusing to write over an input")
    annotations = tmp_path / "labels.npz"  # an annotation file that happens to end in .npz
    annotations.write_bytes((labelled / "coins.json").read_bytes())
    status, _, err = run_cli(capsys, ["train", "--annotations", annotations, "-o", annotations])
    assert_one_line_error(status, err, "refusing to write over an input")
    assert digest(image) == before


# ---------------------------------------------------------------- 2. per-image names never collide


def test_item2_per_image_output_names_never_collide(tmp_path, capsys):
    sizes = {"a/x.png": (60, 80), "b/x.png": (70, 90), "x.png": (50, 100), "x.jpg": (64, 64)}
    rng = np.random.default_rng(0)
    for name, (height, width) in sizes.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        io.save_image(tmp_path / name, rng.integers(0, 255, (height, width), dtype=np.uint8))
    images = [tmp_path / name for name in sizes]
    out = tmp_path / "out"
    status, _, err = run_cli(capsys, [*images, "--filter", GREY_EYE, "--draw", out,
                                      "--heatmap", out / "heat"])
    assert status == 0, err
    drawn = sorted(out.glob("*.png"))
    heats = sorted((out / "heat").glob("*.png"))
    assert len(drawn) == len(heats) == 4
    # each picture has the size of its own image: none was written over by another
    assert sorted(io.load_image(p).shape[:2] for p in drawn) == sorted(sizes.values())
    assert sorted(io.load_image(p).shape[:2] for p in heats) == sorted(sizes.values())


def test_item2_evaluate_draw_names_never_collide(tmp_path, capsys):
    for folder, size in (("a", (60, 80)), ("b", (70, 90))):
        (tmp_path / folder).mkdir()
        io.save_image(tmp_path / folder / "x.png", np.full(size, 90, np.uint8))
    save_annotations({"a/x.png": [Box(5, 5, 20, 20)], "b/x.png": [Box(5, 5, 20, 20)]},
                     tmp_path / "labels.json")
    status, _, err = run_cli(capsys, ["evaluate", "--annotations", tmp_path / "labels.json",
                                      "--filter", GREY_EYE, "--draw", tmp_path / "drawn"])
    assert status == 0, err
    drawn = sorted((tmp_path / "drawn").glob("*.png"))
    assert sorted(io.load_image(p).shape[:2] for p in drawn) == [(60, 80), (70, 90)]


# ---------------------------------------------------------------- 3. output paths checked first


@pytest.mark.parametrize("flag", ["-o", "--draw", "--heatmap"])
def test_item3_missing_output_folder_is_reported_before_any_image_is_read(tmp_path, capsys, flag):
    target = tmp_path / "missing" / ("found.json" if flag == "-o" else "found.png")
    # the second image does not exist: an error about it would mean the work had started
    status, _, err = run_cli(capsys, [ASTRONAUT, "--filter", EYE, flag, target])
    assert_one_line_error(status, err, "does not exist")
    status, _, err = run_cli(capsys, [ASTRONAUT, tmp_path / "nope.png", "--filter", EYE,
                                      "-o", target])
    assert_one_line_error(status, err, f"folder {target.parent} does not exist")


def test_item3_an_output_folder_that_cannot_be_made_is_reported_at_once(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    status, _, err = run_cli(capsys, [ASTRONAUT, tmp_path / "nope.png", "--filter", EYE,
                                      "--draw", blocker / "drawn"])
    assert_one_line_error(status, err, "is not a folder")
    status, out, err = run_cli(capsys, ["compare", "--annotations", COINS / "coins.json",
                                        "--filter", COINS / "coin.npz", "--filter",
                                        COINS / "disc.npz", "--report", blocker / "r.png"])
    assert_one_line_error(status, err, "is not a folder")
    assert out == ""
    status, _, err = run_cli(capsys, ["train", "--annotations", COINS / "coins.json",
                                      "-o", tmp_path / "missing" / "f.npz"])
    assert_one_line_error(status, err, "does not exist")


# ---------------------------------------------------------------- 4. bounded memory


def test_item4_a_png_that_decodes_to_30000_squared_is_refused_before_decoding(tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    write_png_bomb(bomb, 30000, 30000)
    assert bomb.stat().st_size < 200_000  # 900 megapixels in a small file
    with pytest.raises(ValueError, match=r"30000×30000 = 900 megapixels, more than the limit of 179"):
        io.load_image(bomb)
    for args, code in (([bomb, "--filter", EYE], IMAGE_FAILED),
                       ([ASTRONAUT, "--filter", bomb], 2),
                       (["crop", bomb, "--box", "0,0,10,10", "-o", tmp_path / "f.npy"], 2)):
        status, _, err = run_cli(capsys, args)
        assert_one_line_error(status, err, "megapixels", code=code)


def test_item4_the_pixel_limit_is_raised_and_lowered(tmp_path, capsys, monkeypatch):
    image = tmp_path / "img.png"
    write_png_bomb(image, 3000, 2000)  # 6 megapixels
    assert io.load_image(image).shape == (2000, 3000)
    with pytest.raises(ValueError, match="6 megapixels, more than the limit of 5"):
        io.load_image(image, max_pixels=5_000_000)
    monkeypatch.setenv(io.MAX_PIXELS_VARIABLE, "5000000")
    with pytest.raises(ValueError, match="limit of 5 megapixels"):
        io.load_image(image)
    status, _, err = run_cli(capsys, [image, "--filter", GREY_EYE, "--threshold", "0.99"])
    assert_one_line_error(status, err, "limit of 5 megapixels", code=IMAGE_FAILED)
    # --max-pixels raises it for the run only
    status, _, err = run_cli(capsys, [image, "--filter", GREY_EYE, "--threshold", "0.99",
                                      "--scales", "1,1", "--max-pixels", "7000000"])
    assert status == 0, err
    assert os.environ[io.MAX_PIXELS_VARIABLE] == "5000000"


def test_item4_a_jpeg_header_claiming_a_huge_size_is_refused_before_decoding(tmp_path):
    _ok, encoded = cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))
    data = bytearray(encoded.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 20000, 20000)  # height, width
    (tmp_path / "huge.jpg").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="20000×20000 = 400 megapixels"):
        io.load_image(tmp_path / "huge.jpg")


@pytest.mark.parametrize(("suffix", "channels"), [
    (suffix, channels) for suffix in (".png", ".jpg", ".bmp", ".webp", ".tif") for channels in (1, 3)
] + [(".pgm", 1), (".ppm", 3)])
def test_item4_header_sizes_agree_with_opencv(tmp_path, suffix, channels):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (37, 53) if channels == 1 else (37, 53, 3), dtype=np.uint8)
    path = tmp_path / f"img{suffix}"
    assert cv2.imwrite(str(path), image)
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert io.image_size(path) == (decoded.shape[1], decoded.shape[0]) == (53, 37)


def test_item4_pyramid_limits():
    with pytest.raises(ValueError, match=r"`scales` minimum 0.01 would enlarge the image 100 times"):
        pyramid_scales((0.01, 2))
    # whole powers of 1.0001 within [0.5, 2]: exponents -6931 to 6931
    with pytest.raises(ValueError, match=r"`scale_step` 1.0001 gives 13863 pyramid levels"):
        pyramid_scales((0.5, 2), scale_step=1.0001)
    assert len(pyramid_scales((MIN_SCALE, 10), scale_step=1.02)) <= MAX_LEVELS
    # the message's advice works
    with pytest.raises(ValueError, match=r"at least (\d\.\d+)") as error:
        pyramid_scales((0.1, 1000), scale_step=1.01)
    advised = float(error.value.args[0].split("at least ")[1].split()[0])
    assert len(pyramid_scales((0.1, 1000), scale_step=advised)) <= MAX_LEVELS


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--scales", "0.01,2", "would enlarge the image 100 times"),
    ("--scale-step", "1.0001", "13863 pyramid levels"),
])
def test_item4_pyramid_limits_in_the_cli(capsys, flag, value, message):
    status, _, err = run_cli(capsys, [ASTRONAUT, "--filter", EYE, flag, value])
    assert_one_line_error(status, err, message)


def test_item4_memory_estimate_refuses_a_search_too_large_with_the_numbers(monkeypatch, capsys):
    image = np.zeros((1200, 1600, 3), np.uint8)
    eye = patternfind.io.load_filter(EYE)
    needed = scan_memory(image.shape, pyramid_scales((0.5, 2)), filters=1, workers=1)
    monkeypatch.setenv("PATTERNFIND_MAX_MEMORY", str(needed - 1))
    with pytest.raises(ValueError, match=r"needs about 0.\d GiB of memory, more than the limit"):
        patternfind.detect(image, eye, workers=1)
    assert patternfind.detect(image, eye, workers=1, scales=(1, 2)) == []  # a smaller plan fits
    monkeypatch.setenv("PATTERNFIND_MAX_MEMORY", "10M")
    status, _, err = run_cli(capsys, [ASTRONAUT, "--filter", EYE])
    assert_one_line_error(status, err, "PATTERNFIND_MAX_MEMORY", code=IMAGE_FAILED)


def test_item4_memory_estimate_bounds_the_measured_peak():
    """The estimate against the peak of every numpy and OpenCV allocation, traced."""
    import tracemalloc

    image = np.random.default_rng(0).integers(0, 255, (600, 900, 3), dtype=np.uint8)
    eye = io.load_filter(EYE)
    estimate = scan_memory(image.shape, pyramid_scales((0.5, 2)), workers=2)
    tracemalloc.start()
    patternfind.detect(image, eye, workers=2, threshold=0.99)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= estimate, (peak, estimate)
    # not wildly pessimistic either: whether the two largest levels overlap in time
    # depends on the threads, so the peak varies between runs
    assert estimate <= 6 * peak, (peak, estimate)


def test_item4_train_window_5000_is_refused(capsys, tmp_path):
    status, _, err = run_cli(capsys, ["train", "--annotations", COINS / "coins.json",
                                      "--window", "5000x5000", "-o", tmp_path / "f.npz"])
    assert_one_line_error(status, err, "at most 512 pixels on a side")


def test_item4_compare_holds_one_decoded_image_at_a_time(tmp_path):
    """Peak traced memory over six 1-megapixel images stays near that of one, with the same numbers."""
    import tracemalloc

    rng = np.random.default_rng(2)
    pattern = (rng.random((16, 16)) * 255).astype(np.uint8)
    annotations = {}
    for index in range(6):
        image = rng.integers(0, 60, (1000, 1000, 3), dtype=np.uint8)
        image[100:116, 200 + index:216 + index] = pattern[..., None]
        io.save_image(tmp_path / f"{index}.png", image)
        annotations[f"{index}.png"] = [Box(200 + index, 100, 16, 16)]
    save_annotations(annotations, tmp_path / "labels.json")
    filter_ = patternfind.Filter(pattern.astype(np.float32) / 255, name="p")
    options = {"scales": (1, 1), "threshold": 0.9, "workers": 1}

    def peak(keys):
        truth, _images = load_labelled_images(tmp_path / "labels.json")
        chosen = {key: tmp_path / key for key in keys}
        tracemalloc.start()
        results = compare([filter_], truth, images=chosen, **options)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top, results

    one, _ = peak(["0.png"])
    six, [result] = peak(list(annotations))
    assert six < 1.5 * one, (six, one)  # holding all six would be about six times as much
    # the same numbers as detecting image by image with everything in memory
    found = {key: patternfind.detect(io.load_image(tmp_path / key), filter_, **options)
             for key in annotations}
    reference = evaluate(found, annotations, iou=0.5)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (
        reference.true_positives, reference.false_positives, reference.false_negatives) == (6, 0, 0)
    assert result.ap == reference.ap


# ---------------------------------------------------------------- 5. no traceback


def test_item5_images_over_opencvs_pixel_limit_as_image_filter_or_crop(tmp_path, capsys):
    bomb = tmp_path / "big.png"
    write_png_bomb(bomb, 40000, 30000)  # 1.2 gigapixels: over OpenCV's 2**30 as well
    cases = ([bomb, "--filter", EYE], [ASTRONAUT, "--filter", bomb],
             ["crop", bomb, "--box", "0,0,10,10", "-o", tmp_path / "f.npy"],
             [bomb, "--filter", EYE, "--max-pixels", str(2**31)])
    for args, code in zip(cases, (IMAGE_FAILED, 2, 2, IMAGE_FAILED), strict=True):
        status, _, err = run_cli(capsys, args)
        assert status == code, err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
    assert "megapixels" in run_cli(capsys, cases[0])[2]


@pytest.mark.parametrize("scales", ["1e-9,1e9", "0.001,2", "0.0001,0.001"])
def test_item5_extreme_scales_end_in_one_line(capsys, scales):
    status, _, err = run_cli(capsys, [ASTRONAUT, "--filter", EYE, "--scales", scales])
    assert_one_line_error(status, err, "`scales` minimum")
    with pytest.raises(ValueError, match="`scales` minimum"):
        patternfind.detect(ASTRONAUT, EYE, scales=tuple(float(v) for v in scales.split(",")))


def test_item5_json_nested_100000_deep(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + ', "annotations": []}')
    for command in ("evaluate", "train"):
        args = [command, "--annotations", path, "--filter" if command == "evaluate" else "-o",
                EYE if command == "evaluate" else tmp_path / "f.npz"]
        status, _, err = run_cli(capsys, args)
        assert_one_line_error(status, err, "nested too deeply")


def test_item5_compare_report_without_matplotlib(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    status, out, err = run_cli(capsys, ["compare", "--annotations", COINS / "coins.json",
                                        "--filter", COINS / "coin.npz", "--filter",
                                        COINS / "disc.npz", "--report", tmp_path / "r.png"])
    assert_one_line_error(status, err, 'pip install "patternfind[plot]"')
    assert out == ""  # checked before the comparison ran
    assert not (tmp_path / "r.png").exists()


def test_item5_last_resort_handler(monkeypatch, capsys):
    from patternfind.cli import detect_cmd

    def broken(*args, **kwargs):
        msg = "something\nunforeseen"
        raise RuntimeError(msg)

    monkeypatch.setattr(detect_cmd, "detection_options", broken)
    status, _, err = run_cli(capsys, [ASTRONAUT, "--filter", EYE])
    assert_one_line_error(status, err, "unexpected error: RuntimeError: something unforeseen "
                                       "(rerun with --debug for the traceback)", code=1)
    status, _, err = run_cli(capsys, [ASTRONAUT, "--filter", EYE, "--debug"])
    assert status == 1
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError" in err


# ---------------------------------------------------------------- 6. silent wrong results


def test_item6_exif_orientation_is_applied(tmp_path):
    upright = io.load_image(ASTRONAUT)
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # as a phone's sensor holds it
    (tmp_path / "phone.jpg").write_bytes(jpeg_with_orientation(stored, 6))  # "rotate 90° CW"
    (tmp_path / "upright.jpg").write_bytes(jpeg_with_orientation(upright, 1))
    loaded = io.load_image(tmp_path / "phone.jpg")
    assert loaded.shape == upright.shape
    assert io.image_size(tmp_path / "phone.jpg") == (upright.shape[1], upright.shape[0])
    assert np.abs(loaded.astype(int) - upright.astype(int)).mean() < 3  # JPEG loss only
    found = patternfind.detect(tmp_path / "phone.jpg", EYE)
    expected = patternfind.detect(tmp_path / "upright.jpg", EYE)
    assert len(found) == len(expected) == 2
    for a, b in zip(sorted(found, key=lambda d: d.x), sorted(expected, key=lambda d: d.x),
                    strict=True):
        assert abs(a.x - b.x) <= 2
        assert abs(a.y - b.y) <= 2


@pytest.mark.parametrize(("scale", "hint"), [(255, "/ 255"), (65535, "/ 65535"),
                                             (-1, "rescale it first")])
def test_item6_float_images_outside_0_1_are_refused_with_how_to_scale(scale, hint):
    image = io.load_image(ASTRONAUT).astype(np.float32) / 255 * scale
    with pytest.raises(ValueError, match=f"float pixels must be in \\[0, 1\\]: .*{hint}"):
        patternfind.detect(image, EYE)


def test_item6_float_tiff_files(tmp_path, capsys):
    photo = io.load_image(ASTRONAUT)
    cv2.imwrite(str(tmp_path / "wide.tif"), photo[..., ::-1].astype(np.float32))  # 0-255 floats
    status, _, err = run_cli(capsys, [tmp_path / "wide.tif", "--filter", EYE])
    assert_one_line_error(status, err, "if these are 8-bit values (0-255)", code=IMAGE_FAILED)
    cv2.imwrite(str(tmp_path / "unit.tif"), photo[..., ::-1].astype(np.float32) / 255)
    found = patternfind.detect(tmp_path / "unit.tif", EYE)
    assert [(d.x, d.y) for d in found] == [(d.x, d.y) for d in patternfind.detect(ASTRONAUT, EYE)]


@pytest.mark.parametrize("factor", [1e20, 1e30, 1e-3, 1e-20])
@pytest.mark.parametrize(("score", "method"), [("ncc", cv2.TM_CCOEFF_NORMED),
                                               ("cosine", cv2.TM_CCORR_NORMED)])
def test_item6_filter_scale_does_not_change_ncc_or_cosine(factor, score, method):
    grey = cv2.cvtColor(io.load_image(ASTRONAUT), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    eye = io.load_filter(GREY_EYE)
    scaled = eye.replace(weights=(eye.weights.astype(np.float64) * factor).astype(np.float32))
    result = patternfind.score_map(grey, scaled, score=score)
    assert np.isfinite(result).all()
    # the unscaled filter's map (itself checked against OpenCV in test_scores.py) ...
    np.testing.assert_allclose(result, patternfind.score_map(grey, eye, score=score), atol=2e-4)
    # ... and OpenCV's on the unscaled filter, where the window has contrast (OpenCV's
    # scores on flat windows are rounding noise, which patternfind sets to 0)
    reference = cv2.matchTemplate(grey, eye.weights, method)
    textured = cv2.boxFilter(grey * grey, -1, eye.weights.shape[::-1], anchor=(0, 0)) - cv2.boxFilter(
        grey, -1, eye.weights.shape[::-1], anchor=(0, 0)) ** 2 > 1e-3
    textured = textured[: reference.shape[0], : reference.shape[1]]
    np.testing.assert_allclose(result[textured], reference[textured], atol=2e-4)
    def best(filter_):
        threshold = 0.6 if score == "ncc" else 0.97
        found = patternfind.detect(grey, filter_, score=score, threshold=threshold, scales=(1, 1),
                                   max_detections=3)
        return [(round(d.x), round(d.y), round(d.score, 3)) for d in found]

    assert best(scaled) == best(eye)


def test_item6_flatness_is_relative_to_the_filter():
    eye = io.load_filter(EYE)
    flat = eye.replace(weights=np.full_like(eye.weights, 1e-3))
    nearly_flat = eye.replace(weights=(0.5 + 1e-7 * eye.weights).astype(np.float32))
    for filter_ in (flat, nearly_flat):
        with pytest.raises(ValueError, match="is flat"):
            patternfind.detect(ASTRONAUT, filter_)


def test_item6_make_filter_that_draws_nothing_is_refused(tmp_path, capsys):
    output = tmp_path / "ring.npy"
    status, _, err = run_cli(capsys, ["make-filter", "ring", "--size", "5", "--radius", "50",
                                      "-o", output])
    assert_one_line_error(status, err, "draws nothing inside a 5×5 filter")
    assert not output.exists()
    with pytest.raises(ValueError, match="draws nothing"):
        patternfind.filters.make("ring", 5, radius=50, polarity="dark")
    assert np.ptp(patternfind.filters.make("ring", 9, radius=3).weights) > 0.5  # fits: drawn


# ---------------------------------------------------------------- 7. annotation paths


@pytest.mark.parametrize("key", ["/etc/passwd", "../../outside.png", "sub/../../outside.png"])
def test_item7_annotation_paths_leaving_the_root_are_refused(tmp_path, capsys, key):
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    io.save_image(tmp_path / "outside.png", np.full((40, 40), 50, np.uint8))
    (folder / "labels.csv").write_text(f"image,x,y,w,h\n{key},1,1,10,10\n")
    status, out, err = run_cli(capsys, ["evaluate", "--annotations", folder / "labels.csv",
                                        "--filter", EYE])
    assert_one_line_error(status, err, "lies outside the image root")
    assert "--allow-outside-root" in err
    assert out == ""
    with pytest.raises(ValueError, match="outside the image root"):
        image_paths([key], folder / "labels.csv")
    with pytest.raises(ValueError, match="outside the image root"):
        compare(EYE, folder / "labels.csv")
    status, _, err = run_cli(capsys, ["train", "--annotations", folder / "labels.csv",
                                      "-o", tmp_path / "f.npz"])
    assert_one_line_error(status, err, "lies outside the image root")


def test_item7_allow_outside_root_and_image_root(tmp_path, capsys):
    folder = tmp_path / "labels"
    folder.mkdir()
    images = tmp_path / "images"
    images.mkdir()
    io.save_image(images / "x.png", np.full((40, 40), 50, np.uint8))
    (folder / "climb.csv").write_text("image,x,y,w,h\n../images/x.png,1,1,10,10\n")
    (folder / "plain.csv").write_text("image,x,y,w,h\nx.png,1,1,10,10\n")
    common = ["--filter", GREY_EYE, "--threshold", "0.99", "--scales", "1,1"]
    status, out, err = run_cli(capsys, ["evaluate", "--annotations", folder / "climb.csv",
                                        "--allow-outside-root", *common])
    assert status == 0, err
    assert "../images/x.png" in out
    status, out, err = run_cli(capsys, ["evaluate", "--annotations", folder / "plain.csv",
                                        "--image-root", images, *common])
    assert status == 0, err
    assert image_paths(["x.png"], folder / "plain.csv", image_root=images) == {"x.png": images / "x.png"}


# ---------------------------------------------------------------- 8. help and README


def test_item8_one_size_syntax(tmp_path, capsys):
    for size, shape in (("24", (24, 24)), ("24x12", (12, 24))):
        status, _, err = run_cli(capsys, ["make-filter", "eye", "--size", size, "-o",
                                          tmp_path / "eye.npy"])
        assert status == 0, err
        assert np.load(tmp_path / "eye.npy").shape == shape
    status, _, err = run_cli(capsys, ["make-filter", "eye", "--size", "12,24", "-o",
                                      tmp_path / "eye.npy"])
    assert_one_line_error(status, err, "expected N or WIDTHxHEIGHT")
    from patternfind.cli._common import size_argument
    from patternfind.cli.train_cmd import _window

    assert _window("48x32") == size_argument("48x32") == (32, 48)
    assert _window("32") == (32, 32)


def test_item8_train_help_states_the_real_epochs_default(capsys):
    from patternfind.learn import optimize

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 100)" not in text
    assert f"at least {optimize._DEFAULT_EPOCHS} and at most {optimize._MAX_EPOCHS}" in text
    assert f"about {optimize._DEFAULT_STEPS} gradient steps" in text


def test_item8_the_library_prints_no_progress(capfd):
    rng = np.random.default_rng(0)
    patches = rng.random((200, 8, 8)).astype(np.float32)
    labels = patches[:, 2:6, 2:6].mean(axis=(1, 2)) > 0.5
    patternfind.learn.train_filter(patches, labels, epochs=5)
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_item8_readme_says_how_to_activate_the_venv():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = text.split("## Quick start")[1].split("## Detecting")[0]
    assert "source .venv/bin/activate" in quick_start


# ---------------------------------------------------------------- 9. small consistencies


def test_item9_broken_pipe_ends_quietly(monkeypatch, capsys):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`head`) has gone
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    monkeypatch.setattr(sys, "stdout", stream)
    status = main([str(ASTRONAUT), "--filter", str(EYE), "--format", "json"])
    err = capsys.readouterr().err
    stream.close()  # stdout now points at devnull: the final flush does not fail again
    assert status == 1
    assert err == ""


def test_item9_draw_folder_is_created_by_detect_as_by_evaluate(tmp_path, capsys):
    folder = tmp_path / "new" / "drawn"
    status, _, err = run_cli(capsys, [ASTRONAUT, COINS / "bottom.png", "--filter", GREY_EYE,
                                      "--draw", folder])
    assert status == 0, err
    assert sorted(p.name for p in folder.iterdir()) == [
        "astronaut_detections.png", "coins_bottom_detections.png"]  # paths below samples/
    folder = tmp_path / "new2" / "drawn"
    status, _, err = run_cli(capsys, ["evaluate", "--annotations", COINS / "coins.json",
                                      "--filter", COINS / "coin.npz", "--draw", folder])
    assert status == 0, err
    assert len(list(folder.iterdir())) == 3


# ---------------------------------------------------------------- 10. tests pass on any machine


def test_item10_no_test_reads_outside_the_repository():
    offenders = []
    for path in (ROOT / "tests").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for needle in ("/work/", "shared/", "parents[2]", "parents[3]", "expanduser("):
            if needle in text and path.name != Path(__file__).name:
                offenders.append(f"{path.name}: {needle}")
    assert offenders == []
    assert (ROOT / "tests" / "data" / "digits.png").is_file()
    assert "licen" in (ROOT / "tests" / "data" / "README.md").read_text(encoding="utf-8").lower()


def test_json_summary_of_item_reproductions_is_valid():
    """`--format json` of evaluate stays machine-readable after the changes above."""
    import contextlib
    import io as text_io

    buffer = text_io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main(["evaluate", "--annotations", str(COINS / "coins.json"), "--filter",
                       str(COINS / "coin.npz"), "--format", "json"])
    assert status == 0
    assert json.loads(buffer.getvalue())["true_positives"] == 24
