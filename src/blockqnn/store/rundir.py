"""A run directory on disk: reading its store without changing a file, whether it can be
written, and the writer's lock.

Owns: the file names of a run (`DB_NAME`, `LOCK_NAME`), `reader` (a read-only SQLite
connection that leaves a stopped or killed run's files exactly as they were; a killed run's
is a private copy, removed with it or, if its reader was killed too, by the next reader:
`remove_stale_copies`), `held` and
`take_lock` (one writer at a time), `check_writable` and `write_failure` (a place that cannot
be written is said to be so, not called damaged). Must not know the schema or what a run
holds: `blockqnn.store.db` does.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import TextIO

from blockqnn.errors import BlockQNNError, clip
from blockqnn.files import lock_file

DB_NAME = "blockqnn.sqlite"
LOCK_NAME = "lock"
LOCK_PATIENCE_S = 0.25  # how long taking the writer lock waits out a reader's probe


def check_writable(run_dir: str | Path) -> None:
    """Refuse a run dir whose store this process could not write (permissions, a read-only
    file system), before anything in it is opened for writing. A resume needs the folder
    (SQLite creates its -wal and -shm files there), the database, and any -wal, -shm and
    lock file already present."""
    directory = Path(run_dir)
    names = ("", DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", LOCK_NAME)
    for name in names:
        p = directory / name if name else directory
        if p.exists() and not os.access(p, os.W_OK):
            where = f" ({name} cannot be written)" if name else ""
            raise BlockQNNError(f"run dir {clip(str(directory))} is not writable{where}")


def take_lock(run_dir: Path) -> TextIO:
    """Take the run's writer lock (`DIR/lock`); the open handle holds it until closed. A
    reader's `held` probe holds a shared lock for microseconds: waited out for
    `LOCK_PATIENCE_S`, so that `status` or the dashboard polling the run never turns a
    search away."""
    return lock_file(
        run_dir / LOCK_NAME,
        f"run dir {clip(str(run_dir))} is not writable",
        f"{run_dir} is in use by another running search",
        LOCK_PATIENCE_S,
    )


def write_failure(exc: BaseException) -> str:
    """A plain reason for what SQLite or the OS said while writing a store."""
    text = str(exc)
    if "disk is full" in text or getattr(exc, "errno", None) == 28:
        return "disk full (no space left on the device)"
    if "readonly" in text or "read-only" in text or getattr(exc, "errno", None) in (13, 30):
        return "not writable"
    return clip(getattr(exc, "strerror", None) or text)


_SQLITE_FULL = 13
_SQLITE_IOERR = 10
_SQLITE_CANTOPEN = 14
_NEARLY_FULL = 1 << 20  # bytes free under which a disk I/O error is taken for a full disk


def _free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def store_write_error(exc: sqlite3.Error, run_dir: Path) -> BlockQNNError | None:
    """The one-line error for a write to the run's store that failed because the disk is
    full or the store may not be written; None for anything else (a real fault). SQLite
    says "disk I/O error" for some writes on a full disk: the free space decides."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    text = clip(str(exc))
    where = clip(str(run_dir))
    free = _free_bytes(run_dir)
    if (
        code == _SQLITE_FULL
        or "disk is full" in str(exc)
        or (code == _SQLITE_IOERR and free is not None and free < _NEARLY_FULL)
    ):
        return BlockQNNError(
            f"the disk holding the run {where} is full ({text}); nothing stored was lost: "
            f"free some space, then continue with --resume {where}"
        )
    if code == _SQLITE_CANTOPEN or "readonly" in str(exc) or "read-only" in str(exc):
        return BlockQNNError(f"the run's store in {where} cannot be written: permission denied")
    return None


def held(run_dir: Path) -> bool:
    """Whether a search process holds the run's writer lock now."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return False
    lock = run_dir / LOCK_NAME
    if not lock.exists():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def alive(pid: int) -> bool:
    """Whether process `pid` may still run (another user's, or an impossible number: yes,
    so that its files are left alone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


COPY_PREFIX = "blockqnn-read-"  # a private copy's folder: COPY_PREFIX + "PID-" + random


def remove_stale_copies() -> None:
    """Remove the private copies (`reader`) of readers that were killed before they could."""
    for folder in Path(tempfile.gettempdir()).glob(COPY_PREFIX + "*-*"):
        pid = folder.name[len(COPY_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


class PrivateCopy(sqlite3.Connection):
    """A connection to a private copy of a store in a temporary folder, removed with it
    (closed, or else when the folder's object is collected)."""

    folder: tempfile.TemporaryDirectory[str] | None = None

    def close(self) -> None:
        super().close()
        if self.folder is not None:
            self.folder.cleanup()


def reader(path: Path) -> tuple[sqlite3.Connection, bool]:
    """A read-only connection to the store at `path`, and whether it is a private copy.
    Reading must leave a stopped run's files exactly as they were:

    - no write-ahead log on disk: no writer is working; the file is opened immutable, and
      SQLite creates no -wal / -shm files;
    - a log and a live writer (the lock is held): read beside it (mode=ro), as WAL readers
      do; the -shm index is the writer's to keep;
    - a log and no writer (one was killed): SQLite would rebuild the -shm index in the run
      dir, so a private copy of the database and its log, in a temporary folder, is read
      instead (on disk: a run's store can be larger than this machine's memory).
    """
    wal = path.with_name(path.name + "-wal")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    if not wal.exists():
        return sqlite3.connect(uri + "&immutable=1", uri=True), False
    if held(path.parent):
        return sqlite3.connect(uri, uri=True), False
    remove_stale_copies()
    folder = tempfile.TemporaryDirectory(prefix=f"{COPY_PREFIX}{os.getpid()}-")
    try:
        copy = Path(folder.name) / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        conn = sqlite3.connect(copy, isolation_level=None, factory=PrivateCopy)
    except BaseException:
        folder.cleanup()
        raise
    conn.folder = folder
    return conn, True
