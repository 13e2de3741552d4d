"""Where evaluations run: in the search process (`local`) or on Ray actors (`ray`).

Owns: the executor interface (`submit` / `wait` / `shutdown`), the local executor, the
picklable `EvaluatorSpec` that tells every worker how to build its evaluator, and the choice
of executor from the config. Must not decide what to evaluate (the search loop does) nor
write to the store (workers return results; the master records them).

Interface: `submit(trial_id, block)` hands over one evaluation; `wait(timeout)` returns the
evaluations that finished, each a `Finished(trial_id, outcome, worker)` whose outcome is the
evaluator's `EvalResult` or a `WorkerLost` (the worker process or its node died; the search
loop decides whether to run the trial again); `shutdown()` releases the workers. `slots` is
how many evaluations the executor runs at once: the loop keeps that many in flight.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from blockqnn.config import Config
from blockqnn.errors import BlockQNNError
from blockqnn.nsc import Block
from blockqnn.result import EvalResult


class Evaluating(Protocol):
    def evaluate(self, block: Block) -> EvalResult: ...


@dataclass(frozen=True)
class WorkerLost:
    """The worker running a trial died (process killed, node lost) before it answered."""

    reason: str


class Finished(NamedTuple):
    trial_id: int
    outcome: EvalResult | WorkerLost
    worker: str  # who ran it, e.g. "local", "host:pid cuda:0"


class Executor(Protocol):
    slots: int

    def submit(self, trial_id: int, block: Block) -> None: ...

    def wait(self, timeout: float | None = None) -> list[Finished]: ...

    def shutdown(self) -> None: ...


def load_data(config: Config) -> Any:
    """The dataset as host arrays: loaded once by the master, shipped to every worker."""
    from blockqnn.data import load_arrays

    return load_arrays(config.data)


def real_evaluator(config: Config, data: Any, device: str | None) -> Evaluating:
    """The early-stop evaluator (`blockqnn.evaluator.Evaluator`)."""
    from blockqnn.evaluator import Evaluator

    evaluator: Evaluating = Evaluator(config, data, device)
    return evaluator


@dataclass(frozen=True)
class EvaluatorSpec:
    """How a worker builds its evaluator; picklable, so Ray can send it to every actor.

    `factory(config, data, device)` builds it once per worker (None: the early-stop
    `Evaluator`). The data is loaded once, in the master, by `loader(config)` (None:
    `load_data`) and reaches the workers through Ray's object store, so remote nodes need no
    shared file system; `needs_data=False` skips loading (the synthetic evaluator).
    """

    config: Config
    device: str | None = None
    factory: Callable[[Config, Any, str | None], Evaluating] | None = None
    loader: Callable[[Config], Any] | None = None
    needs_data: bool = True

    def load_data(self) -> Any:
        if not self.needs_data:
            return None
        return (self.loader or load_data)(self.config)

    def build(self, data: Any) -> Evaluating:
        return (self.factory or real_evaluator)(self.config, data, self.device)


class LocalExecutor:
    """Evaluations in the search process, one at a time, on the GPU if there is one.

    One slot: the search process has one device and one interpreter, so running several
    evaluations at once here would only make each slower; use the Ray executor for
    parallelism (it can pack several evaluations on one GPU).
    """

    slots = 1

    def __init__(self, spec: EvaluatorSpec) -> None:
        self._evaluator = spec.build(spec.load_data())
        self._max_depth = spec.config.agent.max_depth
        self._queue: deque[tuple[int, Block]] = deque()

    def submit(self, trial_id: int, block: Block) -> None:
        self._queue.append((trial_id, block))

    def wait(self, timeout: float | None = None) -> list[Finished]:
        if not self._queue:
            if timeout:
                time.sleep(timeout)
            return []
        trial_id, block = self._queue.popleft()
        result = self._evaluator.evaluate(block)
        return [Finished(trial_id, result, "local")]

    def shutdown(self) -> None:
        self._queue.clear()


def make_executor(spec: EvaluatorSpec) -> Executor:
    """The executor the config's `[search]` section asks for. Bad settings (an unreachable
    Ray address, GPUs that are not there) raise `BlockQNNError` before any work starts."""
    s = spec.config.search
    if s.executor == "local":
        if s.gpus_per_trial > 0:
            import torch

            if not torch.cuda.is_available():
                raise BlockQNNError(
                    f"--gpus-per-trial {s.gpus_per_trial}: no GPU is available here"
                )
        return LocalExecutor(spec)
    from blockqnn.executor.ray_executor import RayExecutor

    return RayExecutor(
        spec,
        workers=s.workers,
        cpus_per_trial=s.cpus_per_trial,
        gpus_per_trial=s.gpus_per_trial,
        address=s.address,
    )


__all__ = [
    "EvaluatorSpec",
    "Executor",
    "Finished",
    "LocalExecutor",
    "WorkerLost",
    "make_executor",
]
