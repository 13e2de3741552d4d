"""The store's schema and its integrity: the tables, the trial statuses, the row checksums,
the checks at open and the migration of older schemas.

Owns: `SCHEMA_VERSION`, `TrialStatus`, the SQL of a new store (`SCHEMA_SQL`), the checksum
of a row (`seal`, `verified`), the refusal of foreign, newer or damaged files (`check_file`)
and `migrate`. Must not hold a connection of its own beyond `check_file`'s or know the store's
write rules (which transition is allowed when): `blockqnn.store.db` does.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.files import os_reason
from blockqnn.settings.config import AGENT_PRESETS
from blockqnn.store.rundir import reader

# 1: NSC only, with an epsilon column; 2: any space, strategy info as JSON; 3: checksums
SCHEMA_VERSION = 3
APPLICATION_ID = 0x42514E4E  # "BQNN": marks the SQLite file as a blockqnn run


class TrialStatus(str, Enum):
    """A trial's state. The members are the strings stored (a `str` enum: each equals, and
    hashes as, its stored text, so plain strings read back compare and look up alike)."""

    QUEUED = "queued"  # waiting for a slot, or a duplicate waiting for its original's result
    RUNNING = "running"  # handed to the executor
    COMPLETE = "complete"
    FAILED = "failed"  # the evaluator's failure or too many lost workers
    REUSED = "reused"  # the hash was evaluated before: its reward was reused, no training
    INTERRUPTED = "interrupted"  # in flight when the search was stopped; resumed as queued

    def __str__(self) -> str:
        return self.value


QUEUED = TrialStatus.QUEUED
RUNNING = TrialStatus.RUNNING
COMPLETE = TrialStatus.COMPLETE
FAILED = TrialStatus.FAILED
REUSED = TrialStatus.REUSED
INTERRUPTED = TrialStatus.INTERRUPTED
STATUSES = tuple(TrialStatus)
TRAINED = (COMPLETE, FAILED)  # what the budget counts
CACHE_WORKER = "cache: "  # how the `worker` of a trial whose result is the cache's begins

# The columns of `trials` as readers see them (`TrialRecord`'s fields, in order).
TRIAL_COLUMNS = (
    "id", "hash", "candidate", "status", "reward", "accuracy", "flops", "params", "density",
    "result", "worker", "attempts", "lost", "error", "reuse_of", "info", "ask_seq", "tell_seq",
    "created", "started", "finished",
)  # fmt: skip

SCHEMA_SQL = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY,          -- ask order: trial n is the agent's n-th ask
    hash TEXT NOT NULL,
    candidate TEXT NOT NULL,         -- the candidate's canonical text (NSC, a cell, ...)
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s.value) for s in STATUSES)})),
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
    checksum TEXT NOT NULL DEFAULT ''     -- SHA-256 of the columns above (see digest)
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


# The columns each table's checksum covers, in order (the row id included: a flipped id is a
# different row). `meta`'s checksum row covers every other row of meta.
CONTENT = {
    "trials": TRIAL_COLUMNS,
    "agent_snapshots": ("id", "seq", "trial_count", "created", "state"),
    "sessions": ("id", "pid", "host", "started", "updated", "ended", "outcome"),
}
META_CHECKSUM = "checksum"


def digest(table: str, values: Sequence[Any]) -> str:
    """SHA-256 of a row's values as SQLite returns them. `repr` is exact and tells the types
    apart (1 from 1.0 from '1'), so any change of a stored value changes the digest."""
    text = repr((table, *values))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def damaged(what: str) -> BlockQNNError:
    """The error for a store whose content cannot be trusted (exit 2 at the CLI)."""
    return BlockQNNError(f"the run's store is damaged: {what}")


def verified(table: str, row: Sequence[Any], what: str) -> tuple[Any, ...]:
    """The row's content (the checksum column, last, removed) if its checksum matches."""
    *content, checksum = row
    if digest(table, content) != checksum:
        raise damaged(f"{what} does not match its checksum")
    return tuple(content)


def decode(text: Any, what: str) -> Any:
    """A stored JSON value; anything undecodable means the store is damaged."""
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):  # not text, not JSON, too long or deep
        raise damaged(f"{what} is not readable JSON") from None


def seal(c: sqlite3.Connection, table: str, row_id: int) -> None:
    """Write the checksum of a row as it now reads back (after SQLite's type affinity: a
    Python int stored in a REAL column reads back as a float)."""
    cols = ", ".join(CONTENT[table])
    row = c.execute(f"SELECT {cols} FROM {table} WHERE id = ?", (row_id,)).fetchone()
    c.execute(f"UPDATE {table} SET checksum = ? WHERE id = ?", (digest(table, row), row_id))


def seal_meta(c: sqlite3.Connection) -> None:
    rows = c.execute(
        "SELECT key, value FROM meta WHERE key != ? ORDER BY key", (META_CHECKSUM,)
    ).fetchall()
    c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (META_CHECKSUM, digest("meta", rows)))


# What every version-1 run was, in the config keys that version 2 added: an NSC search with
# the paper's reward and its Q-learning constants (presets and modes did not exist yet).
_V1_IMPLIED: dict[str, dict[str, Any]] = {
    "search": {"space": "nsc"},
    "reward": {"name": "paper"},
    "agent": {"preset": "paper", **AGENT_PRESETS["paper"]},
}


def migrate(conn: sqlite3.Connection, version: int) -> None:
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
            for table in CONTENT:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN checksum TEXT NOT NULL DEFAULT ''")
                for (row_id,) in conn.execute(f"SELECT id FROM {table}").fetchall():
                    seal(conn, table, row_id)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        seal_meta(conn)
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


def check_file(path: Path) -> int:
    """Refuse, without writing to it, a file that is not a blockqnn run of a known schema.
    Returns its schema version. A file this user may not read is "permission denied", not
    corrupt (SQLite would say "unable to open" or "not a database")."""
    try:
        with open(path, "rb") as probe:
            probe.read(1)
    except OSError as exc:
        raise BlockQNNError(f"{path}: cannot read the run's store: {os_reason(exc)}") from None
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
