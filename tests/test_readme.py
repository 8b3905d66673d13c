"""The README's promises: its test command is CI's, and its first command finds the eyes."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import patternfind

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


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_examples_run(index, tmp_path, monkeypatch):
    """Every Python example in the README runs as written (files it writes land in tmp_path)."""
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    code = compile(_python_blocks()[index], f"README.md python block {index}", "exec")
    exec(code, namespace)  # noqa: S102 (our own README, run on purpose)
