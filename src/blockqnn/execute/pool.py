"""Evaluations in worker processes on this machine: the `local` executor with `workers > 1`.

Owns: `PoolExecutor` (K spawned worker processes, each holding the dataset on its device and
evaluating one candidate at a time), placing workers on devices and dividing the CPU threads
(`place_workers`), turning a worker that died into `WorkerLost` plus a fresh worker, and
stopping every worker on shutdown. Must not decide what to evaluate or retry (the search loop
gets `WorkerLost` and decides), nor import torch at module level: the workers set their
thread count before torch is first imported.

Data: the master loads the host arrays once (`EvaluatorSpec.load_data`), pickles them with the
spec once, and sends the bytes to each worker over its pipe; the worker moves them to its
device and, on a GPU, drops the host copy. Loading in the master rather than in every worker
keeps one source of truth (the same split everywhere, as with Ray), reports unusable data as
bad input before any worker starts, and never has K processes decode the same JPEG folder or
race to write its cache. The cost is one host copy per CPU worker (CIFAR-10: 150 MB each),
plus the pickled bytes the master keeps to start replacement workers.

Life cycle:
- Workers are spawned (no fork: CUDA and torch's thread pools do not survive a fork) with
  SIGINT ignored from the first instruction: Ctrl-C in a terminal reaches the whole process
  group, and only the master decides what stopping means; `shutdown()` then terminates every
  worker (SIGTERM, SIGKILL after `STOP_GRACE_S`).
- A worker watches its parent: when the master dies (even by kill -9) the pipe that
  multiprocessing keeps from the parent reaches end-of-file and the worker exits at once; a
  `getppid()` poll backs this up. No worker outlives its master by more than
  `PARENT_POLL_S`.
- A worker that dies (segfault, out-of-memory kill, kill -9) costs only its trial: it is
  returned as `WorkerLost` and a fresh worker takes the slot. Workers that keep dying before
  they are ready (`MAX_START_FAILURES_PER_SLOT`) are a broken setup: `RuntimeError`.
- A worker whose evaluator cannot be built reports why: `BlockQNNError` (bad input) or
  `RuntimeError`; an evaluation that raises is a failed result naming the exception
  (`evaluate_safely`, as in process and on Ray), so one bad candidate cannot wedge the run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import socket
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from multiprocessing.process import BaseProcess
from typing import Any

from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.result import EvalResult
from blockqnn.execute.base import EvaluatorSpec, Finished, WorkerLost, evaluate_safely, parse_job
from blockqnn.train import threads as threads_module

MAX_START_FAILURES_PER_SLOT = 3  # workers dying before they are ready this often: a bug
STOP_GRACE_S = 5.0  # after SIGTERM, how long shutdown waits before SIGKILL
PARENT_POLL_S = 1.0  # a worker checks its parent at least this often


@dataclass(frozen=True)
class Placement:
    """Where one worker runs: its device and its share of the CPU threads."""

    device: str  # "cpu" or "cuda:N"
    threads: int  # torch intra-op threads


def place_workers(
    workers: int, device: str | None, gpus_per_trial: float, visible_gpus: int, cores: int
) -> list[Placement]:
    """The device and threads of each of `workers` workers; bad combinations raise
    `BlockQNNError` with one line.

    `device` is the search's `--device`: None or "auto" means every visible GPU if there is
    one, else the CPU; "cuda" every visible GPU; "cuda:N" that one; "cpu" the CPU. Workers
    go round-robin over the GPUs, so K workers on G GPUs differ by at most one per GPU.
    `gpus_per_trial` > 0 asks for GPUs and caps the workers per GPU at 1 / gpus_per_trial
    (0.5: two per GPU); 0 leaves the packing to `workers`. The `cores` threads (the
    `--threads` setting's count) are divided evenly (at least one each), so K workers do
    not fight over the cores.
    """
    name = device or "auto"
    threads = threads_module.share(cores, workers)
    wants_gpu = gpus_per_trial > 0
    if name == "auto":
        name = "cuda" if visible_gpus > 0 or wants_gpu else "cpu"
    if name == "cpu":
        if wants_gpu:
            raise BlockQNNError(
                f"--gpus-per-trial {gpus_per_trial:g} asks for GPUs but the device is the CPU"
            )
        return [Placement("cpu", threads)] * workers
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise BlockQNNError(f"device {name!r}: not a device (try auto, cpu, cuda, cuda:1)")
    if visible_gpus == 0:
        what = f"--gpus-per-trial {gpus_per_trial:g}" if wants_gpu else f"device {name!r}"
        raise BlockQNNError(f"{what}: no GPU is available here")
    if index and int(index) >= visible_gpus:
        raise BlockQNNError(f"device {name!r}: only {visible_gpus} CUDA device(s) visible")
    gpus = [int(index)] if index else list(range(visible_gpus))
    if wants_gpu:
        per_gpu = round(1 / gpus_per_trial)
        if workers > per_gpu * len(gpus):
            raise BlockQNNError(
                f"--workers {workers} with --gpus-per-trial {gpus_per_trial:g}: "
                f"{len(gpus)} GPU(s) hold at most {per_gpu * len(gpus)} workers"
            )
    return [Placement(f"cuda:{gpus[i % len(gpus)]}", threads) for i in range(workers)]


# ----- the worker process ------------------------------------------------------------------


def _watch_parent(parent_pid: int) -> None:
    """Exit this process as soon as the master is gone (see the module docstring)."""
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None

    def watch() -> None:
        while os.getppid() == parent_pid:
            if sentinel is not None:
                if wait_for([sentinel], timeout=PARENT_POLL_S):
                    break  # end of file: the master closed it by dying
            else:  # pragma: no cover - every spawned child has a parent sentinel
                time.sleep(PARENT_POLL_S)
        os._exit(3)

    threading.Thread(target=watch, name="blockqnn-parent-watch", daemon=True).start()


def _worker_main(conn: Connection, parent_pid: int, device: str, threads: int) -> None:
    """Receive the pickled (spec, data), build the evaluator, then evaluate until told to
    stop or the master is gone. Messages to the master: ("ready", name), ("result", trial,
    result dict), ("failed", bad_input, message), ("crashed", trial, traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited too; see the module docstring
    os.environ["OMP_NUM_THREADS"] = str(threads)  # before torch is imported: read at import
    threads_module.choose(str(threads), override=True)  # the trainer's count: this share
    _watch_parent(parent_pid)
    try:
        _serve(conn, device, threads)
    except OSError:  # a message to a master that stopped while this worker trained
        return


def _serve(conn: Connection, device: str, threads: int) -> None:
    """`_worker_main`'s work: build the evaluator from the master's data, then evaluate."""
    try:
        blob = conn.recv_bytes()
    except (EOFError, OSError):
        return  # the master went away before sending the data
    try:
        spec, data = pickle.loads(blob)
        del blob
        if spec.needs_data or device != "cpu":
            import torch

            torch.set_num_threads(threads)
            if device.startswith("cuda"):
                # Streams and CUDA graphs are created on the current device: make it ours.
                torch.cuda.set_device(device)
        evaluator = replace(spec, device=device).build(data)
        del data  # the evaluator holds its copy on the device
        space = spec.space()
    except BlockQNNError as exc:
        conn.send(("failed", True, str(exc)))
        return
    except Exception as exc:
        import traceback

        conn.send(("failed", False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        return
    conn.send(("ready", f"{socket.gethostname()}:{os.getpid()} {device}"))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the master is gone
        if message is None:
            return
        trial_id, text = message
        try:
            job = parse_job(space, text)
        except Exception:  # the master sent what this space cannot read: a bug
            import traceback

            conn.send(("crashed", trial_id, traceback.format_exc()))
            continue
        # an evaluator that raises is a failed trial, as in process and on Ray
        conn.send(("result", trial_id, evaluate_safely(evaluator, job).to_dict()))


# ----- the master's side ---------------------------------------------------------------------


@dataclass
class _Worker:
    slot: int
    process: BaseProcess
    conn: Connection
    placement: Placement
    name: str = "starting"
    ready: bool = False
    trial: int | None = None  # the trial it evaluates


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _stop(processes: list[BaseProcess]) -> None:
    """Terminate every process, SIGKILL those still alive after `STOP_GRACE_S`, reap all."""
    for p in processes:
        with contextlib.suppress(Exception):
            if p.is_alive():
                p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in processes:
        with contextlib.suppress(Exception):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
    processes.clear()


class PoolExecutor:
    """`len(placements)` worker processes, one evaluation each at a time (see the module
    docstring). The constructor returns once every worker is ready, so bad input (no such
    device, unusable data) is reported before the search writes anything."""

    def __init__(self, spec: EvaluatorSpec, placements: list[Placement]) -> None:
        self.slots = len(placements)
        self._ctx = multiprocessing.get_context("spawn")
        self._processes: list[BaseProcess] = []  # shared with the finalizer below
        # Kills the workers even if shutdown() is never called (an exception before the
        # caller's `finally`, the interpreter exiting): no worker may outlive its executor.
        self._finalizer = weakref.finalize(self, _stop, self._processes)
        self._workers: list[_Worker] = []
        self._queue: deque[tuple[int, str]] = deque()
        self._start_failures = 0
        try:
            data = spec.load_data()
            try:
                self._blob = pickle.dumps((spec, data), protocol=pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                raise BlockQNNError(
                    f"--workers {self.slots}: the evaluator cannot be sent to worker "
                    f"processes ({exc}); use --workers 1"
                ) from None
            del data
            started = [self._spawn(slot, p) for slot, p in enumerate(placements)]
            for worker in started:  # all start up in parallel, then each gets its data
                self._send_data(worker)
            self._workers = started
            while not all(w.ready for w in self._workers):
                self._pump(None)
        except BaseException:
            self.shutdown()
            raise

    # ----- the Executor protocol ----------------------------------------------------------

    def submit(self, trial_id: int, candidate: Any) -> None:
        self._queue.append((trial_id, str(candidate)))
        self._dispatch()

    def wait(self, timeout: float | None = None) -> list[Finished]:
        """Block until at least one evaluation finishes (or a worker running one dies), or
        `timeout` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._dispatch()
            if not self._queue and all(w.trial is None for w in self._workers):
                return []
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = self._pump(left)
            self._dispatch()
            if done or (deadline is not None and time.monotonic() >= deadline):
                return done

    def shutdown(self) -> None:
        """Stop every worker (busy or not) and reap them; safe to call more than once."""
        for w in self._workers:
            with contextlib.suppress(Exception):
                w.conn.close()
        self._workers = []
        self._queue.clear()
        self._finalizer()

    def workers(self) -> list[tuple[int, int | None]]:
        """(pid, trial it runs or None) of every current worker: for status and tests."""
        return [(w.process.pid or 0, w.trial) for w in self._workers]

    # ----- internals ---------------------------------------------------------------------------

    def _spawn(self, slot: int, placement: Placement) -> _Worker:
        ours, theirs = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main,
            args=(theirs, os.getpid(), placement.device, placement.threads),
            name=f"blockqnn-worker-{slot}",
        )
        # SIGINT is ignored while the child is created: an ignored signal stays ignored
        # across exec, so the worker is immune to Ctrl-C before its first instruction. The
        # window is the fork and exec only (milliseconds); the data is sent afterwards.
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
        try:
            process.start()
        finally:
            if main_thread:
                # None: a handler installed outside Python; Python's own is the best guess.
                # Not `previous or ...`: SIG_DFL is 0, and a caller's SIG_DFL must stay.
                restore = signal.default_int_handler if previous is None else previous
                signal.signal(signal.SIGINT, restore)
        self._processes.append(process)
        theirs.close()
        return _Worker(slot, process, ours, placement)

    def _send_data(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError):  # it died at start: its sentinel says so next
            worker.conn.send_bytes(self._blob)

    def _dispatch(self) -> None:
        for w in self._workers:
            if not self._queue:
                return
            if w.ready and w.trial is None:
                trial_id, text = self._queue.popleft()
                w.trial = trial_id  # if it died already, its sentinel turns this into a loss
                with contextlib.suppress(OSError):
                    w.conn.send((trial_id, text))

    def _pump(self, timeout: float | None) -> list[Finished]:
        """Wait up to `timeout` for messages or deaths, then handle all of them."""
        handles: list[Any] = [w.conn for w in self._workers]
        handles += [w.process.sentinel for w in self._workers]
        wait_for(handles, timeout)
        done: list[Finished] = []
        for w in list(self._workers):
            done += self._drain(w)
        return done

    def _drain(self, w: _Worker) -> list[Finished]:
        done: list[Finished] = []
        broken = False
        while True:
            try:
                if not w.conn.poll():
                    break
                message = w.conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                broken = True  # a partial message: it died while sending
                break
            finished = self._handle(w, message)
            if finished is not None:
                done.append(finished)
        if broken or not w.process.is_alive():
            lost = self._replace(w)
            if lost is not None:
                done.append(lost)
        return done

    def _handle(self, w: _Worker, message: tuple[Any, ...]) -> Finished | None:
        kind = message[0]
        if kind == "ready":
            w.ready, w.name = True, message[1]
            return None
        if kind == "result":
            w.trial = None
            return Finished(message[1], EvalResult.from_dict(message[2]), w.name)
        if kind == "failed":
            if message[1]:
                raise BlockQNNError(message[2])
            raise RuntimeError(f"a local worker could not build its evaluator: {message[2]}")
        if kind == "crashed":
            raise RuntimeError(
                f"trial {message[1]}: worker {w.name} could not read its candidate (a bug):"
                f"\n{message[2]}"
            )
        raise RuntimeError(f"unexpected message from worker {w.name}: {kind!r}")

    def _replace(self, w: _Worker) -> Finished | None:
        """`w` died: reap it, start a fresh worker in its slot, and report its trial lost."""
        process = w.process
        if process.is_alive():  # a broken pipe from a live process: it cannot be trusted
            process.kill()
        process.join(STOP_GRACE_S)
        reason = f"worker {w.name} {_exit_reason(process.exitcode)}"
        with contextlib.suppress(ValueError):
            self._processes.remove(process)
        with contextlib.suppress(Exception):
            w.conn.close()
            process.close()
        if not w.ready:
            self._start_failures += 1
            if self._start_failures > MAX_START_FAILURES_PER_SLOT * self.slots:
                raise RuntimeError(f"local workers keep dying before they are ready: {reason}")
        fresh = self._spawn(w.slot, w.placement)
        self._workers[self._workers.index(w)] = fresh
        self._send_data(fresh)
        if w.trial is None:
            return None
        return Finished(w.trial, WorkerLost(reason), w.name)


def make_pool(spec: EvaluatorSpec) -> PoolExecutor:
    """The pool for `spec.config.search` (`workers`, `gpus_per_trial`) on `spec.device`."""
    s = spec.config.search
    name = spec.device or "auto"
    visible = 0
    if name != "cpu" or s.gpus_per_trial > 0:
        import torch

        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # the setting's threads (--threads, else [train] threads), divided between the workers
    threads_module.choose(spec.config.train.threads)
    total = threads_module.count()
    placements = place_workers(s.workers, spec.device, s.gpus_per_trial, visible, total)
    return PoolExecutor(spec, placements)


visible_cores = threads_module.visible_cores  # where it was before blockqnn.train.threads

__all__ = ["PoolExecutor", "make_pool", "place_workers", "visible_cores"]
