"""Command-line interface: ``patternfind IMAGE --filter F`` and its sub-commands.

May import: core, layers, detection, evaluation, learn, show, batch.

Each sub-command lives in its own module, which exposes ``COMMANDS``: a dict
mapping the command name to ``(build_parser, run)``, where ``build_parser()``
returns a `Parser` and ``run(args) -> int`` does the work. This module only
dispatches and turns user errors into one line on stderr with exit status 2.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from patternfind.cli._common import UsageError

__all__ = ["main"]

# Sub-command name -> module defining it (imported only when used, so that
# `patternfind --help` stays fast and matplotlib is never imported needlessly).
_SUBCOMMAND_MODULES = {
    "make-filter": "patternfind.cli.filter_cmd",
    "crop": "patternfind.cli.filter_cmd",
    "evaluate": "patternfind.cli.evaluate_cmd",
    "compare": "patternfind.cli.evaluate_cmd",
    "train": "patternfind.cli.train_cmd",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _SUBCOMMAND_MODULES:
        module = importlib.import_module(_SUBCOMMAND_MODULES[argv[0]])
        build_parser, run = module.COMMANDS[argv[0]]
        argv = argv[1:]
    else:
        from patternfind.cli.detect_cmd import build_parser, run
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(run(args))
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int) else 2
    except (UsageError, ValueError, TypeError, OSError) as error:
        print(f"{parser.prog}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return " ".join(text.split())
