"""The package's folders are the pipeline's stages, and a lower stage never imports a higher one.

Order (lowest first): the core (`_validation` < `pixels` < `structures` < `io` <
`filters`) < `layers` < `detection` < `evaluation` < `learn` < `show` < `batch`
< `cli`. Every import counts, at module level or inside a function; the few
upward imports inside functions that are deliberate are listed, with the reason,
in `ALLOWED_UPWARD`. Outside the CLI (which defers the library so that
``--help`` is instant) an import of patternfind inside a function must break a
real cycle, so it must be listed too.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import patternfind

PACKAGE = Path(patternfind.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))

#: Stages from lowest to highest. Inside the core, each module is its own stage.
STAGES = ("_validation", "pixels", "structures", "io", "filters",
          "layers", "detection", "evaluation", "learn", "show", "batch", "cli")
CORE = ("_validation", "pixels", "structures", "io", "filters")

#: (importing module, function, imported module) -> why this upward import is fine.
ALLOWED_UPWARD = {
    ("patternfind.structures", "Filter.load", "patternfind.io"):
        "a convenience on the record: the file layer builds Filters, so it is imported on call",
    ("patternfind.structures", "Filter.save", "patternfind.io"):
        "a convenience on the record: the file layer builds Filters, so it is imported on call",
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    function: str | None  # enclosing function's qualified name; None at module level
    target: str  # the patternfind module imported
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").exists() or (
        PACKAGE.parent / relative / "__init__.py").exists()


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "patternfind"]
    base = node.module or ""
    if node.level:  # relative import: resolve against the importing package
        anchor = module.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, *([base] if base else [])])
    if base.split(".")[0] != "patternfind":
        return []
    # `from patternfind import io` imports the submodule; `from patternfind import detect` the package
    return [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
            for alias in node.names]


def _imports(path: Path) -> list[Import]:
    module = _module_name(path)
    found: list[Import] = []

    def visit(node: ast.AST, function: str | None, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{scope}.{child.name}" if scope else child.name
                is_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                visit(child, name if is_function else function, name)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend(Import(module, function, target, child.lineno)
                             for target in _targets(child, module, path.name == "__init__.py"))
            else:
                visit(child, function, scope)

    visit(ast.parse(path.read_text(encoding="utf-8")), None, "")
    return found


def _stage(module: str) -> int:
    """Rank of a module's stage; the top-level namespace re-exports every stage, so it ranks as the CLI."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return STAGES.index("cli")
    if parts[1] not in STAGES:
        msg = f"{module} belongs to no stage: add it to STAGES in {Path(__file__).name}"
        raise AssertionError(msg)
    return STAGES.index(parts[1])


ALL_IMPORTS = [found for path in MODULES for found in _imports(path)]


def test_the_scanner_sees_the_imports_it_must_judge() -> None:
    """The checks below are only as good as this parser: it must see in-function imports."""
    seen = {(i.module, i.function, i.target) for i in ALL_IMPORTS}
    assert ("patternfind.structures", "Filter.load", "patternfind.io") in seen
    assert ("patternfind.detection.detector", None, "patternfind.io") in seen
    assert ("patternfind.cli.detect_cmd", "run", "patternfind.batch") in seen


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_stage_imports_a_higher_one(path: Path) -> None:
    module = _module_name(path)
    if module == "patternfind":
        return  # the top-level namespace re-exports every stage (lazily)
    wrong = []
    for found in _imports(path):
        target_stage = _stage(found.target)
        if target_stage > _stage(module) and (found.module, found.function, found.target) not in ALLOWED_UPWARD:
            where = found.function or "module level"
            wrong.append(f"{path.name}:{found.line} ({where}) imports {found.target}")
    assert not wrong, "lower stage imports a higher one:\n" + "\n".join(wrong)


def test_structures_does_not_import_io_at_module_level() -> None:
    top_level = {i.target for i in ALL_IMPORTS
                 if i.module == "patternfind.structures" and i.function is None}
    assert "patternfind.io" not in top_level


def test_in_function_imports_of_the_library_are_listed() -> None:
    """Outside the CLI an in-function import must break a cycle; otherwise it belongs at the top."""
    unexplained = [
        f"{i.module}:{i.line} ({i.function}) imports {i.target}"
        for i in ALL_IMPORTS
        if i.function is not None
        and not i.module.startswith("patternfind.cli")
        and (i.module, i.function, i.target) not in ALLOWED_UPWARD
    ]
    assert not unexplained, "\n".join(unexplained)


def test_every_allowance_is_still_used() -> None:
    seen = {(i.module, i.function, i.target) for i in ALL_IMPORTS}
    assert set(ALLOWED_UPWARD) <= seen, set(ALLOWED_UPWARD) - seen


SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


def test_every_subpackage_is_a_stage() -> None:
    assert set(SUBPACKAGES) <= set(STAGES)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_docstring_says_what_the_stage_does_and_may_import(name: str) -> None:
    """First line: what the stage does. Then ``May import: ...``, which must match STAGES."""
    docstring = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text("utf-8")))
    assert docstring, f"patternfind.{name} has no docstring"
    lines = docstring.splitlines()
    assert lines[0].strip(), "the first line says what the stage does"
    assert lines[1] == ""
    match = re.search(r"^May import: (.+)\.$", docstring, flags=re.MULTILINE)
    assert match, f"patternfind.{name}'s docstring has no 'May import: ...' line"
    listed = [item.strip().strip("`") for item in match.group(1).split(",")]
    present = {path.stem for path in PACKAGE.iterdir()}
    below = [stage for stage in STAGES[: STAGES.index(name)]
             if stage not in CORE and stage in present]
    assert listed == ["core", *below]
