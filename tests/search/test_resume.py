"""Kill -9 and Ctrl-C of a real `blockqnn search` process, then `--resume`.

The master runs the local executor with the synthetic evaluator (a short sleep), patched in
by a tiny driver, so that the process, the store and the signals are real and fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockqnn.store.db import Store, TrialRecord

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# The driver restores Ctrl-C's default first: a shell that starts the test run in the
# background (`cmd &` without job control) ignores SIGINT, and the child would inherit that.
DRIVER = """
import signal
import sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import blockqnn.execute.base as ex
from blockqnn.evaluate.synthetic import SyntheticEvaluator
ex.default_evaluator = lambda c, d, dev: SyntheticEvaluator(c, seconds=float(sys.argv[1]))
ex.load_data = lambda c: None
from blockqnn.cli import main
sys.exit(main(sys.argv[2:]))
"""
BUDGET = 10
# No evaluation cache: the killed runs must train what the straight one trained.
NEW = ["search", "--budget", str(BUDGET), "--dataset", "digits", "--seed", "3", "--no-cache"]


def _start(args: list[str], seconds: float = 0.05) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(seconds), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _trained(run: Path) -> list[TrialRecord]:
    try:
        with Store.open(run, readonly=True) as s:
            return [t for t in s.trials() if t.trained]
    except Exception:  # not created yet
        return []


def _wait_for(run: Path, proc: subprocess.Popen[str], n: int) -> list[TrialRecord]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = _trained(run)
        if len(done) >= n:
            return done
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError(f"{n} trials not reached")


def _wait_for_running(run: Path, proc: subprocess.Popen[str]) -> None:
    """Until a trial is in flight: right after a trial is recorded the search may not yet
    have started the next one, and a signal then leaves nothing to interrupt."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with Store.open(run, readonly=True) as s:
            if s.counts()["running"]:
                return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("no trial started")


def _trace(run: Path) -> list[tuple[str, str, float | None]]:
    with Store.open(run, readonly=True) as s:
        return [(t.candidate, t.status, t.reward) for t in s.trials()]


def test_kill_9_at_several_points_then_resume(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    ref = _start([*NEW, "--run-dir", str(straight)])
    ref_out = ref.communicate()
    assert ref.returncode == 0, ref_out

    kept: dict[int, TrialRecord] = {}
    args = [*NEW, "--run-dir", str(killed)]
    for point in (1, 4, 7):  # kill after that many trained trials, mid-evaluation
        proc = _start(args)
        for t in _wait_for(killed, proc, point):
            kept[t.id] = t
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        args = ["search", "--resume", str(killed)]
    proc = _start(args)
    _, err = proc.communicate()
    assert proc.returncode == 0, err

    with Store.open(killed, readonly=True) as s:
        trials = s.trials()
        trained = [t for t in trials if t.trained]
        assert len(trained) == BUDGET
        assert len({t.hash for t in trained}) == BUDGET  # no block trained twice
        for t in trials:
            if t.id in kept:
                assert t == kept[t.id]  # finished trials never change
        assert any(t.attempts > 1 for t in trials)  # killed mid-evaluation, run again
        assert len(s.sessions()) == 4
    # One slot: the resumed run proposed and recorded exactly what an unbroken run did.
    assert _trace(killed) == _trace(straight)


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "my run"  # the resume command printed must work as pasted
    proc = _start([*NEW, "--run-dir", str(run)], seconds=0.2)
    _wait_for(run, proc, 2)
    _wait_for_running(run, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"--resume '{run}'\n" in err and "Traceback" not in err
    with Store.open(run, readonly=True) as s:
        counts = s.counts()
        assert counts["interrupted"] == 1 and counts["running"] == 0
    proc = _start(["search", "--resume", str(run)])
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert len(_trained(run)) == BUDGET


def test_sigterm_stops_like_ctrl_c_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _start([*NEW, "--run-dir", str(run)], seconds=0.2)
    _wait_for(run, proc, 2)
    _wait_for_running(run, proc)
    proc.send_signal(signal.SIGTERM)  # what a cluster scheduler sends before a kill
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and f"--resume {run}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with Store.open(run, readonly=True) as s:
        counts = s.counts()
        assert counts["interrupted"] == 1 and counts["running"] == 0  # recorded, not stuck
        (session,) = s.sessions()
        assert session["outcome"] == "terminated" and session["ended"] is not None
    proc = _start(["search", "--resume", str(run)])
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert len(_trained(run)) == BUDGET


# The evaluator kills its own process, as the out-of-memory killer takes a search whose
# candidate needs more than the machine has, on the first block it trains and on that block
# every time again.
KILLER = """
import os
import signal
import sys
from pathlib import Path
import blockqnn.execute.base as ex
from blockqnn.evaluate.synthetic import SyntheticEvaluator

class Killer(SyntheticEvaluator):
    def evaluate(self, candidate):
        mark = Path(sys.argv[1])
        if not mark.exists():
            mark.write_text(candidate.hash)
        if mark.read_text() == candidate.hash:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().evaluate(candidate)

ex.default_evaluator = lambda c, d, dev: Killer(c)
ex.load_data = lambda c: None
from blockqnn.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_block_that_kills_the_search_process_fails_after_max_attempts(
    tmp_path: Path,
) -> None:
    run, mark = tmp_path / "run", tmp_path / "mark"
    args = [*NEW, "--run-dir", str(run)]
    for attempt in range(1, 4):  # max_attempts = 3: killed three times, then a failed trial
        proc = subprocess.run(
            [sys.executable, "-c", KILLER, str(mark), *args], capture_output=True, text=True
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        with Store.open(run, readonly=True) as s:
            (running,) = s.trials("running")
            assert running.attempts == attempt and running.lost == attempt - 1
        args = ["search", "--resume", str(run)]
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(mark), *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    with Store.open(run, readonly=True) as s:
        trials = s.trials()
    killer = trials[0]
    assert killer.status == "failed" and killer.hash == mark.read_text()
    assert killer.error.startswith("worker lost 3 times; last: the search process died")
    assert sum(t.trained for t in trials) == BUDGET
