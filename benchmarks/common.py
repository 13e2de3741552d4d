"""What the benchmark scripts share on their command lines beyond `blockqnn.cli.args`: lists of
counts checked by argparse (a bad one is a usage error with exit 2, not a traceback later) and
strict JSON (NaN, which the mean's interval of a single seed is, printed as null: Python's
`json` would write `NaN`, which other JSON readers reject)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

from blockqnn.cli.args import integer


def int_list(minimum: int) -> Callable[[str], list[int]]:
    """An argparse `type`: comma-separated integers, each no smaller than `minimum`."""
    one = integer(minimum)

    def parse(text: str) -> list[int]:
        values = [one(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("expected comma-separated integers")
        return values

    parse.__name__ = "list of integers"
    return parse


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(report: Any, indent: int | None = 2) -> str:
    """`report` as strict JSON: a NaN or infinite figure becomes null."""
    return json.dumps(_finite(report), indent=indent, allow_nan=False, default=str)
