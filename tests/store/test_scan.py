"""`Store.reading()`: the trials streamed from one consistent read, every row verified as
`Store.trials()` verifies it, the JSON texts a run repeats decoded once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.result import EvalResult
from blockqnn.settings.config import Config, merge
from blockqnn.space.nsc.block import Block
from blockqnn.store import scan
from blockqnn.store.db import DB_NAME, Store
from blockqnn.store.scan import JsonMemo

A = Block.parse("1,1,3,0,0; 2,7,0,0,0")
B = Block.parse("1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,7,0,0,0")


def _result(accuracy: float) -> EvalResult:
    return EvalResult("ok", accuracy, accuracy, flops=10, params=3, metrics={"m": 1.0})


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """Two trained trials and five reused copies of the first, one a warm-start's kind."""
    path = tmp_path / "run"
    with Store.create(path, merge(Config(), {"search": {"budget": 2}})) as store:
        store.acquire()
        store.begin_session()
        for i, block in enumerate((A, B)):
            trial_id = store.add_trial(block, {"epsilon": 1.0}, ask_seq=2 * i + 1)
            store.finish(trial_id, _result(0.5 + i / 10), 0.5 + i / 10, "w0", 2 * i + 2)
        source = store.trial(1)
        for i in range(5):
            store.add_reused(A, {"epsilon": 0.9}, source, 10 + 2 * i, 11 + 2 * i)
        store.end_session("complete")
    return path


def test_streamed_trials_are_the_listed_ones(run: Path) -> None:
    with Store.open(run, readonly=True) as store, store.reading() as reading:
        listed = store.trials()
        assert list(reading.trials()) == listed
        assert list(reading.trials(check=False)) == listed
        assert list(reading.trials(["complete"])) == store.trials("complete")
        seen = list(reading.scan())
        assert [reading.record(s) for s in seen] == listed
        assert [(s.id, s.status, s.reward, s.info) for s in seen] == [
            (t.id, t.status, t.reward, t.info) for t in listed
        ]
        # the reused copies share their original's decoded result: one object, not six
        assert len({id(s.result) for s in seen if s.result is not None}) == 2


def test_a_damaged_row_is_refused_by_the_scan_as_by_every_read(run: Path) -> None:
    conn = sqlite3.connect(run / DB_NAME)
    conn.execute("UPDATE trials SET reward = 0.99 WHERE id = 6")  # unsealed: a flipped value
    conn.commit()
    conn.close()
    with Store.open(run, readonly=True) as store, store.reading() as reading:
        for read in (reading.scan, reading.trials, store.trials):
            with pytest.raises(BlockQNNError, match="damaged: trial 6 does not match its"):
                list(read())


def test_a_reading_is_one_snapshot_while_a_search_writes(run: Path) -> None:
    """The second pass of `trials --csv` reads the rows the first verified, whatever a
    running search commits in between; the next reading sees the new row."""
    writer = Store.open(run, acquire=True)
    try:
        writer.begin_session()
        with Store.open(run, readonly=True) as store:
            with store.reading() as reading:
                first = [s.id for s in reading.scan()]
                writer.add_reused(A, {"epsilon": 0.9}, writer.trial(1), 30, 31)
                assert [t.id for t in reading.trials(check=False)] == first
                assert store.counts()["reused"] == len(first) - 2
            with store.reading() as reading:
                assert [s.id for s in reading.scan()] == [*first, first[-1] + 1]
    finally:
        writer.close()


def test_the_memo_decodes_each_text_once_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memo = JsonMemo()
    first = memo('{"a": [1, 2]}', "x")
    assert memo('{"a": [1, 2]}', "x") is first == {"a": [1, 2]}
    with pytest.raises(BlockQNNError, match="damaged: trial 9's info is not readable JSON"):
        memo('{"a": ', "trial 9's info")
    with pytest.raises(BlockQNNError, match="not readable JSON"):
        memo(b"\xff", "x")  # a blob: SQLite gives bytes, never decoded as text
    monkeypatch.setattr(scan, "MEMO_SIZE", 3)
    small = JsonMemo()
    for i in range(10):
        assert small(str(i), "x") == i
        assert len(small._values) <= 3
