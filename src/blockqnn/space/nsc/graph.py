"""Canonical form and hash of a block's graph, on plain data.

Owns: the exact isomorphism-invariant form that keys blocks everywhere (store, replay memory,
reward cache, file names). Must not import torch, nor anything of this package: like
nasbench's `graph_util`, it works on node labels and edge lists, and `blockqnn.space.nsc.block`
hands it those (a block's graph: node 0 the input, 1..n its layers, n+1 the output).

How it works. The block is a DAG: node 0 is the input, nodes 1..n the computing layers,
node n+1 the output (fed by every unconsumed layer). Each node is labelled by its type and
kernel; predecessor order does not matter (add is commutative, a concat feeding a convolution
or the projected output is too). Where a concat's operand order does decide the network,
`Block` passes its operands through two labelled port nodes, so the order is in the graph.
The canonical form is computed by individualisation-refinement, the method of
graph-canonisation tools such as nauty:

1. Colour refinement (1-dimensional Weisfeiler-Lehman on in- and out-neighbours) splits nodes
   into classes until stable. Colours are ranks of sorted signatures, so they never depend on
   how the layers were numbered.
2. If a class still holds several nodes, each is tried in turn as "first" (individualised),
   refinement runs again, and the search recurses. Nodes with the same predecessors and
   successors ("twins") are interchangeable by an automorphism, so only one of each twin group
   is tried: this keeps blocks of many parallel identical branches cheap.
3. Every leaf orders all nodes; its encoding is (labels in that order, sorted edge list). The
   smallest encoding over all leaves is the canonical form. Isomorphic graphs reach the same
   set of leaf encodings, so they get the same form, and the form determines the graph, so
   different graphs never share it (unlike a plain WL hash, which confuses e.g. regular
   graphs).

Blocks have at most ~10 nodes, so this takes well under a millisecond for typical blocks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

Encoding = tuple[tuple[str, ...], tuple[tuple[int, int], ...]]
Edges = Sequence[tuple[int, int]]


def refine(colors: list[int], preds: list[list[int]], succs: list[list[int]]) -> list[int]:
    """Split colour classes by neighbour colours until stable; returns dense canonical colours."""
    n_classes = len(set(colors))
    while True:
        sigs = [
            (
                colors[v],
                tuple(sorted(colors[p] for p in preds[v])),
                tuple(sorted(colors[s] for s in succs[v])),
            )
            for v in range(len(colors))
        ]
        ranking = {sig: rank for rank, sig in enumerate(sorted(set(sigs)))}
        colors = [ranking[sig] for sig in sigs]
        if len(ranking) == n_classes:
            return colors
        n_classes = len(ranking)


def _search(
    colors: list[int],
    labels: list[str],
    edges: list[tuple[int, int]],
    preds: list[list[int]],
    succs: list[list[int]],
) -> tuple[Encoding, list[int]]:
    colors = refine(colors, preds, succs)
    n = len(colors)
    if len(set(colors)) == n:
        order = sorted(range(n), key=colors.__getitem__)
        enc_labels = tuple(labels[v] for v in order)
        enc_edges = tuple(sorted((colors[a], colors[b]) for a, b in edges))
        return (enc_labels, enc_edges), colors
    # The first non-singleton class, chosen by colour: canonical, not numbering-dependent.
    counts: dict[int, int] = {}
    for c in colors:
        counts[c] = counts.get(c, 0) + 1
    cell_color = min(c for c, k in counts.items() if k > 1)
    cell = [v for v in range(n) if colors[v] == cell_color]
    representatives: dict[tuple[frozenset[int], frozenset[int]], int] = {}
    for v in cell:
        representatives.setdefault((frozenset(preds[v]), frozenset(succs[v])), v)
    best: tuple[Encoding, list[int]] | None = None
    for v in representatives.values():
        split = [2 * c + (1 if c == cell_color and u != v else 0) for u, c in enumerate(colors)]
        result = _search(split, labels, edges, preds, succs)
        if best is None or result[0] < best[0]:
            best = result
    assert best is not None
    return best


def canonical_encoding(labels: Sequence[str], edges: Edges) -> tuple[Encoding, list[int]]:
    """The canonical encoding of the graph with these node labels and directed edges, and
    each node's canonical rank (a permutation of 0..len(labels) - 1)."""
    labels = list(labels)
    n = len(labels)
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    ranking = {label: rank for rank, label in enumerate(sorted(set(labels)))}
    return _search([ranking[label] for label in labels], labels, list(edges), preds, succs)


def canonical_form(labels: Sequence[str], edges: Edges) -> str:
    """A string that is equal for two graphs exactly when they are isomorphic (labels kept)."""
    (enc_labels, enc_edges), _ = canonical_encoding(labels, edges)
    return " ".join(enc_labels) + " | " + " ".join(f"{a}>{b}" for a, b in enc_edges)


def hash_form(form: str) -> str:
    """The block hash: 32 hex digits (128 bits) of SHA-256 over the canonical form."""
    return hashlib.sha256(form.encode()).hexdigest()[:32]


def canonical_order(preds: Mapping[int, Sequence[int]], ranks: Sequence[int]) -> list[int]:
    """The nodes of `preds` (each node's predecessors; node 0, the input, is placed already)
    in topological order, always taking the ready node of smallest canonical rank: the order
    in which the canonical representative numbers them."""
    placed: list[int] = []
    done = {0}
    ready = sorted(preds, key=lambda i: ranks[i])
    while len(placed) < len(preds):
        for i in ready:
            if i not in done and all(p in done for p in preds[i]):
                done.add(i)
                placed.append(i)
                break
    return placed
