"""NSC mutation: always a valid block of the space, another graph, every operator in use."""

from __future__ import annotations

import collections
import functools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.strategies import blocks, random_rows

from blockqnn import Block, BlockQNNError
from blockqnn.space.nsc.mutation import OPERATORS, applicable_operators, mutate_block
from blockqnn.space.nsc.space import NSCSpace


@functools.cache
def _space(max_depth: int) -> NSCSpace:
    return NSCSpace(max_depth)


def _kind(parent: Block, child: Block) -> str:
    """Which operator turned `parent` into `child`, read from their rows (the parent's
    add/concat predecessors sorted, as the child's are)."""
    space = _space(parent.max_depth)
    parent = space.to_candidate(space.check_path(parent.tuples()))  # sorted in place
    if len(child) != len(parent):
        return "insert" if len(child) > len(parent) else "delete"
    changed = [
        (a.as_tuple(), b.as_tuple())
        for a, b in zip(parent.layers, child.layers, strict=True)
        if a != b
    ]
    assert len(changed) == 1, changed  # one layer changed, in place
    old, new = changed[0]
    if old[1] != new[1]:
        return "type"
    if old[2] != new[2]:
        assert old[3:] == new[3:]
        return "kernel"
    assert old[:3] == new[:3]
    return "pred"


@pytest.mark.parametrize("max_depth", [2, 3, 5, 10])
@settings(max_examples=150, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_mutation_is_a_valid_block_of_the_space_with_another_hash(
    max_depth: int, data: st.DataObject, seed: int
) -> None:
    space = NSCSpace(max_depth)
    block = data.draw(blocks(max_depth=max_depth))
    rng = random.Random(seed)
    for _ in range(5):
        child = mutate_block(block, max_depth, rng)
        assert isinstance(child, Block) and child.max_depth == max_depth
        assert Block.parse(str(child), max_depth) == child  # valid, canonical text
        assert space.to_candidate(space.path_of(child)) == child  # the space's own form
        assert 1 <= len(child) <= max_depth - 1
        # Only a predecessor change can give an isomorphic graph, and it is retried.
        assert child.hash != block.hash
        assert _kind(block, child) in applicable_operators(
            [list(layer.as_tuple()) for layer in block.layers], max_depth
        )


def test_every_operator_occurs_roughly_uniformly() -> None:
    space = NSCSpace()
    rng = random.Random(7)
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(2000):
        block = Block.from_tuples(random_rows(rng, rng.randint(3, 7)), 10)
        counts[_kind(block, space.mutate(block, rng))] += 1
    assert set(counts) == set(OPERATORS)
    # 3..7 layers of a depth-10 space: all five apply to most blocks, so ~400 each.
    assert all(250 < n < 550 for n in counts.values()), counts


def test_insert_respects_max_depth_and_delete_keeps_one_layer() -> None:
    rng = random.Random(3)
    space = NSCSpace(max_depth=4)
    full = Block.parse("1,1,3,0,0; 2,1,3,1,0; 3,5,0,1,2", 4)  # 3 = max_depth - 1 layers
    assert "insert" not in applicable_operators([list(r.as_tuple()) for r in full.layers], 4)
    single = Block.parse("1,2,3,0,0", 4)
    kinds = set()
    for _ in range(300):
        child = space.mutate(full, rng)
        assert len(child) <= 3
        kinds.add(_kind(full, child))
        child = space.mutate(single, rng)
        assert len(child) >= 1
        kinds.add(_kind(single, child))
    assert kinds == {"type", "kernel", "pred", "insert", "delete"}


def test_one_layer_block_of_the_smallest_space_still_mutates() -> None:
    space = NSCSpace(max_depth=2)  # one computing layer, index 1: type and kernel only
    rng = random.Random(0)
    for text in ("1,1,3,0,0", "1,4,0,0,0", "1,2,1,0,0"):
        block = Block.parse(text, 2)
        children = {space.mutate(block, rng).hash for _ in range(50)}
        assert block.hash not in children and len(children) > 1


def test_delete_redirects_to_the_first_predecessor_and_collapses_self_pairs() -> None:
    # Deleting layer 1 redirects 2 and 3's references to 0: the add becomes add(0, 0),
    # which is turned into an identity of 0.
    block = Block.parse("1,1,3,0,0; 2,1,5,1,0; 3,5,0,1,0", 10)
    space = NSCSpace()
    seen = set()
    rng = random.Random(1)
    for _ in range(400):
        child = space.mutate(block, rng)
        if _kind(block, child) == "delete":
            seen.add(str(child))
    assert "1,1,5,0,0; 2,4,0,0,0; 3,7,0,0,0" in seen  # layer 1 deleted
    assert "1,1,3,0,0; 2,5,0,0,1; 3,7,0,0,0" in seen  # layer 2 deleted, add renumbered
    assert "1,1,3,0,0; 2,1,5,1,0; 3,7,0,0,0" in seen  # the add deleted


def _without(rows: Sequence[tuple[int, ...]], at: int) -> list[tuple[int, ...]] | None:
    """`rows` with layer `at` removed and the later ones renumbered back, or None if a later
    layer reads it."""
    out = []
    for row in rows:
        if row[0] == at:
            continue
        if at in row[3 : 3 + (2 if row[1] in (5, 6) else 1)]:
            return None
        preds = [p - (p > at) for p in row[3:]]
        out.append((row[0] - (row[0] > at), row[1], row[2], *preds))
    return out


def test_insert_renumbers_later_layers_and_their_references() -> None:
    block = Block.parse("1,1,3,0,0; 2,6,0,0,1; 3,1,1,2,0", 10)
    original = [layer.as_tuple() for layer in block.layers]
    space = NSCSpace()
    rng = random.Random(2)
    positions = set()
    for _ in range(400):
        child = space.mutate(block, rng)
        if _kind(block, child) != "insert":
            continue
        rows = [layer.as_tuple() for layer in child.layers]
        # Some new layer whose removal gives back the old block: the others kept their graph.
        fits = [at for at in range(1, len(rows) + 1) if _without(rows, at) == original]
        assert fits, rows
        positions.update(fits)
    assert positions == {1, 2, 3, 4}


def test_a_block_too_deep_for_the_space_is_refused() -> None:
    block = Block.from_tuples(random_rows(random.Random(0), 6), 10)
    with pytest.raises(BlockQNNError):
        mutate_block(block, 5, random.Random(0))


def test_mutation_is_a_pure_function_of_the_rng() -> None:
    block = Block.from_tuples(random_rows(random.Random(5), 5), 10)
    space = NSCSpace()
    a = [str(space.mutate(block, random.Random(s))) for s in range(20)]
    b = [str(space.mutate(block, random.Random(s))) for s in range(20)]
    assert a == b and len(set(a)) > 10
