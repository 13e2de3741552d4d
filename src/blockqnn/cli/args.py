"""The argument types every command shares: numbers and paths, each checked once, where the
arguments are read.

Owns: `integer` and `number` (ASCII digits only, finite, in range: `--filters ١٦`, `--top=`
and `inf` are refused like any other bad value), the path type `PATH` (length, component
length, symlink loops; `blockqnn.files.check_path` does the checking, and the code reading an
input says, in its words, when it does not exist), and `StrictParser`, which stops argparse
from dropping a value of `--` (`--top=--` used to reach the code as an empty list). Must not
know what a flag means: its range comes from the command that declares it.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.files import check_path
from blockqnn.settings.bounds import INTEGER_TEXT

_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z", re.ASCII)
MAX_DIGITS = 30  # an integer flag longer than this is refused before it is converted


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number written in ASCII digits, within [low, high]."""

    def parse(text: str) -> int:
        if not INTEGER_TEXT.match(text):
            raise argparse.ArgumentTypeError(f"not a whole number: {clip(text, quote=True)}")
        if len(text.lstrip("+-")) > MAX_DIGITS:
            raise argparse.ArgumentTypeError(f"a number of {len(text)} digits: {clip(text)}")
        value = int(text)
        _in_range(value, low, high, text)
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def number(low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite decimal number in ASCII digits, within [low, high]."""

    def parse(text: str) -> float:
        if not _NUMBER.match(text):
            raise argparse.ArgumentTypeError(f"not a finite number: {clip(text, quote=True)}")
        value = float(text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number: {clip(text)}")
        _in_range(value, low, high, text)
        return value

    parse.__name__ = "number"
    return parse


def _in_range(value: float, low: float | None, high: float | None, text: str) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "" if low is None else f"{low:g}"
        hi = "" if high is None else f"{high:g}"
        raise argparse.ArgumentTypeError(f"{clip(text)} is out of range [{lo}, {hi}]")


def path_arg(must_exist: bool = False) -> Callable[[str], str]:
    """An argparse type: a path checked by `check_path` (returned as the text given)."""

    def parse(text: str) -> str:
        try:
            check_path(text, "path", must_exist=must_exist)
        except BlockQNNError as exc:
            message = str(exc).removeprefix("path").lstrip(": ")
            raise argparse.ArgumentTypeError(message) from None
        return text

    parse.__name__ = "path"
    return parse


# The types the commands use: as short as argparse's `int` and `float`, so that flag lines
# keep their length.
INT = integer()
FLOAT = number()
PATH = path_arg()  # an output, a name or a path (its kind is checked when written)


def checked_path(text: str | Path, what: str, must_exist: bool = False) -> Path:
    """For a path that does not come through argparse (a config's value)."""
    return check_path(text, what, must_exist=must_exist)


class StrictParser(argparse.ArgumentParser):
    """An ArgumentParser that hands an option's value of `--` to the option's type (which
    refuses it) instead of dropping it: argparse removes the first `--` of every option's
    values, so `--top=--` became `top=[]` and crashed the run after the search."""

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        fixed = action.nargs not in (argparse.PARSER, argparse.REMAINDER)
        if action.option_strings and arg_strings == ["--"] and fixed:
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value, not '--'")
        return super()._get_values(action, arg_strings)
