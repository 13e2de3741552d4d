"""The evaluation cache shared by runs, and the fingerprint of a run's evaluation settings.

Owns: `evaluation_settings` / `fingerprint` (what decides a candidate's result: the space,
the data, the network, the training and the reward, from the resolved config),
`LatencyCache` (measured latencies, `blockqnn.evaluate.latency`, in the same folder), and
`EvalCache`: one SQLite file, keyed by (candidate hash, fingerprint), holding the result of
every candidate trained with those settings by any run on this machine. The search looks a
new candidate up before training it; a hit's result is copied into the run with its source
(`worker` = "cache: RUN trial N"). Must not decide what to evaluate nor import torch.

Contract:
- Several searches may share one cache: WAL, a busy timeout, one transaction per write,
  and `INSERT OR IGNORE` (the first result stored for a key stays; a second search that
  trained the same candidate meanwhile got the same result, up to nondeterminism).
- Only complete results are stored: a failure may be the machine's (out of memory, the time
  limit) rather than the candidate's, so a failed candidate is trained again.
- The cache is a convenience, never a source of failure: a file that is damaged or not a
  cache is renamed aside (`NAME.damaged-TIME`) with a warning and a new one started; an error
  while reading or writing disables the cache for the rest of the session with a warning.
  Only bad input is refused (exit 2, before any training): a cache path that is a file or
  a folder that cannot be written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.evaluate.result import EvalResult
from blockqnn.files import user_cache_dir
from blockqnn.settings.config import Config, DataConfig
from blockqnn.settings.datasets import BUILTIN_DATASETS
from blockqnn.store.schema import CACHE_WORKER

if TYPE_CHECKING:
    from blockqnn.evaluate.latency import Latency

log = logging.getLogger("blockqnn.store.cache")

CACHE_FILE = "evaluations.sqlite"
LATENCY_FILE = "latency.sqlite"  # measured latencies, beside the evaluations
CACHE_SCHEMA = 1
CACHE_APPLICATION_ID = 0x4251434E  # "BQCN": marks the SQLite file as a blockqnn cache
OFF = "off"
BUSY_TIMEOUT = 30.0  # seconds to wait for another search's write to the cache
# Keys that do not decide a result: where files live, how many CPU threads train, and what
# is read from the data itself (the data keys decide it; runs before blockqnn recorded
# their data's shape stored the default there).
_IGNORED = ("data.cache_dir", "train.threads", "network.input_shape", "network.num_classes")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    hash TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,            -- EvalResult as JSON
    run TEXT NOT NULL,               -- the run dir that trained it
    trial INTEGER NOT NULL,          -- its trial id there
    created REAL NOT NULL,
    PRIMARY KEY (hash, fingerprint)
);
"""


def evaluation_settings(config: Config) -> dict[str, Any]:
    """The settings that decide a candidate's result and reward, flat (`section.key`)."""
    data = config.to_dict()
    out: dict[str, Any] = {"search.space": config.search.space}
    for section in ("data", "network", "train", "reward"):
        for key, value in sorted(data[section].items()):
            if f"{section}.{key}" not in _IGNORED:
                out[f"{section}.{key}"] = value
    return out


def data_identity(data: DataConfig, dataset_is_path: bool = True) -> str:
    """What the data set and tables at the config's paths hold, as far as is cheap to know:
    a file's size and modification time, a folder's images' (as its array cache keys them).
    Empty for the built-in data sets, whose archives are checksum-verified, and without
    `dataset_is_path` (nb201: the dataset is a table's column) for the dataset."""
    from blockqnn.data.local import folder_fingerprint  # numpy: only where a folder is used

    parts = []
    is_path = dataset_is_path and data.dataset not in BUILTIN_DATASETS
    paths = [data.dataset] if is_path else []
    paths += [t for t in data.table.split(os.pathsep) if t]
    for path in map(Path, paths):
        if path.is_dir():
            parts.append(folder_fingerprint(path))
        elif path.is_file():
            st = path.stat()
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def fingerprint(config: Config, evaluator: str = "", dataset_is_path: bool = True) -> str:
    """SHA-256 of `evaluation_settings`, of what the data paths hold (a file regenerated at
    the same path is other data; `dataset_is_path` as in `data_identity`) and of `evaluator`,
    the name of an evaluator other than the space's own: equal fingerprints, interchangeable
    results."""
    settings = evaluation_settings(config)
    if config.search.space == "nsc":  # results stored before ordered concats had their own
        settings["space.hash"] = "ordered concats"  # hash may be another network's: unused
    identity = data_identity(config.data, dataset_is_path)
    if identity:  # absent for built-in data: their runs' fingerprints stay as they were
        settings["data.identity"] = identity
    if evaluator:  # a replaced evaluator (a test's, a benchmark's) never shares real results
        settings["evaluator"] = evaluator
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def callable_name(f: Any) -> str:
    """A name for an evaluator factory or data loader that is stable across processes:
    module and qualified name, with a partial's arguments (a repr would hold an address)."""
    if f is None:
        return ""
    if isinstance(f, functools.partial):
        args = ", ".join(
            [*map(repr, f.args), *(f"{k}={v!r}" for k, v in sorted(f.keywords.items()))]
        )
        return f"{callable_name(f.func)}({args})"
    name = getattr(f, "__qualname__", None) or type(f).__qualname__
    return f"{getattr(f, '__module__', '')}.{name}"


def setting_differences(mine: Config, theirs: Config) -> list[str]:
    """The evaluation settings that differ, as `key = theirs (here: mine)`."""
    a, b = evaluation_settings(mine), evaluation_settings(theirs)
    return [
        f"{key} = {clip(repr(b.get(key)))} (here {clip(repr(a.get(key)))})"
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def cache_dir_for(config: Config) -> Path | None:
    """The cache folder `[search] cache` names (None: the cache is off)."""
    chosen = config.search.cache
    if chosen == OFF:
        return None
    return Path(chosen).expanduser() if chosen else user_cache_dir()


def check_cache_dir(directory: Path) -> None:
    """Refuse (BlockQNNError) a cache folder that is a file or cannot be written; creates it
    if missing. Called before any training."""
    if directory.exists() and not directory.is_dir():
        raise BlockQNNError(f"--cache {clip(str(directory))} is a file, not a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BlockQNNError(
            f"--cache {clip(str(directory))}: cannot create the folder ({exc.strerror})"
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BlockQNNError(f"--cache {clip(str(directory))}: the folder is not writable")


@dataclass(frozen=True)
class CacheHit:
    result: EvalResult
    run: str
    trial: int

    @property
    def source(self) -> str:
        """What the trial's `worker` records: where the result came from."""
        return f"{CACHE_WORKER}{self.run} trial {self.trial}"


class EvalCache:
    """One open cache file. `open` never fails for a damaged file (it is set aside)."""

    def __init__(self, path: Path, conn: sqlite3.Connection | None) -> None:
        self.path = path
        self._conn = conn
        self.hits = 0
        self.saved_seconds = 0.0  # the training time the hits' results took when trained

    @property
    def enabled(self) -> bool:
        return self._conn is not None

    @classmethod
    def open(cls, directory: Path) -> EvalCache:
        check_cache_dir(directory)
        path = directory / CACHE_FILE
        try:
            return cls(path, _connect(path))
        except sqlite3.OperationalError as exc:
            if _unavailable(exc):  # busy, read-only, unopenable: the file may be fine
                log.warning("evaluation cache disabled for this run: %s", clip(str(exc)))
                return cls(path, None)
            return cls._set_aside(path, exc)
        except (sqlite3.DatabaseError, _NotACache) as exc:
            return cls._set_aside(path, exc)
        except OSError as exc:
            log.warning("evaluation cache disabled: %s", clip(str(exc)))
            return cls(path, None)

    @classmethod
    def _set_aside(cls, path: Path, exc: Exception) -> EvalCache:
        """A damaged cache file renamed aside (never deleted), and a new one started."""
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning(
            "the evaluation cache %s is damaged (%s): set aside as %s, starting a new one",
            path,
            clip(str(exc)),
            aside.name,
        )
        try:
            for suffix in ("", "-wal", "-shm"):
                side = Path(str(path) + suffix)
                if side.exists():
                    os.replace(side, Path(str(aside) + suffix))
            return cls(path, _connect(path))
        except (OSError, sqlite3.Error, _NotACache) as again:
            log.warning("evaluation cache disabled: %s", clip(str(again)))
            return cls(path, None)

    def get(self, candidate_hash: str, fprint: str) -> CacheHit | None:
        if self._conn is None:
            return None
        try:
            row = self._conn.execute(
                "SELECT result, run, trial FROM evaluations WHERE hash = ? AND fingerprint = ?",
                (candidate_hash, fprint),
            ).fetchone()
            if row is None:
                return None
            data = json.loads(row[0])
            result = EvalResult.from_dict(data)
            if not result.ok:
                return None
        except (sqlite3.Error, ValueError, TypeError) as exc:
            self._disable(exc)
            return None
        self.hits += 1
        self.saved_seconds += result.seconds
        return CacheHit(result, str(row[1]), int(row[2]))

    def put(
        self, candidate_hash: str, fprint: str, result: EvalResult, run: str, trial: int
    ) -> None:
        if self._conn is None or not result.ok:
            return
        try:  # autocommit: one statement, one transaction
            self._conn.execute(
                "INSERT OR IGNORE INTO evaluations VALUES (?, ?, ?, ?, ?, ?)",
                (candidate_hash, fprint, json.dumps(result.to_dict()), run, trial, time.time()),
            )
        except sqlite3.Error as exc:
            self._disable(exc)

    def count(self) -> int:
        if self._conn is None:
            return 0
        return int(self._conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _disable(self, exc: Exception) -> None:
        log.warning("evaluation cache %s disabled for this search: %s", self.path, clip(str(exc)))
        self.close()


class _NotACache(Exception):
    """The file is a database, but not a blockqnn evaluation cache of a known version."""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
    try:
        # Checked and created under the write lock: two searches starting on a new cache at
        # once must not see each other's half-made file as a foreign one.
        conn.execute("BEGIN IMMEDIATE")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id == 0 and version == 0 and not _tables(conn):
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA application_id = {CACHE_APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {CACHE_SCHEMA}")
        elif app_id != CACHE_APPLICATION_ID or version != CACHE_SCHEMA:
            raise _NotACache(f"application id {app_id:#x}, version {version}")
        else:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check(1)").fetchall()]
            if problems != ["ok"]:
                raise _NotACache(str(problems[0]))
            conn.execute("SELECT hash, fingerprint, result, run, trial FROM evaluations LIMIT 0")
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


# SQLite's codes for a file that is fine but cannot be used now (Python 3.11+ names them)
_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_CANTOPEN",
                "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_PERM")  # fmt: skip
_UNAVAILABLE_WORDS = ("locked", "readonly", "unable to open", "disk i/o", "full")  # Python 3.10


def _unavailable(exc: sqlite3.OperationalError) -> bool:
    name = getattr(exc, "sqlite_errorname", None)
    if name is not None:
        return name.startswith(_UNAVAILABLE)
    return any(word in str(exc).lower() for word in _UNAVAILABLE_WORDS)


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


# ----- measured latencies ------------------------------------------------------------------


class LatencyCache:
    """Measurements by `blockqnn.evaluate.latency.cache_key`, in one SQLite file shared by
    every run and worker on the machine. A key is written once (INSERT OR IGNORE): nothing
    stored is overwritten. An unusable file (read-only folder, damaged) is logged and
    skipped: measuring again is always correct, only slower. Picklable (a path): the
    master hands it to the workers' latency meters."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection | None:
        if self.path is None:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("CREATE TABLE IF NOT EXISTS latency (key TEXT PRIMARY KEY, value TEXT)")
            return db
        except (OSError, sqlite3.Error) as exc:
            log.warning("latency cache %s unusable: %s", self.path, exc)
            return None

    def get(self, key: str) -> Latency | None:
        from blockqnn.evaluate.latency import Latency  # torch-free, but only where measured

        db = self._connect()
        if db is None:
            return None
        try:
            with closing(db):
                row = db.execute("SELECT value FROM latency WHERE key = ?", (key,)).fetchone()
            return None if row is None else Latency(**json.loads(row[0]))
        except (sqlite3.Error, ValueError, TypeError) as exc:
            log.warning("latency cache %s: %s", self.path, exc)
            return None

    def put(self, key: str, latency: Latency) -> None:
        db = self._connect()
        if db is None:
            return
        try:
            with closing(db), db:
                db.execute(
                    "INSERT OR IGNORE INTO latency VALUES (?, ?)",
                    (key, json.dumps(asdict(latency))),
                )
        except sqlite3.Error as exc:
            log.warning("latency cache %s: %s", self.path, exc)


def latency_cache(config: Config) -> LatencyCache:
    """Kept beside the evaluation cache (`[search] cache`, the user cache folder by default);
    with the cache off, nothing is kept between searches."""
    directory = cache_dir_for(config)
    return LatencyCache(None if directory is None else directory / LATENCY_FILE)
