"""Where evaluations run: in the search process (`local`) or on Ray actors (`ray`).

The contract is in `execute.base`; implementations in `execute.local`, `execute.pool` and
`execute.ray_executor` (imported only when chosen, so Ray stays optional); plug-ins register
in `blockqnn.settings.registry.EXECUTORS`. `execute.synthetic` describes the synthetic
evaluator for tests and benchmarks.
"""

from __future__ import annotations

from blockqnn.execute.base import (
    IN_PROCESS,
    Evaluating,
    EvaluatorSpec,
    Executor,
    Finished,
    WorkerLost,
)
from blockqnn.settings.registry import EXECUTORS


def make_executor(spec: EvaluatorSpec) -> Executor:
    """The executor the config's `[search]` section names. Bad settings (an unreachable
    Ray address, GPUs that are not there) raise `BlockQNNError` before any work starts."""
    executor: Executor = EXECUTORS.get(spec.config.search.executor)(spec)
    return executor


__all__ = [
    "IN_PROCESS",
    "Evaluating",
    "EvaluatorSpec",
    "Executor",
    "Finished",
    "WorkerLost",
    "make_executor",
]
