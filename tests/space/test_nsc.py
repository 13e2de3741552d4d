"""NSC rules, parsing, canonical text and JSON round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from tests.strategies import blocks

from blockqnn import Block, BlockQNNError, LayerType

EXAMPLE = "1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,7,0,0,0"


def test_parse_example_and_canonical_text() -> None:
    block = Block.parse(EXAMPLE)
    assert str(block) == EXAMPLE
    assert len(block) == 3
    assert [layer.type for layer in block.layers] == [
        LayerType.CONV,
        LayerType.CONV,
        LayerType.ADD,
    ]
    assert block.outputs == (3,)


@pytest.mark.parametrize(
    "text",
    [
        "(1,1,3,0,0); (2,1,5,0,0); (3,5,0,1,2); (4,7,0,0,0)",
        "  1, 1, 3, 0, 0 ;2,1,5,0,0;\n3,5,0,1,2;4,7,0,0,0;",
        "1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2",  # the terminal is optional
        "[[1,1,3,0,0],[2,1,5,0,0],[3,5,0,1,2],[4,7,0,0,0]]",
        "[(1,1,3,0,0), (2,1,5,0,0), (3,5,0,1,2), (4,7,0,0,0)]",
        "[ [1,1,3,0,0], [2,1,5,0,0], [3,5,0,1,2], [4,7,0,0,0] ]",
        "[\n  [\n    1,\n    1,\n    3,\n    0,\n    0\n  ],\n  [2,1,5,0,0], [3,5,0,1,2]\n]",
        "((1,1,3,0,0), (2,1,5,0,0), (3,5,0,1,2), (4,7,0,0,0))",  # a Python tuple of tuples
        "(1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,7,0,0,0)",  # surrounding parentheses
    ],
)
def test_equivalent_spellings(text: str) -> None:
    assert Block.parse(text) == Block.parse(EXAMPLE)


def test_json_round_trip() -> None:
    block = Block.parse(EXAMPLE)
    data = json.loads(json.dumps(block.to_json()))
    assert Block.from_json(data) == block
    assert Block.from_json(json.dumps(data)) == block
    assert data[-1] == [4, 7, 0, 0, 0]
    assert Block.parse(json.dumps(data, indent=2)) == block  # pretty-printed JSON too


def test_booleans_are_not_layer_values() -> None:
    """True == 1 in Python, but `str(block)` must parse back: a bool is refused."""
    with pytest.raises(BlockQNNError, match="not a list of integers"):
        Block.from_tuples([(True, 1, 3, False, False)])


@given(blocks())
@settings(max_examples=200, deadline=None)
def test_random_blocks_round_trip(block: Block) -> None:
    assert Block.parse(str(block)) == block
    assert Block.from_json(block.to_json()) == block
    assert Block.parse(str(block)).hash == block.hash


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty block"),
        ("   ", "empty block"),
        ("4,7,0,0,0", "index should be 1"),
        ("1,7,0,0,0", "empty block"),
        ("1,1,3,0", "expected 5 integers"),
        ("1,1,3,0,0,0", "expected 5 integers"),
        ("1,a,3,0,0", "not a list of integers"),
        ("1,1,3,0,0;;2,1,3,0,0", "layer 2: empty"),
        ("[[1,1,3,0,0]", "malformed JSON"),
        ("[[1,1,3,0,true]]", "not a list of integers"),
        ("1,8,0,0,0", "unknown type 8"),
        ("1,0,0,0,0", "unknown type 0"),
        ("1,1,2,0,0", "kernel 2 is not allowed for conv"),
        ("1,1,0,0,0", "kernel 0 is not allowed for conv"),
        ("1,2,5,0,0", "kernel 5 is not allowed for max_pool"),
        ("1,3,5,0,0", "kernel 5 is not allowed for avg_pool"),
        ("1,4,3,0,0", "kernel 3 is not allowed for identity"),
        ("1,1,3,0,0; 2,5,1,0,1", "kernel 1 is not allowed for add"),
        ("1,1,3,0,0; 2,6,3,0,1", "kernel 3 is not allowed for concat"),
        ("1,1,3,0,0; 2,7,3,0,0", "kernel 3 is not allowed for terminal"),
        ("1,1,3,1,0", "layer 1: pred1 = 1 is not an earlier layer"),
        ("1,1,3,0,0; 2,1,3,5,0", "layer 2: pred1 = 5 is not an earlier layer"),
        ("1,1,3,-1,0", "pred1 = -1 is not an earlier layer"),
        ("1,1,3,0,0; 2,1,3,1,1", "conv takes one predecessor"),
        ("1,1,3,0,0; 2,1,3,0,0; 3,5,0,1,5", "layer 3: pred2 = 5 is not an earlier layer"),
        ("1,1,3,0,0; 2,6,0,1,1", "concat of a layer with itself"),
        ("1,1,3,0,0; 2,5,0,0,0", "add of a layer with itself"),
        ("1,1,3,0,0; 2,7,0,1,0", "terminal takes no predecessors"),
        ("1,1,3,0,0; 2,7,0,0,0; 3,1,3,0,0", "terminal must be the last layer"),
        ("1,1,3,0,0; 3,1,3,0,0", "index should be 2"),
        ("(1,1,3,0,0) x (2,7,0,0,0)", "outside parentheses"),
    ],
)
def test_rules_are_named(text: str, message: str) -> None:
    with pytest.raises(BlockQNNError, match=message):
        Block.parse(text)


def test_max_depth() -> None:
    rows = ";".join(f"{i},1,3,{i - 1},0" for i in range(1, 10))
    assert len(Block.parse(rows)) == 9  # indices 1..9 computing, 10 the terminal
    assert str(Block.parse(rows)).endswith("10,7,0,0,0")
    too_deep = rows + "; 10,1,3,9,0"
    with pytest.raises(BlockQNNError, match="only terminal is allowed at the maximum depth 10"):
        Block.parse(too_deep)
    with pytest.raises(
        BlockQNNError, match="layer 3: only terminal is allowed at the maximum depth 3"
    ):
        Block.parse("1,1,3,0,0; 2,1,3,1,0; 3,1,3,2,0; 4,7,0,0,0", max_depth=3)
    assert len(Block.parse(too_deep, max_depth=12)) == 10


def test_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Block.parse("1,9,0,0,0")
    with pytest.raises(BlockQNNError, match="given as text"):
        Block.parse(123)  # type: ignore[arg-type]


def test_block_is_immutable_and_hashable() -> None:
    block = Block.parse(EXAMPLE)
    with pytest.raises(AttributeError):
        block.layers = ()  # type: ignore[misc]
    assert {block, Block.parse(EXAMPLE)} == {block}


def test_graph_outputs_and_density() -> None:
    # layer 1 is consumed by 3; layers 2 and 3 are unconsumed -> both feed the output
    block = Block.parse("1,1,3,0,0; 2,2,3,0,0; 3,4,0,1,0")
    assert block.outputs == (2, 3)
    assert set(block.edges) == {(0, 1), (0, 2), (1, 3), (2, 4), (3, 4)}
    assert block.density == pytest.approx(5 / 5)
