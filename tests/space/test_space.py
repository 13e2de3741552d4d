"""Search space: every producible path is a valid block, every valid block is producible."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from tests.strategies import blocks

from blockqnn import Block, BlockQNNError
from blockqnn.space.nsc.block import KERNELS, LayerType, check_layer
from blockqnn.space.nsc.graph import canonical_form
from blockqnn.space.nsc.space import START, NSCSpace, parse_path_rows, path_text


def _all_paths(space: NSCSpace) -> list[tuple[tuple[int, ...], ...]]:
    out = []

    def walk(state: tuple[int, ...], prefix: tuple[tuple[int, ...], ...]) -> None:
        for action in space.actions(state):
            if space.is_terminal(action):
                out.append((*prefix, action))
            else:
                walk(action, (*prefix, action))

    walk(START, ())
    return out


def _all_valid_blocks(max_depth: int) -> list[Block]:
    """Every valid block by brute force over raw tuples, both add/concat orders included."""

    def rows_at(i: int) -> list[tuple[int, ...]]:
        found: list[tuple[int, ...]] = []
        for t, k, p1, p2 in itertools.product(range(1, 7), range(6), range(i), range(i)):
            try:
                check_layer((i, t, k, p1, p2), i, max_depth)
            except BlockQNNError:
                continue
            found.append((i, t, k, p1, p2))
        return found

    out: list[Block] = []
    prefixes: list[list[tuple[int, ...]]] = [[]]
    for i in range(1, max_depth):
        prefixes = [[*p, row] for p in prefixes for row in rows_at(i)]
        out.extend(Block.from_tuples(p, max_depth) for p in prefixes)
    return out


def test_actions_follow_the_nsc_rules() -> None:
    space = NSCSpace(max_depth=5)
    first = space.actions(START)
    assert len(first) == 8  # conv x3, max pool x2, avg pool x2, identity, all of the input
    assert all(a[0] == 1 and not space.is_terminal(a) for a in first)
    assert space.actions((4, 1, 3, 0, 0)) == ((5, 7, 0, 0, 0),)
    for j in range(1, 6):
        for action in space.actions_at(j):
            check_layer(action, j, 5)  # raises if the space holds an invalid layer
            if action[1] in (5, 6):
                assert action[3] < action[4]
        assert len(set(space.actions_at(j))) == len(space.actions_at(j))
    assert space.actions_at(3)[-1] == (3, 7, 0, 0, 0)


def test_space_equals_brute_force_enumeration_up_to_add_order() -> None:
    space = NSCSpace(max_depth=4)
    paths = _all_paths(space)
    assert len(paths) == space.count() == len(set(paths))
    blocks = [space.to_candidate(p) for p in paths]
    valid = _all_valid_blocks(4)

    def graph(b: Block) -> str:  # the graph with add and concat taken as commutative
        return canonical_form(b.labels, b.edges)

    assert {graph(b) for b in valid} == {graph(b) for b in blocks}
    assert {space.path_of(b) for b in valid} == set(paths)
    # A concat whose operand order decides the network (`Block.ordered_concats`) comes in
    # the order the space lists (pred1 < pred2) and, renumbered, its representative's.
    produced = {b.hash for b in blocks}
    assert all(b.ordered_concats for b in valid if b.hash not in produced)


@pytest.mark.parametrize(("max_depth", "count"), [(2, 8), (3, 8 + 8 * 18)])
def test_count_blocks_small(max_depth: int, count: int) -> None:
    assert NSCSpace(max_depth).count() == count


def test_sampled_paths_are_valid_blocks_and_round_trip() -> None:
    space = NSCSpace()
    rng = random.Random(3)
    lengths = set()
    for _ in range(500):
        path = space.sample(rng)
        block = space.to_candidate(path)
        assert block.max_depth == 10
        assert space.path_of(block) == path
        assert space.check_path(parse_path_rows(path_text(path))) == path
        lengths.add(len(block))
    assert len(lengths) > 3


@settings(max_examples=150, deadline=None)
@given(block=blocks())
def test_every_valid_block_is_producible(block: Block) -> None:
    space = NSCSpace()
    path = space.path_of(block)
    state = START
    for action in path:
        assert action in space.actions(state)
        state = action
    # path_of renumbers a concat whose order decides the network read descending; where no
    # numbering lists it ascending (pred1 < pred2 only), its sorted path is another network
    reversed_concat = any(block.layers[i - 1].pred1 > block.layers[i - 1].pred2
                          for i in block.ordered_concats)  # fmt: skip
    assert space.to_candidate(path).hash == block.hash or reversed_concat


def test_path_of_normalises_add_order() -> None:
    space = NSCSpace()
    block = Block.parse("1,1,3,0,0; 2,1,5,0,0; 3,6,0,2,1")
    assert space.path_of(block)[2] == (3, 6, 0, 1, 2)


@pytest.mark.parametrize(
    "text",
    [
        "1,1,3,0,0; 2,1,5,0,0; 3,6,0,2,1; 4,5,0,3,0",
        "1,1,3,0,0; 2,1,5,0,0; 3,6,0,2,1; 4,1,1,0,0; 5,1,1,0,0; 6,6,0,4,5; 7,5,0,3,6",
    ],
)
def test_path_of_keeps_the_hash_of_an_ordered_concat_read_descending(text: str) -> None:
    """(conv 5x5, conv 3x3) concatenated, then summed unprojected: sorting the operands
    gave the path of (conv 3x3, conv 5x5), another network; renumbered, it is the same."""
    space = NSCSpace()
    block = Block.parse(text)
    assert 3 in block.ordered_concats
    path = space.path_of(block)
    assert space.to_candidate(path).hash == block.hash
    assert (
        space.to_candidate(path).hash != space.to_candidate(space.check_path(block.tuples())).hash
    )
    assert space.path_of(space.to_candidate(path)) == path


def test_path_of_an_ordered_concat_no_numbering_lists_is_its_sorted_path() -> None:
    # the two concats read conv 3x3 and conv 5x5 in opposite orders: no numbering sorts both
    block = Block.parse("1,1,3,0,0; 2,1,5,0,0; 3,6,0,2,1; 4,6,0,1,2; 5,5,0,3,4")
    space = NSCSpace()
    assert space.path_of(block) == space.check_path(block.tuples())


def test_blocks_outside_the_space_are_refused() -> None:
    deep = Block.from_tuples([(i, 4, 0, i - 1, 0) for i in range(1, 11)], max_depth=12)
    with pytest.raises(BlockQNNError, match="max_depth 10"):
        NSCSpace(10).path_of(deep)
    space = NSCSpace(4)
    with pytest.raises(BlockQNNError, match="end with the terminal"):
        space.check_path([(1, 1, 3, 0, 0)])
    with pytest.raises(BlockQNNError, match="layer 2"):
        space.check_path([(1, 1, 3, 0, 0), (3, 7, 0, 0, 0)])  # wrong index
    with pytest.raises(BlockQNNError, match="layer 1"):
        space.check_path([(1, 7, 0, 0, 0)])  # an empty block
    with pytest.raises(BlockQNNError, match="layer 3"):
        space.check_path([(1, 1, 3, 0, 0), (2, 7, 0, 0, 0), (3, 7, 0, 0, 0)])
    with pytest.raises(BlockQNNError, match="not a path's text"):
        parse_path_rows("1,a,3")
    with pytest.raises(BlockQNNError, match="max_depth"):
        NSCSpace(1)


def test_states_and_actions() -> None:
    space = NSCSpace(4)
    assert space.is_state(START) and space.is_state((1, 1, 3, 0, 0))
    assert not space.is_state((2, 7, 0, 0, 0)) and not space.is_state((1, 1, 2, 0, 0))
    assert space.is_action(START, (1, 2, 3, 0, 0))
    assert not space.is_action(START, (2, 2, 3, 0, 0))
    assert not space.is_action((1, 1, 3, 0, 0), (2, 5, 0, 1, 0))  # sorted order only
    states = [START, *itertools.chain(*map(space.actions_at, (1, 2, 3)))]
    states = [s for s in states if not space.is_terminal(s)]
    assert space.num_states == len(states)
    assert space.num_state_actions == sum(len(space.actions(s)) for s in states)
    kinds = {LayerType(a[1]) for a in space.actions_at(3)}
    assert kinds == set(LayerType)
    assert {a[2] for a in space.actions_at(3) if a[1] == 1} == set(KERNELS[LayerType.CONV])


def test_space_and_agent_do_not_import_torch() -> None:
    code = (
        "import sys, blockqnn.space.nsc.space, blockqnn.space.nb201, blockqnn.strategy, "
        "blockqnn.strategy.evolution, blockqnn.settings.registry, blockqnn.reward, "
        "blockqnn.store.db, blockqnn.store.rundir, blockqnn.settings.bounds, "
        "blockqnn.settings.config, blockqnn.search.loop, blockqnn.evaluate.table; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
