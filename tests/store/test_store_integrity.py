"""The store refuses damage, changes nothing when it refuses, and says why in one line.

- every refused `--resume` leaves every file of the run dir byte-for-byte unchanged (the
  kinds below include those that used to be refused only after a `sessions` row was
  written, and a version-1 run that used to be migrated before the refusal);
- an undecodable JSON value, a row whose checksum does not match, or a damaged page is
  "the run's store is damaged: ..." at every command that reads it;
- a run dir that cannot be written, or a disk that fills at creation, is a one-line refusal
  with no temporary file left behind;
- version-2 runs (no checksums) read as they are and migrate on the first resume.

We run as root in CI, where permissions do not stop us and a read-only bind mount is not
available: unwritable places are simulated by monkeypatching `os.access` (what
`check_writable` asks) or the failing call, as noted at each test.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.store.test_store_migration import build_v1_run

import blockqnn.execute.base as ex
import blockqnn.store.opening as opening_module
import blockqnn.store.schema as store_schema
from blockqnn.cli import main
from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.store.db import DB_NAME, LOCK_NAME, SCHEMA_VERSION, Store

BUDGET = 24  # more than the 20 tells between agent snapshots: the run holds one


@pytest.fixture
def synthetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ex, "default_evaluator", lambda c, d, dev: SyntheticEvaluator(c))
    monkeypatch.setattr(ex, "load_data", lambda c: None)


@pytest.fixture
def run(tmp_path: Path, synthetic: None, capsys: pytest.CaptureFixture[str]) -> Path:
    """A finished synthetic run with an agent snapshot, as the current schema writes it."""
    path = tmp_path / "run"
    argv = ["search", "--run-dir", str(path), "--budget", str(BUDGET), "--dataset", "digits"]
    assert main(argv) == 0
    capsys.readouterr()
    with Store.open(path, readonly=True) as s:
        assert s.latest_snapshot() is not None
    return path


def files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())}


def sql(run_dir: Path, statement: str, *args: object, seal: str = "") -> None:
    """Change the store by hand; `seal` = "trials:ID", "agent_snapshots:ID", "sessions:ID" or
    "meta" recomputes that checksum, as a bug in a writer (not a bit flip) would leave it."""
    conn = sqlite3.connect(run_dir / DB_NAME, isolation_level=None)
    conn.execute(statement, args)
    if seal == "meta":
        store_schema.seal_meta(conn)
    elif seal:
        table, row_id = seal.split(":")
        store_schema.seal(conn, table, int(row_id))
    conn.close()


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


# ----- 8. a refused resume changes nothing ----------------------------------------------------


def _bad_snapshot(run_dir: Path) -> None:
    """A snapshot of an agent with other settings: refused by the agent when it is loaded,
    which used to happen after the resume had written its session."""
    conn = sqlite3.connect(run_dir / DB_NAME)
    row_id, state = conn.execute("SELECT id, state FROM agent_snapshots").fetchone()
    conn.close()
    data = json.loads(state)
    data["settings"]["alpha_mode"] = "fixed"
    sql(
        run_dir,
        "UPDATE agent_snapshots SET state = ? WHERE id = ?",
        json.dumps(data),
        row_id,
        seal=f"agent_snapshots:{row_id}",
    )


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "snapshot of another agent": (_bad_snapshot, "alpha_mode"),
    "result JSON": (
        lambda r: sql(r, "UPDATE trials SET result = '{bad' WHERE id = 3", seal="trials:3"),
        "trial 3's result is not readable JSON",
    ),
    "info JSON": (
        lambda r: sql(r, "UPDATE trials SET info = '[[[' WHERE id = 5", seal="trials:5"),
        "trial 5's info is not readable JSON",
    ),
    "unsealed reward": (
        lambda r: sql(r, "UPDATE trials SET reward = 0.99 WHERE id = 2"),
        "trial 2 does not match its checksum",
    ),
    "candidate text": (
        lambda r: sql(r, "UPDATE trials SET candidate = '1,9,9,9,9' WHERE id = 4", seal="trials:4"),
        "trial 4's candidate does not parse",
    ),
    "session row": (
        lambda r: sql(r, "UPDATE sessions SET started = started - 1000"),
        "session 1 does not match its checksum",
    ),
    "snapshot checksum": (
        lambda r: sql(r, "UPDATE agent_snapshots SET seq = seq + 1"),
        "agent's snapshot does not match its checksum",
    ),
    "meta by hand": (
        lambda r: sql(r, "UPDATE meta SET value = '1' WHERE key = 'blockqnn_version'"),
        "meta table) do not match",
    ),
    "config out of range": (
        lambda r: sql(
            r,
            "UPDATE meta SET value = json_set(value, '$.agent.max_depth', 1000) "
            "WHERE key = 'config'",
            seal="meta",
        ),
        "agent.max_depth = 1000",
    ),
}


def leave_a_log(run_dir: Path) -> None:
    """Leave the run as a killed master does: a -wal holding a committed transaction that
    no checkpoint has copied into the database, and the -shm index beside it."""
    code = (
        "import os, sys\n"
        "from blockqnn.store.db import Store\n"
        "Store.open(sys.argv[1]).begin_session()\n"
        "os._exit(0)\n"  # killed: no close, no checkpoint, the session never ends
    )
    subprocess.run([sys.executable, "-c", code, str(run_dir)], check=True)
    assert (run_dir / (DB_NAME + "-wal")).stat().st_size > 0
    assert (run_dir / (DB_NAME + "-shm")).exists()


@pytest.mark.parametrize("state", ["stopped", "killed"])
@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_refused_resume_leaves_every_file_unchanged(
    run: Path, capsys: pytest.CaptureFixture[str], kind: str, state: str
) -> None:
    damage, message = DAMAGE[kind]
    damage(run)
    if state == "killed":
        leave_a_log(run)
    before = files(run)
    assert main(["search", "--resume", str(run)]) == 2
    assert message in one_error_line(capsys)
    assert files(run) == before  # no session row, no migration, not even the -shm index


def test_reading_a_killed_run_changes_nothing(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leave_a_log(run)
    before = files(run)
    for argv in (["status", str(run)], ["trials", str(run), "--json"]):
        assert main(argv) == 0
    capsys.readouterr()
    assert files(run) == before


def test_a_killed_run_is_read_through_a_private_copy_on_disk(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a copy in memory (a store can outgrow it): a copy in a temporary folder, gone
    with the reading; a copy left by a reader that was killed goes at the next reading."""
    leave_a_log(run)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale, kept = temp / f"blockqnn-read-{exited}-x", temp / "blockqnn-read-1-x"  # 1: init
    for folder in (stale, kept):
        folder.mkdir()
        (folder / DB_NAME).write_bytes(b"a copy")
    before = files(run)
    ours = f"blockqnn-read-{os.getpid()}-"
    with Store.open(run, readonly=True) as store:
        assert store.counts()["trained"] == BUDGET
        assert [p.name.startswith(ours) for p in temp.iterdir() if p != kept] == [True]
    assert list(temp.iterdir()) == [kept]
    assert files(run) == before


def test_a_resume_of_a_run_in_use_changes_nothing(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = files(run)
    with open(run / LOCK_NAME, "a+") as other:  # another search holds the run
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["search", "--resume", str(run)]) == 2
    assert "in use by another running search" in one_error_line(capsys)
    assert files(run) == before


def test_a_refused_resume_of_a_version_1_run_does_not_migrate_it(
    tmp_path: Path, synthetic: None, capsys: pytest.CaptureFixture[str]
) -> None:
    v1 = tmp_path / "v1"
    build_v1_run(v1)
    sql(v1, "UPDATE trials SET result = 'not json' WHERE id = 2")  # v1 has no checksums
    before = files(v1)
    assert main(["search", "--resume", str(v1)]) == 2
    assert "trial 2's result is not readable JSON" in one_error_line(capsys)
    assert files(v1) == before  # still version 1: the migration waits for every check
    conn = sqlite3.connect(v1 / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


# ----- 9. undecodable stored values: every reader refuses --------------------------------------


@pytest.mark.parametrize("column", ["result", "info"])
def test_invalid_json_in_a_trial_is_refused_by_every_reader(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], column: str
) -> None:
    sql(run, f"UPDATE trials SET {column} = '{{\"a\": ' WHERE id = 7", seal="trials:7")
    before = files(run)
    for argv in (
        ["status", str(run)],
        ["status", str(run), "--json"],
        ["trials", str(run), "--csv"],
        ["report", str(run), "--out", str(tmp_path / "r.html")],
        ["search", "--resume", str(run)],
    ):
        assert main(argv) == 2, argv
        line = one_error_line(capsys)
        assert f"the run's store is damaged: trial 7's {column} is not readable JSON" in line
    assert files(run) == before and not (tmp_path / "r.html").exists()


# ----- 10. silent corruption of a stored value ------------------------------------------------


def test_a_zeroed_byte_in_a_stored_block_is_refused_not_shown(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(run, readonly=True) as s:
        target = s.trials()[0].candidate.encode()
    data = bytearray((run / DB_NAME).read_bytes())
    at = data.find(target)
    assert at > 0
    data[at + 2] = 0  # "1,1,3,..." -> "1,\x003,...": still a readable row for SQLite
    (run / DB_NAME).write_bytes(bytes(data))
    for argv in (["status", str(run)], ["trials", str(run)], ["search", "--resume", str(run)]):
        assert main(argv) == 2, argv
        assert "damaged" in one_error_line(capsys)


def test_checksums_cover_every_row_and_survive_every_write(run: Path) -> None:
    conn = sqlite3.connect(run / DB_NAME)
    for table in ("trials", "agent_snapshots", "sessions"):
        assert conn.execute(f"SELECT COUNT(*) FROM {table} WHERE checksum = ''").fetchone() == (0,)
    conn.close()
    with Store.open(run, readonly=True) as s:
        assert len(s.trials()) >= BUDGET and s.sessions()[0]["outcome"] == "complete"
        assert s.meta()["schema_version"] == str(SCHEMA_VERSION)


# ----- 7. places that cannot be written --------------------------------------------------------


def _unwritable(monkeypatch: pytest.MonkeyPatch, under: Path) -> None:
    """os.access says no for `under` and below: what a non-root user or a read-only file
    system gets (as root, permissions would not stop the write)."""
    real = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        inside = str(Path(str(path)).resolve()).startswith(str(under.resolve()))
        return False if inside and mode & os.W_OK else real(path, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)


def test_resume_in_an_unwritable_run_dir_is_refused_unchanged(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (run / (DB_NAME + "-wal")).write_bytes(b"")  # as a kill -9 leaves it
    before = files(run)
    _unwritable(monkeypatch, run)
    assert main(["search", "--resume", str(run)]) == 2
    assert f"run dir {run} is not writable" in one_error_line(capsys)
    assert files(run) == before
    assert main(["status", str(run)]) == 0  # reading needs no writing


def test_a_new_run_in_an_unwritable_dir_is_refused(
    tmp_path: Path,
    synthetic: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parent = tmp_path / "readonly"
    parent.mkdir()
    _unwritable(monkeypatch, parent)
    argv = ["search", "--run-dir", str(parent), "--budget", "2", "--dataset", "digits"]
    assert main(argv) == 2
    assert "is not writable" in one_error_line(capsys)
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize(
    "failure",
    [
        sqlite3.OperationalError("database or disk is full"),
        OSError(28, "No space left on device"),
        OSError(30, "Read-only file system"),
    ],
    ids=["sqlite-full", "link-nospace", "link-readonly"],
)
def test_a_failure_while_creating_the_store_leaves_nothing(
    tmp_path: Path,
    synthetic: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failure: Exception,
) -> None:
    def fail(*args: object) -> None:
        raise failure

    # Where each failure strikes on a real full disk or read-only mount: SQLite filling the
    # temporary database, or the hard link that publishes it.
    if isinstance(failure, sqlite3.Error):
        monkeypatch.setattr(opening_module, "seal_meta", fail)
    else:
        monkeypatch.setattr(os, "link", fail)
    run_dir = tmp_path / "new"
    argv = ["search", "--run-dir", str(run_dir), "--budget", "2", "--dataset", "digits"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "cannot create the run's store" in line and "damaged" not in line
    expected = "not writable" if "Read-only" in str(failure) else "no space left"
    assert expected in line
    assert not run_dir.exists()  # no .blockqnn.sqlite.<pid>.tmp, no empty run dir


def test_a_lock_file_that_cannot_be_opened_is_not_writable(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lock file's open fails as it does for a non-root user in a foreign run dir.
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    import blockqnn.files as files  # where the lock file is opened

    monkeypatch.setattr(files, "open", refuse, raising=False)
    with pytest.raises(BlockQNNError, match="is not writable"):
        Store.open(run, acquire=True)


def test_sqlite_write_failures_are_not_called_damage(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def readonly(self: Store) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(Store, "begin_session", readonly)
    assert main(["search", "--resume", str(run)]) == 2
    line = one_error_line(capsys)
    assert "not writable" in line and "damaged" not in line


# ----- version-2 runs -------------------------------------------------------------------------


def make_v2(run_dir: Path) -> None:
    """Turn a current run into what version 2 wrote: the same tables without checksums."""
    conn = sqlite3.connect(run_dir / DB_NAME, isolation_level=None)
    for table in ("trials", "agent_snapshots", "sessions"):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN checksum")
    conn.execute("DELETE FROM meta WHERE key = 'checksum'")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.execute("PRAGMA user_version = 2")
    conn.execute("VACUUM")
    conn.close()


def test_a_version_2_run_reads_unchanged_and_migrates_on_resume(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trials", str(run), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    make_v2(run)
    before = files(run)
    assert main(["trials", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    assert files(run) == before  # read through a migrated copy in memory

    assert main(["search", "--resume", str(run)]) == 0
    capsys.readouterr()
    conn = sqlite3.connect(run / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT COUNT(*) FROM trials WHERE checksum = ''").fetchone() == (0,)
    conn.close()
    assert main(["trials", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
