"""The run store: creation, refusal of foreign / newer / corrupt files, transitions, reads."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.result import EvalResult
from blockqnn.settings.config import Config, merge
from blockqnn.space.nsc.block import Block
from blockqnn.store.db import DB_NAME, SCHEMA_VERSION, AgentState, Store

A = Block.parse("1,1,3,0,0; 2,7,0,0,0")
B = Block.parse("1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,7,0,0,0")
CONFIG = merge(Config(), {"search": {"budget": 3}, "train": {"epochs": 1}})


def _ok(reward: float) -> EvalResult:
    return EvalResult(status="ok", accuracy=reward + 0.01, reward=reward, flops=10, params=3)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.create(tmp_path / "run", CONFIG)
    s.acquire()
    s.begin_session()
    return s


def test_create_saves_the_resolved_config(tmp_path: Path) -> None:
    with Store.create(tmp_path / "run", CONFIG) as s:
        assert s.config() == CONFIG
        assert s.meta()["schema_version"] == str(SCHEMA_VERSION)
    with Store.open(tmp_path / "run", readonly=True) as r:
        assert r.config().search.budget == 3
        assert r.trials() == []


def test_a_deleted_runs_write_ahead_log_is_not_replayed_into_a_new_run(tmp_path: Path) -> None:
    """Deleting only blockqnn.sqlite of a killed run leaves its -wal: SQLite would apply the
    old run's trials to a new database of that name, so the folder is refused as it is."""
    run = tmp_path / "run"
    old = Store.create(run, CONFIG)  # held open, as by a killed search: the log stays
    old.acquire()
    old.begin_session()
    old.add_trial(A, {}, ask_seq=1)
    (run / DB_NAME).unlink()
    left = sorted(p.name for p in run.iterdir())
    assert f"{DB_NAME}-wal" in left
    with pytest.raises(BlockQNNError, match=r"holds blockqnn.sqlite-wal, left by a run whose"):
        Store.create(run, CONFIG)
    assert sorted(p.name for p in run.iterdir()) == left
    old.close()


def test_a_dir_holding_a_run_is_refused_unchanged(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", CONFIG).close()
    before = (tmp_path / "run" / DB_NAME).read_bytes()
    with pytest.raises(BlockQNNError, match="already holds a run"):
        Store.create(tmp_path / "run", Config())
    assert (tmp_path / "run" / DB_NAME).read_bytes() == before


@pytest.mark.parametrize("make", ["missing", "empty_dir", "garbage", "foreign", "newer"])
def test_open_refuses_what_is_not_a_usable_run(tmp_path: Path, make: str) -> None:
    run = tmp_path / "run"
    if make != "missing":
        run.mkdir()
    db = run / DB_NAME
    if make == "garbage":
        db.write_bytes(b"this is not a database at all" * 100)
    elif make == "foreign":
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
    elif make == "newer":
        Store.create(run, CONFIG).close()
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.commit()
        conn.close()
    before = db.read_bytes() if db.exists() else None
    with pytest.raises(BlockQNNError) as info:
        Store.open(run)
    assert "\n" not in str(info.value)
    assert (db.read_bytes() if db.exists() else None) == before


def test_trial_lifecycle_snapshot_and_reads(store: Store) -> None:
    t1 = store.add_trial(A, info={"epsilon": 1.0}, ask_seq=1)
    t2 = store.add_trial(B, info={"epsilon": 0.9}, ask_seq=2)
    dup = store.add_trial(A, info={"epsilon": 0.9}, status="queued", reuse_of=t1, ask_seq=3)
    store.finish(t1, _ok(0.5), 0.5, "w1", 4, AgentState({"n": 1}, 5), duplicates=[(dup, 5)])
    store.finish(t2, EvalResult.failed("nan loss"), 0.0, "w2", 6)  # no snapshot this time
    reused = store.add_reused(A, {"epsilon": 0.8}, store.trial(t1), 7, 8, AgentState({"n": 3}, 8))

    trials = store.trials()
    assert [t.status for t in trials] == ["complete", "failed", "reused", "reused"]
    assert trials[0].worker == "w1" and trials[0].result is not None
    assert trials[1].error == "nan loss"
    assert trials[2].reuse_of == t1 and trials[2].reward == 0.5
    assert store.trial(reused).reuse_of == t1
    assert store.counts()["trained"] == 2 and store.counts()["reused"] == 2
    assert [t.id for t in store.top(5)] == [t1]
    assert [(t.ask_seq, t.tell_seq) for t in trials] == [(1, 4), (2, 6), (3, 5), (7, 8)]
    assert store.latest_snapshot() == AgentState({"n": 3}, 8)  # only the newest is kept
    assert store._conn.execute("SELECT COUNT(*) FROM agent_snapshots").fetchone()[0] == 1


def test_finished_trials_never_change(store: Store) -> None:
    t1 = store.add_trial(A, info={"epsilon": 1.0})
    store.finish(t1, _ok(0.5), 0.5, "w", 2, AgentState({}, 2))
    with pytest.raises(RuntimeError, match="complete"):
        store.finish(t1, _ok(0.9), 0.9, "w", 3, AgentState({}, 3))
    with pytest.raises(RuntimeError):
        store.requeue(t1, "lost", lost=True)
    assert store.trial(t1).reward == 0.5
    assert store.latest_snapshot() == AgentState({}, 2)  # the failed transaction rolled back


def test_requeue_interrupt_and_recover(store: Store) -> None:
    t1 = store.add_trial(A, info={"epsilon": 1.0})
    t2 = store.add_trial(B, info={"epsilon": 1.0})
    store.requeue(t1, "worker lost", lost=True)
    store.start(t1, "w2")
    assert store.trial(t1).attempts == 2 and store.trial(t1).lost == 1
    store.interrupt([t1])
    assert store.trial(t1).status == "interrupted"
    assert store.recover() == [t1, t2]  # t2 was left running, as after kill -9
    assert {t.status for t in store.trials()} == {"queued"}


class _InterruptedAfter:
    """A connection on which Ctrl-C is handled as the given statement returns (the signal
    arrived while SQLite ran it), or raising `error` instead of running it."""

    def __init__(self, conn: sqlite3.Connection, sql: str, error: BaseException) -> None:
        self._conn, self._sql, self._error = conn, sql, error

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == self._sql and isinstance(self._error, sqlite3.Error):
            raise self._error
        cursor = self._conn.execute(sql, *args)
        if sql == self._sql:
            raise self._error
        return cursor

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def test_a_ctrl_c_as_a_transaction_begins_leaves_none_open(store: Store) -> None:
    conn = store._conn
    store._conn = _InterruptedAfter(conn, "BEGIN IMMEDIATE", KeyboardInterrupt())  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        store.add_trial(A, info={})
    store._conn = conn
    assert not conn.in_transaction
    trial = store.add_trial(B, info={})  # the stop's own writes still work
    store.interrupt([trial])
    store.end_session("interrupted")
    assert [t.candidate for t in store.trials()] == [str(B)]


def test_a_session_whose_commit_failed_is_not_ended_later(tmp_path: Path) -> None:
    s = Store.create(tmp_path / "run", CONFIG)
    s.acquire()
    conn = s._conn
    full = sqlite3.OperationalError("database or disk is full")
    s._conn = _InterruptedAfter(conn, "COMMIT", full)  # type: ignore[assignment]
    with pytest.raises(BlockQNNError, match="is full"):
        s.begin_session()
    s._conn = conn
    assert not s.in_session and not conn.in_transaction
    s.end_session("failed")  # nothing to end: no traceback for a row that was rolled back
    assert s.sessions() == []


def test_one_writer_at_a_time(store: Store, tmp_path: Path) -> None:
    other = Store.open(tmp_path / "run")
    with pytest.raises(BlockQNNError, match="in use"):
        other.acquire()
    with Store.open(tmp_path / "run", readonly=True) as reader:
        assert reader.active()
        with pytest.raises(RuntimeError, match="read-only"):
            reader.add_trial(A, {})
    store.close()
    other.acquire()
    other.close()


def test_records_of_deep_blocks_parse_beyond_the_default_depth() -> None:
    from blockqnn.store.db import TrialRecord

    nsc = "; ".join(f"{i},1,3,{i - 1},0" for i in range(1, 13)) + "; 13,7,0,0,0"
    fields = dict.fromkeys(TrialRecord.__dataclass_fields__)
    fields.update(candidate=nsc, status="complete")
    record = TrialRecord(**fields)  # type: ignore[arg-type]
    assert len(record.block) == 12


def test_trial_statuses_are_the_stored_strings() -> None:
    from blockqnn.store.db import FAILED, STATUSES, TrialStatus

    stored = ["queued", "running", "complete", "failed", "reused", "interrupted"]
    assert [s.value for s in TrialStatus] == stored and list(STATUSES) == stored
    # A str enum: plain strings read back from SQLite look up and compare as the members.
    by_member: dict[str, int] = {FAILED: 3}
    assert {"failed": 3}[FAILED] == 3 and by_member["failed"] == 3
    assert f"{FAILED}" == "failed" and str(FAILED) == "failed"
    assert json.dumps([FAILED]) == '["failed"]'


def test_a_readers_lock_probe_never_turns_a_search_away(tmp_path: Path) -> None:
    """`status` and the dashboard probe the writer lock with a brief shared lock; a search
    taking the lock at that instant waits it out instead of calling the run in use."""
    import threading

    from blockqnn.store.rundir import held, take_lock

    (tmp_path / "lock").touch()
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            held(tmp_path)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for _ in range(300):
            take_lock(tmp_path).close()
    finally:
        stop.set()
        prober.join()
    holder = take_lock(tmp_path)  # a search that holds it is still refused
    with pytest.raises(BlockQNNError, match="in use by another running search"):
        take_lock(tmp_path)
    holder.close()
