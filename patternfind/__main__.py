"""``python -m patternfind``: the same as the ``patternfind`` command."""

import sys

from patternfind.cli import main

__all__: list[str] = []

sys.exit(main())
