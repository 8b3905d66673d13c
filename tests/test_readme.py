"""The README's promises: its test command is CI's, and its first command finds the eyes."""

import ast
import contextlib
import importlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import patternfind
from patternfind.io import load_image

ROOT = Path(__file__).resolve().parents[1]
# Iris centres (x, y) located by eye on an enlarged crop of the astronaut photo.
IRIS_CENTRES = [(203, 100), (246, 102)]


def _bash_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def test_readme_test_command_is_what_ci_runs():
    test_command = _bash_blocks()[1].strip()
    assert "pytest" in test_command
    ci_script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci_script.splitlines()


def test_readme_first_command_finds_both_eyes_and_nothing_else():
    found = patternfind.detect(ROOT / "samples" / "astronaut.png", ROOT / "samples" / "eye.npy")
    assert len(found) == 2
    for x, y in IRIS_CENTRES:
        assert any(d.x < x < d.x + d.w and d.y < y < d.y + d.h for d in found)


@pytest.mark.slow
@pytest.mark.parametrize("module_or_script", ["module", "script"])
def test_first_command_runs_as_a_process(module_or_script):
    args = ["samples/astronaut.png", "--filter", "samples/eye.npy"]
    if module_or_script == "module":
        command = [sys.executable, "-m", "patternfind", *args]
    else:
        script = Path(sys.executable).with_name("patternfind")
        if not script.exists():
            pytest.fail(f"console script not installed beside {sys.executable}")
        command = [str(script), *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("samples/astronaut.png") == 2
    assert "2 detections in 1 image" in result.stdout


def test_readme_api_section_names_what_exists():
    """Every name the Python API section lists is exported where it says."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    top, subpackages = section.split("Each stage's", 1)
    listed = re.findall(r"`(?:patternfind\.)?(\w+)`", top)
    assert len(listed) > 15
    for name in listed:
        assert name in patternfind.__all__, name
    stages = re.findall(r"`patternfind\.(\w+)` \(([^)]*)\)", subpackages)
    assert len(stages) >= 5
    for subpackage, names in stages:
        module = importlib.import_module(f"patternfind.{subpackage}")
        for name in re.findall(r"`(\w+)`", names):
            assert name in module.__all__, f"patternfind.{subpackage}.{name}"


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def _run_block(index, tmp_path, monkeypatch) -> tuple[dict, str]:
    """Run README Python block ``index`` in tmp_path; return its namespace and what it printed."""
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    code = compile(_python_blocks()[index], f"README.md python block {index}", "exec")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, namespace)  # noqa: S102 (our own README, run on purpose)
    return namespace, printed.getvalue()


# `name = expression  # what the README says it is`, or `expression  # its value`
_ANNOTATED = re.compile(r"^(?:(?P<name>\w+) = )?(?P<expression>[^#=][^#]*?)\s+#\s*(?P<says>.+)$")


def _claims(block: str) -> list[tuple[str | None, str, str]]:
    found = []
    for line in block.splitlines():
        match = _ANNOTATED.match(line)
        if match and not line.startswith("#"):
            found.append((match["name"], match["expression"], match["says"]))
    return found


def _check_claim(namespace: dict, name: str | None, expression: str, says: str) -> bool:
    """Check one README comment against the value it describes; False if it states nothing checkable."""
    value = namespace[name] if name else eval(expression, namespace)
    shape = re.match(r"\(([^()]*)\)\s*(\w+)?", says)
    if shape and not re.search(r"[A-Za-z]", shape[1]):
        arithmetic = shape[1].replace("−", "-").replace("·", "*")
        assert value.shape == eval(f"({arithmetic},)"), (expression, says)
        if shape[2] in ("uint8", "uint16", "float32", "float64"):
            assert value.dtype == np.dtype(shape[2]), (expression, says)
        return True
    number = re.match(r"(-?\d+(?:\.\d+)?)\b", says)
    if number and name is None:
        assert value == pytest.approx(float(number[1])), (expression, says)
        return True
    kind = re.match(r"(a|list of) (\w+)", says)
    if kind and hasattr(patternfind, kind[2]):
        expected = getattr(patternfind, kind[2])
        items = value if kind[1] == "list of" else [value]
        assert isinstance(items, list if kind[1] == "list of" else object)
        assert items
        assert all(isinstance(item, expected) for item in items), (expression, says)
        return True
    return False


def _console_rows(command: str) -> dict[str, list[str]]:
    """The table rows the README shows under a ``$ patternfind <command>`` console block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```console\n(.*?)```", text, flags=re.DOTALL)
                 if b.startswith(f"$ patternfind {command}"))
    return {line.split()[0]: line.split() for line in block.splitlines()[1:] if line.strip()}


TRAINING_BLOCK = next(index for index, block in enumerate(_python_blocks())
                      if "train_detector" in block)


@pytest.mark.parametrize("index", [index for index in range(len(_python_blocks()))
                                   if index != TRAINING_BLOCK])
def test_readme_python_examples_say_what_they_return(index, tmp_path, monkeypatch):
    """Every Python example runs as written, and each commented value is what its comment says."""
    namespace, _ = _run_block(index, tmp_path, monkeypatch)
    claims = _claims(_python_blocks()[index])
    checked = [claim for claim in claims if _check_claim(namespace, *claim)]
    assert checked, claims


def test_readme_detect_example_prints_the_two_eyes(tmp_path, monkeypatch):
    _, printed = _run_block(0, tmp_path, monkeypatch)
    lines = [[float(value) for value in line.split()] for line in printed.splitlines()]
    assert len(lines) == 2  # one line per box: x y w h score scale
    for x, y in IRIS_CENTRES:
        assert any(bx < x < bx + bw and by < y < by + bh for bx, by, bw, bh, _, _ in lines)
    assert all(score >= 0.8 for *_, score, _ in lines)  # ncc's default threshold


def test_readme_compare_example_prints_the_compare_table(tmp_path, monkeypatch):
    """The Python compare prints the P, R and AP that the README's console table shows."""
    compare_block = next(index for index, block in enumerate(_python_blocks())
                         if "patternfind.compare(" in block)
    _, printed = _run_block(compare_block, tmp_path, monkeypatch)
    table = _console_rows("compare")
    results = ast.literal_eval(printed.strip())
    assert [name for name, *_ in results] == ["coin", "disc"]
    for name, precision, recall, ap in results:
        row = table[name]
        assert [f"{precision:.3f}", f"{recall:.3f}", f"{ap:.3f}"] == [row[2], row[3], row[5]]
    assert (tmp_path / "report.png").stat().st_size > 0
    assert load_image(tmp_path / "report.png").ndim == 3


@pytest.mark.slow
def test_readme_training_example_returns_trained_filters(tmp_path, monkeypatch):
    """The training example runs as written and returns what the README says: HOG Filters."""
    namespace, _ = _run_block(TRAINING_BLOCK, tmp_path, monkeypatch)
    for trained in (namespace["face"], namespace["filter_"]):
        assert isinstance(trained, patternfind.Filter)
        assert trained.features == "hog"
        assert trained.threshold is not None
    assert patternfind.Filter.load(tmp_path / "face.npz").weights.shape == namespace[
        "face"].weights.shape
