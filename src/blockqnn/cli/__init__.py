"""The `blockqnn` command line.

Owns: argument parsing, exit codes and printing. Must not hold logic: each subcommand module
parses its arguments and calls the library. Subcommand modules import heavy libraries (torch,
ray) inside `run` so that `blockqnn --help` stays fast.

Exit codes: 0 ok, 1 a failed evaluation or run, 2 bad input (one line on stderr, no traceback,
echoed input cut), 130 / 143 a search stopped by Ctrl-C / SIGTERM (resumable).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sqlite3
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn, TextIO

from blockqnn.cli.args import StrictParser
from blockqnn.errors import ECHO_LIMIT, BlockQNNError, clip, one_line

# name -> module under blockqnn.cli; each module defines `add_arguments(parser)` and
# `run(args) -> int`, and a module docstring whose first line is the command's help.
COMMANDS = (
    "show",
    "evaluate",
    "search",
    "status",
    "trials",
    "train",
    "export",
    "report",
    "dashboard",
)


class _Parser(StrictParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        # argparse quotes the offending value whole ("invalid int value: '999...'"): cut it
        message = re.sub(rf"'[^']{{{ECHO_LIMIT},}}'", lambda m: clip(m.group(0)), message)
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def _available_commands() -> list[tuple[str, ModuleType]]:
    found: list[tuple[str, ModuleType]] = []
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"blockqnn.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"blockqnn.cli.{name}":
                continue  # a command not built into this version
            raise
        found.append((name, module))
    return found


def build_parser() -> argparse.ArgumentParser:
    from blockqnn import __version__

    parser = _Parser(
        prog="blockqnn",
        description="Block-wise neural architecture search with Q-learning (BlockQNN).",
    )
    parser.add_argument("--version", action="version", version=f"blockqnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in _available_commands():
        doc = (module.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else name
        cmd = sub.add_parser(
            name,
            help=summary,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Our own warnings (text starting "blockqnn: ") as one plain line, not Python's
    file:line form with a source line; other libraries' as Python prints them."""
    text = str(message)
    if text.startswith("blockqnn: "):
        print(f"blockqnn: warning: {one_line(text[10:])}", file=file or sys.stderr)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a usage error: the help goes where errors go
        parser.print_help(sys.stderr)
        return 2
    warnings.showwarning = _show_warning
    try:
        code: int = args._run(args)
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at exit
    except BlockQNNError as exc:
        print(f"blockqnn {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:  # a run store that failed after it was opened
        print(f"blockqnn {args.command}: error: {_store_failure(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # search and train say how to resume themselves
        print(
            f"blockqnn {args.command}: interrupted (nothing was written); run the same "
            "command again to start it over",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:
        # The reader stopped reading (`blockqnn status R --json | head`): not an error. Point
        # stdout at /dev/null so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # what no command turned into its own message: stdout on a full disk
        from blockqnn.files import os_reason

        where = clip(str(exc.filename)) if exc.filename else "cannot write the output"
        print(f"blockqnn {args.command}: error: {where}: {os_reason(exc)}", file=sys.stderr)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush too
        return 2
    return code


def _store_failure(exc: sqlite3.DatabaseError) -> str:
    """What a SQLite error while using a run means, in one line: a full disk or a store that
    cannot be written is not a damaged one."""
    text = str(exc)
    if "disk is full" in text:
        return f"the disk holding the run is full ({text})"
    if "readonly" in text or "read-only" in text:
        return f"the run's store is not writable ({text})"
    return one_line(f"the run's store is damaged ({text})")


def entry() -> NoReturn:
    sys.exit(main())
