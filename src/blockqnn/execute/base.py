"""The executor contract: what the search loop hands to executors and gets back.

Owns: the `Executor` protocol (`submit` / `wait` / `shutdown`, `slots`), `Finished` and
`WorkerLost`, the `Evaluating` protocol every evaluator follows, the picklable
`EvaluatorSpec` that tells each worker how to build its evaluator, and the default data
loader and evaluator. Must not import an executor's implementation (they import this
module), torch or Ray, nor hold state between runs: the master loads a run's data once
(`EvaluatorSpec.with_data`) and the spec carries it to the executor.

Interface: `submit(trial_id, candidate)` hands over one evaluation; `wait(timeout)` returns
the evaluations that finished, each a `Finished(trial_id, outcome, worker)` whose outcome is
the evaluator's `EvalResult` or a `WorkerLost` (the worker process or its node died; the
search loop decides whether to run the trial again); `shutdown()` releases the workers.
`slots` is how many evaluations the executor runs at once: the loop keeps that many in
flight. Executors are found by name in `blockqnn.settings.registry.EXECUTORS`; a factory takes
the `EvaluatorSpec`, reads its settings from `spec.config.search` and its data from
`spec.load_data()` (already loaded by the master: nothing is read again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

from blockqnn.evaluate.gate import Job, split_job, unwrap
from blockqnn.evaluate.result import EvalResult
from blockqnn.settings.config import Config
from blockqnn.settings.registry import resolve
from blockqnn.space.base import Space, make_space, reads_data

log = logging.getLogger("blockqnn.execute")


class Evaluating(Protocol):
    """An evaluator: built once per worker, then `evaluate` for each candidate. It returns
    an `EvalResult` with the metrics it measured, never a reward (the master scores them),
    and never raises for a bad candidate."""

    def evaluate(self, candidate: Any) -> EvalResult: ...


@dataclass(frozen=True)
class WorkerLost:
    """The worker running a trial died (process killed, node lost) before it answered."""

    reason: str


# the worker of an evaluation run in the search process itself (`LocalExecutor`, whose
# `in_process` is True): a trial left running there died with the search
IN_PROCESS = "local"


class Finished(NamedTuple):
    trial_id: int
    outcome: EvalResult | WorkerLost
    worker: str  # who ran it, e.g. "local", "host:pid cuda:0"


class Executor(Protocol):
    slots: int

    def submit(self, trial_id: int, candidate: Any) -> None: ...

    def wait(self, timeout: float | None = None) -> list[Finished]: ...

    def shutdown(self) -> None: ...


def evaluate_safely(evaluator: Evaluating, candidate: Any) -> EvalResult:
    """`evaluator.evaluate(candidate)`, with an exception turned into a failed result.

    Evaluators return failures as results; one that raises has a bug or met a candidate it
    cannot handle. Inside a search that must not crash the master: the trial would stay
    `running` and every resume would run it into the same exception. It is recorded failed
    with the exception as its error (and logged), so the search goes on and says so. Ctrl-C
    and SIGTERM (not `Exception`s) still stop the search."""
    try:
        return run_job(evaluator, candidate)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")[:300]
        log.warning("the evaluation of %s raised %s", str(candidate)[:200], reason)
        return EvalResult.failed(f"the evaluator raised {reason}")


def run_job(evaluator: Evaluating, job: Any) -> EvalResult:
    """Evaluate a candidate or a `Job`: a job's gate goes to the evaluator's
    `evaluate_gated(candidate, gate)` where it has one (the early-stop evaluator); others
    train the candidate in full, unaware of the gate."""
    candidate, gate = unwrap(job)
    gated = getattr(evaluator, "evaluate_gated", None)
    if gate is not None and gated is not None:
        result: EvalResult = gated(candidate, gate)
        return result
    return evaluator.evaluate(candidate)


def parse_job(space: Space, text: str) -> Any:
    """The candidate (or `Job`) a worker received as text (`blockqnn.evaluate.gate`)."""
    candidate_text, gate = split_job(text)
    candidate = space.parse(candidate_text)
    return candidate if gate is None else Job(candidate, gate)


def load_data(config: Config) -> Any:
    """The dataset as host arrays, read from `[data]`: the default loader of an
    `EvaluatorSpec`. The master calls it once per run (`EvaluatorSpec.with_data`) and ships
    the arrays to every worker."""
    from blockqnn.data import load_arrays

    return load_arrays(config.data)


def default_evaluator(config: Config, data: Any, device: str | None) -> Evaluating:
    """The space's own evaluator (`Space.evaluator`, a `module:attr` factory taking
    (config, data, device)): early-stop training for NSC blocks, a table look-up for nb201."""
    space = make_space(config)
    target = getattr(space, "evaluator", "blockqnn.evaluate.early_stop:Evaluator")
    evaluator: Evaluating = resolve(target)(config, data, device)
    return evaluator


@dataclass(frozen=True)
class EvaluatorSpec:
    """How a worker builds its evaluator; picklable, so Ray can send it to every actor.

    `factory(config, data, device)` builds it once per worker (None: the space's evaluator,
    `default_evaluator`). The data is loaded once, in the master, by `loader(config)` (None:
    `load_data`) and reaches the workers through Ray's object store, so remote nodes need no
    shared file system; `needs_data=False` skips loading (a tabular or synthetic evaluator).
    `with_data()` loads it once and keeps it for the executor built in this process.
    """

    config: Config
    device: str | None = None
    factory: Callable[[Config, Any, str | None], Evaluating] | None = None
    loader: Callable[[Config], Any] | None = None
    needs_data: bool = True
    # (data,) once `with_data` loaded it; never pickled with the spec: Ray's object store and
    # the pool's pipe carry the data apart from it, once
    preloaded: tuple[Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def for_space(cls, config: Config, space: Space, device: str | None = None) -> EvaluatorSpec:
        """The space's default evaluator, loading data only where the space needs it."""
        return cls(config, device, needs_data=reads_data(space))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "preloaded": None}

    def space(self) -> Space:
        return make_space(self.config)

    def with_data(self) -> EvaluatorSpec:
        """This spec with its data loaded now: `load_data` returns it from then on."""
        return replace(self, preloaded=(self.load_data(),))

    def load_data(self) -> Any:
        if self.preloaded is not None:
            return self.preloaded[0]
        if not self.needs_data:
            return None
        return (self.loader or load_data)(self.config)

    def build(self, data: Any) -> Evaluating:
        return (self.factory or default_evaluator)(self.config, data, self.device)
