"""Repository-wide pytest set-up: doctests in the package run from the repository root."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# Importing `python -m patternfind`'s entry point runs the CLI.
collect_ignore = ["patternfind/__main__.py"]


@pytest.fixture(autouse=True)
def _doctests_run_from_the_repository_root(request: pytest.FixtureRequest) -> None:
    """Docstring examples name sample files relative to the repository root, as the README does."""
    if isinstance(request.node, pytest.DoctestItem):
        request.getfixturevalue("monkeypatch").chdir(ROOT)
