"""Hypothesis strategies shared by the tests: random valid blocks."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from blockqnn.nsc import KERNELS, Block, LayerType


def random_rows(rng: random.Random, n_layers: int) -> list[tuple[int, int, int, int, int]]:
    """A random valid NSC layer list (no terminal) with `n_layers` layers."""
    rows = []
    for i in range(1, n_layers + 1):
        t = LayerType(rng.randint(1, 6)) if i > 1 else LayerType(rng.choice([1, 2, 3, 4]))
        k = rng.choice(KERNELS[t])
        if t.arity == 2:
            p1, p2 = rng.sample(range(i), 2)
        else:
            p1, p2 = rng.randrange(i), 0
        rows.append((i, int(t), k, p1, p2))
    return rows


@st.composite
def blocks(draw: st.DrawFn, max_depth: int = 10) -> Block:
    n = draw(st.integers(min_value=1, max_value=max_depth - 1))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return Block.from_tuples(random_rows(random.Random(seed), n), max_depth=max_depth)


def relabel(block: Block, rng: random.Random) -> Block:
    """The same graph with layers renumbered by a random topological order and add/concat
    operands possibly swapped."""
    layers = {layer.index: layer for layer in block.layers}
    placed: dict[int, int] = {0: 0}
    order: list[int] = []
    while len(order) < len(layers):
        ready = [i for i in layers if i not in placed and all(p in placed for p in layers[i].preds)]
        pick = rng.choice(ready)
        placed[pick] = len(order) + 1
        order.append(pick)
    rows = []
    for old in order:
        layer = layers[old]
        preds = [placed[p] for p in layer.preds]
        if len(preds) == 2:
            rng.shuffle(preds)
        else:
            preds.append(0)
        rows.append((placed[old], int(layer.type), layer.kernel, preds[0], preds[1]))
    return Block.from_tuples(rows, max_depth=block.max_depth)
