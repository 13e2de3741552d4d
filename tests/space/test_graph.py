"""The isomorphism-invariant hash, tested as nasbench tests its own: random relabelings of
many random blocks, and non-isomorphic pairs that naive hashes confuse."""

from __future__ import annotations

import random

import pytest
from tests.strategies import random_rows, relabel

from blockqnn import Block
from blockqnn.space.nsc.graph import canonical_form, hash_form, refine


def test_relabelings_of_random_blocks_share_the_hash() -> None:
    rng = random.Random(0)
    for _ in range(1000):
        block = Block.from_tuples(random_rows(rng, rng.randint(1, 9)))
        twin = relabel(block, rng)
        assert twin.hash == block.hash, (str(block), str(twin))
        assert twin.canonical() == block.canonical()


# Two width-matched concats summed by an add: which operand comes first decides which
# channels are summed, so A ([conv1 + conv5, conv3 + pool]) and B ([conv1 + pool,
# conv3 + conv5]) are different networks although their graphs are isomorphic.
ORDERED_A = "1,1,1,0,0; 2,1,3,0,0; 3,1,5,0,0; 4,2,3,0,0; 5,6,0,1,2; 6,6,0,3,4; 7,5,0,5,6"
ORDERED_B = "1,1,1,0,0; 2,1,3,0,0; 3,2,3,0,0; 4,1,5,0,0; 5,6,0,1,2; 6,6,0,3,4; 7,5,0,5,6"


def test_a_concat_whose_operand_order_decides_the_network_is_ordered() -> None:
    a, b = Block.parse(ORDERED_A), Block.parse(ORDERED_B)
    assert a.ordered_concats == b.ordered_concats == {5, 6}
    assert a.hash != b.hash
    assert a.canonical().hash == a.hash and b.canonical().hash == b.hash
    assert str(b.canonical()).startswith(
        "1,1,1,0,0; 2,1,3,0,0; 3,1,5,0,0; 4,2,3,0,0; 5,6,0,1,2; 6,6,0,4,3"
    )
    # the class representative keeps the hash it always had (stored runs and caches)
    assert a.hash == hash_form(canonical_form(a.labels, a.edges))
    # a concat feeding a convolution or the projected output is commutative as before
    plain = Block.parse("1,1,3,0,0; 2,2,3,0,0; 3,6,0,1,2; 4,1,3,3,0")
    assert not plain.ordered_concats
    assert plain.hash == Block.parse("1,1,3,0,0; 2,2,3,0,0; 3,6,0,2,1; 4,1,3,3,0").hash


def test_canonical_block_is_a_fixed_point() -> None:
    rng = random.Random(1)
    for _ in range(200):
        block = Block.from_tuples(random_rows(rng, rng.randint(1, 9)))
        canon = block.canonical()
        assert canon.hash == block.hash
        assert canon.canonical() == canon


def test_distinct_graphs_get_distinct_hashes() -> None:
    # Over many random blocks, equal hashes must mean equal canonical forms (isomorphic).
    rng = random.Random(2)
    by_hash: dict[str, str] = {}
    for _ in range(3000):
        block = Block.from_tuples(random_rows(rng, rng.randint(1, 5)))
        form = canonical_form(block.labels, block.edges)
        assert by_hash.setdefault(block.hash, form) == form
    assert len(by_hash) > 1000  # the space is large: most random blocks differ


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # Same layer multiset and same degrees, different wiring (a WL-style counterexample
        # for hashes that look only at labels and degree counts).
        (
            "1,1,3,0,0; 2,1,5,0,0; 3,1,3,1,0; 4,1,5,2,0; 5,5,0,3,4",
            "1,1,3,0,0; 2,1,5,0,0; 3,1,5,1,0; 4,1,3,2,0; 5,5,0,3,4",
        ),
        # Operand order does not matter, but which layer feeds which does.
        ("1,1,3,0,0; 2,2,3,1,0; 3,6,0,0,2", "1,1,3,0,0; 2,2,3,0,0; 3,6,0,1,2"),
        # Shared vs duplicated computation: one conv feeding two pools vs two convs.
        ("1,1,3,0,0; 2,2,3,1,0; 3,3,3,1,0", "1,1,3,0,0; 2,1,3,0,0; 3,2,3,1,0; 4,3,3,2,0"),
        # Add vs concat, max vs avg pool, kernel sizes.
        ("1,1,3,0,0; 2,5,0,0,1", "1,1,3,0,0; 2,6,0,0,1"),
        ("1,2,3,0,0", "1,3,3,0,0"),
        ("1,1,1,0,0", "1,1,3,0,0"),
        # Two parallel 2-chains vs one 4-chain (same labels and degree sequence inside).
        (
            "1,1,3,0,0; 2,1,3,1,0; 3,1,3,0,0; 4,1,3,3,0",
            "1,1,3,0,0; 2,1,3,1,0; 3,1,3,2,0; 4,1,3,0,0",
        ),
        # A chain of identities of different lengths ending in the same op.
        ("1,4,0,0,0; 2,1,3,1,0", "1,4,0,0,0; 2,4,0,1,0; 3,1,3,2,0"),
    ],
)
def test_known_non_isomorphic_pairs(a: str, b: str) -> None:
    assert Block.parse(a).hash != Block.parse(b).hash


def _wl_histogram(block: Block) -> list[int]:
    """Colour classes after plain 1-WL refinement (no individualisation), sorted."""
    labels = ["in"] + [f"{int(la.type)}:{la.kernel}" for la in block.layers] + ["out"]
    n = len(labels)
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for a, b in block.edges:
        preds[b].append(a)
        succs[a].append(b)
    rank = {la: r for r, la in enumerate(sorted(set(labels)))}
    colors = refine([rank[la] for la in labels], preds, succs)
    return sorted(colors)


def test_regular_graph_counterexample_to_plain_wl() -> None:
    # Four convs and four adds, each add reading two convs and each conv read by two adds:
    # one 8-ring vs two 4-rings. 1-WL colour refinement sees identical graphs; the
    # individualisation step of the canonical form must separate them.
    convs = "1,1,3,0,0; 2,1,3,0,0; 3,1,3,0,0; 4,1,3,0,0"
    ring8 = Block.parse(convs + "; 5,5,0,1,2; 6,5,0,2,3; 7,5,0,3,4; 8,5,0,4,1")
    two_rings = Block.parse(convs + "; 5,5,0,1,2; 6,5,0,1,2; 7,5,0,3,4; 8,5,0,3,4")
    assert _wl_histogram(ring8) == _wl_histogram(two_rings)
    assert ring8.hash != two_rings.hash


def test_hash_is_stable_text() -> None:
    # Golden values: the hash is the identity in stores on disk, so it must never change.
    assert Block.parse("1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2").hash == "23771642cd3c9be910aec2940761c528"
    assert Block.parse("1,1,3,0,0").hash == "eb61c3aee591bcf4b2b12fa38aec8be9"


def test_many_parallel_identical_branches_are_fast() -> None:
    # Nine interchangeable convs: twin pruning keeps the search linear, not 9!.
    block = Block.parse(";".join(f"{i},1,3,0,0" for i in range(1, 10)))
    assert block.hash == Block.parse(";".join(f"{i},1,3,0,0" for i in range(1, 10))).hash
