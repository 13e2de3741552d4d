"""A full disk, an unreadable store and a master killed while creating one (issue 24,
items 5-7): each is named as what it is ("full", "permission denied"), never "damaged";
nothing stored is lost and the run resumes once the cause is gone."""

from __future__ import annotations

import functools
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

import blockqnn.execute.base as ex
from blockqnn.cli import main
from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.settings.config import Config
from blockqnn.space.nsc.block import Block
from blockqnn.store.db import DB_NAME, Store


@pytest.fixture
def synthetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ex, "default_evaluator", lambda c, d, dev: SyntheticEvaluator(c))
    monkeypatch.setattr(ex, "load_data", lambda c: None)


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_store_that_fills_up_rolls_back_and_keeps_every_earlier_trial(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", Config()).close()
    path = tmp_path / "run" / DB_NAME
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # a real SQLITE_FULL soon
    store = Store(path, conn, readonly=False)
    written = 0
    with pytest.raises(BlockQNNError, match=r"is full .*nothing stored was lost"):
        for i in range(10_000):
            store.add_trial(Block.parse("1,1,3,0,0"), {"pad": "x" * 500, "i": i})
            written += 1
    store.close()
    with Store.open(tmp_path / "run", readonly=True) as again:
        assert len(again.trials()) == written > 0


class _FullConnection(sqlite3.Connection):
    """A connection on a full disk: the session's first row cannot be written."""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.lstrip().startswith("INSERT INTO sessions"):
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = 13  # type: ignore[attr-defined]
            raise error
        return super().execute(sql, *args)


def test_a_session_start_on_a_full_disk_is_one_line_and_the_run_resumes_after(
    tmp_path: Path,
    synthetic: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    assert main(["search", "--run-dir", str(run), "--budget", "3", "--dataset", "digits"]) == 0
    capsys.readouterr()
    real = sqlite3.connect
    with monkeypatch.context() as m:
        full = functools.partial(real, factory=_FullConnection)
        m.setattr("blockqnn.store.opening.sqlite3.connect", full)
        assert main(["search", "--resume", str(run), "--budget", "5"]) == 2
    line = _one_error(capsys)
    assert "is full" in line and "damaged" not in line and "TypeError" not in line
    with Store.open(run, readonly=True) as store:
        assert len(store.trials()) == 3  # nothing lost
    assert main(["search", "--resume", str(run), "--budget", "5"]) == 0
    with Store.open(run, readonly=True) as store:
        assert len(store.trials()) == 5


def _status_as(user: int | None, run: Path) -> tuple[int, str]:
    """`blockqnn status RUN` in a forked child (as `user`, when given): exit code, stderr."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        sys.stderr = os.fdopen(write_end, "w")  # pytest captures sys.stderr, not fd 2
        try:
            if user is not None:
                os.setgid(user)
                os.setuid(user)
            code = main(["status", str(run)])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def test_a_store_the_user_cannot_read_is_permission_denied_not_corrupt() -> None:
    # a folder of its own under the system's temp folder: pytest's is closed to other users
    with tempfile.TemporaryDirectory() as top:
        run = Path(top) / "run"
        Store.create(run, Config()).close()
        for folder in (Path(top), run):
            folder.chmod(0o755)
        _refused_as_another_user(run)


def _refused_as_another_user(run: Path) -> None:
    (run / DB_NAME).chmod(0o600 if os.geteuid() == 0 else 0o000)  # root: another user reads
    code, err = _status_as(65534 if os.geteuid() == 0 else None, run)
    assert code == 2, err
    assert "permission denied" in err and "corrupt" not in err
    assert len(err.splitlines()) == 1


def test_a_master_killed_while_creating_its_store_leaves_nothing_after_the_next_start(
    tmp_path: Path, synthetic: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    dead = _dead_pid()
    stale = run / f".{DB_NAME}.{dead}.tmp"
    stale.write_bytes(b"half a store")
    (run / f".{DB_NAME}.{dead}.tmp-journal").write_bytes(b"")
    assert main(["search", "--run-dir", str(run), "--budget", "2", "--dataset", "digits"]) == 0
    assert not [p.name for p in run.iterdir() if p.name.endswith((".tmp", ".tmp-journal"))]


def _dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
