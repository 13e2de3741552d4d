"""The local executor's process pool with real worker processes on the CPU: placement and bad
input, parallel evaluations, a worker killed mid-trial, the master killed with kill -9,
Ctrl-C and resume. The evaluator is the synthetic one (a sleep), so the tests exercise the
processes, not training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from blockqnn.cli import main
from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.execute import EvaluatorSpec, make_executor
from blockqnn.execute.local import LocalExecutor
from blockqnn.execute.pool import Placement, PoolExecutor, place_workers
from blockqnn.execute.synthetic import synthetic_spec
from blockqnn.search import SearchEvent, run_search
from blockqnn.settings.config import Config, merge
from blockqnn.space.nsc.block import Block
from blockqnn.store.db import Store, TrialRecord

CPU2 = [Placement("cpu", 1)] * 2
BLOCK = Block.parse("1,1,3,0,0; 2,7,0,0,0")


def _config(budget: int, workers: int, **search: Any) -> Config:
    settings = {"budget": budget, "workers": workers, **search}
    return merge(Config(), {"search": settings, "agent": {"iteration_size": 4}})


def _trained(run: Path) -> list[TrialRecord]:
    try:
        with Store.open(run, readonly=True) as s:
            return [t for t in s.trials() if t.trained]
    except Exception:  # not created yet
        return []


# ----- placement and bad input (no processes) --------------------------------------------------


def test_placement_divides_threads_and_spreads_over_gpus() -> None:
    assert place_workers(2, None, 0.0, 0, 2) == [Placement("cpu", 1)] * 2
    assert place_workers(3, "cpu", 0.0, 4, 8) == [Placement("cpu", 2)] * 3  # --device cpu
    assert place_workers(4, "cpu", 0.0, 0, 2) == [Placement("cpu", 1)] * 4  # at least one
    gpus = [p.device for p in place_workers(5, "auto", 0.0, 2, 16)]
    assert gpus == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]  # round-robin
    assert {p.device for p in place_workers(2, "cuda:1", 0.5, 2, 4)} == {"cuda:1"}
    assert len(place_workers(4, "cuda", 0.5, 2, 4)) == 4  # two per GPU, two GPUs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, None, 0.5, 1, 4), "1 GPU(s) hold at most 2 workers"),
        ((2, None, 0.5, 0, 4), "--gpus-per-trial 0.5: no GPU is available here"),
        ((2, "cuda", 0.0, 0, 4), "device 'cuda': no GPU is available here"),
        ((2, "cuda:2", 0.0, 2, 4), "only 2 CUDA device(s) visible"),
        ((2, "cpu", 1.0, 2, 4), "asks for GPUs but the device is the CPU"),
        ((2, "tpu", 0.0, 2, 4), "not a device"),
    ],
)
def test_placement_refuses_what_cannot_run(args: Any, message: str) -> None:
    with pytest.raises(BlockQNNError) as info:
        place_workers(*args)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "search.workers = 0: must be an integer in [1, 4096]"),
        (["--workers", "-3"], "search.workers = -3: must be an integer in [1, 4096]"),
        (["--workers", "257"], "the local executor runs at most 256 at once"),
        (["--workers", "2", "--gpus-per-trial", "2"], "use at most 1"),
        (["--workers", "2", "--gpus-per-trial", "0.3"], "must divide one GPU evenly"),
        (
            ["--workers", "2", "--gpus-per-trial", "nan"],
            "argument --gpus-per-trial: not a finite number",
        ),
    ],
)
def test_bad_worker_settings_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    run = tmp_path / "run"
    code: str | int | None
    try:
        code = main(["search", "--run-dir", str(run), "--budget", "2", *flags])
    except SystemExit as exc:  # a value refused while the arguments are parsed
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not run.exists()


def test_asking_for_a_gpu_without_one_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for flags in (["--gpus-per-trial", "0.5"], ["--device", "cuda"]):
        argv = ["search", "--run-dir", str(tmp_path / "r"), "--budget", "2", "--workers", "2"]
        assert main([*argv, *flags]) == 2
        err = capsys.readouterr().err
        assert "no GPU is available here" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


# ----- real worker processes ----------------------------------------------------------------


def test_one_worker_stays_in_process_and_more_are_processes() -> None:
    assert isinstance(make_executor(synthetic_spec(_config(2, 1))), LocalExecutor)
    pool = make_executor(synthetic_spec(_config(2, 2)))
    try:
        assert isinstance(pool, PoolExecutor) and pool.slots == 2
        pids = [pid for pid, _ in pool.workers()]
        assert len(set(pids)) == 2 and os.getpid() not in pids
    finally:
        pool.shutdown()
    assert all(not _alive(pid) for pid in pids)


@pytest.mark.parametrize("handler", [signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler])
def test_starting_workers_leaves_the_callers_ctrl_c_handler(handler: Any) -> None:
    """Workers are started with SIGINT ignored; the master's handler comes back as it was
    (SIG_DFL included, which is 0 and so easy to lose to a truthiness test)."""
    previous = signal.signal(signal.SIGINT, handler)
    try:
        pool = PoolExecutor(synthetic_spec(_config(2, 1)), CPU2[:1])
        pool.shutdown()
        assert signal.getsignal(signal.SIGINT) == handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_two_workers_evaluate_two_candidates_at_once(tmp_path: Path) -> None:
    summary = run_search(
        tmp_path / "run",
        _config(budget=4, workers=2),
        spec=lambda c: synthetic_spec(c, 1.5, record_times=True),
    )
    assert summary.trained == 4
    trials = _trained(tmp_path / "run")
    assert len({t.worker for t in trials}) == 2  # both workers evaluated
    first, second = (t.result["metrics"] for t in trials[:2] if t.result)
    # The two evaluations overlapped: each started before the other finished. One worker
    # evaluating them in turn would start the second after the first finished.
    assert max(first["started_at"], second["started_at"]) < min(
        first["finished_at"], second["finished_at"]
    )


@pytest.mark.slow
def test_real_evaluations_in_two_workers_divide_the_cores(tmp_path: Path) -> None:
    """The early-stop evaluator in worker processes: the master ships the digits arrays,
    each worker trains on them with its share of the --threads setting."""
    config = merge(
        _config(budget=2, workers=2),
        {
            "data": {"dataset": "digits", "train_samples": 200},
            "network": {"filters": 4, "blocks_per_stage": 1},
            "train": {"epochs": 1, "threads": "4"},  # --threads 4: two each
        },
    )
    summary = run_search(tmp_path / "run", config, device="cpu")
    assert summary.trained == 2 and summary.failed == 0
    trials = _trained(tmp_path / "run")
    assert len({t.worker for t in trials}) == 2
    for t in trials:
        assert t.result is not None and t.result["device"] == "cpu (2 threads)"
        assert 0.0 < (t.accuracy or 0.0) <= 1.0


def test_a_worker_killed_mid_trial_costs_only_that_trial(tmp_path: Path) -> None:
    pools: list[PoolExecutor] = []
    killed: list[tuple[int, int]] = []

    def factory(spec: EvaluatorSpec) -> PoolExecutor:
        pools.append(PoolExecutor(spec, CPU2))
        return pools[0]

    def killer() -> None:  # SIGKILL a worker 0.3 s into an evaluation of 1.5 s
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            busy = [(pid, t) for pid, t in (pools[0].workers() if pools else []) if t]
            if busy:
                time.sleep(0.3)
                if busy[0] in (pools[0].workers()):  # still on the same trial: mid-evaluation
                    os.kill(busy[0][0], signal.SIGKILL)
                    killed.append((busy[0][0], busy[0][1] or 0))
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    requeued: list[str] = []

    def note_requeued(e: SearchEvent) -> None:
        if e.kind == "requeued":
            assert e.trial is not None
            requeued.append(e.trial.error)

    summary = run_search(
        tmp_path / "run",
        _config(budget=4, workers=2),
        spec=lambda c: synthetic_spec(c, 1.5),
        executor_factory=factory,
        on_event=note_requeued,
    )
    thread.join()
    assert killed and summary.trained == 4 and summary.failed == 0
    pid, trial_id = killed[0]
    with Store.open(tmp_path / "run", readonly=True) as s:
        lost = s.trial(trial_id)
        assert (lost.status, lost.lost, lost.attempts) == ("complete", 1, 2)
        assert [t.id for t in s.trials() if t.lost] == [trial_id]  # only that trial
        assert all(f":{pid} " not in t.worker for t in s.trials())  # it finished nothing
        assert len({t.worker for t in s.trials()}) == 2  # the survivor and the replacement
    assert requeued == [f"worker {os.uname().nodename}:{pid} cpu killed by SIGKILL"]


def test_a_worker_that_cannot_start_is_bad_input_and_leaves_no_process() -> None:
    spec = EvaluatorSpec(Config(), factory=_refusing_factory, needs_data=False)
    before = set(_children(os.getpid()))
    with pytest.raises(BlockQNNError, match=r"^no such accelerator$"):
        PoolExecutor(spec, CPU2)
    time.sleep(0.2)
    assert set(_children(os.getpid())) - before <= _helpers(os.getpid())


def test_an_evaluation_that_raises_is_a_failed_trial_and_the_worker_goes_on() -> None:
    """As in process and on Ray (`evaluate_safely`): a raising evaluator must not crash the
    master, or the trial stays running and every resume meets the same exception."""
    spec = EvaluatorSpec(Config(), factory=_raising_factory, needs_data=False)
    pool = PoolExecutor(spec, CPU2[:1])
    try:
        for trial in (7, 8):  # the same worker takes the next trial
            pool.submit(trial, BLOCK)
            deadline = time.monotonic() + 60
            done: list[Any] = []
            while not done and time.monotonic() < deadline:
                done = list(pool.wait(1))
            [(trial_id, result, _)] = done
            assert trial_id == trial and not result.ok
            assert result.error == "the evaluator raised ZeroDivisionError: division by zero"
    finally:
        pool.shutdown()


def test_a_worker_whose_master_stops_mid_trial_exits_without_a_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A master that stops while a trial trains closes its pipe: the worker's answer then
    meets a broken pipe, which must end the worker quietly, not print a traceback."""
    pool = PoolExecutor(synthetic_spec(_config(2, 1), 1.0), CPU2[:1])
    try:
        pool.submit(7, BLOCK)
        [worker] = pool._workers
        deadline = time.monotonic() + 60
        while worker.trial is None and time.monotonic() < deadline:  # sent once ready
            list(pool.wait(0.05))
        assert worker.trial == 7
        worker.conn.close()  # as a stopping master does, before the 1 s trial ends
        worker.process.join(30)
        assert worker.process.exitcode == 0
    finally:
        pool.shutdown()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def _refusing_factory(config: Config, data: Any, device: str | None) -> Any:
    raise BlockQNNError("no such accelerator")


class _Raising(SyntheticEvaluator):
    def evaluate(self, block: Block) -> Any:
        return 1 / 0


def _raising_factory(config: Config, data: Any, device: str | None) -> Any:
    return _Raising(config)


# ----- the master as a real process: kill -9, Ctrl-C, resume -------------------------------------

# The driver restores Ctrl-C's default first: a shell that starts the test run in the
# background (`cmd &` without job control) ignores SIGINT, and the child would inherit that.
DRIVER = """
import signal
import sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import blockqnn.execute.base as ex
from blockqnn.execute.synthetic import synthetic_spec
seconds = float(sys.argv[1])
ex.EvaluatorSpec.for_space = classmethod(lambda cls, c, s, device=None: synthetic_spec(c, seconds))
from blockqnn.cli import main
sys.exit(main(sys.argv[2:]))
"""
NEW = ["search", "--budget", "6", "--dataset", "digits", "--seed", "3", "--workers", "2"]


def _start(args: list[str], seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(seconds), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _helpers(pid: int) -> set[int]:
    """Children of `pid` that are multiprocessing's own helpers, not workers."""
    return {
        c
        for c in _children(pid)
        if b"resource_tracker" in Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ")
    }


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _workers_of(proc: subprocess.Popen[str], run: Path, n: int) -> list[int]:
    """Wait for `n` trials running in `run` (the pool is up by then); the master's worker
    processes."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with Store.open(run, readonly=True) as s:
                if s.counts()["running"] >= n:
                    return sorted(set(_children(proc.pid)) - _helpers(proc.pid))
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError("the search did not start")


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


@needs_proc
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_master_killed_with_kill_9_leaves_no_worker(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _start([*NEW, "--run-dir", str(run)], seconds=30.0)  # workers stay busy
    workers = _workers_of(proc, run, 2)
    assert len(workers) == 2 and all(_alive(p) for p in workers)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()  # not communicate(): the workers hold the output pipes until they exit
    # Bound: the parent-death pipe wakes the workers at once; the poll backs it up each 1 s.
    assert _gone_within(workers, 10.0), [p for p in workers if _alive(p)]


@needs_proc
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ctrl_c_stops_every_worker_and_the_run_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _start([*NEW, "--run-dir", str(run)], seconds=0.5)
    deadline = time.monotonic() + 60
    while len(_trained(run)) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    workers = _workers_of(proc, run, 1)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group, workers included
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"--resume {run}" in err and "Traceback" not in err and "KeyboardInterrupt" not in err
    assert _gone_within(workers, 10.0)
    with Store.open(run, readonly=True) as s:
        assert s.counts()["running"] == 0 and s.counts()["interrupted"] >= 1
    proc = _start(["search", "--resume", str(run), "--workers", "2"], seconds=0.05)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    trained = _trained(run)
    assert len(trained) == 6 and len({t.hash for t in trained}) == 6
    with Store.open(run, readonly=True) as s:
        assert any(t.attempts == 2 for t in s.trials())  # interrupted, then run again
        assert [x["outcome"] for x in s.sessions()] == ["interrupted", "complete"]
