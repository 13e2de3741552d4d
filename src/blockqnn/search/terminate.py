"""Early termination inside the early stop: the master's threshold and prediction.

Owns: the decision rules as pure functions (`stop_threshold`, `fit_line`, `predict`,
`seconds_saved`) and `Terminator`, the master's state: the validation accuracies of earlier
candidates at epoch `k` (`[search] stop_after`) and the (partial, full) pairs of those that
trained in full. Must not train (the evaluator stops, `blockqnn.evaluate.early_stop`) nor
write to the store (the loop records what `complete` returns).

Rules (choices; off by default until benchmarks/faster.py measures them):
- No threshold until `MIN_COMPLETED` candidates trained in full: the first ones all do.
- The threshold is the `stop_quantile` quantile of every earlier ok candidate's accuracy at
  epoch k, stopped ones included: survivors alone would push it up with every stop.
- A stopped candidate's reward uses a prediction of its full early-stop accuracy: a
  least-squares line through the (partial, full) pairs of fully trained candidates, once
  there are `MIN_PAIRS`; before that (or when the partials are all equal), the partial.
- The training seconds saved are the stopped candidate's own seconds per epoch times the
  epochs it skipped: its network's speed, not an average over other networks' sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from blockqnn.evaluate.gate import Gate
from blockqnn.evaluate.result import EvalResult
from blockqnn.settings.config import Config

MIN_COMPLETED = 8  # fully trained candidates before any candidate is stopped
MIN_PAIRS = 5  # (partial, full) pairs before the line replaces the partial accuracy

PARTIAL = "partial_accuracy"  # the validation accuracy after `stop_after` epochs
PARTIAL_EPOCH = "partial_epoch"  # the epoch it was measured at (a cache hit's may differ)
STOPPED_AT = "stopped_at"  # the epoch a stopped candidate stopped at
PREDICTED = "predicted_accuracy"  # a stopped candidate's predicted full accuracy
SAVED = "saved_seconds"  # a stopped candidate's training seconds not spent


def stop_threshold(partials: Sequence[float], completed: int, quantile: float) -> float | None:
    """The accuracy at epoch k below which a candidate stops; None before `MIN_COMPLETED`
    candidates trained in full."""
    if completed < MIN_COMPLETED or not partials:
        return None
    return float(np.quantile(np.asarray(partials, dtype=float), quantile))


def fit_line(pairs: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """(slope, intercept) of full ~ partial by least squares; None with fewer than
    `MIN_PAIRS` pairs or partials that are all equal."""
    if len(pairs) < MIN_PAIRS:
        return None
    x = np.asarray([p for p, _ in pairs], dtype=float)
    y = np.asarray([f for _, f in pairs], dtype=float)
    if np.ptp(x) == 0.0:
        return None
    a = np.stack([x, np.ones_like(x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(slope), float(intercept)


def predict(partial: float, line: tuple[float, float] | None) -> float:
    """The predicted full accuracy, clipped to [0, 1]; the partial one without a line."""
    if line is None:
        return partial
    slope, intercept = line
    return min(1.0, max(0.0, slope * partial + intercept))


def seconds_saved(train_seconds: float, stopped_at: int, epochs: int) -> float:
    """The training seconds the epochs after `stopped_at` would have taken."""
    if stopped_at <= 0:
        return 0.0
    return train_seconds / stopped_at * max(0, epochs - stopped_at)


class Terminator:
    """The master's side of early termination for one run."""

    def __init__(self, stop_after: int, quantile: float, epochs: int) -> None:
        self.stop_after = stop_after
        self.quantile = quantile
        self.epochs = epochs
        self.partials: list[float] = []
        self.pairs: list[tuple[float, float]] = []

    @classmethod
    def for_config(cls, config: Config) -> Terminator | None:
        s = config.search
        return cls(s.stop_after, s.stop_quantile, config.train.epochs) if s.stop_after else None

    def gate(self) -> Gate:
        """The gate to ship with the next job (re-made at every submission, resumes too)."""
        below = stop_threshold(self.partials, len(self.pairs), self.quantile)
        return Gate(self.stop_after, below)

    def adopt(self, result: EvalResult) -> EvalResult:
        """A result another run trained (the evaluation cache's) as this run can learn
        from: without its partial accuracy unless that was measured at this run's epoch k
        (the cache's key leaves `stop_after` out; results from before the epoch was recorded
        cannot say theirs)."""
        if result.metrics.get(PARTIAL_EPOCH) == self.stop_after or PARTIAL not in result.metrics:
            return result
        metrics = {k: v for k, v in result.metrics.items() if k not in (PARTIAL, PARTIAL_EPOCH)}
        return replace(result, metrics=metrics)

    def note(self, result: EvalResult) -> None:
        """Learn from a finished (or stored) result: its partial accuracy and, when it
        trained in full, its (partial, full) pair."""
        partial = result.metrics.get(PARTIAL)
        epoch = result.metrics.get(PARTIAL_EPOCH, self.stop_after)
        if not result.ok or partial is None or epoch != self.stop_after:
            return
        self.partials.append(partial)
        if STOPPED_AT not in result.metrics:
            self.pairs.append((partial, result.accuracy))

    def complete(self, result: EvalResult) -> EvalResult:
        """A stopped result as the master records it: `accuracy` the predicted full one
        (which the reward uses), the partial and the seconds saved among its metrics."""
        stopped = result.metrics.get(STOPPED_AT)
        if not result.ok or stopped is None:
            return result
        partial = result.metrics.get(PARTIAL, result.accuracy)
        predicted = predict(partial, fit_line(self.pairs))
        saved = seconds_saved(result.train_seconds, int(stopped), self.epochs)
        metrics = {**result.metrics, PREDICTED: predicted, SAVED: saved}
        return replace(result, accuracy=predicted, metrics=metrics)
