"""The run's single source of truth: one SQLite database per run directory.

Owns: the schema (versioned), the resolved config, every trial and its state, the agent's
latest snapshot and the sessions that worked on the run. Everything else (the agent, the
progress display, `status`, the report) is rebuilt from it. Must not hold global state, decide
what to evaluate or import torch.

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

Trial states: `queued` (waiting for a slot, or a duplicate waiting for its original's
result), `running` (handed to the executor), `complete`, `failed` (the evaluator's failure or
too many lost workers), `reused` (the hash was evaluated before: its reward was reused, no
training), `interrupted` (in flight when the search was stopped; resumed as queued).
"""

from __future__ import annotations

import contextlib
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
from blockqnn.errors import BlockQNNError
from blockqnn.nsc import DEFAULT_MAX_DEPTH, Block
from blockqnn.result import EvalResult
from blockqnn.spaces.base import Candidate

SCHEMA_VERSION = 2  # 1: NSC only, with an epsilon column; 2: any space, strategy info as JSON
APPLICATION_ID = 0x42514E4E  # "BQNN": marks the SQLite file as a blockqnn run
DB_NAME = "blockqnn.sqlite"
LOCK_NAME = "lock"

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
    created REAL NOT NULL, started REAL, finished REAL
);
CREATE INDEX trials_hash ON trials(hash);
CREATE INDEX trials_status ON trials(status);
CREATE TABLE agent_snapshots (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,            -- agent calls reflected: ask_seq / tell_seq <= this
    trial_count INTEGER NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
    started REAL NOT NULL, updated REAL NOT NULL, ended REAL, outcome TEXT NOT NULL DEFAULT ''
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


def _row_to_record(row: sqlite3.Row) -> TrialRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["result"] = json.loads(values["result"]) if values["result"] else None
    values["info"] = json.loads(values["info"]) if values["info"] else {}
    return TrialRecord(**values)


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
        run is refused, untouched."""
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
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlockQNNError(f"cannot create run dir {directory}: {exc.strerror}") from None
        tmp = directory / f".{DB_NAME}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        conn = sqlite3.connect(tmp, isolation_level=None)
        with conn:  # build fully in a temporary file, then rename: never half a run
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
        conn.close()
        try:
            os.link(tmp, path)  # fails if another process created the run meanwhile
        except FileExistsError:
            raise BlockQNNError(f"{directory} already holds a run") from None
        except OSError:  # a file system without hard links
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return cls.open(directory)

    @classmethod
    def open(cls, run_dir: str | Path, readonly: bool = False) -> Store:
        """Open an existing run. Missing, corrupt, foreign or newer databases raise
        `BlockQNNError` and are not modified."""
        directory = Path(run_dir)
        path = directory / DB_NAME
        if not path.is_file():
            what = "does not exist" if not directory.exists() else f"holds no {DB_NAME}"
            raise BlockQNNError(f"run dir {directory} {what}: not a blockqnn run")
        version = _check(path)  # read-only inspection first: a foreign file is never touched
        if readonly:
            conn = sqlite3.connect(_readonly_uri(path), uri=True)
            if version < SCHEMA_VERSION:  # read an older run through a migrated copy in memory
                memory = sqlite3.connect(":memory:", isolation_level=None)
                conn.backup(memory)
                conn.close()
                conn = memory
        else:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, atomic
        if version < SCHEMA_VERSION:
            try:
                _migrate(conn, version)
            except BaseException:
                conn.close()
                raise
        conn.execute("PRAGMA foreign_keys = ON")
        return cls(path, conn, readonly)

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
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def config(self) -> Config:
        """The resolved config the run was started with."""
        return Config.from_dict(json.loads(self.meta()["config"]))

    def trials(self, status: str | None = None) -> list[TrialRecord]:
        """Every trial in ask order, or those with one status."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM trials"
        args: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status,)
        rows = self._conn.execute(query + " ORDER BY id", args).fetchall()
        return [_row_to_record(r) for r in rows]

    def trial(self, trial_id: int) -> TrialRecord:
        row = self._conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM trials WHERE id = ?", (trial_id,)
        ).fetchone()
        if row is None:
            raise KeyError(trial_id)
        return _row_to_record(row)

    def top(self, k: int = 10) -> list[TrialRecord]:
        """The `k` best trained blocks by reward, best first (reused duplicates excluded)."""
        rows = self._conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM trials WHERE status = ? "
            "ORDER BY reward DESC, id LIMIT ?",
            (COMPLETE, k),
        ).fetchall()
        return [_row_to_record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Trials per status (every status present, zeros included) and `trained`."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self._conn.execute("SELECT status, COUNT(*) FROM trials GROUP BY 1"):
            out[status] = n
        out["trained"] = out[COMPLETE] + out[FAILED]
        return out

    def latest_snapshot(self) -> AgentState | None:
        """The newest agent snapshot, or None."""
        row = self._conn.execute(
            "SELECT seq, state FROM agent_snapshots ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else AgentState(json.loads(row[1]), row[0])

    def elapsed(self) -> float:
        """Seconds the run's sessions have been working, summed over sessions."""
        row = self._conn.execute("SELECT COALESCE(SUM(updated - started), 0) FROM sessions")
        return float(row.fetchone()[0])

    def sessions(self) -> list[dict[str, Any]]:
        cur = self._conn.execute("SELECT * FROM sessions ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def active(self) -> bool:
        """Whether a search process holds this run now (its lock is taken)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover
            return False
        lock = self.run_dir / LOCK_NAME
        if self._lock is not None:
            return True
        if not lock.exists():
            return False
        with open(lock) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    # ----- writing (the master only) ---------------------------------------------------------

    def acquire(self) -> None:
        """Become the run's only writer until `close()`; writes nothing."""
        self._writable()
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            fcntl = None  # type: ignore[assignment]
        handle = open(self.run_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held until close()
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise BlockQNNError(f"{self.run_dir} is in use by another running search") from None
        self._lock = handle

    def begin_session(self) -> None:
        """Record that this process now works on the run (for `elapsed`)."""
        now = time.time()
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO sessions (pid, host, started, updated) VALUES (?, ?, ?, ?)",
                (os.getpid(), socket.gethostname(), now, now),
            )
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
            source = _row_to_record(
                c.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM trials WHERE id = ?", (trial_id,)
                ).fetchone()
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

    def interrupt(self, trial_ids: list[int]) -> None:
        """The search is stopping: in-flight trials become `interrupted` (resumable)."""
        with self._tx() as c:
            for trial_id in trial_ids:
                self._transition(c, trial_id, (RUNNING,))
                c.execute("UPDATE trials SET status = ? WHERE id = ?", (INTERRUPTED, trial_id))

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
            c.execute(
                "UPDATE trials SET status = ? WHERE status IN (?, ?)",
                (QUEUED, RUNNING, INTERRUPTED),
            )
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

    @staticmethod
    def _snapshot(c: sqlite3.Connection, state: AgentState) -> None:
        trial_count = c.execute("SELECT COALESCE(MAX(id), 0) FROM trials").fetchone()[0]
        c.execute(
            "INSERT INTO agent_snapshots (seq, trial_count, created, state) VALUES (?,?,?,?)",
            (state.seq, trial_count, time.time(), json.dumps(state.state)),
        )
        # Only the newest snapshot is needed to resume; the trials hold the history.
        c.execute("DELETE FROM agent_snapshots WHERE id < last_insert_rowid()")


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
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
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
        conn = sqlite3.connect(_readonly_uri(path), uri=True)
    except sqlite3.Error as exc:
        raise BlockQNNError(f"{path}: cannot open: {exc}") from None
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
        row = conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        if row is None:
            raise BlockQNNError(f"{path}: corrupt run (no config)")
        json.loads(row[0])
        # Every page, not only meta's: a damaged trials table must be refused here, before
        # anything is written (quick_check reads the whole file: milliseconds for a run).
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(1)").fetchall()]
        if problems != ["ok"]:
            raise BlockQNNError(f"{path}: corrupt run ({problems[0]})")
        return int(version)
    except sqlite3.DatabaseError as exc:
        raise BlockQNNError(f"{path}: corrupt or not a database ({exc})") from None
    except json.JSONDecodeError:
        raise BlockQNNError(f"{path}: corrupt run (unreadable config)") from None
    finally:
        conn.close()


def _readonly_uri(path: Path) -> str:
    """A read-only URI. With no write-ahead log on disk no writer is working, and the file
    is opened immutable: SQLite then creates no -wal / -shm files, so reading a stopped run
    leaves its directory exactly as it was."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    if not path.with_name(path.name + "-wal").exists():
        uri += "&immutable=1"
    return uri
