"""Command-line interface: ``patternfind IMAGE --filter F`` and its sub-commands.

May import: core, layers, detection, evaluation, learn, show, batch.

Each sub-command lives in its own module, which exposes ``COMMANDS``: a dict
mapping the command name to ``(build_parser, run)``, where ``build_parser()``
returns a `Parser` and ``run(args) -> int`` does the work. This module only
dispatches and turns user errors into one line on stderr with exit status 2,
and any other exception into one line with exit status 1 (``--debug`` shows
the traceback).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from patternfind.cli._common import UsageError, pixel_limit

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
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    0 on success, 2 for a user error (one line on stderr), 1 for an
    unexpected error (one line naming the exception; ``--debug`` prints the
    traceback), 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
    prog = "patternfind"
    try:
        if argv and argv[0] in _SUBCOMMAND_MODULES:
            module = importlib.import_module(_SUBCOMMAND_MODULES[argv[0]])
            build_parser, run = module.COMMANDS[argv[0]]
            argv = argv[1:]
        else:
            from patternfind.cli.detect_cmd import build_parser, run
        parser = build_parser()
        prog = parser.prog
        args = parser.parse_args(argv)
        with pixel_limit(args):
            status = int(run(args))
        sys.stdout.flush()  # a closed pipe shows up here, inside the handlers below
        return status
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int) else 2
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (UsageError, ValueError, TypeError, OSError) as error:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 (the last resort: one line, no traceback unasked)
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (rerun with --debug for the traceback)"
        print(f"{prog}: unexpected error: {type(error).__name__}: {_one_line(error)}{hint}",
              file=sys.stderr)
        return 1


def _quiet_broken_pipe() -> int:
    """End quietly when stdout's reader went away (``patternfind ... | head``).

    As the Python documentation advises (the note on SIGPIPE in the `signal`
    module): point stdout at devnull so that the interpreter's final flush
    does not fail again, and exit with status 1.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced, e.g. under pytest
        pass
    return 1


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return " ".join(text.split())
