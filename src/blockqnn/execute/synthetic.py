"""The synthetic evaluator described for executors: an `EvaluatorSpec` without data.

Owns: `synthetic_spec`, the picklable spec of `blockqnn.evaluate.synthetic.SyntheticEvaluator`
that tests and benchmarks hand to a search (local, pool or Ray). Must not claim anything about
architectures (see the evaluator).
"""

from __future__ import annotations

import functools

from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.execute.base import EvaluatorSpec
from blockqnn.settings.config import Config


def synthetic_spec(
    config: Config,
    seconds: float = 0.0,
    fail_digits: str = "",
    with_cost: bool = True,
    record_times: bool = False,
) -> EvaluatorSpec:
    """An `EvaluatorSpec` for `SyntheticEvaluator(...)`: no data, picklable."""
    factory = functools.partial(
        SyntheticEvaluator,
        seconds=seconds,
        fail_digits=fail_digits,
        with_cost=with_cost,
        record_times=record_times,
    )
    return EvaluatorSpec(config, factory=factory, needs_data=False)
