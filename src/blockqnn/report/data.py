"""What a report says about a run, read from its store: counts, rates, curves, the best blocks.

Owns: `RunSummary` (a frozen snapshot of one run, read through the store's public read API
only, opened read-only so a running search is never disturbed) and the pure statistics the
plots draw (`stage_means`, `window_means`). Must not draw, write HTML or import torch.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockqnn.config import Config
from blockqnn.errors import BlockQNNError
from blockqnn.store import COMPLETE, FAILED, REUSED, Store, TrialRecord

# Trials that carry a reward the agent was told: the points of the learning curve.
SCORED = (COMPLETE, FAILED, REUSED)


@dataclass(frozen=True)
class Stage:
    """A run of consecutive scored trials asked at the same epsilon."""

    epsilon: float
    first: int  # trial id of the first and last trial of the stage (inclusive)
    last: int
    mean: float  # mean reward over the stage's scored trials
    count: int


@dataclass(frozen=True)
class RunSummary:
    """Everything the report shows about one run, read at one moment."""

    run_dir: Path
    config: Config
    meta: dict[str, str]
    counts: dict[str, int]
    trials: tuple[TrialRecord, ...]  # every trial, ask order
    top: tuple[TrialRecord, ...]  # best complete trials by reward, best first
    elapsed: float  # seconds the run's sessions have worked, summed
    sessions: tuple[dict[str, Any], ...]
    active: bool  # a search process held the run's lock when it was read
    read_at: float  # Unix seconds when the store was read

    @property
    def scored(self) -> list[TrialRecord]:
        """Finished trials with a reward, ask order (the learning curve's points)."""
        return [t for t in self.trials if t.status in SCORED and t.reward is not None]

    @property
    def complete(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == COMPLETE]

    @property
    def agent(self) -> str:
        return self.config.search.agent

    @property
    def epsilon(self) -> float | None:
        """Epsilon of the most recently asked block (what the agent is using now)."""
        return self.trials[-1].epsilon if self.trials else None

    @property
    def evaluations_per_hour(self) -> float | None:
        """Trained (not reused) blocks per hour of session time."""
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
        values = [
            float(t.result.get("train_seconds", 0.0))
            for t in self.complete
            if t.result and t.result.get("train_seconds")
        ]
        return statistics.median(values) if values else None


def load_run(run_dir: str | Path, top_k: int = 10) -> RunSummary:
    """Read a run's store (read-only). Raises `BlockQNNError` for a directory that is not a
    run or a run without a single completed trial."""
    directory = Path(run_dir)
    with Store.open(directory, readonly=True) as store:
        config = store.config()
        summary = RunSummary(
            run_dir=directory,
            config=config,
            meta=store.meta(),
            counts=store.counts(),
            trials=tuple(store.trials()),
            top=tuple(store.top(top_k)),
            elapsed=store.elapsed(),
            sessions=tuple(store.sessions()),
            active=store.active(),
            read_at=time.time(),
        )
    if not summary.complete:
        state = ", ".join(f"{n} {s}" for s, n in summary.counts.items() if n and s != "trained")
        raise BlockQNNError(
            f"run dir {directory} has no completed trials yet ({state or 'no trials'}): "
            "nothing to report"
        )
    return summary


def stage_means(trials: Sequence[TrialRecord]) -> list[Stage]:
    """Group scored trials into runs of equal epsilon (in ask order) and average each."""
    stages: list[Stage] = []
    group: list[TrialRecord] = []

    def close() -> None:
        rewards = [float(t.reward) for t in group if t.reward is not None]
        mean = statistics.fmean(rewards)
        stages.append(Stage(group[0].epsilon, group[0].id, group[-1].id, mean, len(group)))

    for t in trials:
        if t.reward is None or t.status not in SCORED:
            continue
        if group and not math.isclose(t.epsilon, group[-1].epsilon, abs_tol=1e-9):
            close()
            group = []
        group.append(t)
    if group:
        close()
    return stages


def window_means(trials: Sequence[TrialRecord], size: int) -> list[tuple[float, float]]:
    """Mean reward of every consecutive window of `size` scored trials (the paper's
    iterations of 64 blocks): (window number from 1, mean). A last partial window counts."""
    if size < 1:
        raise ValueError(f"window size {size}: must be at least 1")
    rewards = [float(t.reward) for t in trials if t.reward is not None and t.status in SCORED]
    return [
        (i // size + 1, statistics.fmean(rewards[i : i + size]))
        for i in range(0, len(rewards), size)
    ]


def duration(seconds: float) -> str:
    """A human duration: '42 s', '12.5 min', '3.1 h'."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
