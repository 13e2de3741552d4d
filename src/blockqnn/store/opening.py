"""Making a run's database file and connecting to one.

Owns: building a new store in a temporary file beside its final name and linking it into
place (never half a run), removing the temporary files of a master killed while it built one,
and the writable connection (WAL, the writer lock, the migration of an older schema). Must
not know what a run holds beyond the schema: `blockqnn.store.db.Store` does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from blockqnn.errors import BlockQNNError, clip
from blockqnn.settings.config import Config
from blockqnn.store.rundir import (
    DB_NAME,
    alive,
    check_writable,
    store_write_error,
    take_lock,
    write_failure,
)
from blockqnn.store.schema import APPLICATION_ID, SCHEMA_SQL, SCHEMA_VERSION, migrate, seal_meta

_TEMP_PREFIX = f".{DB_NAME}."


def remove_stale_temps(directory: Path) -> None:
    """Remove the temporary stores (`.blockqnn.sqlite.PID.tmp` and its journal) of masters
    that died while building one: their process no longer runs."""
    try:
        names = [p for p in directory.iterdir() if p.name.startswith(_TEMP_PREFIX)]
    except OSError:
        return
    for p in names:
        pid_text = p.name[len(_TEMP_PREFIX) :].split(".", 1)[0]
        if not pid_text.isdigit() or not p.name.endswith((".tmp", ".tmp-journal")):
            continue
        if int(pid_text) != os.getpid() and alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            p.unlink()


WARM_START = "warm_start"  # meta key: the warm-start runs asked for at creation (JSON)


def check_new_run_dir(directory: Path) -> None:
    """Refuse a directory that holds a run, is a file, or holds a deleted run's log (SQLite
    would replay its trials onto the new database)."""
    if (directory / DB_NAME).exists():
        raise BlockQNNError(
            f"{directory} already holds a run; continue it with --resume {directory} "
            "or choose another --run-dir"
        )
    if directory.exists() and not directory.is_dir():
        raise BlockQNNError(f"--run-dir {directory} is a file, not a directory")
    leftover = [n for n in (f"{DB_NAME}-wal", f"{DB_NAME}-shm") if (directory / n).exists()]
    if leftover:
        raise BlockQNNError(
            f"{directory} holds {leftover[0]}, left by a run whose {DB_NAME} was deleted: "
            "remove it or choose another --run-dir"
        )


def warm_start_meta(runs: Sequence[str | Path], accept_any: bool) -> dict[str, str]:
    """The meta row recording the warm-start runs a new run was asked for (none: no row)."""
    if not runs:
        return {}
    request = {"runs": [str(Path(r).resolve()) for r in runs], "any": accept_any}
    return {WARM_START: json.dumps(request)}


def read_warm_start(meta: dict[str, str]) -> tuple[tuple[str, ...], bool]:
    """The warm-start runs and `accept_any` a run's meta records; none before this row."""
    raw = meta.get(WARM_START)
    if raw is None:
        return (), False
    request = json.loads(raw)
    return tuple(request["runs"]), bool(request["any"])


def build(directory: Path, config: Config, meta: dict[str, str] | None = None) -> None:
    """Write a new store at `directory/DB_NAME` through a temporary file and a link; a
    failure leaves nothing (BlockQNNError naming a full disk or an unwritable place)."""
    path = directory / DB_NAME
    tmp = directory / f"{_TEMP_PREFIX}{os.getpid()}.tmp"
    journal = tmp.with_name(tmp.name + "-journal")
    try:
        check_writable(directory)
        remove_stale_temps(directory)
        _fill(tmp, config, meta or {})
        try:
            os.link(tmp, path)  # fails if another process created the run meanwhile
        except FileExistsError:
            raise BlockQNNError(f"{directory} already holds a run") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EROFS):  # not a missing hard link
                raise
            os.replace(tmp, path)  # a file system without hard links
    except (sqlite3.Error, OSError) as exc:
        raise BlockQNNError(
            f"cannot create the run's store in {clip(str(directory))}: {write_failure(exc)}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
        journal.unlink(missing_ok=True)


def _fill(tmp: Path, config: Config, extra: dict[str, str]) -> None:
    from blockqnn import __version__

    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.executescript(SCHEMA_SQL)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        meta = {
            "schema_version": str(SCHEMA_VERSION),
            "created": repr(time.time()),
            "blockqnn_version": __version__,
            "config": json.dumps(config.to_dict(), sort_keys=True),
            **extra,
        }
        conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        seal_meta(conn)
    finally:
        conn.close()


def connect_writer(
    path: Path, version: int, acquire: bool
) -> tuple[sqlite3.Connection, TextIO | None]:
    """A writable connection to the store at `path` (schema `version`, migrated if older)
    and, with `acquire`, the writer lock taken before anything is written."""
    directory = path.parent
    check_writable(directory)
    lock = take_lock(directory) if acquire else None
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints
            if version < SCHEMA_VERSION:
                migrate(conn, version)
        except BaseException:
            conn.close()
            raise
    except BaseException as exc:
        if lock is not None:
            lock.close()
        problem = store_write_error(exc, directory) if isinstance(exc, sqlite3.Error) else None
        if problem is not None:
            raise problem from None
        raise
    return conn, lock
