"""Test-wide settings."""

import os

from hypothesis import settings

# The machine is shared and has 2 cores: a per-example deadline would fail
# correct code under load. CI runs the same examples every time.
settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
