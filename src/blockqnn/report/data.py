"""What a report says about a run, read from its store: counts, rates, curves, the best
candidates.

Owns: `RunSummary` (a frozen snapshot of one run, read through the store's public read API
only, opened read-only so a running search is never disturbed) and the pure statistics the
plots draw (`stage_means`, `window_means`, `rolling_means`). Must not draw, write HTML or
import torch, and must not assume a strategy reports an epsilon: only Q-learning does.

What it keeps. A long run holds hundreds of thousands of reused trials (a row per proposal
of a candidate seen before) beside a few thousand trained ones, so the summary is made in one
streamed pass over the trials (`Store.reading`, every row verified on the way): the trained
trials as records, the reused ones as the numbers the learning curve draws (`Reused`, and
only for the report), the stages as they stream by (`StageMeans`).

Which trials count. The learning curve's points are the *scored* trials (complete, failed
and reused: every reward the strategy was told). Its statistics are over the *trained*
trials only (complete and failed, failures at the reward they were told): a reused trial is a
candidate seen before whose stored reward is told again, so averaging it in would count one
measurement several times, and how often a strategy repeats itself would move its curve.
"""

from __future__ import annotations

import math
import statistics
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blockqnn.errors import BlockQNNError
from blockqnn.settings.config import Config
from blockqnn.store.db import COMPLETE, FAILED, REUSED, TRAINED, Store, TrialRecord
from blockqnn.store.scan import Reading

if TYPE_CHECKING:
    import numpy as np

# Trials that carry a reward the agent was told: the points of the learning curve.
SCORED = (COMPLETE, FAILED, REUSED)


def epsilon_of(trial: TrialRecord) -> float | None:
    """The epsilon the strategy reported when it proposed `trial`, or None (strategies other
    than Q-learning report none)."""
    return epsilon_in(trial.info)


def epsilon_in(info: dict[str, Any]) -> float | None:
    """The epsilon of a strategy's info, or None."""
    value = info.get("epsilon")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def trained_rewards(trials: Sequence[TrialRecord]) -> list[float]:
    """Rewards of the trained trials (complete and failed), in ask order."""
    return [float(t.reward) for t in trials if t.status in TRAINED and t.reward is not None]


def rolling_size(n: int) -> int:
    """The rolling mean's window for `n` trained trials: a tenth of them, at least 5 (fewer
    is noise) and at most `n` (so a short run still gets one point)."""
    return max(1, min(n, max(5, n // 10)))


@dataclass(frozen=True)
class Stage:
    """A run of consecutive scored trials asked at the same epsilon."""

    epsilon: float
    first: int  # trial id of the first and last trial of the stage (inclusive)
    last: int
    mean: float | None  # mean reward over the stage's trained trials; None if it has none
    count: int  # scored trials in the stage: trained + reused
    trained: int  # complete and failed trials (what `mean` averages)
    reused: int  # reused duplicates (drawn, not averaged)


@dataclass(frozen=True)
class Reused:
    """The reused trials with a reward, in ask order, as the learning curve draws them: a
    long run holds hundreds of thousands, so their numbers are kept, not their records."""

    ids: array[int] = field(default_factory=lambda: array("q"))
    rewards: array[float] = field(default_factory=lambda: array("d"))
    failures: array[int] = field(default_factory=lambda: array("b"))  # 1: a failure's copy

    def add(self, trial_id: int, reward: float, failure: bool) -> None:
        self.ids.append(trial_id)
        self.rewards.append(reward)
        self.failures.append(failure)

    def points(self, failure: bool) -> tuple[np.ndarray, np.ndarray]:
        """(ids, rewards) of the copies of failures, or of the others: numpy arrays, which
        matplotlib takes as they are (from lists it converts every value)."""
        import numpy as np  # here: `status` and `trials` read runs without it

        keep = np.frombuffer(self.failures, dtype=np.int8) == int(failure)
        ids = np.frombuffer(self.ids, dtype=np.int64)[keep]
        return ids, np.frombuffer(self.rewards, dtype=np.float64)[keep]


@dataclass(frozen=True)
class RunSummary:
    """Everything the report shows about one run, read at one moment."""

    run_dir: Path
    config: Config
    meta: dict[str, str]
    counts: dict[str, int]
    evaluated: tuple[TrialRecord, ...]  # complete and failed trials (the budget's), ask order
    top: tuple[TrialRecord, ...]  # best complete trials by reward, best first
    elapsed: float  # seconds the run's sessions have worked, summed
    sessions: tuple[dict[str, Any], ...]
    active: bool  # a search process held the run's lock when it was read
    read_at: float  # Unix seconds when the store was read
    stages: tuple[Stage, ...]  # `stage_means` of every trial
    info: dict[str, Any]  # the strategy's info at the latest trial (e.g. {"epsilon": 0.9})
    has_epsilon: bool  # whether the strategy reported an epsilon (then the curve has stages)
    reused_errors: bool  # whether a reused trial with a reward carries an error
    reused: Reused = field(default_factory=Reused)  # empty unless read with `points`

    @property
    def trained(self) -> list[TrialRecord]:
        """Complete and failed trials with a reward, ask order (what the statistics use)."""
        return [t for t in self.evaluated if t.reward is not None]

    @property
    def complete(self) -> list[TrialRecord]:
        return [t for t in self.evaluated if t.status == COMPLETE]

    @property
    def failed(self) -> list[TrialRecord]:
        return [t for t in self.evaluated if t.status == FAILED]

    @property
    def agent(self) -> str:
        return self.config.search.agent

    @property
    def space(self) -> str:
        return self.config.search.space

    @property
    def noun(self) -> str:
        """What the space's candidates are called: 'block' (NSC) or 'candidate'."""
        return "block" if self.space == "nsc" else "candidate"

    @property
    def has_cost(self) -> bool:
        """Whether the evaluations measured FLOPs (the nb201 table, for one, does not)."""
        return any(t.flops for t in self.complete)

    @property
    def iteration_size(self) -> int:
        """Trained candidates per iteration (the paper's 64, or scaled to the budget)."""
        from blockqnn.strategy.base import replay_iteration

        return replay_iteration(self.config.agent.iteration_size, self.config.search.budget)

    @property
    def evaluations_per_hour(self) -> float | None:
        """Trained (not reused) candidates per hour of session time."""
        if self.elapsed <= 0:
            return None
        return self.counts["trained"] * 3600.0 / self.elapsed

    @property
    def state(self) -> str:
        """'running' while a search holds the run, else how its last session ended."""
        if self.active:
            return "running"
        if not self.sessions:
            return "not started"
        last = self.sessions[-1]
        if last.get("ended") is None:  # killed (e.g. -9) without closing its session
            return "stopped (killed or crashed; resume with blockqnn search --resume)"
        return str(last.get("outcome") or "stopped")

    @property
    def devices(self) -> list[str]:
        """The devices the evaluations ran on, as the evaluator recorded them."""
        found = {str(t.result.get("device", "")) for t in self.complete if t.result}
        return sorted(d for d in found if d)

    @property
    def median_train_seconds(self) -> float | None:
        seconds = (t.train_seconds for t in self.complete)  # cache hits trained nothing here
        values = [s for s in seconds if s]
        return statistics.median(values) if values else None


def load_run(run_dir: str | Path, top_k: int = 10) -> RunSummary:
    """Read a run's store (read-only) with the points the report draws. Raises
    `BlockQNNError` for a directory that is not a run or a run without a completed trial."""
    summary = read_run(run_dir, top_k, points=True)
    if not summary.complete:
        state = ", ".join(f"{n} {s}" for s, n in summary.counts.items() if n and s != "trained")
        raise BlockQNNError(
            f"run dir {summary.run_dir} has no completed trials yet ({state or 'no trials'}): "
            "nothing to report"
        )
    return summary


def read_run(run_dir: str | Path, top_k: int = 10, points: bool = False) -> RunSummary:
    """Read a run's store (read-only), whatever it holds so far (`status` shows a run
    without trials too), in one pass over its trials that keeps the trained ones and, with
    `points`, the reused ones' points. Raises `BlockQNNError` for a directory that is not a
    run."""
    directory = Path(run_dir)
    with Store.open(directory, readonly=True) as store, store.reading() as reading:
        config = store.config()
        summary = RunSummary(
            run_dir=directory,
            config=config,
            meta=store.meta(),
            counts=store.counts(),
            top=tuple(store.top(top_k)),
            elapsed=store.elapsed(),
            sessions=tuple(store.sessions()),
            active=store.active(),
            read_at=time.time(),
            **_scan(reading, points),
        )
    return summary


def _scan(reading: Reading, points: bool) -> dict[str, Any]:
    """`RunSummary`'s fields from one pass over every trial (each verified on the way)."""
    evaluated: list[TrialRecord] = []
    stages = StageMeans()
    reused = Reused()
    info: dict[str, Any] = {}
    has_epsilon = errors = False
    for t in reading.scan():
        info = t.info
        epsilon = epsilon_in(t.info)
        has_epsilon = has_epsilon or epsilon is not None
        stages.add(t.id, t.status, t.reward, epsilon)
        if t.status in TRAINED:
            evaluated.append(reading.record(t))
        elif t.status == REUSED and t.reward is not None:
            errors = errors or bool(t.error)
            if points:
                failure = t.result is not None and t.result.get("status") != "ok"
                reused.add(t.id, t.reward, failure)
    return {
        "evaluated": tuple(evaluated),
        "stages": tuple(stages.close()),
        "info": dict(info),
        "has_epsilon": has_epsilon,
        "reused_errors": errors,
        "reused": reused,
    }


class StageMeans:
    """`stage_means` one trial at a time (ask order), holding only the current stage's
    rewards: a reader feeds it every trial as it streams by."""

    def __init__(self) -> None:
        self.stages: list[Stage] = []
        self._eps: float | None = None
        self._first = self._last = self._count = self._reused = 0
        self._rewards: list[float] = []  # the current stage's trained rewards

    def add(self, trial_id: int, status: str, reward: float | None, eps: float | None) -> None:
        if reward is None or status not in SCORED:
            return
        if eps is None:  # in no stage, and the end of the one before
            if self._eps is not None:
                self.close()
            return
        if self._eps is None or not math.isclose(eps, self._eps, abs_tol=1e-9):
            self.close()
            self._eps, self._first, self._rewards = eps, trial_id, []
        self._last = trial_id
        self._count += 1
        if status == REUSED:
            self._reused += 1
        else:
            self._rewards.append(float(reward))

    def close(self) -> list[Stage]:
        """End the current stage; returns every stage so far."""
        if self._count and self._eps is not None:
            rewards = self._rewards
            mean = statistics.fmean(rewards) if rewards else None
            counts = (self._count, len(rewards), self._reused)
            self.stages.append(Stage(self._eps, self._first, self._last, mean, *counts))
        self._eps, self._count, self._reused = None, 0, 0
        return self.stages


def stage_means(trials: Iterable[TrialRecord]) -> list[Stage]:
    """Group scored trials into runs of equal epsilon (in ask order) and average each over
    its trained trials. Trials without an epsilon belong to no stage: a strategy that reports
    none gives no stages."""
    means = StageMeans()
    for t in trials:
        means.add(t.id, t.status, t.reward, epsilon_of(t))
    return means.close()


def window_means(trials: Sequence[TrialRecord], size: int) -> list[tuple[float, float]]:
    """Mean reward of every consecutive window of `size` trained trials (the paper's
    iterations of 64 blocks): (window number from 1, mean). A last partial window counts."""
    if size < 1:
        raise ValueError(f"window size {size}: must be at least 1")
    rewards = trained_rewards(trials)
    return [
        (i // size + 1, statistics.fmean(rewards[i : i + size]))
        for i in range(0, len(rewards), size)
    ]


def rolling(values: Sequence[float], size: int) -> list[float]:
    """Mean of every full window of `size` consecutive values: value i of the result is the
    mean of `values[i : i + size]` (so there are len(values) - size + 1, or none)."""
    if size < 1:
        raise ValueError(f"window size {size}: must be at least 1")
    out: list[float] = []
    total = 0.0
    for i, value in enumerate(values):
        total += value
        if i >= size:
            total -= values[i - size]
        if i >= size - 1:
            out.append(total / size)
    return out


def rolling_means(trials: Sequence[TrialRecord], size: int) -> list[tuple[int, float]]:
    """The mean reward of the last `size` trained trials at every trained trial from the
    `size`-th on: (its trial id, mean). Reused trials are skipped, as in `stage_means`."""
    trained = [t for t in trials if t.status in TRAINED and t.reward is not None]
    means = rolling(trained_rewards(trained), size)
    return [(t.id, m) for t, m in zip(trained[size - 1 :], means, strict=True)]


def count(n: int, noun: str) -> str:
    """`1 block`, `2 blocks`, `0 blocks` (English plurals of the nouns used here: add s)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def pending_text(counts: dict[str, int], active: bool) -> str:
    """The trials not finished, by the store's status names (the names `trials`, the CSV
    and --json use): `0 running, 1 queued, 2 interrupted`. With no search active, a running
    trial was left by a killed one (kill -9); a resume runs it again."""
    running = f"{counts['running']} running"
    if counts["running"] and not active:
        running += " (left by a killed search)"
    return f"{running}, {counts['queued']} queued, {counts['interrupted']} interrupted"


def duration(seconds: float) -> str:
    """A human duration: '42 s', '12.5 min', '3.1 h'."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
