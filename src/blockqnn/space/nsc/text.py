"""NSC text and JSON read into rows of integers, refusing malformed text in one line.

Owns: what `Block.parse` and `Block.from_json` accept before the rows are validated as layers
(`blockqnn.space.nsc.block.check_layer`): `;`-separated layers of five integers, with
whitespace, parentheses and brackets ignored, or a JSON list of 5-lists. Bounded first: text
length, JSON nesting and the digits of a number, so hostile input costs no time.
"""

from __future__ import annotations

import json
import re
from typing import Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.settings.bounds import MAX_DEPTH

# Layer values are small: index and predecessors below MAX_DEPTH, types 1-7, kernels 0-5.
# Anything beyond this many digits is refused before Python converts it (conversion of a
# 4,301-digit number is itself an error, and a slow one below that).
MAX_DIGITS = 9

# ASCII digits only: `\d` would also take full-width and other scripts' digits ("１").
_INTEGER = re.compile(r"^-?[0-9]+$")


def _json_depth(text: str) -> int:
    """How deeply `[` and `{` nest in `text` (strings cannot occur in a block: not tracked)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads(text: str) -> Any:
    """`json.loads` of a block's JSON form, refusing what cannot be one before decoding it:
    nesting deeper than a list of lists (json would recurse into a RecursionError) and
    integers too long to be layer values (Python refuses to convert over 4,300 digits)."""
    if _json_depth(text) > 2:
        raise BlockQNNError(
            "malformed JSON block: nested more deeply than a list of 5-integer lists"
        )
    if re.search(rf"[0-9]{{{MAX_DIGITS + 1}}}", text):
        raise BlockQNNError("malformed JSON block: a number too large for a layer value")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BlockQNNError(f"malformed JSON block: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise BlockQNNError(f"malformed JSON block: {clip(str(exc))}") from None


MAX_TEXT = 100_000  # characters of a block's text: a 64-layer block in any form needs ~3,000


def parse_rows(text: str) -> list[tuple[int, ...]]:
    if len(text) > MAX_TEXT:
        raise BlockQNNError(f"block text of {len(text):,} characters: a block needs far fewer")
    stripped = text.strip()
    if not stripped:
        raise BlockQNNError("empty block: no layers given")
    if re.match(r"\[\s*\[", stripped):  # JSON, pretty-printed or not
        return json_rows(loads(stripped))
    if stripped[0] == "(" and stripped[-1] == ")" and "(" not in stripped[1:-1]:
        stripped = stripped[1:-1]  # "(1,1,3,0,0; 2,7,0,0,0)": surrounding parentheses
    groups = re.findall(r"\(([^()]*)\)", stripped)
    if groups:  # "(1,1,3,0,0), (2,...)" or "[(...); (...)]": one layer per parenthesis
        chunks = [re.sub(r"\s", "", g) for g in groups]
        rest = re.sub(r"\(([^()]*)\)", "", stripped)
        if re.sub(r"[\s;,\[\]]", "", rest) not in ("", "()"):  # "((...), (...))": a tuple
            raise BlockQNNError(
                f"malformed block text outside parentheses: {clip(rest.strip(), quote=True)}"
            )
    else:
        chunks = re.sub(r"[\[\]\s]", "", stripped).split(";")
        if len(chunks) > 1 and chunks[-1] == "":
            chunks.pop()  # a trailing separator is harmless
    if len(chunks) > MAX_DEPTH:  # the terminal is at index MAX_DEPTH at the latest
        raise BlockQNNError(f"{len(chunks)} layers: a block has at most {MAX_DEPTH}")
    rows: list[tuple[int, ...]] = []
    for position, chunk in enumerate(chunks, start=1):
        if not chunk:
            raise BlockQNNError(f"layer {position}: empty (two ';' in a row?)")
        parts = chunk.split(",")
        if not all(_INTEGER.match(p) for p in parts):
            raise BlockQNNError(
                f"layer {position}: {clip(chunk, quote=True)} is not a list of integers"
            )
        if any(len(p.lstrip("-")) > MAX_DIGITS for p in parts):
            raise BlockQNNError(
                f"layer {position}: {clip(chunk, quote=True)} holds a number too large for a "
                "layer value"
            )
        rows.append(tuple(int(p) for p in parts))
    return rows


def json_rows(data: Any) -> list[tuple[int, ...]]:
    if not isinstance(data, list) or not data:
        raise BlockQNNError("a JSON block must be a non-empty list of 5-integer lists")
    if len(data) > MAX_DEPTH:
        raise BlockQNNError(f"{len(data)} layers: a block has at most {MAX_DEPTH}")
    rows = []
    for position, row in enumerate(data, start=1):
        if not isinstance(row, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in row
        ):
            raise BlockQNNError(f"layer {position}: {clip(row)} is not a list of integers")
        rows.append(tuple(row))
    return rows
