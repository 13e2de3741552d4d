"""What a search runs with: the parts the assembler builds once and the loop is handed.

Owns: `RunParts` (the run's settings, space, strategy, reward, executor, caches and latency
meter, with where the strategy stands) and `WarmTrial`. Must not build anything
(`blockqnn.search.assemble` does) nor run anything (`blockqnn.search.loop` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blockqnn.evaluate.latency import LatencyMeter
from blockqnn.execute.base import Executor
from blockqnn.reward import Reward
from blockqnn.search.prescreen import Screener
from blockqnn.settings.config import Config
from blockqnn.space.base import Space
from blockqnn.store.cache import EvalCache
from blockqnn.store.db import TrialRecord
from blockqnn.strategy.base import Strategy


@dataclass(frozen=True)
class WarmTrial:
    """A completed trial of an earlier run, to be told before the first ask. `exact`: its
    run's evaluation settings are this run's, so its result stands for this run's too."""

    candidate: Any
    record: TrialRecord
    run: str
    exact: bool


@dataclass(frozen=True)
class RunParts:
    """A run's parts, each built once from its settings (`blockqnn.search.assemble`)."""

    config: Config  # as the run stores it: a new run's carries its data's shape
    space: Space
    strategy: Strategy  # restored to the store's state when resuming
    seq: int  # the strategy's calls (asks and tells) reflected in it
    reward: Reward  # metrics -> the scalar told: the master scores every result with it
    executor: Executor
    cache: EvalCache | None  # the evaluation cache shared by runs; None when off
    latency: LatencyMeter | None  # measures in the master (`latency_on = "master"`)
    fingerprint: str  # the evaluation settings' key in the cache
    warm: tuple[WarmTrial, ...] = ()  # told before the first ask (new runs)
    progress: tuple[Any, ...] | None = None  # the stored calls `seq` reflects (resume)
    screener: Screener | None = None  # the free pre-screen (`[search] prescreen` > 1)
