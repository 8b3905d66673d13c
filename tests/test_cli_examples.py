"""Every example in every ``--help``, and every command of the README's "Detecting" section, runs.

Each runs in-process through ``main`` in a fresh folder holding a link to the
repository's ``samples/``, so the outputs they write land there and the
sample files they read are the real ones.
"""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from patternfind import io
from patternfind.cli import main
from patternfind.cli.detect_cmd import build_parser as detect_parser
from patternfind.cli.evaluate_cmd import build_compare_parser, build_evaluate_parser
from patternfind.cli.filter_cmd import build_crop_parser, build_make_filter_parser
from patternfind.cli.train_cmd import build_parser as train_parser

ROOT = Path(__file__).resolve().parents[1]

PARSERS = {
    "detect": detect_parser,
    "make-filter": build_make_filter_parser,
    "crop": build_crop_parser,
    "evaluate": build_evaluate_parser,
    "compare": build_compare_parser,
    "train": train_parser,
}


def example_commands(text: str) -> list[str]:
    """The ``patternfind ...`` lines of an ``examples:`` block, continuation lines joined."""
    block = text.split("examples:\n", 1)[1].split("\n\n", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("patternfind "):
            command = re.split(r"\s{2,}#", line)[0]  # drop trailing comments
            commands.append(" ".join(command.split()))
    return commands


def run_command(command: str, folder: Path) -> None:
    words = shlex.split(command)
    assert words[0] == "patternfind"
    argv = []
    for word in words[1:]:  # the shell's glob expansion
        argv += sorted(glob.glob(word, root_dir=folder)) if "*" in word else [word]
    status = main(argv)
    assert status == 0, f"{command!r} exited with {status}"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _make_crop_folders(folder: Path) -> None:
    """pos/ and neg/ for the `train --pos pos/ --neg neg/` example: faces and background crops."""
    (folder / "pos").mkdir()
    (folder / "neg").mkdir()
    rows = [line.split(",") for line in (ROOT / "samples/faces/train.csv").read_text().splitlines()[1:]]
    rng = np.random.default_rng(0)
    for index, (name, x, y, w, h, _) in enumerate(rows[:30]):
        image = io.load_image(ROOT / "samples/faces" / name)
        x, y, w, h = (int(float(v)) for v in (x, y, w, h))
        io.save_image(folder / "pos" / f"{index}.png", image[y:y + h, x:x + w])
        top, left = rng.integers(0, image.shape[0] - 40), rng.integers(0, image.shape[1] - 40)
        io.save_image(folder / "neg" / f"{index}.png", image[top:top + 40, left:left + 40])


@pytest.mark.parametrize(
    "command",
    # train learns three filters and compare runs the face set: tens of seconds each
    [pytest.param(name, marks=pytest.mark.slow) if name in ("train", "compare") else name
     for name in PARSERS],
)
def test_every_help_example_runs(command, folder, capsys):
    commands = example_commands(PARSERS[command]().epilog)
    assert len(commands) >= 2
    if command == "train":
        _make_crop_folders(folder)
    for line in commands:
        run_command(line, folder)
    assert "Traceback" not in capsys.readouterr().err


def test_example_parser_reads_continuations_and_comments():
    text = "examples:\n  patternfind a \\\n      b   # c\n  patternfind d\n\nmore"
    assert example_commands(text) == ["patternfind a b", "patternfind d"]


def _readme_detecting_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Detecting", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL).group(1)
    return example_commands("examples:\n" + block)


def test_readme_detecting_commands_run(folder, capsys):
    commands = _readme_detecting_commands()
    assert len(commands) == 6
    for line in commands:
        run_command(line, folder)
    assert (folder / "found.json").is_file()
    assert (folder / "my_eye.npy").is_file()
    assert len(list((folder / "drawn").glob("*.png"))) == 2
