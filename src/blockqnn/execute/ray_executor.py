"""Evaluations on Ray actors: one actor per slot, each holding the dataset on its device.

Owns: connecting to (or starting) Ray, the actor pool, dispatching queued trials to idle
actors, and turning a dead actor (its process or node died) into `WorkerLost` plus a fresh
actor. Must not decide what to evaluate or retry: the search loop gets `WorkerLost` and
decides. Ray is imported here only, so the rest of blockqnn runs without it.

The dataset is loaded once by the master and put into Ray's object store; each actor receives
it as a constructor argument and moves it onto its device once, so remote nodes need no
shared file system. A replacement actor may stay pending (its node is gone and the cluster
has no room); trials then wait for an idle actor instead of for the pending one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import threading
import time
from collections import deque
from typing import Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.evaluate.result import EvalResult
from blockqnn.execute.base import (
    EvaluatorSpec,
    Finished,
    WorkerLost,
    evaluate_safely,
    parse_job,
)

CONNECT_TIMEOUT_S = 5.0  # an --address that does not answer in this long is unreachable
MAX_START_FAILURES_PER_SLOT = 3  # actors failing to start this often (per slot) is a bug


def actor_threads(spec: EvaluatorSpec) -> int | None:
    """The torch threads of an actor that trains on the CPU: the cores Ray reserved for it,
    one where it reserved a fraction of a core (or none: actors packed onto shared cores
    must not each spin a thread per core); None for GPU training and for evaluators that
    need no data (table look-ups do not train: torch is not imported)."""
    search = spec.config.search
    if not spec.needs_data or search.gpus_per_trial > 0:
        return None
    return max(1, int(search.cpus_per_trial))


class _EvalActor:
    """A worker process: builds the evaluator (data on its device) once, then evaluates."""

    def __init__(self, spec: EvaluatorSpec, data: Any) -> None:
        count = actor_threads(spec)
        if count is not None:
            from blockqnn.train import threads

            # the trainer applies it; a search's --threads does not reach the cluster
            threads.choose(str(count), override=True)
        self._evaluator = spec.build(data)
        self._space = spec.space()
        self._name = f"{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> str:
        return self._name

    def evaluate(self, text: str) -> dict[str, Any]:
        return evaluate_safely(self._evaluator, parse_job(self._space, text)).to_dict()


class _Slot:
    def __init__(self, actor: Any, ready_ref: Any) -> None:
        self.actor = actor
        self.ready_ref: Any = ready_ref  # pending until the actor has started
        self.name = "starting"
        self.busy: int | None = None  # the trial it runs


class RayExecutor:
    """`workers` actors, each reserving `cpus_per_trial` CPUs and `gpus_per_trial` GPUs."""

    def __init__(
        self,
        spec: EvaluatorSpec,
        workers: int,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
        address: str = "",
    ) -> None:
        import ray

        self._ray: Any = ray
        self.slots = workers
        self._owns_ray = False
        if not ray.is_initialized():
            _connect(ray, address, workers, cpus_per_trial)
            self._owns_ray = True
        try:
            available = self._ray.cluster_resources().get("GPU", 0.0)
            if gpus_per_trial > 0 and available < gpus_per_trial:
                raise BlockQNNError(
                    f"--gpus-per-trial {gpus_per_trial}: the Ray cluster has {available:g} GPUs"
                )
            self._data_ref = ray.put(spec.load_data())
            self._spec_ref = ray.put(spec)
            self._cls: Any = ray.remote(
                num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_restarts=0
            )(_EvalActor)
            self._pool = [self._new_slot() for _ in range(workers)]
            self._start_failures = 0
            self._first_started()  # bad input (a device, a table) refused before the run
        except BaseException:
            self.shutdown()
            raise
        self._queue: deque[tuple[int, str]] = deque()
        self._running: dict[Any, _Slot] = {}  # evaluate() ref -> slot

    def _new_slot(self) -> _Slot:
        actor = self._cls.remote(self._spec_ref, self._data_ref)
        return _Slot(actor, actor.ready.remote())

    def submit(self, trial_id: int, candidate: Any) -> None:
        self._queue.append((trial_id, str(candidate)))
        self._dispatch()

    def _dispatch(self) -> None:
        for slot in self._pool:
            if not self._queue:
                return
            if slot.ready_ref is None and slot.busy is None:
                trial_id, text = self._queue.popleft()
                slot.busy = trial_id
                self._running[slot.actor.evaluate.remote(text)] = slot

    def wait(self, timeout: float | None = None) -> list[Finished]:
        """Block until at least one evaluation finishes, or `timeout` seconds pass."""
        ray = self._ray
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done: list[Finished] = []
            refs = list(self._running) + [s.ready_ref for s in self._pool if s.ready_ref]
            if not refs:
                return done
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(refs, num_returns=1, timeout=left)
            if ready:  # collect everything else already finished, without waiting
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                slot = self._running.pop(ref, None)
                if slot is None:
                    self._started(ref)
                else:
                    done.append(self._collect(ref, slot))
            self._dispatch()
            if done or (deadline is not None and time.monotonic() >= deadline):
                return done

    def _first_started(self) -> None:
        """Wait for one actor to start: an evaluator that cannot be built from the settings
        (`BlockQNNError` in the actor) is bad input, said before anything is written."""
        ready, _ = self._ray.wait([s.ready_ref for s in self._pool], num_returns=1)
        self._started(ready[0])

    def _started(self, ref: Any) -> None:
        ray = self._ray
        slot = next(s for s in self._pool if s.ready_ref == ref)
        try:
            slot.name = ray.get(ref)
            slot.ready_ref = None
        except _lost_errors(ray) as exc:
            bad_input = re.search(r"BlockQNNError: (.+)", str(exc))
            if bad_input:  # the actor's constructor refused the settings: no retry helps
                raise BlockQNNError(bad_input.group(1).strip()) from None
            self._start_failures += 1
            if self._start_failures > MAX_START_FAILURES_PER_SLOT * self.slots:
                raise RuntimeError(f"Ray workers keep failing to start: {exc}") from exc
            self._replace(slot)

    def _collect(self, ref: Any, slot: _Slot) -> Finished:
        ray = self._ray
        trial_id = slot.busy
        assert trial_id is not None
        slot.busy = None
        try:
            result = EvalResult.from_dict(ray.get(ref))
        except _lost_errors(ray) as exc:
            reason = f"worker {slot.name} lost: {type(exc).__name__}"
            self._replace(slot)
            return Finished(trial_id, WorkerLost(reason), slot.name)
        return Finished(trial_id, result, slot.name)

    def _replace(self, slot: _Slot) -> None:
        with contextlib.suppress(Exception):  # already gone with its node
            self._ray.kill(slot.actor, no_restart=True)
        fresh = self._new_slot()
        slot.actor, slot.ready_ref, slot.name, slot.busy = fresh.actor, fresh.ready_ref, "", None

    def shutdown(self) -> None:
        ray = self._ray
        for slot in getattr(self, "_pool", []):
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)
        self._pool = []
        self._running = {}
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False


def _lost_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Exceptions meaning the worker, not the evaluation, failed."""
    ex = ray.exceptions
    names = ("RayActorError", "ActorUnavailableError", "ObjectLostError", "NodeDiedError")
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


def _connect(ray: Any, address: str, workers: int, cpus_per_trial: float) -> None:
    """`ray.init`, keeping the caller's SIGTERM and SIGINT handlers: Ray installs its own
    (`sys.exit` on SIGTERM), which would skip the search's orderly stop (exit 143, trials in
    flight marked interrupted) that schedulers rely on."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        _init(ray, address, workers, cpus_per_trial)
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in handlers.items():
                if handler is not None and signal.getsignal(signum) is not handler:
                    signal.signal(signum, handler)


def _init(ray: Any, address: str, workers: int, cpus_per_trial: float) -> None:
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if not address:
        num_cpus = max(1, int(-(-workers * cpus_per_trial // 1)))
        ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
        return
    if address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise BlockQNNError(
                f"--address {clip(address, quote=True)}: expected HOST:PORT (or 'auto')"
            )
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise BlockQNNError(f"cannot reach a Ray cluster at {address}: {reason}") from None
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BlockQNNError(f"cannot join the Ray cluster at {address}: {first}") from None


def make_executor(spec: EvaluatorSpec) -> RayExecutor:
    """The registry's factory for `ray`, with the `[search]` section's settings."""
    s = spec.config.search
    return RayExecutor(
        spec,
        workers=s.workers,
        cpus_per_trial=s.cpus_per_trial,
        gpus_per_trial=s.gpus_per_trial,
        address=s.address,
    )
