"""The run's single source of truth: one SQLite database per run directory.

Owns: `Store`: creating and opening a run's database, the resolved config, every trial and
its state changes, the agent's latest snapshot and the sessions that worked on the run.
Everything else (the agent, the progress display, `status`, the report) is rebuilt from it.
The schema, the statuses, the checksums and the migration of older schemas are
`blockqnn.store.schema`'s; the read queries and the records they return
`blockqnn.store.queries`'; the row writes inside a transaction `blockqnn.store.rows`'; making
the file and the writable connection `blockqnn.store.opening`'s; the files of the run dir
(reading without changing them, the lock, whether they can be written)
`blockqnn.store.rundir`'s. This module re-exports the names others import from it. Must not
hold global state, decide what to evaluate or import torch.

Contract:
- One writer: the search process (the master). Workers never touch the database; they return
  results to the master, which records them. A lock file (`DIR/lock`) keeps a second master
  out while one runs. Readers (`Store.open(dir, readonly=True)`) may read at any time (WAL).
- Every change is one transaction: a trial's status change and the agent snapshot that
  follows it commit together or not at all, so a master killed at any moment (kill -9)
  leaves a consistent store.
- Finished trials (complete, failed, reused) never change.
- A database with a newer schema, or one that is not a blockqnn run, is refused with a clear
  message and never modified.
- Silent damage is refused, never shown as data: every row of `trials`, `agent_snapshots`
  and `sessions` carries a SHA-256 of its values (rewritten by the store with every change
  of the row), the `meta` table one of all its rows; every read verifies them, and SQLite's
  `integrity_check` runs at every open. A mismatch, an undecodable JSON value or a damaged
  page is a `BlockQNNError` naming what is damaged.
- A run dir that cannot be written is refused before a writable open touches anything; a
  write that fails on a full disk or an unwritable store is rolled back and said to be that
  (one line), never "damaged".

Trial states: `TrialStatus` (queued, running, complete, failed, reused, interrupted).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.result import EvalResult
from blockqnn.files import os_reason
from blockqnn.settings.config import Config
from blockqnn.space.base import Candidate
from blockqnn.store.opening import build, check_new_run_dir, connect_writer, warm_start_meta
from blockqnn.store.queries import (
    AgentState,
    TrialRecord,
    count_statuses,
    latest_snapshot,
    read_config,
    read_meta,
    select_sessions,
    select_top,
    select_trial,
    select_trials,
)
from blockqnn.store.queries import is_warm as is_warm  # re-exported: the search imports it
from blockqnn.store.rows import copy_result, insert_snapshot, insert_warm, transition
from blockqnn.store.rundir import DB_NAME as DB_NAME  # the run's file names: re-exported
from blockqnn.store.rundir import LOCK_NAME as LOCK_NAME
from blockqnn.store.rundir import held, reader, store_write_error, take_lock
from blockqnn.store.scan import Reading
from blockqnn.store.schema import (
    APPLICATION_ID,
    COMPLETE,
    FAILED,
    INTERRUPTED,
    QUEUED,
    REUSED,
    RUNNING,
    SCHEMA_VERSION,
    STATUSES,
    TRAINED,
    TrialStatus,
    check_file,
    damaged,
    migrate,
    seal,
    seal_meta,
)

# The names other modules import from here (the store was one module before the split).
__all__ = [
    "APPLICATION_ID",
    "COMPLETE",
    "DB_NAME",
    "FAILED",
    "INTERRUPTED",
    "LOCK_NAME",
    "QUEUED",
    "REUSED",
    "RUNNING",
    "SCHEMA_VERSION",
    "STATUSES",
    "TRAINED",
    "AgentState",
    "Store",
    "TrialRecord",
    "TrialStatus",
    "damaged",
]
SCHEDULE_BUDGET = "schedule_budget"  # meta key: the first budget of an extended run


class Store:
    """A run directory's database. Create with `Store.create`, reopen with `Store.open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool) -> None:
        self.path = path
        self.run_dir = path.parent
        self._conn = conn
        self.readonly = readonly
        self._lock: TextIO | None = None
        self._session: int | None = None

    # ----- opening --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        run_dir: str | Path,
        config: Config,
        warm_start: Sequence[str | Path] = (),
        warm_start_any: bool = False,
    ) -> Store:
        """Start a new run in `run_dir` (created if needed). A directory that already holds a
        run is refused, untouched; one that cannot be written (permissions, a read-only file
        system, a full disk) is refused with its reason and left as it was. The warm-start
        runs asked for are recorded with it, so a resume can still tell them if the search
        stopped before it had (`blockqnn.store.opening.read_warm_start`)."""
        directory = Path(run_dir)
        path = directory / DB_NAME
        check_new_run_dir(directory)
        made = not directory.exists()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlockQNNError(f"cannot create run dir {directory}: {os_reason(exc)}") from None
        try:
            build(directory, config, warm_start_meta(warm_start, warm_start_any))
        finally:
            if made and not path.exists():  # refused: leave no empty run dir behind
                with contextlib.suppress(OSError):
                    directory.rmdir()
        return cls.open(directory)

    @classmethod
    def open(cls, run_dir: str | Path, readonly: bool = False, acquire: bool = False) -> Store:
        """Open an existing run. Missing, corrupt, foreign or newer databases raise
        `BlockQNNError` and are not modified. A writable open checks that the run dir can be
        written first; with `acquire` it also takes the writer lock (`acquire()`) before it
        writes anything (the migration of an older schema is a write)."""
        directory = Path(run_dir)
        path = directory / DB_NAME
        if not path.is_file():
            what = "does not exist" if not directory.exists() else f"holds no {DB_NAME}"
            raise BlockQNNError(f"run dir {directory} {what}: not a blockqnn run")
        version = check_file(path)  # read-only inspection first: a foreign file is never touched
        lock = None
        if readonly:
            conn, private = reader(path)
            if version < SCHEMA_VERSION and not private:  # older: migrated in a copy in memory
                memory = sqlite3.connect(":memory:", isolation_level=None)
                conn.backup(memory)
                conn.close()
                conn = memory
            if version < SCHEMA_VERSION:
                try:
                    migrate(conn, version)
                except BaseException:
                    conn.close()
                    raise
        else:
            conn, lock = connect_writer(path, version, acquire)
        conn.execute("PRAGMA foreign_keys = ON")
        store = cls(path, conn, readonly)
        store._lock = lock
        return store

    def close(self) -> None:
        self._conn.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- reading (the public API others use) ----------------------------------------------

    def meta(self) -> dict[str, str]:
        """The run's meta rows (schema version, creation time, config JSON), verified."""
        return read_meta(self._conn)

    def config(self) -> Config:
        """The resolved config the run was started with."""
        return read_config(self._conn)

    def trials(self, status: str | None = None) -> list[TrialRecord]:
        """Every trial in ask order, or those with one status."""
        return select_trials(self._conn, status)

    def trial(self, trial_id: int) -> TrialRecord:
        record = select_trial(self._conn, trial_id)
        if record is None:
            raise KeyError(trial_id)
        return record

    def reading(self) -> contextlib.AbstractContextManager[Reading]:
        """One consistent read, its trials streamed: `blockqnn.store.scan`."""
        return Reading.of(self._conn)

    def top(self, k: int = 10) -> list[TrialRecord]:
        """The `k` best trained blocks by reward, best first (reused duplicates excluded)."""
        return select_top(self._conn, k)

    def counts(self) -> dict[str, int]:
        """Trials per status (every status present, zeros included) and `trained`."""
        return count_statuses(self._conn)

    def latest_snapshot(self) -> AgentState | None:
        """The newest agent snapshot, or None."""
        return latest_snapshot(self._conn)

    def elapsed(self) -> float:
        """Seconds the run's sessions have been working, summed over sessions."""
        return float(sum(s["updated"] - s["started"] for s in self.sessions()))

    def sessions(self) -> list[dict[str, Any]]:
        return select_sessions(self._conn)

    def active(self) -> bool:
        """Whether a search process holds this run now (its lock is taken)."""
        return self._lock is not None or held(self.run_dir)

    # ----- writing (the master only) ---------------------------------------------------------

    def acquire(self) -> None:
        """Become the run's only writer until `close()`; writes nothing."""
        self._writable()
        if self._lock is None:
            self._lock = take_lock(self.run_dir)

    def begin_session(self) -> None:
        """Record that this process now works on the run (for `elapsed`)."""
        now = time.time()
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO sessions (pid, host, started, updated) VALUES (?, ?, ?, ?)",
                (os.getpid(), socket.gethostname(), now, now),
            )
            assert cur.lastrowid is not None
            session = cur.lastrowid
            seal(c, "sessions", session)
        self._session = session  # once committed: a failed COMMIT (disk full) leaves no row

    @property
    def in_session(self) -> bool:
        return self._session is not None

    def end_session(self, outcome: str) -> None:
        if self._session is None:
            return
        now = time.time()
        with self._tx() as c:
            c.execute(
                "UPDATE sessions SET updated = ?, ended = ?, outcome = ? WHERE id = ?",
                (now, now, outcome, self._session),
            )
        self._session = None

    def add_trial(
        self,
        block: Candidate,
        info: dict[str, Any],
        status: str = RUNNING,
        reuse_of: int | None = None,
        worker: str = "",
        ask_seq: int = 0,
    ) -> int:
        """Record a block the agent just proposed (its `ask_seq`-th call); returns the id."""
        if status not in (QUEUED, RUNNING):
            raise ValueError(f"a new trial is queued or running, not {status}")
        now = time.time()
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO trials (hash, candidate, status, info, ask_seq, reuse_of, worker, "
                "attempts, created, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    block.hash,
                    str(block),
                    status,
                    json.dumps(info),
                    ask_seq,
                    reuse_of,
                    worker,
                    1 if status == RUNNING else 0,
                    now,
                    now if status == RUNNING else None,
                ),
            )
            assert cur.lastrowid is not None
            seal(c, "trials", cur.lastrowid)
            return cur.lastrowid

    def add_reused(
        self,
        block: Candidate,
        info: dict[str, Any],
        source: TrialRecord,
        ask_seq: int,
        tell_seq: int,
        agent_state: AgentState | None = None,
    ) -> int:
        """Record a duplicate of the finished trial `source`, asked and told the reused
        reward at once, with the agent's snapshot if given: one transaction."""
        now = time.time()
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO trials (hash, candidate, status, info, ask_seq, reuse_of, created, "
                "finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (block.hash, str(block), QUEUED, json.dumps(info), ask_seq, source.id, now, now),
            )
            assert cur.lastrowid is not None
            copy_result(c, cur.lastrowid, source, now, tell_seq)
            if agent_state is not None:
                insert_snapshot(c, agent_state)
            return cur.lastrowid

    def start(self, trial_id: int, worker: str = "") -> None:
        """Hand a queued trial (requeued or resumed) to a worker again: attempts + 1."""
        with self._tx() as c:
            transition(c, trial_id, (QUEUED,))
            c.execute(
                "UPDATE trials SET status = ?, attempts = attempts + 1, started = ?, "
                "worker = ? WHERE id = ?",
                (RUNNING, time.time(), worker, trial_id),
            )
            seal(c, "trials", trial_id)

    def finish(
        self,
        trial_id: int,
        result: EvalResult,
        reward: float,
        worker: str,
        tell_seq: int,
        agent_state: AgentState | None = None,
        duplicates: Sequence[tuple[int, int]] = (),
    ) -> None:
        """Record a trained trial's result (told as call `tell_seq`), mark its waiting
        `duplicates` (trial id, tell_seq) reused, and save the agent's snapshot if given:
        one transaction."""
        now = time.time()
        status = COMPLETE if result.ok else FAILED
        with self._tx() as c:
            transition(c, trial_id, (RUNNING,))
            c.execute(
                "UPDATE trials SET status = ?, reward = ?, accuracy = ?, flops = ?, "
                "params = ?, density = ?, result = ?, worker = ?, error = ?, finished = ?, "
                "tell_seq = ? WHERE id = ?",
                (
                    status,
                    reward,
                    result.accuracy,
                    result.flops,
                    result.params,
                    result.density,
                    json.dumps(result.to_dict()),
                    worker,
                    result.error,
                    now,
                    tell_seq,
                    trial_id,
                ),
            )
            seal(c, "trials", trial_id)
            source = select_trial(c, trial_id)
            assert source is not None  # just updated in this transaction
            for dup, dup_seq in duplicates:
                transition(c, dup, (QUEUED,))
                copy_result(c, dup, source, now, dup_seq)
            if agent_state is not None:
                insert_snapshot(c, agent_state)

    def requeue(self, trial_id: int, error: str, lost: bool) -> None:
        """A running trial's worker died (`lost`) or the search stopped: queue it again."""
        with self._tx() as c:
            transition(c, trial_id, (RUNNING, INTERRUPTED))
            c.execute(
                "UPDATE trials SET status = ?, lost = lost + ?, error = ? WHERE id = ?",
                (QUEUED, int(lost), error, trial_id),
            )
            seal(c, "trials", trial_id)

    def interrupt(self, trial_ids: list[int]) -> None:
        """The search is stopping: in-flight trials become `interrupted` (resumable)."""
        with self._tx() as c:
            for trial_id in trial_ids:
                transition(c, trial_id, (RUNNING,))
                c.execute("UPDATE trials SET status = ? WHERE id = ?", (INTERRUPTED, trial_id))
                seal(c, "trials", trial_id)

    def recover(self, keep: Collection[int] = ()) -> list[int]:
        """After a stop or a crash: running and interrupted trials become queued again,
        except those in `keep`. Returns their ids."""
        with self._tx() as c:
            query = "SELECT id FROM trials WHERE status IN (?, ?) ORDER BY id"
            ids = [r[0] for r in c.execute(query, (RUNNING, INTERRUPTED)) if r[0] not in keep]
            for trial_id in ids:
                c.execute("UPDATE trials SET status = ? WHERE id = ?", (QUEUED, trial_id))
                seal(c, "trials", trial_id)
        return ids

    # ----- internals --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; a full disk or an unwritable store is a one-line BlockQNNError
        (the transaction rolled back: nothing stored is lost)."""
        self._writable()
        c = self._conn
        try:
            try:  # BEGIN inside: a Ctrl-C handled as it returns must not leave it open
                c.execute("BEGIN IMMEDIATE")
                yield c
                if self._session is not None:
                    c.execute(
                        "UPDATE sessions SET updated = ? WHERE id = ?",
                        (time.time(), self._session),
                    )
                    seal(c, "sessions", self._session)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:  # SQLite rolls back itself on a full disk (SQLITE_FULL)
                    c.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            problem = store_write_error(exc, self.run_dir)
            if problem is None:
                raise
            raise problem from None

    def _writable(self) -> None:
        if self.readonly:
            raise RuntimeError("this store was opened read-only")

    # ----- growing a run (extend, warm start; blockqnn.search) ---------------------------

    def add_warm(
        self,
        rows: Sequence[tuple[Candidate, EvalResult, float, dict[str, Any], int]],
        agent_state: AgentState | None = None,
    ) -> None:
        """Record warm-start trials (candidate, result, reward told, info naming the source,
        tell_seq): told without an ask (ask_seq 0, so resume replays only their tells),
        status reused (outside the budget), all in one transaction with the snapshot."""
        now = time.time()
        with self._tx() as c:
            insert_warm(c, rows, now)
            if agent_state is not None:
                insert_snapshot(c, agent_state)

    def schedule_budget(self) -> int:
        """The budget the strategy's schedule was scaled to: the run's first budget, kept
        when `extend` raised the run's budget."""
        stored = self.meta().get(SCHEDULE_BUDGET)
        return int(stored) if stored is not None else self.config().search.budget

    def extend(self, budget: int) -> None:
        """Raise the run's budget (the stored config's `search.budget`); the schedule keeps
        its first budget (`schedule_budget`). One transaction; the meta checksum resealed."""
        config = self.config()
        if budget <= config.search.budget:
            raise ValueError(f"budget {budget} does not extend {config.search.budget}")
        first = self.schedule_budget()
        data = config.to_dict()
        data["search"]["budget"] = budget
        with self._tx() as c:
            c.execute(
                "UPDATE meta SET value = ? WHERE key = 'config'",
                (json.dumps(data, sort_keys=True),),
            )
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (SCHEDULE_BUDGET, str(first)))
            seal_meta(c)
