"""Network Structure Code: the layer tuple, the validated block and its text and JSON forms.

Owns: the seven layer types and their kernel and predecessor rules, `Layer`, `Block`, its
channel plan (`plan_block`: widths and 1x1 projections, which the cost model and the builder
read), canonical text and the isomorphism-invariant hash (its graph, as labels and edges, goes
to `blockqnn.space.nsc.graph`; text is read by `blockqnn.space.nsc.text`). Must not import
torch: everything here is pure logic that the agent, the store and the cost model share.

A block is a list of layers `(index, type, kernel, pred1, pred2)`; index 0 is the block's
input, layers are numbered 1, 2, ... and an optional terminal layer (type 7) closes the block.
With a maximum depth D, indices run up to D and index D may only be the terminal, so a block
has at most D - 1 computing layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property
from typing import Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.settings.bounds import DEFAULT_MAX_DEPTH, MAX_DEPTH
from blockqnn.space.nsc.graph import canonical_encoding, canonical_form, canonical_order, hash_form
from blockqnn.space.nsc.text import MAX_DIGITS, json_rows, loads, parse_rows

VALUE_LIMIT = 10**MAX_DIGITS  # layer values are small (`blockqnn.space.nsc.text`)


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


def check_depth(max_depth: int) -> None:
    """`max_depth` must be an integer in [2, MAX_DEPTH]: the agent's actions grow with its
    square, and no layer of a valid block can lie beyond it."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, int):
        raise BlockQNNError(f"max_depth = {clip(max_depth)}: must be an integer")
    if not 2 <= max_depth <= MAX_DEPTH:
        raise BlockQNNError(f"max_depth = {clip(max_depth)}: must be in [2, {MAX_DEPTH}]")


@dataclass(frozen=True)
class BlockPlan:
    """Widths and projections of one block instance with `c_in` input and `c` stage width."""

    c_in: int
    c: int
    widths: tuple[int, ...]  # widths[i]: channels of node i (0 = input)
    # per layer index: the operand positions (0 or 1) of an add that get a 1x1 projection to c
    add_projections: dict[int, tuple[int, ...]] = field(default_factory=dict)
    output_width: int = 0  # channels of the concatenated unconsumed layers
    output_projection: bool = True  # a 1x1 conv back to c after the output concat


def plan_block(block: Block, c_in: int, c: int) -> BlockPlan:
    """Lay out channel widths. Convs produce `c`; pooling and identity keep their input's;
    concat sums; an add of unequal widths projects each operand not already `c` to `c`."""
    widths = [c_in]
    add_proj: dict[int, tuple[int, ...]] = {}
    for layer in block.layers:
        t = layer.type
        if t is LayerType.CONV:
            widths.append(c)
        elif t in (LayerType.MAX_POOL, LayerType.AVG_POOL, LayerType.IDENTITY):
            widths.append(widths[layer.pred1])
        elif t is LayerType.CONCAT:
            widths.append(widths[layer.pred1] + widths[layer.pred2])
        elif t is LayerType.ADD:
            w1, w2 = widths[layer.pred1], widths[layer.pred2]
            if w1 == w2:
                widths.append(w1)
            else:
                add_proj[layer.index] = tuple(i for i, w in enumerate((w1, w2)) if w != c)
                widths.append(c)
    out_width = sum(widths[i] for i in block.outputs)
    # A single unconsumed layer that already has the stage width needs no projection.
    needs_proj = not (len(block.outputs) == 1 and out_width == c)
    return BlockPlan(c_in, c, tuple(widths), add_proj, out_width, needs_proj)


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
        cls, rows: Sequence[Sequence[int]], max_depth: int = DEFAULT_MAX_DEPTH
    ) -> Block:
        """Validate a list of 5-tuples; a trailing terminal is optional."""
        check_depth(max_depth)
        layers: list[Layer] = []
        values = [tuple(r) for r in rows]
        for position, row in enumerate(values, start=1):
            layer = check_layer(row, position, max_depth)
            if layer.type is LayerType.TERMINAL:
                if position != len(values):
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
        return cls.from_tuples(parse_rows(text), max_depth)

    @classmethod
    def from_json(cls, data: str | list[list[int]], max_depth: int = DEFAULT_MAX_DEPTH) -> Block:
        """Read the JSON form: a list of 5-lists, or its text."""
        if isinstance(data, str):
            data = loads(data)
        return cls.from_tuples(json_rows(data), max_depth)

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
    def ordered_concats(self) -> frozenset[int]:
        """The concats whose operand order decides the network: their channels reach, through
        pooling, identity and concat only, an add operand that gets no 1x1 projection (it
        sums channel i with channel i) or the block's output unprojected (the next block's
        input). Anywhere else a convolution or projection absorbs the order. Taken over input
        widths below, equal to and above the stage's, as every block instance has one."""
        types = {layer.type for layer in self.layers}
        if LayerType.CONCAT not in types or LayerType.ADD not in types:
            return frozenset()  # only an add's unprojected sum makes an order matter
        consumers: dict[int, list[tuple[Layer, int]]] = {}
        for layer in self.layers:
            for position, p in enumerate(layer.preds):
                consumers.setdefault(p, []).append((layer, position))
        plans = [plan_block(self, c_in, 4) for c_in in (2, 4, 8)]

        def order_matters(plan: Any, output_counts: bool) -> dict[int, bool]:
            matters: dict[int, bool] = {}
            for v in range(len(self.layers), -1, -1):  # consumers come later: known already
                matters[v] = (
                    output_counts and v in self.outputs and not plan.output_projection
                ) or any(
                    (c.type is LayerType.ADD and pos not in plan.add_projections.get(c.index, ()))
                    or (c.type not in (LayerType.CONV, LayerType.ADD) and matters[c.index])
                    for c, pos in consumers.get(v, ())
                )
            return matters

        # the output's order reaches the next block's input: it counts where that does
        inner = [order_matters(plan, False) for plan in plans]
        if any(matters[0] for matters in inner):
            inner = [order_matters(plan, True) for plan in plans]
        ordered: set[int] = set()
        for matters in inner:
            ordered.update(
                la.index for la in self.layers if la.type is LayerType.CONCAT and matters[la.index]
            )
        return frozenset(ordered)

    def _ordered_graph(self) -> tuple[list[str], list[tuple[int, int]]]:
        """The block graph with each ordered concat's operands through a first and a second
        port node, so that isomorphism keeps their order."""
        labels = list(self.labels)
        edges = [e for e in self.edges if e[1] not in self.ordered_concats]
        for index in sorted(self.ordered_concats):
            for position, p in enumerate(self.layers[index - 1].preds):
                port = len(labels)
                labels.append(f"port{position}")
                edges += [(p, port), (port, index)]
        return labels, edges

    @cached_property
    def _ordered_form(self) -> str:
        return canonical_form(*self._ordered_graph())

    @cached_property
    def _as_representative(self) -> bool:
        """Whether the block reads its ordered concats' operands as its class representative
        does (always, without ordered concats)."""
        if not self.ordered_concats:
            return True
        return self._ordered_form == self._representative()._ordered_form

    @cached_property
    def hash(self) -> str:
        """Isomorphism-invariant identity: equal for the same graph numbered differently.
        Add and concat count as commutative, except an ordered concat (`ordered_concats`):
        a block whose operand order differs from its class representative's (`canonical`)
        hashes its ordered graph instead, so the two networks never share a hash."""
        if self._as_representative:
            return hash_form(canonical_form(self.labels, self.edges))
        return hash_form("ordered " + self._ordered_form)

    def _representative(self) -> Block:
        _, ranks = canonical_encoding(self.labels, self.edges)
        return self._renumbered(ranks, keep=frozenset())

    def canonical(self) -> Block:
        """The representative of this block's class (same `hash`, same text for every
        numbering of the same graph): nodes renumbered in canonical order, add and concat
        reading their predecessors in ascending order; a block whose ordered concats read
        them otherwise keeps that order (its ordered graph's representative)."""
        if self._as_representative:
            return self._representative()
        _, ranks = canonical_encoding(*self._ordered_graph())
        return self._renumbered(ranks, keep=self.ordered_concats)

    def _renumbered(self, ranks: list[int], keep: frozenset[int]) -> Block:
        """Layers placed in canonical order by `ranks`; the predecessors of add and concat
        sorted, except those of the layers in `keep`."""
        by_index = {layer.index: layer for layer in self.layers}
        placed = canonical_order({i: layer.preds for i, layer in by_index.items()}, ranks)
        new_index = {0: 0, **{old: new for new, old in enumerate(placed, start=1)}}
        layers = []
        for old in placed:
            layer = by_index[old]
            ps = [new_index[q] for q in layer.preds]
            if old not in keep:
                ps.sort()
            pred1, pred2 = (ps[0], ps[1]) if len(ps) == 2 else (ps[0], 0)
            layers.append(Layer(new_index[old], layer.type, layer.kernel, pred1, pred2))
        return Block(tuple(layers), self.max_depth)
