"""Mutation of NSC blocks: the one small random change regularized evolution makes.

Owns: `mutate_block` and its five operators on a block's layer rows. Must not import torch,
must not know the space (it gets the maximum depth, a plain number; `NSCSpace.mutate` calls
it) and must not learn anything: the strategy (`blockqnn.strategy.evolution`) chooses the
parent, this module only changes it.

One mutation applies one operator, drawn uniformly among those applicable to the block,
to one target drawn uniformly within that operator:

- `type`: a computing layer gets another type allowed at its index (add and concat need two
  different earlier layers, so index >= 2). Its kernel is redrawn if the new type has
  several; one predecessor is kept (binary -> unary: one of the two at random) and a second,
  different one is drawn for unary -> binary.
- `kernel`: a convolution or pooling gets another of its type's kernels.
- `pred`: one predecessor slot of a layer gets another earlier layer (add and concat keep
  their two predecessors different).
- `insert`: a new random layer at a random index 1..n+1 (type uniform over those allowed
  there, then kernel and predecessors uniform); later layers and references to them shift up
  by one. Only while the block has fewer than `max_depth - 1` computing layers.
- `delete`: a layer is removed (only if the block keeps at least one); references to it are
  redirected to its first predecessor, later layers and references shift down by one. An
  add or concat whose two predecessors thereby coincide becomes an identity of that layer
  (the nearest valid single-input layer; no new randomness).

Add and concat predecessors come out sorted (pred1 < pred2), as in the space's paths, so a
child equals `space.to_candidate(space.path_of(child))`.

The result differs in `hash` from the input whenever the space allows it: insert and delete
change the number of nodes and type or kernel changes the multiset of labels, so only `pred`
can give an isomorphic graph. Such draws are retried, up to `_ATTEMPTS` in all; the last draw
is returned if all coincide. That needs `pred` drawn every time, and it only applies to blocks
of two or more layers, where `type` and `delete` apply too: probability below 3^-20.
"""

from __future__ import annotations

import random

from blockqnn.space.nsc.block import KERNELS, Block, LayerType

__all__ = ["OPERATORS", "applicable_operators", "mutate_block"]

Row = list[int]  # [index, type, kernel, pred1, pred2], mutable while an operator works

OPERATORS = ("type", "kernel", "pred", "insert", "delete")
_ATTEMPTS = 20
_UNARY = (LayerType.CONV, LayerType.MAX_POOL, LayerType.AVG_POOL, LayerType.IDENTITY)
_ALL = (*_UNARY, LayerType.ADD, LayerType.CONCAT)
_BINARY_CODES = (int(LayerType.ADD), int(LayerType.CONCAT))


def _types_at(index: int) -> tuple[LayerType, ...]:
    """Computing types allowed at a layer index: a two-input layer needs two earlier ones."""
    return _ALL if index >= 2 else _UNARY


def _pred_slots(rows: list[Row]) -> list[tuple[int, int]]:
    """(row position, slot 3 or 4) of every predecessor that has another valid value."""
    slots: list[tuple[int, int]] = []
    for pos, row in enumerate(rows):
        index, arity = row[0], LayerType(row[1]).arity
        if index - arity >= 1:  # earlier layers 0..index-1 minus the `arity` in use
            slots.extend((pos, 3 + s) for s in range(arity))
    return slots


def applicable_operators(rows: list[Row], max_depth: int) -> tuple[str, ...]:
    """The operators that can change this block (rows without the terminal), in `OPERATORS`
    order; `type` always can."""
    out = ["type"]
    if any(len(KERNELS[LayerType(row[1])]) > 1 for row in rows):
        out.append("kernel")
    if _pred_slots(rows):
        out.append("pred")
    if len(rows) < max_depth - 1:
        out.append("insert")
    if len(rows) > 1:
        out.append("delete")
    return tuple(out)


def _random_layer(index: int, rng: random.Random) -> Row:
    ltype = rng.choice(_types_at(index))
    kernel = rng.choice(KERNELS[ltype])
    if ltype.arity == 2:
        p1, p2 = rng.sample(range(index), 2)
        return [index, int(ltype), kernel, p1, p2]
    return [index, int(ltype), kernel, rng.randrange(index), 0]


def _change_type(rows: list[Row], rng: random.Random) -> None:
    row = rng.choice(rows)
    index, old = row[0], LayerType(row[1])
    new = rng.choice([t for t in _types_at(index) if t is not old])
    row[1], row[2] = int(new), rng.choice(KERNELS[new])
    if new.arity == 1:
        if old.arity == 2:
            row[3] = rng.choice((row[3], row[4]))
        row[4] = 0
    elif old.arity == 1:  # unary -> binary: keep pred1, draw a different pred2
        row[4] = rng.choice([p for p in range(index) if p != row[3]])


def _change_kernel(rows: list[Row], rng: random.Random) -> None:
    row = rng.choice([r for r in rows if len(KERNELS[LayerType(r[1])]) > 1])
    row[2] = rng.choice([k for k in KERNELS[LayerType(row[1])] if k != row[2]])


def _change_pred(rows: list[Row], rng: random.Random) -> None:
    pos, slot = rng.choice(_pred_slots(rows))
    row = rows[pos]
    taken = {row[3], row[4]} if LayerType(row[1]).arity == 2 else {row[3]}
    row[slot] = rng.choice([p for p in range(row[0]) if p not in taken])


def _insert(rows: list[Row], rng: random.Random) -> list[Row]:
    at = rng.randint(1, len(rows) + 1)  # the new layer's index

    def moved(p: int) -> int:
        return p + (p >= at)

    out = rows[: at - 1]  # earlier layers cannot read later ones: unchanged
    out.append(_random_layer(at, rng))
    for row in rows[at - 1 :]:
        pred2 = moved(row[4]) if LayerType(row[1]).arity == 2 else 0
        out.append([row[0] + 1, row[1], row[2], moved(row[3]), pred2])
    return out


def _delete(rows: list[Row], rng: random.Random) -> list[Row]:
    gone = rng.randrange(len(rows))
    removed = rows[gone][0]
    heir = rows[gone][3]  # its first predecessor, < removed, so unaffected by the shift

    def moved(p: int) -> int:
        return heir if p == removed else p - (p > removed)

    out = rows[:gone]
    for row in rows[gone + 1 :]:
        index = row[0] - 1
        if LayerType(row[1]).arity == 1:
            out.append([index, row[1], row[2], moved(row[3]), 0])
            continue
        p1, p2 = moved(row[3]), moved(row[4])
        if p1 == p2:  # add/concat of a layer with itself: collapse to an identity
            out.append([index, int(LayerType.IDENTITY), 0, p1, 0])
        else:
            out.append([index, row[1], row[2], p1, p2])
    return out


def _mutate_once(rows: list[Row], max_depth: int, rng: random.Random) -> tuple[str, list[Row]]:
    """One operator applied to a copy of `rows`: (operator name, new rows)."""
    rows = [list(r) for r in rows]
    op = rng.choice(applicable_operators(rows, max_depth))
    if op == "type":
        _change_type(rows, rng)
    elif op == "kernel":
        _change_kernel(rows, rng)
    elif op == "pred":
        _change_pred(rows, rng)
    elif op == "insert":
        rows = _insert(rows, rng)
    else:
        rows = _delete(rows, rng)
    return op, rows


def mutate_block(block: Block, max_depth: int, rng: random.Random) -> Block:
    """A valid block of depth `max_depth`, one random mutation away from `block`, with
    another hash whenever the depth allows one (see the module docstring).

    Raises `BlockQNNError` if `block` does not fit `max_depth` (too deep).

    >>> parent = Block.parse("1,1,3,0,0; 2,7,0,0,0", max_depth=3)
    >>> child = mutate_block(parent, 3, random.Random(0))
    >>> child.hash != parent.hash
    True
    """
    # a block from a deeper space would give rows that cannot fit: refused before any draw
    Block.from_tuples(block.to_json(), max_depth)
    rows: list[Row] = [list(layer.as_tuple()) for layer in block.layers]
    child = block
    for _ in range(_ATTEMPTS):
        _, new_rows = _mutate_once(rows, max_depth, rng)
        for row in new_rows:  # the space's own order (its paths list add/concat sorted)
            if row[1] in _BINARY_CODES and row[3] > row[4]:
                row[3], row[4] = row[4], row[3]
        child = Block.from_tuples(new_rows, max_depth)
        if child.hash != block.hash:
            break
    return child
