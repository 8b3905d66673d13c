"""The public API: lazy top-level names, `__all__` everywhere, and a CLI that starts without numerics."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import patternfind

PACKAGE = Path(patternfind.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
NUMERICAL = ("numpy", "cv2", "scipy", "skimage", "matplotlib")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("name", patternfind.__all__)
def test_every_top_level_name_is_the_defining_modules_object(name: str) -> None:
    value = getattr(patternfind, name)
    if name == "__version__":
        assert isinstance(value, str)
        assert value
    elif name in patternfind._EXPORTS:
        assert value is getattr(importlib.import_module(patternfind._EXPORTS[name]), name)
    else:
        assert value is importlib.import_module(f"patternfind.{name}")


def test_unknown_top_level_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'detekt'"):
        patternfind.detekt  # noqa: B018
    assert not hasattr(patternfind, "detekt")


def test_dir_lists_the_lazy_names() -> None:
    assert set(patternfind.__all__) <= set(dir(patternfind))


def test_type_checking_imports_match_the_lazy_table() -> None:
    """mypy and IDEs read the TYPE_CHECKING block; the runtime reads `_EXPORTS`: they must agree."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    block = next(node for node in tree.body
                 if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}
    assert seen.pop("filters") == "patternfind"
    assert seen == patternfind._EXPORTS
    assert sorted(patternfind.__all__) == sorted([*patternfind._EXPORTS, "__version__", "filters"])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_every_module_declares_all(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assigned = {target.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(target, ast.Name)}
    assert "__all__" in assigned, f"{path.name} has no __all__"
    if path.name == "__main__.py":
        return  # importing it runs the CLI
    module = importlib.import_module(_module_name(path))
    for name in module.__all__:
        assert hasattr(module, name), f"{module.__name__}.__all__ names {name!r}, which is missing"


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_parsers_load_no_numerical_module() -> None:
    """`patternfind --help` must not pay for numpy/OpenCV/SciPy (about a second before)."""
    code = f"""
import sys
import patternfind
import patternfind.cli
from patternfind.cli import detect_cmd, evaluate_cmd, filter_cmd, train_cmd
built = []
for module in (detect_cmd, evaluate_cmd, filter_cmd, train_cmd):
    for name, (build_parser, run) in module.COMMANDS.items():
        build_parser().format_help()
        built.append(name)
print(sorted(built))
print([name for name in {NUMERICAL!r} if name in sys.modules])
"""
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr
    built, loaded = result.stdout.splitlines()
    assert built == "['compare', 'crop', 'detect', 'evaluate', 'make-filter', 'train']"
    assert loaded == "[]"


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "--help"],
                                  ["evaluate", "--help"], ["crop", "--help"]])
def test_help_and_version_load_no_numerical_module(argv: list[str]) -> None:
    code = f"""
import sys
from patternfind.cli import main
status = main({argv!r})
print("status", status, [name for name in {NUMERICAL!r} if name in sys.modules], file=sys.stderr)
"""
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "status 0 []"
    if argv == ["--version"]:
        assert result.stdout == f"patternfind {patternfind.__version__}\n"
    else:
        assert result.stdout.startswith("usage: patternfind")


def test_max_pixels_help_states_the_real_default():
    """The CLI writes the limit out (to stay import-light); it must be io's."""
    from patternfind import io
    from patternfind.cli._common import Parser, add_max_pixels

    parser = Parser(prog="x")
    add_max_pixels(parser)
    text = " ".join(parser.format_help().split())
    assert f"{io.MAX_IMAGE_PIXELS:,}" in text
    assert io.MAX_PIXELS_VARIABLE in text


def test_make_filter_choices_are_the_filter_banks():
    """make-filter names the kinds itself (to stay import-light); they must be the bank's."""
    from patternfind import filters
    from patternfind.cli import filter_cmd

    assert set(filter_cmd.FILTER_KINDS) == set(filters.KINDS)
    assert filter_cmd.POLARITIES == filters.POLARITIES
