"""The run's single source of truth: one SQLite database per run directory.

Owns: the schema (versioned), the resolved config, every trial and its state, the agent's
latest snapshot and the sessions that worked on the run, the checksums that guard them, and
the migration of older schemas. Everything else (the agent, the progress display, `status`,
the report) is rebuilt from it. The files of the run dir (reading without changing them, the
lock, whether they can be written) are `blockqnn.rundir`'s. Must not hold global state,
decide what to evaluate or import torch.

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
- A run dir that cannot be written is refused before a writable open touches anything.

Trial states: `queued` (waiting for a slot, or a duplicate waiting for its original's
result), `running` (handed to the executor), `complete`, `failed` (the evaluator's failure or
too many lost workers), `reused` (the hash was evaluated before: its reward was reused, no
training), `interrupted` (in flight when the search was stopped; resumed as queued).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockqnn.config import AGENT_PRESETS, Config
from blockqnn.errors import BlockQNNError, clip
from blockqnn.nsc import DEFAULT_MAX_DEPTH, Block
from blockqnn.result import EvalResult
from blockqnn.rundir import DB_NAME as DB_NAME  # the run's file names: re-exported
from blockqnn.rundir import LOCK_NAME as LOCK_NAME
from blockqnn.rundir import check_writable, held, reader, take_lock, write_failure
from blockqnn.spaces.base import Candidate

# 1: NSC only, with an epsilon column; 2: any space, strategy info as JSON; 3: checksums
SCHEMA_VERSION = 3
APPLICATION_ID = 0x42514E4E  # "BQNN": marks the SQLite file as a blockqnn run

QUEUED = "queued"
RUNNING = "running"
COMPLETE = "complete"
FAILED = "failed"
REUSED = "reused"
INTERRUPTED = "interrupted"
STATUSES = (QUEUED, RUNNING, COMPLETE, FAILED, REUSED, INTERRUPTED)
FINISHED = (COMPLETE, FAILED, REUSED)
TRAINED = (COMPLETE, FAILED)  # what the budget counts

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY,          -- ask order: trial n is the agent's n-th ask
    hash TEXT NOT NULL,
    candidate TEXT NOT NULL,         -- the candidate's canonical text (NSC, a cell, ...)
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    reward REAL, accuracy REAL, flops INTEGER, params INTEGER, density REAL,
    result TEXT,                     -- the EvalResult as JSON (of the original, if reused)
    worker TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,  -- times handed to a worker
    lost INTEGER NOT NULL DEFAULT 0,      -- times its worker died mid-evaluation
    error TEXT NOT NULL DEFAULT '',
    reuse_of INTEGER REFERENCES trials(id),
    info TEXT NOT NULL DEFAULT '{{}}', -- the strategy's info() when it proposed the candidate
    ask_seq INTEGER NOT NULL,        -- the agent's calls, asks and tells, numbered in order
    tell_seq INTEGER,                -- when its reward was told; NULL until then
    created REAL NOT NULL, started REAL, finished REAL,
    checksum TEXT NOT NULL DEFAULT ''     -- SHA-256 of the columns above (see _digest)
);
CREATE INDEX trials_hash ON trials(hash);
CREATE INDEX trials_status ON trials(status);
CREATE TABLE agent_snapshots (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,            -- agent calls reflected: ask_seq / tell_seq <= this
    trial_count INTEGER NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL,
    checksum TEXT NOT NULL DEFAULT ''
);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
    started REAL NOT NULL, updated REAL NOT NULL, ended REAL, outcome TEXT NOT NULL DEFAULT '',
    checksum TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class TrialRecord:
    """One row of `trials`, as readers see it."""

    id: int
    hash: str
    candidate: str  # the candidate's text, as its space writes it
    status: str
    reward: float | None
    accuracy: float | None
    flops: int | None
    params: int | None
    density: float | None
    result: dict[str, Any] | None  # EvalResult.to_dict(); None until finished
    worker: str
    attempts: int
    lost: int
    error: str
    reuse_of: int | None
    info: dict[str, Any]  # the strategy's `info()` at ask time, e.g. {"epsilon": 0.9}
    ask_seq: int  # position of the ask among the agent's calls (asks and tells)
    tell_seq: int | None  # position of the tell; None until told
    created: float  # Unix seconds
    started: float | None
    finished: float | None

    @property
    def block(self) -> Block:
        """The candidate as an NSC block (runs of the `nsc` space only)."""
        # The stored text was validated at the run's max_depth when recorded; its own layer
        # count (terminal included) is a depth it always fits.
        text = self.candidate
        return Block.parse(text, max_depth=max(DEFAULT_MAX_DEPTH, text.count(";") + 1))

    @property
    def trained(self) -> bool:
        return self.status in TRAINED

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


_COLUMNS = tuple(TrialRecord.__dataclass_fields__)
# The columns each table's checksum covers, in order (the row id included: a flipped id is a
# different row). `meta`'s checksum row covers every other row of meta.
_CONTENT = {
    "trials": _COLUMNS,
    "agent_snapshots": ("id", "seq", "trial_count", "created", "state"),
    "sessions": ("id", "pid", "host", "started", "updated", "ended", "outcome"),
}
META_CHECKSUM = "checksum"
SCHEDULE_BUDGET = "schedule_budget"  # meta key: the first budget of an extended run


def _digest(table: str, values: Sequence[Any]) -> str:
    """SHA-256 of a row's values as SQLite returns them. `repr` is exact and tells the types
    apart (1 from 1.0 from '1'), so any change of a stored value changes the digest."""
    text = repr((table, *values))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def damaged(what: str) -> BlockQNNError:
    """The error for a store whose content cannot be trusted (exit 2 at the CLI)."""
    return BlockQNNError(f"the run's store is damaged: {what}")


def _verified(table: str, row: Sequence[Any], what: str) -> tuple[Any, ...]:
    """The row's content (the checksum column, last, removed) if its checksum matches."""
    *content, checksum = row
    if _digest(table, content) != checksum:
        raise damaged(f"{what} does not match its checksum")
    return tuple(content)


def _decode(text: Any, what: str) -> Any:
    """A stored JSON value; anything undecodable means the store is damaged."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):  # not text, not JSON, too long or deep
        raise damaged(f"{what} is not readable JSON") from None


def _row_to_record(row: Sequence[Any]) -> TrialRecord:
    """A trial from its row (content columns then checksum): verified and decoded."""
    trial = f"trial {clip(row[0])}"
    values = dict(zip(_COLUMNS, _verified("trials", row, trial), strict=True))
    if values["result"] is not None:
        values["result"] = _decode(values["result"], f"{trial}'s result")
        if not isinstance(values["result"], dict):
            raise damaged(f"{trial}'s result is not a JSON object")
    info = _decode(values["info"], f"{trial}'s info") if values["info"] else {}
    if not isinstance(info, dict):
        raise damaged(f"{trial}'s info is not a JSON object")
    values["info"] = info
    if values["status"] not in STATUSES:
        raise damaged(f"{trial} has an unknown status")
    return TrialRecord(**values)


_SELECT_TRIALS = f"SELECT {', '.join(_COLUMNS)}, checksum FROM trials"


class Store:
    """A run directory's database. Create with `Store.create`, reopen with `Store.open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool) -> None:
        self.path = path
        self.run_dir = path.parent
        self._conn = conn
        self.readonly = readonly
        self._lock: Any = None
        self._session: int | None = None

    # ----- opening --------------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: str | Path, config: Config) -> Store:
        """Start a new run in `run_dir` (created if needed). A directory that already holds a
        run is refused, untouched; one that cannot be written (permissions, a read-only file
        system, a full disk) is refused with its reason and left as it was."""
        from blockqnn import __version__

        directory = Path(run_dir)
        path = directory / DB_NAME
        if path.exists():
            raise BlockQNNError(
                f"{directory} already holds a run; continue it with --resume {directory} "
                "or choose another --run-dir"
            )
        if directory.exists() and not directory.is_dir():
            raise BlockQNNError(f"--run-dir {directory} is a file, not a directory")
        made = not directory.exists()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlockQNNError(f"cannot create run dir {directory}: {exc.strerror}") from None
        tmp = directory / f".{DB_NAME}.{os.getpid()}.tmp"
        journal = tmp.with_name(tmp.name + "-journal")
        try:
            check_writable(directory)
            tmp.unlink(missing_ok=True)
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:  # build fully in a temporary file, then rename: never half a run
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                meta = {
                    "schema_version": str(SCHEMA_VERSION),
                    "created": repr(time.time()),
                    "blockqnn_version": __version__,
                    "config": json.dumps(config.to_dict(), sort_keys=True),
                }
                conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                _seal_meta(conn)
            finally:
                conn.close()
            try:
                os.link(tmp, path)  # fails if another process created the run meanwhile
            except FileExistsError:
                raise BlockQNNError(f"{directory} already holds a run") from None
            except OSError as exc:
                if exc.errno in (28, 30):  # no space, read-only: not a missing hard link
                    raise
                os.replace(tmp, path)  # a file system without hard links
        except (sqlite3.Error, OSError) as exc:
            raise BlockQNNError(
                f"cannot create the run's store in {clip(str(directory))}: {write_failure(exc)}"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
            journal.unlink(missing_ok=True)
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
        version = _check(path)  # read-only inspection first: a foreign file is never touched
        lock = None
        if readonly:
            conn, in_memory = reader(path)
            if version < SCHEMA_VERSION and not in_memory:  # older: a migrated copy in memory
                memory = sqlite3.connect(":memory:", isolation_level=None)
                conn.backup(memory)
                conn.close()
                conn = memory
        else:
            check_writable(directory)
            if acquire:
                lock = take_lock(directory)
            try:
                conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints
            except BaseException:
                if lock is not None:
                    lock.close()
                raise
        if version < SCHEMA_VERSION:
            try:
                _migrate(conn, version)
            except BaseException:
                conn.close()
                if lock is not None:
                    lock.close()
                raise
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
        rows = self._conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
        stored = dict(rows)
        content = [r for r in rows if r[0] != META_CHECKSUM]
        if stored.get(META_CHECKSUM) != _digest("meta", content):
            raise damaged("its settings (the meta table) do not match their checksum")
        del stored[META_CHECKSUM]
        return stored

    def config(self) -> Config:
        """The resolved config the run was started with."""
        data = _decode(self.meta().get("config"), "the stored config")
        if not isinstance(data, dict):
            raise damaged("the stored config is not a JSON object")
        return Config.from_dict(data)

    def trials(self, status: str | None = None) -> list[TrialRecord]:
        """Every trial in ask order, or those with one status."""
        query = _SELECT_TRIALS
        args: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status,)
        rows = self._conn.execute(query + " ORDER BY id", args).fetchall()
        return [_row_to_record(r) for r in rows]

    def trial(self, trial_id: int) -> TrialRecord:
        row = self._conn.execute(_SELECT_TRIALS + " WHERE id = ?", (trial_id,)).fetchone()
        if row is None:
            raise KeyError(trial_id)
        return _row_to_record(row)

    def top(self, k: int = 10) -> list[TrialRecord]:
        """The `k` best trained blocks by reward, best first (reused duplicates excluded)."""
        rows = self._conn.execute(
            _SELECT_TRIALS + " WHERE status = ? ORDER BY reward DESC, id LIMIT ?",
            (COMPLETE, min(k, 2**62)),
        ).fetchall()
        return [_row_to_record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Trials per status (every status present, zeros included) and `trained`."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self._conn.execute("SELECT status, COUNT(*) FROM trials GROUP BY 1"):
            if status not in out:
                raise damaged(f"a trial has an unknown status {clip(status)}")
            out[status] = n
        out["trained"] = out[COMPLETE] + out[FAILED]
        return out

    def latest_snapshot(self) -> AgentState | None:
        """The newest agent snapshot, or None."""
        cols = ", ".join(_CONTENT["agent_snapshots"])
        row = self._conn.execute(
            f"SELECT {cols}, checksum FROM agent_snapshots ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        _, seq, _, _, state = _verified("agent_snapshots", row, "the agent's snapshot")
        data = _decode(state, "the agent's snapshot")
        if not isinstance(data, dict) or not isinstance(seq, int):
            raise damaged("the agent's snapshot is not a JSON object")
        return AgentState(data, seq)

    def elapsed(self) -> float:
        """Seconds the run's sessions have been working, summed over sessions."""
        return float(sum(s["updated"] - s["started"] for s in self.sessions()))

    def sessions(self) -> list[dict[str, Any]]:
        names = _CONTENT["sessions"]
        rows = self._conn.execute(
            f"SELECT {', '.join(names)}, checksum FROM sessions ORDER BY id"
        ).fetchall()
        out = []
        for row in rows:
            values = _verified("sessions", row, f"session {clip(row[0])}")
            out.append(dict(zip(names, values, strict=True)))
        return out

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
            self._session = cur.lastrowid

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
            _seal(c, "trials", cur.lastrowid)
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
            self._copy_result(c, cur.lastrowid, source, now, tell_seq)
            if agent_state is not None:
                self._snapshot(c, agent_state)
            return cur.lastrowid

    def start(self, trial_id: int, worker: str = "") -> None:
        """Hand a queued trial (requeued or resumed) to a worker again: attempts + 1."""
        with self._tx() as c:
            self._transition(c, trial_id, (QUEUED,))
            c.execute(
                "UPDATE trials SET status = ?, attempts = attempts + 1, started = ?, "
                "worker = ? WHERE id = ?",
                (RUNNING, time.time(), worker, trial_id),
            )
            _seal(c, "trials", trial_id)

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
            self._transition(c, trial_id, (RUNNING,))
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
            _seal(c, "trials", trial_id)
            source = _row_to_record(
                c.execute(_SELECT_TRIALS + " WHERE id = ?", (trial_id,)).fetchone()
            )
            for dup, dup_seq in duplicates:
                self._transition(c, dup, (QUEUED,))
                self._copy_result(c, dup, source, now, dup_seq)
            if agent_state is not None:
                self._snapshot(c, agent_state)

    def requeue(self, trial_id: int, error: str, lost: bool) -> None:
        """A running trial's worker died (`lost`) or the search stopped: queue it again."""
        with self._tx() as c:
            self._transition(c, trial_id, (RUNNING, INTERRUPTED))
            c.execute(
                "UPDATE trials SET status = ?, lost = lost + ?, error = ? WHERE id = ?",
                (QUEUED, int(lost), error, trial_id),
            )
            _seal(c, "trials", trial_id)

    def interrupt(self, trial_ids: list[int]) -> None:
        """The search is stopping: in-flight trials become `interrupted` (resumable)."""
        with self._tx() as c:
            for trial_id in trial_ids:
                self._transition(c, trial_id, (RUNNING,))
                c.execute("UPDATE trials SET status = ? WHERE id = ?", (INTERRUPTED, trial_id))
                _seal(c, "trials", trial_id)

    def recover(self) -> list[int]:
        """After a stop or a crash: running and interrupted trials become queued again.
        Returns their ids."""
        with self._tx() as c:
            ids = [
                r[0]
                for r in c.execute(
                    "SELECT id FROM trials WHERE status IN (?, ?) ORDER BY id",
                    (RUNNING, INTERRUPTED),
                )
            ]
            for trial_id in ids:
                c.execute("UPDATE trials SET status = ? WHERE id = ?", (QUEUED, trial_id))
                _seal(c, "trials", trial_id)
        return ids

    # ----- internals --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._writable()
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
            if self._session is not None:
                c.execute(
                    "UPDATE sessions SET updated = ? WHERE id = ?", (time.time(), self._session)
                )
                _seal(c, "sessions", self._session)
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def _writable(self) -> None:
        if self.readonly:
            raise RuntimeError("this store was opened read-only")

    @staticmethod
    def _transition(c: sqlite3.Connection, trial_id: int, allowed: tuple[str, ...]) -> None:
        row = c.execute("SELECT status FROM trials WHERE id = ?", (trial_id,)).fetchone()
        if row is None or row[0] not in allowed:
            found = "missing" if row is None else row[0]
            raise RuntimeError(f"trial {trial_id} is {found}, expected one of {allowed}")

    @staticmethod
    def _copy_result(
        c: sqlite3.Connection, trial_id: int, source: TrialRecord, now: float, tell_seq: int
    ) -> None:
        c.execute(
            "UPDATE trials SET status = ?, reward = ?, accuracy = ?, flops = ?, params = ?, "
            "density = ?, result = ?, reuse_of = ?, error = ?, finished = ?, tell_seq = ? "
            "WHERE id = ?",
            (
                REUSED,
                source.reward,
                source.accuracy,
                source.flops,
                source.params,
                source.density,
                json.dumps(source.result) if source.result is not None else None,
                source.id,
                source.error,
                now,
                tell_seq,
                trial_id,
            ),
        )
        _seal(c, "trials", trial_id)

    @staticmethod
    def _snapshot(c: sqlite3.Connection, state: AgentState) -> None:
        trial_count = c.execute("SELECT COALESCE(MAX(id), 0) FROM trials").fetchone()[0]
        cur = c.execute(
            "INSERT INTO agent_snapshots (seq, trial_count, created, state) VALUES (?,?,?,?)",
            (state.seq, trial_count, time.time(), json.dumps(state.state)),
        )
        assert cur.lastrowid is not None
        _seal(c, "agent_snapshots", cur.lastrowid)
        # Only the newest snapshot is needed to resume; the trials hold the history.
        c.execute("DELETE FROM agent_snapshots WHERE id < ?", (cur.lastrowid,))

    # ----- growing a run (extend, warm start; blockqnn.search) --------------------------------

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
            for block, result, reward, info, tell_seq in rows:
                source = f"warm start: {info.get('warm_start')} trial {info.get('source_trial')}"
                cur = c.execute(
                    "INSERT INTO trials (hash, candidate, status, reward, accuracy, flops, "
                    "params, density, result, worker, error, info, ask_seq, tell_seq, created, "
                    "finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                    (
                        block.hash,
                        str(block),
                        REUSED,
                        reward,
                        result.accuracy,
                        result.flops,
                        result.params,
                        result.density,
                        json.dumps(result.to_dict()),
                        source,
                        result.error,
                        json.dumps(info),
                        tell_seq,
                        now,
                        now,
                    ),
                )
                assert cur.lastrowid is not None
                _seal(c, "trials", cur.lastrowid)
            if agent_state is not None:
                self._snapshot(c, agent_state)

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
            _seal_meta(c)


def _seal(c: sqlite3.Connection, table: str, row_id: int) -> None:
    """Write the checksum of a row as it now reads back (after SQLite's type affinity: a
    Python int stored in a REAL column reads back as a float)."""
    cols = ", ".join(_CONTENT[table])
    row = c.execute(f"SELECT {cols} FROM {table} WHERE id = ?", (row_id,)).fetchone()
    c.execute(f"UPDATE {table} SET checksum = ? WHERE id = ?", (_digest(table, row), row_id))


def _seal_meta(c: sqlite3.Connection) -> None:
    rows = c.execute(
        "SELECT key, value FROM meta WHERE key != ? ORDER BY key", (META_CHECKSUM,)
    ).fetchall()
    c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (META_CHECKSUM, _digest("meta", rows)))


@dataclass(frozen=True)
class AgentState:
    """An agent's `state_dict()` after its first `seq` calls (asks and tells)."""

    state: dict[str, Any]
    seq: int


# What every version-1 run was, in the config keys that version 2 added: an NSC search with
# the paper's reward and its Q-learning constants (presets and modes did not exist yet).
_V1_IMPLIED: dict[str, dict[str, Any]] = {
    "search": {"space": "nsc"},
    "reward": {"name": "paper"},
    "agent": {"preset": "paper", **AGENT_PRESETS["paper"]},
}


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a store of an older schema to `SCHEMA_VERSION`, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version < 2:  # candidates of any space; Q-learning's epsilon becomes its info
            conn.execute("ALTER TABLE trials RENAME COLUMN nsc TO candidate")
            conn.execute("ALTER TABLE trials ADD COLUMN info TEXT NOT NULL DEFAULT '{}'")
            conn.execute("UPDATE trials SET info = json_object('epsilon', epsilon)")
            conn.execute("ALTER TABLE trials DROP COLUMN epsilon")
            _migrate_config_v1(conn)
        if version < 3:  # checksums: those of the rows as they are now (nothing to compare)
            for table in _CONTENT:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN checksum TEXT NOT NULL DEFAULT ''")
                for (row_id,) in conn.execute(f"SELECT id FROM {table}").fetchall():
                    _seal(conn, table, row_id)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        _seal_meta(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _migrate_config_v1(conn: sqlite3.Connection) -> None:
    """Write the keys a version-1 config lacks with the values that run used. Read with
    today's defaults instead, `--resume` would silently continue with another agent (the
    `blockqnn` preset's modes). Stored values are kept, whatever they are."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    data = json.loads(row[0])
    if not isinstance(data, dict):  # left for Config.from_dict to refuse with its message
        return
    for section, implied in _V1_IMPLIED.items():
        values = data.setdefault(section, {})
        if isinstance(values, dict):
            for key, value in implied.items():
                values.setdefault(key, value)
    conn.execute(
        "UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(data, sort_keys=True),)
    )


def _check(path: Path) -> int:
    """Refuse, without writing to it, a file that is not a blockqnn run of a known schema.
    Returns its schema version."""
    try:
        conn, _ = reader(path)
    except sqlite3.DatabaseError as exc:
        raise BlockQNNError(f"{path}: corrupt or not a database ({clip(str(exc))})") from None
    except (sqlite3.Error, OSError) as exc:
        raise BlockQNNError(f"{path}: cannot open: {clip(str(exc))}") from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise BlockQNNError(f"{path} is not a blockqnn run (foreign SQLite database)")
        if version > SCHEMA_VERSION:
            raise BlockQNNError(
                f"{path} has store schema {version}, newer than this blockqnn's "
                f"{SCHEMA_VERSION}: upgrade blockqnn"
            )
        if version < 1:
            raise BlockQNNError(f"{path}: corrupt run (unknown store schema {version})")
        row = conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        if row is None:
            raise BlockQNNError(f"{path}: corrupt run (no config)")
        json.loads(row[0])
        # Every page and every index, not only meta's: a damaged trials table, or an index
        # that no longer matches its table (a query through it would silently miss rows),
        # must be refused here, before anything is written. Milliseconds for a run.
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check(1)").fetchall()]
        if problems != ["ok"]:
            raise BlockQNNError(f"{path}: corrupt run ({clip(problems[0])})")
        return int(version)
    except sqlite3.DatabaseError as exc:
        raise BlockQNNError(f"{path}: corrupt or not a database ({clip(str(exc))})") from None
    except (TypeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise BlockQNNError(f"{path}: corrupt run (unreadable config)") from None
    finally:
        conn.close()


def is_warm(t: TrialRecord) -> bool:
    """A warm-start trial: told from an earlier run's result before the first ask."""
    return t.status == REUSED and t.reuse_of is None and "warm_start" in t.info
