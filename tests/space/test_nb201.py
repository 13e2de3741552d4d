"""NAS-Bench-201 space: cell notation, the benchmark's identity, paths, mutation, the table
and the tabular evaluator."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.table import TableEvaluator, make_evaluator
from blockqnn.reward import make_reward, score
from blockqnn.settings.config import Config
from blockqnn.space.base import Space, distinct_count, parse_path_rows, path_text
from blockqnn.space.nb201 import (
    DATASETS,
    EDGES,
    OPS,
    START,
    Cell,
    NB201Space,
    make_space,
)
from blockqnn.space.nb201_table import load_table
from blockqnn.space.nsc.space import NSCSpace

TABLE = Path(__file__).parents[3] / "shared/data/nats-tss-200epoch-accuracy.csv.gz"
EXAMPLE = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
    "skip_connect~2|"
)
HEADER = [*DATASETS.values(), "ArchitectureString", "UniqueString"]
ALL_CELLS = [Cell.from_indices(ix) for ix in itertools.product(range(5), repeat=6)]


def _real_rows() -> list[dict[str, str]]:
    if not TABLE.is_file():
        pytest.skip(f"{TABLE} is absent")
    with gzip.open(TABLE, "rt", newline="") as f:
        return list(csv.DictReader(f))


def _cell(*ops: str) -> Cell:
    return Cell(tuple(ops))


# ----- notation -------------------------------------------------------------------------


def test_parse_example_and_format() -> None:
    cell = Cell.parse(EXAMPLE)
    assert cell.ops == (
        "nor_conv_3x3",
        "nor_conv_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "nor_conv_3x3",
        "skip_connect",
    )
    assert str(cell) == EXAMPLE
    assert Cell.parse(f"  {EXAMPLE}\n") == cell
    assert cell.edges() == [(s, d, op) for (s, d), op in zip(EDGES, cell.ops, strict=True)]
    assert cell.edges()[2] == (1, 2, "avg_pool_3x3")
    assert cell.indices == (3, 3, 4, 1, 3, 1)


def test_round_trip_every_cell() -> None:
    assert len(set(ALL_CELLS)) == 5**6
    for cell in ALL_CELLS:
        assert Cell.parse(str(cell)) == cell
        assert Cell.from_indices(cell.indices) == cell


def test_cell_is_immutable() -> None:
    cell = Cell.parse(EXAMPLE)
    with pytest.raises(AttributeError):
        cell.ops = ("none",) * 6  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "3 nodes"),
        ("|none~0|+|none~0|none~1|", "3 nodes separated by '+', got 2"),
        (EXAMPLE + "+|none~0|", "got 4"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
        ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "must read node 1"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must read node 0"),
        ("|none~x|+|none~0|none~1|+|none~0|none~1|none~2|", "must read node 0"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 has 1 edges, must have 2"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|none~3|", "node 3 has 4 edges"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must be written |op~i|"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2", "must be written |op~i|"),
        ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "is not op~input"),
        ("|None~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'None'"),
    ],
)
def test_parse_rejects(text: str, reason: str) -> None:
    with pytest.raises(BlockQNNError) as info:
        Cell.parse(text)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message


def test_parse_cuts_long_input_and_rejects_non_text() -> None:
    with pytest.raises(BlockQNNError) as info:
        Cell.parse("|none~0|" + "x" * 1000)
    assert len(str(info.value)) < 200
    with pytest.raises(BlockQNNError, match="must be a string"):
        Cell.parse(42)  # type: ignore[arg-type]


def test_constructors_validate() -> None:
    with pytest.raises(BlockQNNError, match="6 edge ops"):
        Cell(("none",) * 5)
    with pytest.raises(BlockQNNError, match="unknown op 'conv'"):
        Cell(("none",) * 5 + ("conv",))
    with pytest.raises(BlockQNNError, match="op indices"):
        Cell.from_indices((0, 0, 0, 0, 0, 5))


# ----- identity ---------------------------------------------------------------------------


def test_canonical_is_the_tables_unique_string() -> None:
    """Stronger than the partition: our canonical text is the benchmark's own string."""
    rows = _real_rows()
    assert len(rows) == 5**6
    for row in rows:
        assert Cell.parse(row["ArchitectureString"]).canonical == row["UniqueString"], row


def test_hash_partition_equals_unique_string_partition() -> None:
    rows = _real_rows()
    by_unique: dict[str, set[str]] = {}
    by_hash: dict[str, set[str]] = {}
    for row in rows:
        h = Cell.parse(row["ArchitectureString"]).hash
        by_unique.setdefault(row["UniqueString"], set()).add(h)
        by_hash.setdefault(h, set()).add(row["UniqueString"])
    assert all(len(v) == 1 for v in by_unique.values())  # equal UniqueString => equal hash
    assert all(len(v) == 1 for v in by_hash.values())  # equal hash => equal UniqueString
    assert len(by_unique) == len(by_hash) == 6466


def test_hash_form() -> None:
    cell = Cell.parse(EXAMPLE)
    assert len(cell.hash) == 32 and int(cell.hash, 16) >= 0
    assert cell.canonical == "((0)@nor_conv_3x3)@avg_pool_3x3+(0)@nor_conv_3x3+" + (
        "((0)@nor_conv_3x3)@nor_conv_3x3+0"
    )
    assert len({c.hash for c in ALL_CELLS}) == 6466


def test_the_space_counts_its_distinct_cells_the_most_a_search_trains() -> None:
    space = NB201Space()
    assert space.count() == 15_625  # paths
    assert space.distinct_count() == len({c.hash for c in ALL_CELLS}) == 6466
    assert distinct_count(space) == 6466
    assert distinct_count(NSCSpace(max_depth=2)) == NSCSpace(max_depth=2).count()  # its own


def test_dead_nodes_do_not_matter() -> None:
    # Node 1 feeds nothing (edges 2<-1 and 3<-1 are none): its op is irrelevant.
    dead1 = {
        _cell(op, "nor_conv_3x3", "none", "skip_connect", "none", "avg_pool_3x3") for op in OPS
    }
    assert len({c.hash for c in dead1}) == 1
    # Node 2 feeds nothing (edge 3<-2 is none): whatever it computes is irrelevant.
    dead2 = {
        _cell("nor_conv_1x1", a, b, "nor_conv_3x3", "skip_connect", "none")
        for a, b in itertools.product(OPS, OPS)
    }
    assert len({c.hash for c in dead2}) == 1


def test_output_is_a_multiset_of_terms() -> None:
    # conv3(x) + conv1(x) written two ways: the direct edge and the one through node 1 swap.
    a = _cell("nor_conv_1x1", "none", "none", "nor_conv_3x3", "skip_connect", "none")
    b = _cell("nor_conv_3x3", "none", "none", "nor_conv_1x1", "skip_connect", "none")
    assert a.hash == b.hash and a != b
    # skip_connect is the identity: skip(node1) where node1 = skip(x) is x.
    c = _cell("skip_connect", "none", "none", "none", "skip_connect", "none")
    d = _cell("none", "none", "none", "skip_connect", "none", "none")
    assert c.hash == d.hash
    # Different ops are different functions.
    assert a.hash != _cell(*a.ops[:3], "avg_pool_3x3", *a.ops[4:]).hash


def test_benchmark_conventions_kept() -> None:
    """The benchmark's identity is finer than "same function" in documented ways."""
    # x via one skip and two none edges, vs one skip, one none and a node 2 of two nones.
    x1 = _cell("none", "none", "none", "skip_connect", "none", "none")
    x2 = _cell("none", "none", "none", "skip_connect", "none", "skip_connect")
    assert (x1.canonical, x2.canonical) == ("#+#+0", "#+#+#+0")
    assert x1.hash != x2.hash
    # A node fed by two none edges is not zero to the ops reading it.
    z = _cell("none", "none", "none", "none", "none", "nor_conv_3x3")
    assert z.canonical == "#+#+(#+#)@nor_conv_3x3"
    # Node 1 is: an op on a zero node 1 is zero.
    assert _cell("none", "none", "none", "none", "nor_conv_3x3", "none").canonical == "#+#+#"


# ----- the space ------------------------------------------------------------------------


def test_space_protocol_and_actions() -> None:
    space = make_space(SimpleNamespace())  # type: ignore[arg-type]
    assert isinstance(space, Space)
    assert space == NB201Space() and hash(space) == hash(NB201Space())
    assert space.name == "nb201" and space.start == START == (0, 0)
    assert space.evaluator == "blockqnn.evaluate.table:make_evaluator"
    assert space.needs_data is False
    assert space.count() == 15625
    json.dumps(space.settings())
    state: tuple[int, ...] = space.start
    for step in range(1, 7):
        actions = space.actions(state)
        assert actions == tuple((step, k) for k in range(5))
        assert [space.is_terminal(a) for a in actions] == [step == 6] * 5
        assert all(space.is_action(state, list(a)) for a in actions)
        assert not space.is_action(state, (step + 1, 0))
        state = actions[2]
    assert not space.is_action((6, 0), (7, 0))
    assert not space.is_action((9, 9), (1, 0))
    assert space.intern([3, 4]) == (3, 4) and space.intern([3, 4]) is space.intern((3, 4))
    assert space.intern([3, 5]) is None and space.intern([7, 0]) is None
    assert space.intern([[1], 2]) is None  # type: ignore[list-item]


def test_every_path_round_trips() -> None:
    space = NB201Space()
    for cell in ALL_CELLS:
        path = space.path_of(cell)
        assert space.to_candidate(path) == cell
        assert space.check_path(parse_path_rows(path_text(path))) == path
    p = space.sample(random.Random(1))
    assert space.path_of(space.to_candidate(p)) == p
    with pytest.raises(BlockQNNError, match="not an nb201 cell"):
        space.path_of("|none~0|")


def test_sample_is_valid_and_uniform_per_step() -> None:
    space = NB201Space()
    rng = random.Random(0)
    paths = [space.sample(rng) for _ in range(5000)]
    for p in paths:
        assert space.check_path(p) == p
        assert space.to_candidate(p).ops == tuple(OPS[a[1]] for a in p)
    per_edge = Counter((i, a[1]) for p in paths for i, a in enumerate(p))
    assert all(800 < per_edge[(i, k)] < 1200 for i in range(6) for k in range(5))


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)], "6 steps, got 5"),
        ([], "6 steps, got 0"),
        ([(1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0)], "step 7"),
        ([(1, 0), (3, 0), (3, 0), (4, 0), (5, 0), (6, 0)], "step 2"),
        ([(1, 0), (2, 5), (3, 0), (4, 0), (5, 0), (6, 0)], "step 2"),
        ([(1, 0), (2, 0, 0), (3, 0), (4, 0), (5, 0), (6, 0)], "step 2"),
        ([(1, 0), 7, (3, 0), (4, 0), (5, 0), (6, 0)], "step 2"),
        ([(0, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0)], "step 1"),
    ],
)
def test_check_path_rejects(rows: list[object], reason: str) -> None:
    with pytest.raises(BlockQNNError, match=reason):
        NB201Space().check_path(rows)  # type: ignore[arg-type]


def test_mutate_changes_one_edge_and_the_hash() -> None:
    space = NB201Space()
    rng = random.Random(3)
    for cell in ALL_CELLS[::7]:
        mutant = space.mutate(cell, rng)
        assert sum(a != b for a, b in zip(cell.ops, mutant.ops, strict=True)) == 1
        assert mutant.hash != cell.hash
    # Deterministic for a seed.
    cell = Cell.parse(EXAMPLE)
    assert space.mutate(cell, random.Random(5)) == space.mutate(cell, random.Random(5))
    # From the all-none cell only 8 of the 24 changes alter the hash; all are reachable.
    empty = _cell(*["none"] * 6)
    seen = {space.mutate(empty, rng) for _ in range(400)}
    assert len(seen) == 8 and all(m.hash != empty.hash for m in seen)


def test_module_does_not_import_torch() -> None:
    code = "import sys, blockqnn.space.nb201; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----- the table ------------------------------------------------------------------------


def _write(path: Path, rows: list[list[str]], header: list[str] = HEADER, gz: bool = False) -> Path:
    lines = [",".join(header), *(",".join(r) for r in rows)]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _row(cell: Cell, acc: str = "90.5") -> list[str]:
    return [acc, "70.25", "40.0", str(cell), cell.canonical]


CELL_A = Cell.parse(EXAMPLE)
CELL_B = _cell(*["skip_connect"] * 6)


@pytest.mark.parametrize("gz", [False, True])
def test_small_table_plain_and_gzip(tmp_path: Path, gz: bool) -> None:
    # The gzip copy is named .csv: the magic bytes decide, not the extension.
    path = _write(tmp_path / "t.csv", [_row(CELL_A), _row(CELL_B, "91")], gz=gz)
    table = load_table(path)
    assert len(table) == 2 and CELL_A in table and _cell(*["none"] * 6) not in table
    assert table.accuracy(CELL_A, "cifar10") == 90.5
    assert table.accuracy(CELL_A, "CIFAR100") == 70.25
    assert table.accuracy(CELL_B, "imagenet16-120") == 40.0
    assert table.optimum("cifar10") == 91.0
    with pytest.raises(BlockQNNError, match="no row for the cell"):
        table.accuracy(_cell(*["none"] * 6), "cifar10")
    with pytest.raises(BlockQNNError, match="cifar10, cifar100, imagenet16-120"):
        table.accuracy(CELL_A, "svhn")


def test_table_without_unique_string_and_extra_columns(tmp_path: Path) -> None:
    header = ["Extra", *DATASETS.values(), "ArchitectureString"]
    path = _write(tmp_path / "t.csv", [["x", "1", "2", "3", str(CELL_A)]], header=header)
    assert load_table(str(path)).accuracy(CELL_A, "imagenet16-120") == 3.0


def test_table_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", [_row(CELL_A)])
    first = load_table(path)
    assert load_table(str(path)) is first
    _write(path, [_row(CELL_A, "12.5"), _row(CELL_B)])
    os.utime(path, ns=(1, 1))  # a new mtime even on coarse clocks
    second = load_table(path)
    assert second is not first and second.accuracy(CELL_A, "cifar10") == 12.5


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([_row(CELL_A), _row(CELL_B, "abc")], "line 3: CIFAR10TestAccuracy200Epochs = 'abc' is"),
        ([_row(CELL_A, "nan")], "line 2: CIFAR10TestAccuracy200Epochs = nan is not finite"),
        ([_row(CELL_A, "inf")], "line 2: .* is not finite"),
        ([_row(CELL_A, "100.5")], "line 2: .* not a percentage"),
        ([_row(CELL_A)[:4]], "line 2: 4 fields, the header has 5"),
        ([_row(CELL_A), [*_row(CELL_B), "x"]], "line 3: 6 fields"),
        ([["1", "2", "3", "|none~0|+|bad", "u"]], "line 2: ArchitectureString: .*3 nodes"),
        ([_row(CELL_A), _row(CELL_B), _row(CELL_A)], "line 4: the architecture .* repeats line 2"),
        ([], "no rows after the header"),
    ],
)
def test_table_rejects_rows(tmp_path: Path, rows: list[list[str]], reason: str) -> None:
    path = _write(tmp_path / "t.csv", rows)
    with pytest.raises(BlockQNNError, match=f"^table {re.escape(str(path))}.*{reason}") as info:
        load_table(path)
    assert "\n" not in str(info.value)


def test_table_rejects_files(tmp_path: Path) -> None:
    with pytest.raises(BlockQNNError, match="no such file"):
        load_table(tmp_path / "missing.csv")
    with pytest.raises(BlockQNNError, match="not a file"):
        load_table(tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(BlockQNNError, match="empty"):
        load_table(empty)
    header = [h for h in HEADER if h != "CIFAR100TestAccuracy200Epochs"]
    lacking = _write(tmp_path / "cols.csv", [_row(CELL_A)[:1] + _row(CELL_A)[2:]], header=header)
    with pytest.raises(BlockQNNError, match="no column 'CIFAR100TestAccuracy200Epochs'"):
        TableEvaluator(str(lacking), "cifar100")
    with pytest.raises(BlockQNNError, match="no column 'ArchitectureString'"):
        load_table(_write(tmp_path / "arch.csv", [], header=HEADER[:3]))
    with pytest.raises(BlockQNNError, match="no accuracy column"):
        load_table(_write(tmp_path / "acc.csv", [], header=HEADER[3:]))
    bad_gz = tmp_path / "bad.csv.gz"
    bad_gz.write_bytes(b"\x1f\x8b" + b"\x00junk" * 20)
    with pytest.raises(BlockQNNError, match=f"table {re.escape(str(bad_gz))}: cannot read it"):
        load_table(bad_gz)
    truncated = tmp_path / "trunc.csv.gz"
    truncated.write_bytes(gzip.compress(b"a,b\n" * 100)[:-6])
    with pytest.raises(BlockQNNError, match="cannot read it"):
        load_table(truncated)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(BlockQNNError, match="not UTF-8 text"):
        load_table(binary)
    nul = tmp_path / "nul.csv"
    nul.write_bytes(",".join(HEADER).encode() + b"\n1,2,\x003,x,y\n")
    with pytest.raises(BlockQNNError, match=f"table {re.escape(str(nul))}"):
        load_table(nul)


def test_real_table() -> None:
    _real_rows()
    table = load_table(TABLE)
    assert len(table) == 15625
    assert round(table.optimum("cifar10"), 2) == 94.37
    assert round(table.optimum("cifar100"), 2) == 73.51
    assert round(table.optimum("imagenet16-120"), 2) == 47.31
    assert round(table.accuracy(Cell.parse(EXAMPLE), "cifar10"), 2) == 93.66


# ----- the evaluator --------------------------------------------------------------------

PAPER = make_reward(Config())  # the master's default reward


def _config(table: object, dataset: str = "cifar10") -> SimpleNamespace:
    return SimpleNamespace(data=SimpleNamespace(table=table, dataset=dataset))


def test_evaluator_on_a_small_table(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", [_row(CELL_A), _row(CELL_B, "91")])
    evaluator = make_evaluator(_config(str(path)), None, "cpu")  # type: ignore[arg-type]
    result = evaluator.evaluate(CELL_A)
    assert result.ok and result.accuracy == pytest.approx(0.905) and result.reward is None
    assert score(PAPER, result).reward == 0.905  # no cost reported: the reward is the accuracy
    assert (result.device, result.mode, result.epochs) == ("table", "table lookup", 200)
    missing = evaluator.evaluate(_cell(*["none"] * 6))
    assert not missing.ok and "not in the table" in missing.error
    assert TableEvaluator(str(path), "cifar100").evaluate(CELL_B).accuracy == 0.7025


def test_make_evaluator_needs_a_table() -> None:
    for config in (_config(""), SimpleNamespace(data=SimpleNamespace(dataset="cifar10"))):
        with pytest.raises(BlockQNNError, match=r"needs a table: --table FILE"):
            make_evaluator(config, None, None)  # type: ignore[arg-type]


def test_evaluator_rejects_unknown_dataset(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", [_row(CELL_A)])
    with pytest.raises(BlockQNNError, match="use one of: cifar10, cifar100, imagenet16-120"):
        TableEvaluator(str(path), "mnist")


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_evaluator_on_every_cell_of_the_real_table(dataset: str) -> None:
    _real_rows()
    evaluator = make_evaluator(_config(str(TABLE), dataset), None, None)  # type: ignore[arg-type]
    results = [evaluator.evaluate(cell) for cell in ALL_CELLS]
    assert all(r.ok and 0.0 <= r.accuracy <= 1.0 for r in results)
    assert all(score(PAPER, r).reward == r.accuracy for r in results)
    best = max(r.accuracy for r in results)
    assert math.isclose(best * 100, evaluator.table.optimum(dataset))
