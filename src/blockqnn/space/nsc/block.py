"""Network Structure Code: the layer tuple, the validated block and its text and JSON forms.

Owns: the seven layer types and their kernel and predecessor rules, `Layer`, `Block`, parsing,
canonical text and the isomorphism-invariant hash (its graph, as labels and edges, goes to
`blockqnn.space.nsc.graph`). Must not import torch: everything here is pure logic that the
agent, the store and the cost model share.

A block is a list of layers `(index, type, kernel, pred1, pred2)`; index 0 is the block's
input, layers are numbered 1, 2, ... and an optional terminal layer (type 7) closes the block.
With a maximum depth D, indices run up to D and index D may only be the terminal, so a block
has at most D - 1 computing layers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.settings.bounds import DEFAULT_MAX_DEPTH, MAX_DEPTH
from blockqnn.space.nsc.graph import canonical_encoding, canonical_form, canonical_order, hash_form

# Layer values are small: index and predecessors below MAX_DEPTH, types 1-7, kernels 0-5.
# Anything beyond this many digits is refused before Python converts it (conversion of a
# 4,301-digit number is itself an error, and a slow one below that).
MAX_DIGITS = 9
VALUE_LIMIT = 10**MAX_DIGITS


class LayerType(IntEnum):
    CONV = 1
    MAX_POOL = 2
    AVG_POOL = 3
    IDENTITY = 4
    ADD = 5
    CONCAT = 6
    TERMINAL = 7

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def kernels(self) -> tuple[int, ...]:
        return KERNELS[self]

    @property
    def arity(self) -> int:
        """How many predecessors the layer reads: 0 (terminal), 1 or 2 (add, concat)."""
        if self is LayerType.TERMINAL:
            return 0
        return 2 if self in (LayerType.ADD, LayerType.CONCAT) else 1


_LABELS = {
    LayerType.CONV: "conv",
    LayerType.MAX_POOL: "max_pool",
    LayerType.AVG_POOL: "avg_pool",
    LayerType.IDENTITY: "identity",
    LayerType.ADD: "add",
    LayerType.CONCAT: "concat",
    LayerType.TERMINAL: "terminal",
}

# The paper's allowed kernel sizes per type; 0 means "no kernel".
KERNELS: dict[LayerType, tuple[int, ...]] = {
    LayerType.CONV: (1, 3, 5),
    LayerType.MAX_POOL: (1, 3),
    LayerType.AVG_POOL: (1, 3),
    LayerType.IDENTITY: (0,),
    LayerType.ADD: (0,),
    LayerType.CONCAT: (0,),
    LayerType.TERMINAL: (0,),
}


@dataclass(frozen=True, order=True)
class Layer:
    """One NSC tuple. Construct through `Block`, which validates it in context."""

    index: int
    type: LayerType
    kernel: int
    pred1: int
    pred2: int

    @property
    def preds(self) -> tuple[int, ...]:
        """The layers this one reads, in NSC order (empty for the terminal)."""
        return (self.pred1, self.pred2)[: self.type.arity]

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.index, int(self.type), self.kernel, self.pred1, self.pred2)

    def __str__(self) -> str:
        return ",".join(str(v) for v in self.as_tuple())

    def describe(self) -> str:
        """Human-readable form, e.g. `conv 3x3 <- 0` or `add <- 1, 2`."""
        name = self.type.label
        if self.kernel:
            name += f" {self.kernel}x{self.kernel}"
        if not self.preds:
            return name
        return f"{name} <- {', '.join(str(p) for p in self.preds)}"


def check_layer(values: tuple[int, ...], position: int, max_depth: int) -> Layer:
    """Validate one tuple as layer number `position` of a block; return the `Layer`.

    Raises `BlockQNNError` naming the layer and the rule it breaks.
    """
    if len(values) != 5:
        raise BlockQNNError(
            f"layer {position}: expected 5 integers (index,type,kernel,pred1,pred2), "
            f"got {len(values)}"
        )
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise BlockQNNError(f"layer {position}: {clip(values)} is not a list of integers")
    if not all(-VALUE_LIMIT < v < VALUE_LIMIT for v in values):
        raise BlockQNNError(f"layer {position}: values out of range (layers are small integers)")
    index, type_code, kernel, pred1, pred2 = values
    where = f"layer {index}"
    if index != position:
        raise BlockQNNError(f"{where}: index should be {position} (layers are numbered 1, 2, ...)")
    if index > max_depth:
        raise BlockQNNError(f"{where}: index exceeds the maximum depth {max_depth}")
    try:
        ltype = LayerType(type_code)
    except ValueError:
        raise BlockQNNError(f"{where}: unknown type {type_code} (valid types are 1-7)") from None
    if kernel not in ltype.kernels:
        allowed = ", ".join(str(k) for k in ltype.kernels)
        raise BlockQNNError(
            f"{where}: kernel {kernel} is not allowed for {ltype.label} (allowed: {allowed})"
        )
    if ltype is LayerType.TERMINAL:
        if pred1 or pred2:
            raise BlockQNNError(f"{where}: terminal takes no predecessors (pred1 = pred2 = 0)")
        return Layer(index, ltype, kernel, pred1, pred2)
    if index == max_depth:
        raise BlockQNNError(f"{where}: only terminal is allowed at the maximum depth {max_depth}")
    if not 0 <= pred1 < index:
        raise BlockQNNError(f"{where}: pred1 = {pred1} is not an earlier layer")
    if ltype.arity == 1:
        if pred2 != 0:
            raise BlockQNNError(f"{where}: {ltype.label} takes one predecessor (pred2 must be 0)")
    else:
        if not 0 <= pred2 < index:
            raise BlockQNNError(f"{where}: pred2 = {pred2} is not an earlier layer")
        if pred1 == pred2:
            raise BlockQNNError(f"{where}: {ltype.label} of a layer with itself (pred1 = pred2)")
    return Layer(index, ltype, kernel, pred1, pred2)


# ASCII digits only: `\d` would also take full-width and other scripts' digits ("１").
_INTEGER = re.compile(r"^-?[0-9]+$")


def check_depth(max_depth: int) -> None:
    """`max_depth` must be an integer in [2, MAX_DEPTH]: the agent's actions grow with its
    square, and no layer of a valid block can lie beyond it."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, int):
        raise BlockQNNError(f"max_depth = {clip(max_depth)}: must be an integer")
    if not 2 <= max_depth <= MAX_DEPTH:
        raise BlockQNNError(f"max_depth = {clip(max_depth)}: must be in [2, {MAX_DEPTH}]")


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


def _loads(text: str) -> Any:
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


def _parse_text(text: str) -> list[tuple[int, ...]]:
    if len(text) > MAX_TEXT:
        raise BlockQNNError(f"block text of {len(text):,} characters: a block needs far fewer")
    stripped = text.strip()
    if not stripped:
        raise BlockQNNError("empty block: no layers given")
    if re.match(r"\[\s*\[", stripped):  # JSON, pretty-printed or not
        return _from_json_list(_loads(stripped))
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


def _from_json_list(data: Any) -> list[tuple[int, ...]]:
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


@dataclass(frozen=True)
class Block:
    """An immutable, validated block of NSC layers.

    `layers` are the computing layers (no terminal); `str(block)` is the canonical text,
    which always closes with the terminal layer and parses back to an equal block.

    >>> b = Block.parse("(1,1,3,0,0); (2,1,5,0,0); (3,5,0,1,2); (4,7,0,0,0)")
    >>> str(b)
    '1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,7,0,0,0'
    >>> b.hash == Block.parse("1,1,5,0,0; 2,1,3,0,0; 3,5,0,2,1").hash
    True
    """

    layers: tuple[Layer, ...]
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        check_depth(self.max_depth)
        if not self.layers:
            raise BlockQNNError("empty block: it needs at least one layer before the terminal")
        for position, layer in enumerate(self.layers, start=1):
            checked = check_layer(layer.as_tuple(), position, self.max_depth)
            if checked.type is LayerType.TERMINAL:
                raise BlockQNNError(f"layer {position}: terminal must be the last layer")

    # ----- construction -------------------------------------------------------------------

    @classmethod
    def from_tuples(
        cls, rows: list[tuple[int, ...]] | list[list[int]], max_depth: int = DEFAULT_MAX_DEPTH
    ) -> Block:
        """Validate a list of 5-tuples; a trailing terminal is optional."""
        check_depth(max_depth)
        layers: list[Layer] = []
        rows = [tuple(r) for r in rows]
        for position, row in enumerate(rows, start=1):
            layer = check_layer(row, position, max_depth)
            if layer.type is LayerType.TERMINAL:
                if position != len(rows):
                    raise BlockQNNError(f"layer {position}: terminal must be the last layer")
                break
            layers.append(layer)
        if not layers:
            raise BlockQNNError("empty block: it needs at least one layer before the terminal")
        return cls(tuple(layers), max_depth)

    @classmethod
    def parse(cls, text: str, max_depth: int = DEFAULT_MAX_DEPTH) -> Block:
        """Parse NSC text (`1,1,3,0,0; 2,7,0,0,0`) or a JSON list of 5-lists."""
        if not isinstance(text, str):
            raise BlockQNNError(f"a block must be given as text, not {type(text).__name__}")
        return cls.from_tuples(_parse_text(text), max_depth)

    @classmethod
    def from_json(cls, data: str | list[list[int]], max_depth: int = DEFAULT_MAX_DEPTH) -> Block:
        """Read the JSON form: a list of 5-lists, or its text."""
        if isinstance(data, str):
            data = _loads(data)
        return cls.from_tuples(_from_json_list(data), max_depth)

    # ----- forms --------------------------------------------------------------------------

    def to_json(self) -> list[list[int]]:
        """The JSON form: a list of 5-lists, terminal included."""
        return [list(row) for row in self.tuples()]

    def tuples(self) -> list[tuple[int, int, int, int, int]]:
        """All layers as plain tuples, closed by the terminal."""
        rows = [layer.as_tuple() for layer in self.layers]
        rows.append((len(self.layers) + 1, int(LayerType.TERMINAL), 0, 0, 0))
        return rows

    def __str__(self) -> str:
        return "; ".join(",".join(str(v) for v in row) for row in self.tuples())

    def __len__(self) -> int:
        return len(self.layers)

    # ----- graph --------------------------------------------------------------------------

    @cached_property
    def outputs(self) -> tuple[int, ...]:
        """Indices of the layers no other layer consumes: concatenated into the block output."""
        consumed = {p for layer in self.layers for p in layer.preds}
        return tuple(layer.index for layer in self.layers if layer.index not in consumed)

    @cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """Directed edges of the block graph; the output node is numbered len(self) + 1."""
        out = len(self.layers) + 1
        inner = [(p, layer.index) for layer in self.layers for p in layer.preds]
        return tuple(inner + [(i, out) for i in self.outputs])

    @property
    def num_nodes(self) -> int:
        """Input + computing layers + output node."""
        return len(self.layers) + 2

    @property
    def density(self) -> float:
        """Edges / nodes of the block graph (input and output nodes included)."""
        return len(self.edges) / self.num_nodes

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """The graph's node labels: "in", "type:kernel" of each layer, "out" (the hash's
        input: changing them changes every stored hash)."""
        return ("in", *(f"{int(la.type)}:{la.kernel}" for la in self.layers), "out")

    @cached_property
    def hash(self) -> str:
        """Isomorphism-invariant identity: equal for the same graph numbered differently."""
        return hash_form(canonical_form(self.labels, self.edges))

    def canonical(self) -> Block:
        """The representative of this block's isomorphism class (same `hash`, same text
        for every numbering of the same graph): nodes renumbered in canonical order, add and
        concat reading their predecessors in ascending order."""
        _, ranks = canonical_encoding(self.labels, self.edges)
        by_index = {layer.index: layer for layer in self.layers}
        placed = canonical_order({i: layer.preds for i, layer in by_index.items()}, ranks)
        new_index = {0: 0, **{old: new for new, old in enumerate(placed, start=1)}}
        layers = []
        for old in placed:
            layer = by_index[old]
            ps = sorted(new_index[q] for q in layer.preds)
            pred1, pred2 = (ps[0], ps[1]) if len(ps) == 2 else (ps[0], 0)
            layers.append(Layer(new_index[old], layer.type, layer.kernel, pred1, pred2))
        return Block(tuple(layers), self.max_depth)
