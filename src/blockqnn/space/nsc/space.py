"""The NSC search space (BlockQNN's blocks) as a decision process: states, valid actions,
paths, sampling and mutation.

Owns: which layer may follow which, so that every sequence an agent can produce is a valid
`Block` and every valid block can be produced. Must not import torch and must not learn
anything: the agents (`blockqnn.strategy`) decide which action to take, this module only says
which actions exist.

A state is the NSC tuple of the layer just added (paper); the start state is the block input
`(0, 0, 0, 0, 0)`. An action is the next layer's tuple, and the state after an action is that
action itself. From a state with index i the next layer has index j = i + 1 and may be:

- a convolution (kernel 1, 3, 5), a max or average pooling (kernel 1, 3) or an identity, of
  any earlier layer 0..j-1;
- an add or a concat of two different earlier layers, listed once with pred1 < pred2;
- the terminal, except at j = 1 (an empty block is invalid); at j = max_depth it is the only
  action.

The valid actions depend only on j, so they are built once per index and shared.

Add is commutative, and so is a concat whose channels meet a convolution or the projected
output: (a, b) and (b, a) are the same graph (same `Block.hash`). Keeping both orders would
double those actions, bias uniform sampling towards two-input layers and split the Q evidence
of one graph over two table entries, so only pred1 < pred2 is an action. A block written with
pred1 > pred2 (e.g. told from the store) maps to its sorted path by `path_of`; every valid
block is thus producible up to that order. The exception is a concat whose operand order
decides the network (`Block.ordered_concats`: its channels are summed unprojected by an add):
the space produces it in the orders that sorted numberings give, which include its class
representative's (`Block.canonical`), not in every order; `path_of` renumbers a block that
reads one descending into such an order, where one exists, so its path keeps its hash.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from blockqnn.errors import BlockQNNError
from blockqnn.settings.bounds import DEFAULT_MAX_DEPTH
from blockqnn.space.base import Action, Path, State, parse_path_rows, path_text
from blockqnn.space.nsc.block import KERNELS, Block, Layer, LayerType, check_depth
from blockqnn.space.nsc.mutation import mutate_block

if TYPE_CHECKING:
    from blockqnn.settings.config import Config

__all__ = ["START", "NSCSpace", "make_space", "parse_path_rows", "path_text"]

START: State = (0, 0, 0, 0, 0)
TERMINAL = int(LayerType.TERMINAL)

_UNARY = (LayerType.CONV, LayerType.MAX_POOL, LayerType.AVG_POOL, LayerType.IDENTITY)
_BINARY = (LayerType.ADD, LayerType.CONCAT)


def _actions_at(index: int, max_depth: int) -> tuple[Action, ...]:
    """All valid layers with this index, in a fixed order (the agents' tie order)."""
    terminal: Action = (index, TERMINAL, 0, 0, 0)
    if index == max_depth:
        return (terminal,)
    out: list[Action] = []
    for ltype in _UNARY:
        for kernel in KERNELS[ltype]:
            out.extend((index, int(ltype), kernel, p, 0) for p in range(index))
    for ltype in _BINARY:
        out.extend(
            (index, int(ltype), 0, p1, p2) for p1 in range(index) for p2 in range(p1 + 1, index)
        )
    if index > 1:
        out.append(terminal)
    return tuple(out)


class NSCSpace:
    """The valid blocks of one maximum depth, as states and actions (a `Space`).

    >>> space = NSCSpace(max_depth=3)
    >>> len(space.actions(START)), space.actions((2, 1, 3, 1, 0))
    (8, ((3, 7, 0, 0, 0),))
    >>> str(space.to_candidate(((1, 1, 3, 0, 0), (2, 7, 0, 0, 0))))
    '1,1,3,0,0; 2,7,0,0,0'
    """

    name = "nsc"
    evaluator = (
        "blockqnn.evaluate.early_stop:Evaluator"  # early-stop training of the stacked network
    )
    needs_data = True

    def __init__(self, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        check_depth(max_depth)
        self.max_depth = max_depth
        # _by_index[j]: the actions whose layer index is j (j = 0 holds nothing).
        self._by_index: list[tuple[Action, ...]] = [()] + [
            _actions_at(j, max_depth) for j in range(1, max_depth + 1)
        ]
        # One shared object per tuple: Q-table keys and replay paths then cost a pointer.
        self._intern: dict[Action, Action] = {START: START}
        for actions in self._by_index:
            self._intern.update((a, a) for a in actions)

    def __repr__(self) -> str:
        return f"NSCSpace(max_depth={self.max_depth})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NSCSpace) and other.max_depth == self.max_depth

    def __hash__(self) -> int:
        return hash(("NSCSpace", self.max_depth))

    @property
    def start(self) -> State:
        return START

    def settings(self) -> dict[str, Any]:
        return {"max_depth": self.max_depth}

    # ----- states and actions -------------------------------------------------------------

    def actions(self, state: State) -> tuple[Action, ...]:
        """The valid next layers after `state` (a non-terminal state of this space)."""
        return self._by_index[state[0] + 1]

    def actions_at(self, index: int) -> tuple[Action, ...]:
        """The valid layers with layer index `index` (1..max_depth)."""
        if not 1 <= index <= self.max_depth:
            raise BlockQNNError(f"layer index {index}: must be in 1..{self.max_depth}")
        return self._by_index[index]

    @staticmethod
    def is_terminal(action: Action) -> bool:
        return action[1] == TERMINAL

    def intern(self, values: Sequence[int]) -> Action | None:
        """The space's shared tuple equal to `values`, or None if it is no state or action."""
        return self._intern.get(tuple(values))

    def is_state(self, values: Sequence[int]) -> bool:
        """Whether `values` is a non-terminal state: START or a non-terminal layer."""
        found = self.intern(values)
        return found is not None and found[1] != TERMINAL

    def is_action(self, state: State, action: Sequence[int]) -> bool:
        """Whether `action` is a valid next layer after the state `state`."""
        if not self.is_state(state):
            return False
        found = self.intern(action)
        return found is not None and found[0] == state[0] + 1

    @cached_property
    def num_states(self) -> int:
        """Non-terminal states, START included."""
        return sum(1 for a in self._intern if a[1] != TERMINAL)

    @cached_property
    def num_state_actions(self) -> int:
        """Valid (state, action) pairs: the size of a full Q-table."""
        return sum(len(self._by_index[s[0] + 1]) for s in self._intern if s[1] != TERMINAL)

    def count(self) -> int:
        """How many distinct paths (blocks up to add/concat order) the space holds."""
        # The actions depend only on the index, so count layer by layer: every non-terminal
        # choice at index j continues into the actions at j + 1.
        total, open_paths = 0, 1
        for j in range(1, self.max_depth + 1):
            actions = self._by_index[j]
            n_term = sum(1 for a in actions if a[1] == TERMINAL)
            total += open_paths * n_term
            open_paths *= len(actions) - n_term
        return total

    # ----- paths --------------------------------------------------------------------------

    def sample(self, rng: random.Random) -> Path:
        """A path drawn uniformly at every step (the epsilon = 1 walk of the agents)."""
        path: list[Action] = []
        state = START
        while True:
            state = rng.choice(self._by_index[state[0] + 1])
            path.append(state)
            if state[1] == TERMINAL:
                return tuple(path)

    def to_candidate(self, path: Path) -> Block:
        """The `Block` of a path of this space (validated again by `Block`)."""
        return Block.from_tuples([tuple(a) for a in path], self.max_depth)

    def parse(self, text: str) -> Block:
        return Block.parse(text, self.max_depth)

    def mutate(self, candidate: Block, rng: random.Random) -> Block:
        """A block of this space one random mutation away (`blockqnn.space.nsc.mutation`);
        `BlockQNNError` if `candidate` is too deep for it."""
        return mutate_block(candidate, self.max_depth, rng)

    def path_of(self, block: Block) -> Path:
        """The path that produces `block` (same `hash`), add/concat predecessors sorted: a
        concat whose operand order decides the network (`Block.ordered_concats`), read
        descending, is first renumbered to read them ascending (`_producible`).

        Raises `BlockQNNError` if the block does not fit this space (too deep).
        """
        return self.check_path(_producible(block).tuples())

    def check_path(self, rows: Iterable[Sequence[int]]) -> Path:
        """Validate rows (5 integers each, closed by the terminal) as a path of this space.

        Add/concat predecessor order is normalised. Returns the interned path; raises
        `BlockQNNError` naming the first row that is not a valid step.
        """
        path: list[Action] = []
        state = START
        for position, row in enumerate(rows, start=1):
            values = list(row)
            if len(values) == 5 and values[1] in _BINARY and values[3] > values[4]:
                values[3], values[4] = values[4], values[3]
            action = self.intern(values)
            if action is None or action[0] != position or state[1] == TERMINAL:
                raise BlockQNNError(
                    f"layer {position}: {tuple(row)} is not a valid step of the search space "
                    f"with max_depth {self.max_depth}"
                )
            path.append(action)
            state = action
        if state[1] != TERMINAL:
            raise BlockQNNError(f"a path must end with the terminal layer, got {len(path)} layers")
        return tuple(path)


def _producible(block: Block) -> Block:
    """`block` renumbered, where a numbering can, so that every ordered concat reads its
    operands ascending: sorting them (the space lists pred1 < pred2) would build another
    network. Otherwise (e.g. two such concats reading a and b in opposite orders) `block`
    itself: its sorted path is the nearest the space holds."""
    ordered = [block.layers[i - 1] for i in sorted(block.ordered_concats)]
    if all(la.pred1 < la.pred2 for la in ordered):
        return block  # sorting the commutative ones keeps the hash
    # A topological order in which each ordered concat's first operand precedes its second;
    # the lowest index first, so the block keeps its numbering where it can.
    before = {la.index: {p for p in la.preds if p} for la in block.layers}
    for la in ordered:
        if la.pred2 == 0:
            return block  # the input is node 0 in every numbering
        if la.pred1:
            before[la.pred2].add(la.pred1)
    placed: dict[int, int] = {0: 0}
    while len(placed) <= len(block.layers):
        ready = [i for i, needs in before.items() if i not in placed and needs <= placed.keys()]
        if not ready:
            return block  # the operand orders contradict each other
        placed[min(ready)] = len(placed)
    layers = [block.layers[old - 1] for old in list(placed)[1:]]  # in their new order
    rows: list[tuple[int, ...]] = [
        (placed[la.index], int(la.type), la.kernel, *_operands(la, placed, block.ordered_concats))
        for la in layers
    ]
    renumbered = Block.from_tuples(rows, block.max_depth)
    return renumbered if renumbered.hash == block.hash else block


def _operands(layer: Layer, new: dict[int, int], ordered: frozenset[int]) -> tuple[int, int]:
    ps = [new[p] for p in layer.preds]
    if layer.index not in ordered:
        ps.sort()  # commutative
    return (ps[0], ps[1]) if len(ps) == 2 else (ps[0], 0)


def make_space(config: Config) -> NSCSpace:
    """The registry's factory: the NSC space of `[agent] max_depth`."""
    return NSCSpace(config.agent.max_depth)
