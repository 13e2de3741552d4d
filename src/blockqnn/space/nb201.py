"""The NAS-Bench-201 cell space as a decision process.

Owns: `Cell` (the benchmark's 6-edge cell, its notation and its canonical identity) and
`NB201Space` (the `Space` protocol: one action per edge); `blockqnn.space.nb201_table` reads
the accuracy table and `blockqnn.evaluate.table` scores a cell by looking it up. Must not
import torch, build or train networks, or know the strategies: a search on this space costs
a dictionary lookup per candidate.

The cell (Dong and Yang, ICLR 2020): node 0 is the cell input, nodes 1..3 each sum one edge
from every earlier node, node 3 is the output. The 6 edges, in the benchmark's order, are
1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2, each carrying one of the 5 `OPS`; 5^6 = 15,625 cells.

Identity. `Cell.canonical` is the benchmark's own unique string (NATS-Bench
`to_unique_str(consider_zero=True)`), recomputed here from the ops, and `Cell.hash` is 32 hex
digits of its SHA-256. It equals the table's `UniqueString` for all 15,625 cells, so the hash
has the benchmark's 6,466 classes. Its rules: the input is `0`; a `none` edge, or an edge
reading a node written `#`, is the zero term `#`; `skip_connect` copies its source's text; any
other op is `(source)@op`; a node is its terms sorted and joined by `+`. Cells in one class
compute the same function, but the converse does not always hold, because the benchmark
keeps three conventions that we follow rather than second-guess:

- zero terms count: `#+#+0` (two none edges into the output) differs from `#+0`;
- only a single-term node can be zero: a node fed by two none edges is `#+#`, and an op on it
  stays a term, `(#+#)@nor_conv_3x3` (defensible: a conv on a zero tensor still adds its
  batch norm's learnable bias, while the benchmark's `#`-propagation from node 1 ignores it);
- a skip copies a sum as one unit before sorting, so `skip(a+c) + b` gives `a+c+b`, not
  `a+b+c`.

Merging further, to "same function up to sums" (4,930 classes), would mix cells the
benchmark trained and reports as distinct architectures.

"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.space.base import Action, Path, State

if TYPE_CHECKING:
    from blockqnn.settings.config import Config

__all__ = [
    "DATASETS",
    "EDGES",
    "NUM_CELLS",
    "OPS",
    "START",
    "Cell",
    "NB201Space",
    "make_space",
]

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (src, dst)
NUM_EDGES = len(EDGES)
NUM_CELLS: int = len(OPS) ** NUM_EDGES  # 15,625
START: State = (0, 0)

_OP_INDEX = {op: k for k, op in enumerate(OPS)}

# Dataset name -> the table's column of test accuracies (percent) after 200 epochs
# (`blockqnn.space.nb201_table` reads the table, other training lengths too).
DATASETS: dict[str, str] = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16-120": "ImageNetTestAccuracy200Epochs",
}


# ----- the cell ---------------------------------------------------------------------------


def _clip(text: str, limit: int = 60) -> str:
    """`text` quoted for an error message, cut to `limit` characters (`errors.clip`)."""
    return clip(text, limit, quote=True)


@dataclass(frozen=True)
class Cell:
    """One NAS-Bench-201 cell: the op of each edge, in the benchmark's edge order (`EDGES`).

    >>> c = Cell.parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|none~2|")
    >>> c.ops[:3], c.canonical
    (('nor_conv_3x3', 'none', 'skip_connect'), '#+#+0')
    """

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        ops = self.ops
        if not isinstance(ops, tuple) or len(ops) != NUM_EDGES:
            raise BlockQNNError(f"a cell has {NUM_EDGES} edge ops, got {ops!r:.60}")
        for op in ops:
            if not isinstance(op, str) or op not in _OP_INDEX:
                raise BlockQNNError(f"unknown op {op!r:.40}; ops: {', '.join(OPS)}")

    @classmethod
    def from_indices(cls, indices: Sequence[int]) -> Cell:
        """The cell whose edge e carries `OPS[indices[e]]`."""
        if len(indices) != NUM_EDGES or not all(
            isinstance(k, int) and 0 <= k < len(OPS) for k in indices
        ):
            raise BlockQNNError(f"{tuple(indices)!r:.60}: need {NUM_EDGES} op indices in 0..4")
        return cls(tuple(OPS[k] for k in indices))

    @classmethod
    def parse(cls, text: str) -> Cell:
        """Read the benchmark's notation `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`."""
        if not isinstance(text, str):
            raise BlockQNNError(f"a cell's text must be a string, got {type(text).__name__}")
        text = text.strip()
        nodes = text.split("+")
        if len(nodes) != 3:
            raise BlockQNNError(
                f"{_clip(text)}: a cell has 3 nodes separated by '+', got {len(nodes)}"
            )
        ops: list[str] = []
        for dst, node in enumerate(nodes, start=1):
            if len(node) < 2 or node[0] != "|" or node[-1] != "|":
                raise BlockQNNError(
                    f"{_clip(text)}: node {dst} {_clip(node, 30)} must be written |op~i|...|"
                )
            edges = node[1:-1].split("|")
            if len(edges) != dst:
                raise BlockQNNError(
                    f"{_clip(text)}: node {dst} has {len(edges)} edges, must have {dst} "
                    f"(one from each earlier node)"
                )
            for src, edge in enumerate(edges):
                op, tilde, index = edge.partition("~")
                if not tilde:
                    raise BlockQNNError(
                        f"{_clip(text)}: node {dst} edge {_clip(edge, 30)} is not op~input"
                    )
                if op not in _OP_INDEX:
                    raise BlockQNNError(
                        f"{_clip(text)}: node {dst} has unknown op {_clip(op, 30)}; "
                        f"ops: {', '.join(OPS)}"
                    )
                if index != str(src):
                    raise BlockQNNError(
                        f"{_clip(text)}: node {dst} edge {src + 1} reads {_clip(index, 10)}, "
                        f"must read node {src} (inputs listed in order 0..{dst - 1})"
                    )
                ops.append(op)
        return cls(tuple(ops))

    def __str__(self) -> str:
        o = self.ops
        return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"

    @property
    def indices(self) -> tuple[int, ...]:
        """The op index (into `OPS`) of every edge."""
        return tuple(_OP_INDEX[op] for op in self.ops)

    def edges(self) -> list[tuple[int, int, str]]:
        """(source node, destination node, op) of every edge, in the benchmark's order."""
        return [(src, dst, op) for (src, dst), op in zip(EDGES, self.ops, strict=True)]

    @cached_property
    def canonical(self) -> str:
        """The benchmark's unique string of this cell (see the module docstring)."""
        nodes = ["0"]
        for dst in (1, 2, 3):
            terms = []
            for (src, d), op in zip(EDGES, self.ops, strict=True):
                if d != dst:
                    continue
                source = nodes[src]
                if op == "none" or source == "#":
                    terms.append("#")
                elif op == "skip_connect":
                    terms.append(source)
                else:
                    terms.append(f"({source})@{op}")
            nodes.append("+".join(sorted(terms)))
        return nodes[3]

    @cached_property
    def hash(self) -> str:
        """32 hex digits (128 bits) of SHA-256 over `canonical`, as for NSC blocks."""
        return hashlib.sha256(self.canonical.encode()).hexdigest()[:32]


# ----- the space --------------------------------------------------------------------------


class NB201Space:
    """The 15,625 cells as 6 decisions, one per edge (a `Space`).

    The action at step i (1..6) is `(i, k)`: edge i carries `OPS[k]`. Every op is allowed on
    every edge, so all paths are valid and uniform sampling per step is uniform over cells.

    >>> space = NB201Space()
    >>> space.actions(space.start)[:2], space.is_terminal((6, 0))
    (((1, 0), (1, 1)), True)
    """

    name = "nb201"
    evaluator = "blockqnn.evaluate.table:make_evaluator"  # the search's default evaluator
    needs_data = False  # the evaluator reads a table, not a dataset

    def __init__(self) -> None:
        # _by_step[i]: the actions after a state of step i (i = 0 is START).
        self._by_step: tuple[tuple[Action, ...], ...] = tuple(
            tuple((i + 1, k) for k in range(len(OPS))) for i in range(NUM_EDGES)
        )
        # One shared object per tuple: Q-table keys and replay paths then cost a pointer.
        self._intern: dict[Action, Action] = {START: START}
        for actions in self._by_step:
            self._intern.update((a, a) for a in actions)

    def __repr__(self) -> str:
        return "NB201Space()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NB201Space)

    def __hash__(self) -> int:
        return hash("NB201Space")

    @property
    def start(self) -> State:
        return START

    def settings(self) -> dict[str, Any]:
        return {"ops": list(OPS)}

    # ----- states and actions -------------------------------------------------------------

    def actions(self, state: State) -> tuple[Action, ...]:
        return self._by_step[state[0]]

    @staticmethod
    def is_terminal(action: Action) -> bool:
        return action[0] == NUM_EDGES

    def intern(self, values: Sequence[int]) -> Action | None:
        try:
            return self._intern.get(tuple(values))
        except TypeError:  # unhashable or not iterable: not ours
            return None

    def is_action(self, state: State, action: Sequence[int]) -> bool:
        found_state = self.intern(state)
        if found_state is None or found_state[0] == NUM_EDGES:
            return False
        found = self.intern(action)
        return found is not None and found[0] == found_state[0] + 1

    def count(self) -> int:
        return NUM_CELLS

    def distinct_count(self) -> int:
        """The benchmark's 6,466 classes: the most a search trains (`NUM_CELLS` paths)."""
        return _distinct_cells()

    # ----- paths --------------------------------------------------------------------------

    def check_path(self, rows: Iterable[Sequence[int]]) -> Path:
        """Validate rows `(i, k)` as the 6 steps of a path; raises naming the first bad row."""
        path: list[Action] = []
        for position, row in enumerate(rows, start=1):
            action = self.intern(row)
            if action is None or action[0] != position:
                raise BlockQNNError(
                    f"step {position}: {row!r:.40} is not a valid step of the nb201 space "
                    f"(expected ({position}, k) with k in 0..{len(OPS) - 1})"
                )
            path.append(action)
        if len(path) != NUM_EDGES:
            raise BlockQNNError(f"an nb201 path has {NUM_EDGES} steps, got {len(path)}")
        return tuple(path)

    def sample(self, rng: random.Random) -> Path:
        return tuple(rng.choice(actions) for actions in self._by_step)

    def to_candidate(self, path: Path) -> Cell:
        return Cell(tuple(OPS[a[1]] for a in self.check_path(path)))

    def path_of(self, candidate: Any) -> Path:
        if not isinstance(candidate, Cell):
            raise BlockQNNError(f"{candidate!r:.60} is not an nb201 cell")
        return tuple(self._by_step[i][k] for i, k in enumerate(candidate.indices))

    def parse(self, text: str) -> Cell:
        return Cell.parse(text)

    def mutate(self, candidate: Cell, rng: random.Random) -> Cell:
        """One edge set to another op (Real et al.'s mutation as used on NAS-Bench-201),
        uniformly over the (edge, new op) pairs whose cell has another hash.

        A changed op can leave the benchmark's identity unchanged (e.g. on an edge out of a
        dead node: in the all-none cell 16 of the 24 changes do). Drawing (edge, op)
        uniformly and redrawing until the hash changes has exactly this distribution; we
        enumerate the 24 neighbours instead of redrawing, so the result never depends on a
        retry budget. Some change always qualifies (the op of edge 3<-0 is a term of the
        output), the fallback to any neighbour is only a guard.
        """
        indices = candidate.indices
        neighbours = [
            Cell.from_indices((*indices[:edge], new, *indices[edge + 1 :]))
            for edge in range(NUM_EDGES)
            for new in range(len(OPS))
            if new != indices[edge]
        ]
        changed = [c for c in neighbours if c.hash != candidate.hash]
        return rng.choice(changed or neighbours)


@functools.cache
def _distinct_cells() -> int:
    # ~0.15 s, once a process: cheaper to compute than to keep a constant true to `canonical`
    cells = itertools.product(range(len(OPS)), repeat=NUM_EDGES)
    return len({Cell.from_indices(ix).canonical for ix in cells})


def make_space(config: Config) -> NB201Space:
    """The registry's factory; the space has no settings, so `config` is unused."""
    return NB201Space()
