"""The local executor: evaluations on this machine, in the search process or in a pool.

Owns: `LocalExecutor` (one evaluation at a time, in the search process) and the registry
factory for `local`, which picks it for `workers = 1` and `executor.pool.PoolExecutor` (worker
processes, no Ray) for more. Must not decide what to evaluate (the search loop does) nor
write to the store.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from blockqnn.errors import BlockQNNError
from blockqnn.execute.base import (
    IN_PROCESS,
    EvaluatorSpec,
    Executor,
    Finished,
    evaluate_safely,
)


class LocalExecutor:
    """Evaluations in the search process, one at a time, on the GPU if there is one.

    One slot: the search process has one device and one interpreter, so running several
    evaluations at once here would only make each slower; `workers > 1` runs them in worker
    processes instead (`executor.pool`), which can also pack several on one GPU.
    """

    slots = 1
    in_process = True  # a trial this runs dies with the search (`IN_PROCESS`)

    def __init__(self, spec: EvaluatorSpec) -> None:
        from blockqnn.train import threads

        threads.choose(spec.config.train.threads)  # a --threads given wins
        if spec.needs_data:  # a table look-up trains nothing: torch need not be imported
            threads.configure_threads()
        self._evaluator = spec.build(spec.load_data())
        self._queue: deque[tuple[int, Any]] = deque()

    def submit(self, trial_id: int, candidate: Any) -> None:
        self._queue.append((trial_id, candidate))

    def wait(self, timeout: float | None = None) -> list[Finished]:
        if not self._queue:
            if timeout:
                time.sleep(timeout)
            return []
        trial_id, candidate = self._queue.popleft()
        result = evaluate_safely(self._evaluator, candidate)
        return [Finished(trial_id, result, IN_PROCESS)]

    def shutdown(self) -> None:
        self._queue.clear()


def make_executor(spec: EvaluatorSpec) -> Executor:
    """The registry's factory for `local`: in process for one worker (what it always was),
    a process pool for more; asking for GPUs where there are none is refused."""
    s = spec.config.search
    if s.workers > 1:
        from blockqnn.execute.pool import make_pool

        return make_pool(spec)
    if s.gpus_per_trial > 0:
        import torch

        if not torch.cuda.is_available():
            raise BlockQNNError(f"--gpus-per-trial {s.gpus_per_trial}: no GPU is available here")
    return LocalExecutor(spec)
