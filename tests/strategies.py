"""Helpers shared by the tests: random valid blocks (hypothesis strategies) and a made-up
NAS-Bench-201 table."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import random
from pathlib import Path

from hypothesis import strategies as st

from blockqnn.settings.bounds import DEFAULT_MAX_DEPTH
from blockqnn.space.nsc.block import KERNELS, Block, LayerType


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
def blocks(draw: st.DrawFn, max_depth: int = DEFAULT_MAX_DEPTH) -> Block:
    """A valid block (terminal added) drawn layer by layer, so hypothesis shrinks a failing
    block towards fewer layers, convolutions and earlier predecessors (a drawn seed would
    shrink to another unrelated block)."""
    n = draw(st.integers(min_value=1, max_value=max_depth - 1))
    rows = []
    for i in range(1, n + 1):
        # two different earlier layers exist from layer 2 on
        types = [t for t in LayerType if t is not LayerType.TERMINAL and (t.arity == 1 or i > 1)]
        t = draw(st.sampled_from(types))
        k = draw(st.sampled_from(KERNELS[t]))
        p1 = draw(st.integers(min_value=0, max_value=i - 1))
        p2 = 0
        if t.arity == 2:
            p2 = draw(st.integers(min_value=0, max_value=i - 2))
            p2 += p2 >= p1  # any earlier layer but p1
        rows.append((i, int(t), k, p1, p2))
    return Block.from_tuples(rows, max_depth=max_depth)


def relabel(block: Block, rng: random.Random) -> Block:
    """The same network with layers renumbered by a random topological order and the
    operands of add and concat possibly swapped (not those of an ordered concat, whose
    order decides the network: `Block.ordered_concats`)."""
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
            if old not in block.ordered_concats:
                rng.shuffle(preds)
        else:
            preds.append(0)
        rows.append((placed[old], int(layer.type), layer.kernel, preds[0], preds[1]))
    return Block.from_tuples(rows, max_depth=block.max_depth)


def write_nb201_table(path: Path) -> Path:
    """A made-up table of every NAS-Bench-201 cell: 40% plus 8 points per live 3x3 conv and
    3 per live 1x1 conv (read from the cell's identity, so cells computing the same function
    agree), plus up to 2 points of hash noise. Gzip-compressed CSV, the real table's layout."""
    from blockqnn.space.nb201 import DATASETS, OPS, Cell

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*DATASETS.values(), "ArchitectureString", "UniqueString"])
    for ix in itertools.product(range(len(OPS)), repeat=6):
        cell = Cell.from_indices(ix)
        unique = cell.canonical
        noise = int(hashlib.sha256(unique.encode()).hexdigest()[:4], 16) / 0xFFFF * 2
        acc = 40 + 8 * unique.count("nor_conv_3x3") + 3 * unique.count("nor_conv_1x1") + noise
        writer.writerow([f"{min(acc, 100):.3f}", f"{acc / 2:.3f}", f"{acc / 3:.3f}", cell, unique])
    path.write_bytes(gzip.compress(out.getvalue().encode()))
    return path


def synthetic_reward(block: Block, rng: random.Random) -> float:
    """A learnable stand-in for accuracy: many 3x3 convolutions good, pooling bad; plus noise."""
    n3 = sum(1 for layer in block.layers if layer.type == 1 and layer.kernel == 3)
    pools = sum(1 for layer in block.layers if layer.type in (2, 3))
    return 0.3 + 0.07 * n3 - 0.08 * pools + rng.gauss(0.0, 0.02)
