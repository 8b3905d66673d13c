"""CLI fuzz test: argument lists drawn from the real options and values, hostile ones included.

Whatever the arguments, ``main`` returns 0, 1 or 2, prints no traceback, and
never modifies a file it was given as input (checked by checksums).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patternfind import io
from patternfind.cli import main
from patternfind.evaluation.annotations import save_annotations
from patternfind.structures import Box, Filter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Small real inputs: images, filters, annotations, plus a symlink and a hard link to them."""
    folder = tmp_path_factory.mktemp("fuzz")
    photo = io.load_image(ROOT / "samples" / "astronaut.png")[150:230, 170:270]  # both eyes
    io.save_image(folder / "colour.png", photo)
    io.save_image(folder / "grey.png", photo.mean(axis=2).astype(np.uint8))
    io.save_image(folder / "photo.jpg", photo)
    (folder / "eye.npy").write_bytes((ROOT / "samples" / "eye.npy").read_bytes())
    Filter(photo[40:54, 20:42].mean(axis=2).astype(np.float32) / 255, name="g").save(
        folder / "grey.npz")
    save_annotations({"colour.png": [Box(22, 43, 22, 14)], "grey.png": [Box(65, 45, 22, 14)]},
                     folder / "labels.json", image_sizes={"colour.png": (100, 80),
                                                          "grey.png": (100, 80)})
    (folder / "labels.csv").write_text("image,x,y,w,h\ngrey.png,65,45,22,14\n")
    (folder / "link.png").symlink_to(folder / "colour.png")
    os.link(folder / "grey.png", folder / "hard.png")
    (folder / "out").mkdir()
    return folder


INPUTS = ["colour.png", "grey.png", "photo.jpg", "eye.npy", "grey.npz", "labels.json",
          "labels.csv", "link.png", "hard.png"]
HOSTILE_NUMBERS = ["", "-1", "0", "nan", "inf", "-inf", "1e309", "1e-9", "x", "99999999999",
                   "0.001", "1e9", "1,2", "3x", "-0"]
HOSTILE_PATHS = ["missing.png", "out", "/dev/null", "nowhere/x.png", "x.txt", ".", "",
                 *INPUTS]  # an input given as an output must be refused


def _mostly(valid: st.SearchStrategy[str], hostile: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Two valid values for each hostile one, so that most runs reach the real work."""
    return st.one_of(valid, valid, hostile)


def _numbers(*valid: str) -> st.SearchStrategy[str]:
    hostile = st.one_of(st.sampled_from(HOSTILE_NUMBERS),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.integers(-10**12, 10**12).map(str))
    return _mostly(st.sampled_from(valid), hostile)


def _files(corpus: Path, *valid: str) -> st.SearchStrategy[str]:
    return _mostly(st.sampled_from([str(corpus / name) for name in valid]),
                   st.sampled_from([str(corpus / name) if name else "" for name in HOSTILE_PATHS]))


def _outputs(corpus: Path, *suffixes: str) -> st.SearchStrategy[str]:
    fresh = st.sampled_from([str(corpus / "out" / f"result{suffix}") for suffix in suffixes])
    return _mostly(fresh, st.sampled_from([str(corpus / name) if name else ""
                                           for name in HOSTILE_PATHS]))


def _detection_flags() -> dict[str, st.SearchStrategy[str]]:
    pairs = _mostly(st.sampled_from(["0.5,2", "1,1", "0.8,1.25", "0.1,10"]),
                    st.sampled_from(["0.01,2", "1e-9,1e9", "2,1", "x", "1,", ",", "nan,1",
                                     "1e308,1e309", "-1,1"]))
    return {"--threshold": _numbers("0.5", "0.8", "0.95", "-1", "1"),
            "--score": st.sampled_from(["ncc", "dot", "cosine", "x"]),
            "--scales": pairs, "--scale-step": _numbers("1.1", "1.5", "1.01", "2"),
            "--nms": _numbers("0.3", "0", "1"), "--max": _numbers("1", "5"),
            "--max-pixels": _numbers("8000", "100000000", "1")}


def _arguments(corpus: Path) -> st.SearchStrategy[list[str]]:
    images = _files(corpus, "colour.png", "grey.png", "photo.jpg", "link.png")
    filters = _files(corpus, "eye.npy", "grey.npz", "grey.png")
    annotations = _files(corpus, "labels.json", "labels.csv")
    pictures = _outputs(corpus, ".png", "", "_dir")
    commands = {  # name: (fixed words, required flags, optional flags, positionals)
        "detect": ([], {"--filter": filters}, {
            **_detection_flags(), "--format": st.sampled_from(["table", "json", "csv", "coco"]),
            "-o": _outputs(corpus, ".json", ".csv"), "--draw": pictures, "--heatmap": pictures,
            "--workers": _numbers("1", "2"), "--subpixel": st.just(""), "--per-label": st.just("")},
            st.lists(images, min_size=1, max_size=3)),
        "evaluate": (["evaluate"], {"--annotations": annotations, "--filter": filters}, {
            **_detection_flags(), "--draw": pictures, "--iou": _numbers("0.5", "0.1", "1"),
            "--image-root": _files(corpus, "."), "--allow-outside-root": st.just(""),
            "--format": st.sampled_from(["table", "json"])}, st.lists(images, max_size=2)),
        "compare": (["compare"], {"--annotations": annotations, "--filter": filters}, {
            **_detection_flags(), "--report": _outputs(corpus, ".png", ".html", ".txt"),
            "--rank-threshold": _numbers("0.3", "-1")}, st.just([])),
        "make-filter": (["make-filter"], {"--size": _numbers("5", "24x12", "9", "12,24", "0x5"),
                                          "-o": _outputs(corpus, ".npy", ".npz", ".txt")}, {
            "--radius": _numbers("2", "50"), "--width": _numbers("1", "30"),
            "--angle": _numbers("30", "1e300"), "--zero-mean": st.just("")},
            st.lists(st.sampled_from(["ring", "eye", "edge", "blob", "bar", "corner", "x"]),
                     min_size=1, max_size=1)),
        "crop": (["crop"], {"--box": st.sampled_from(["0,0,10,10", "90,70,20,20", "-1,0,5,5",
                                                      "0,0,0,0", "1,2,3", "95,75,10,10"]),
                            "-o": _outputs(corpus, ".npy", ".npz", ".png")},
                 {"--grey": st.just(""), "--max-pixels": _numbers("8000", "1")},
                 st.lists(images, min_size=1, max_size=1)),
        "train": (["train", "--epochs", "3", "--mine-rounds", "0", "--quiet"],
                  {"--annotations": annotations, "-o": _outputs(corpus, ".npz", ".npy")},
                  {"--window": st.sampled_from(["22x14", "5000x5000", "0", "x", "16"]),
                   "--features": st.sampled_from(["pixels", "hog", "gradients"]),
                   "--l2": _numbers("0.001", "-1"), "--lr": _numbers("0.01", "0")},
                  st.just([])),
    }

    @st.composite
    def build(draw: st.DrawFn) -> list[str]:
        name = draw(st.sampled_from(sorted(commands)))
        fixed, required, optional, positionals = commands[name]
        argv = list(fixed) + draw(positionals)
        for flag in sorted(required):
            if draw(st.sampled_from([True] * 9 + [False])):  # now and then one goes missing
                argv += [flag, draw(required[flag])]
        for flag in draw(st.lists(st.sampled_from(sorted(optional)), max_size=4, unique=True)):
            value = draw(optional[flag])
            argv += [flag] if value == "" and flag not in ("--threshold",) and flag.startswith(
                ("--sub", "--per", "--grey", "--zero", "--allow")) else [flag, value]
        return argv

    return build()


def _checksums(corpus: Path) -> dict[str, str]:
    return {name: hashlib.sha256((corpus / name).read_bytes()).hexdigest() for name in INPUTS}


OUTPUT_FLAGS = ("-o", "--report", "--draw", "--heatmap")
#: Corpus files that are one file under two names, and the images each annotation file names.
ALIASES = {"link.png": "colour.png", "hard.png": "grey.png"}
ANNOTATED = {"labels.json": ("colour.png", "grey.png"), "labels.csv": ("grey.png",)}


def _with_aliases(names: set[str]) -> set[str]:
    return names | {ALIASES.get(n, n) for n in names} | {a for a, t in ALIASES.items() if t in names}


def _inputs_and_outputs(argv: list[str], corpus: Path) -> tuple[set[str], set[str]]:
    """Corpus files the command reads, and corpus files it was told to write."""
    outputs = {argv[i + 1] for i in range(len(argv) - 1) if argv[i] in OUTPUT_FLAGS}
    named = {Path(word).name for word in argv
             if word not in outputs and Path(word).parent == corpus}
    named |= {image for label, images in ANNOTATED.items() if label in named for image in images}
    written = {Path(word).name for word in outputs if Path(word).parent == corpus}
    return _with_aliases(named), _with_aliases(written)


def test_cli_fuzz_never_crashes_and_never_touches_an_input(corpus, capsys, tmp_path, monkeypatch):
    # Relative outputs ("." or "") land in a scratch folder, never in the repository.
    monkeypatch.chdir(tmp_path)
    before = _checksums(corpus)
    unexpected: list[tuple[list[str], str]] = []

    @settings(max_examples=200, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(_arguments(corpus))
    def check(argv: list[str]) -> None:
        status = main(argv)
        captured = capsys.readouterr()
        assert status in (0, 1, 2), (argv, status, captured.err)
        assert "Traceback" not in captured.err, (argv, captured.err)
        # 1 is also the main command's "an image failed" (reported, run went on); only the
        # last-resort handler's "unexpected error" is a bug
        if status == 1 and "unexpected error" in captured.err:
            unexpected.append((argv, captured.err))
        changed = {name for name, digest in _checksums(corpus).items() if digest != before[name]}
        inputs, outputs = _inputs_and_outputs(argv, corpus)
        assert not changed & inputs, (argv, changed)  # an input is never written over
        assert changed <= outputs, (argv, changed)  # nothing but the named outputs is written
        for name in changed:  # a corpus file that this command does not read is a fair output
            (corpus / name).write_bytes(originals[name])

    originals = {name: (corpus / name).read_bytes() for name in INPUTS}
    check()
    # an unexpected error ends cleanly, but each one is a bug to fix: none is expected
    assert unexpected == []
