"""The strategies' shared contract and parts: the `Strategy` protocol, the epsilon schedule,
argument and reward checks, and the snapshot header every strategy writes and checks.

Owns: what every strategy has in common. Must not import torch or know about the store.

Life cycle of a strategy (what the search loop does, and what a strategy may assume):

1. It is built by its registry factory, `factory(space, budget, seed, config)`, with the
   `Space` it walks, the run's budget (distinct candidates to be trained), a seed and the
   `[agent]` config section. Nothing has been asked or told yet.
2. On resume, `load_state_dict` receives the newest snapshot, and then the asks and tells
   recorded after it are replayed in their order: a strategy must be a pure function of its
   seed and the sequence of calls, so the replayed asks give the recorded candidates.
3. `ask()` is called whenever an evaluation slot is free, possibly several times before any
   `tell` (asynchronous workers). `info()` is read just before each `ask` and stored with
   the trial (e.g. Q-learning's epsilon), for progress displays, `status` and the report.
4. `tell(candidate, reward)` is called once per finished trial, in the order results
   arrive, which need not be the ask order. A candidate the space has seen before (same
   hash) is not trained again: its stored reward is told again, as a new tell. Failed
   evaluations are told a reward of 0.0.
5. `state_dict()` is saved every few tells, in the same transaction as the tell's trial.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

from blockqnn.errors import BlockQNNError
from blockqnn.settings.bounds import DEFAULT_MAX_DEPTH
from blockqnn.settings.config import AgentConfig, preset_first
from blockqnn.space.base import Space

PAPER_BUDGET = 11_392  # (paper) 178 iterations x 64 blocks
# (paper) epsilon and how many iterations of 64 blocks it lasts; 178 iterations in all.
DEFAULT_SCHEDULE: tuple[tuple[float, int], ...] = (
    (1.0, 95),
    (0.9, 7),
    (0.8, 7),
    (0.7, 7),
    (0.6, 10),
    (0.5, 10),
    (0.4, 10),
    (0.3, 10),
    (0.2, 10),
    (0.1, 12),
)
SNAPSHOT_FORMAT = "blockqnn-agent"
SNAPSHOT_VERSION = 1


@runtime_checkable
class Strategy(Protocol):
    """What the search loop needs from a strategy (see the module docstring's life cycle)."""

    space: Space

    def ask(self) -> Any:
        """The next candidate of `space` to evaluate; may be called again before any `tell`."""
        ...

    def tell(self, candidate: Any, reward: float) -> None:
        """Learn the reward of a candidate, asked or not, told before or not."""
        ...

    def info(self) -> dict[str, Any]:
        """JSON values describing the strategy now (e.g. {"epsilon": 0.9}), recorded with
        the next ask's trial; {} if there is nothing to say."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable snapshot; `load_state_dict` of it resumes exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot; raises `BlockQNNError` and changes nothing if it does not fit."""
        ...


def scale_schedule(schedule: Sequence[tuple[float, int]], budget: int) -> list[tuple[float, int]]:
    """The schedule as (epsilon, blocks) stages, scaled to a total of `budget` blocks.

    Stages keep their proportions; cumulative rounding makes them sum to `budget` exactly.
    At 11,392 blocks the paper's stages come out as its iterations x 64 blocks.
    """
    total = sum(n for _, n in schedule)
    stages: list[tuple[float, int]] = []
    done, cumulative = 0, 0
    for eps, n in schedule:
        cumulative += n
        end = round(budget * cumulative / total)
        stages.append((eps, end - done))
        done = end
    return stages


def explore_stages(
    schedule: Sequence[tuple[float, int]], budget: int, share: float
) -> list[tuple[float, int]]:
    """The schedule's stages for `budget` blocks: scaled as they are (`share` 0), or the
    first `share` of the budget at epsilon 1 and the schedule's stages below epsilon 1
    scaled to the rest (the paper's decay, started earlier at small budgets)."""
    if share <= 0:
        return scale_schedule(schedule, budget)
    explore = min(budget, round(budget * share))
    decay = [(eps, n) for eps, n in schedule if eps < 1.0]
    if explore == budget or not decay or sum(n for _, n in decay) <= 0:
        return [(1.0, budget)]
    return [(1.0, explore), *scale_schedule(decay, budget - explore)]


def replay_iteration(iteration_size: int, budget: int) -> int:
    """Distinct blocks per replay iteration: `iteration_size`, or with 0 the budget split
    into as many iterations as the paper's schedule has (178), at least 4 and at most 64."""
    return iteration_size or max(4, min(64, round(budget / 178)))


def check_reward(reward: float) -> float:
    if isinstance(reward, bool) or not isinstance(reward, (int, float)):
        raise BlockQNNError(f"reward = {reward!r}: must be a number")
    value = float(reward)
    if not math.isfinite(value):
        raise BlockQNNError(f"reward = {value}: must be a finite number")
    return value


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BlockQNNError(f"{name} = {value!r}: must be an integer >= {minimum}")
    return value


def space_or_nsc(space: Space | None, max_depth: int = DEFAULT_MAX_DEPTH) -> Space:
    """`space`, or BlockQNN's own NSC space when a strategy is built without one."""
    if space is not None:
        return space
    from blockqnn.space.nsc.space import NSCSpace

    return NSCSpace(max_depth)


def agent_settings(config: AgentConfig | None, overrides: dict[str, Any]) -> AgentConfig:
    """The `[agent]` section a strategy is built with: `config` (default `AgentConfig()`,
    what the CLI and TOML give) with `overrides` applied and checked by it."""
    base = AgentConfig() if config is None else config
    if not overrides:
        return base
    unknown = sorted(set(overrides) - {f.name for f in fields(AgentConfig)})
    if unknown:
        raise BlockQNNError(f"{unknown[0]}: not an agent setting")
    return replace(base, **preset_first(overrides))


def check_schedule(schedule: Any) -> tuple[tuple[float, int], ...]:
    try:
        stages = tuple((float(eps), n) for eps, n in schedule)
    except (TypeError, ValueError):
        raise BlockQNNError("schedule: must be a list of (epsilon, iterations) pairs") from None
    for eps, n in stages:
        if not 0.0 <= eps <= 1.0:
            raise BlockQNNError(f"schedule: epsilon {eps} must be in [0, 1]")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise BlockQNNError(f"schedule: iterations {n!r} must be an integer >= 0")
    if sum(n for _, n in stages) <= 0:
        raise BlockQNNError("schedule: the iterations must sum to a positive number")
    return stages


def _rng_to_json(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_json(data: Any) -> random.Random:
    rng = random.Random()
    try:
        version, internal, gauss = data
        rng.setstate((version, tuple(internal), gauss))
    except (TypeError, ValueError, OverflowError):
        raise BlockQNNError("agent snapshot: corrupted random generator state") from None
    return rng


class BaseAgent:
    """Shared parts: the space, the RNG, the counters and snapshot checks."""

    kind = ""
    # Settings that snapshots of older releases lack, read as the value those releases
    # behaved as (subclasses add their own): version-1 snapshots predate pluggable spaces, so
    # they are all NSC. A setting missing from both reads None, which no agent's value is.
    SNAPSHOT_DEFAULTS: ClassVar[dict[str, Any]] = {"space": "nsc"}

    def __init__(self, space: Space, budget: int, seed: int) -> None:
        self.space = space
        self.budget = check_int("budget", budget, 1)
        self._rng = random.Random(check_int("seed", seed, 0))
        self._asked = 0
        self._told = 0

    def info(self) -> dict[str, Any]:
        return {}

    @property
    def asked(self) -> int:
        """Blocks returned by `ask` so far."""
        return self._asked

    @property
    def told(self) -> int:
        """Rewards received by `tell` so far (the schedule's clock)."""
        return self._told

    def _settings(self) -> dict[str, Any]:
        return {"space": self.space.name, **self.space.settings(), "budget": self.budget}

    def _base_state(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "kind": self.kind,
            "settings": self._settings(),
            "asked": self._asked,
            "told": self._told,
            "rng": _rng_to_json(self._rng),
        }

    def _read_base(self, state: Any) -> tuple[int, int, random.Random]:
        """Check the snapshot's header against this agent; returns (asked, told, rng)."""
        if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
            raise BlockQNNError("agent snapshot: not a blockqnn agent snapshot")
        if state.get("version") != SNAPSHOT_VERSION:
            raise BlockQNNError(f"agent snapshot: unsupported version {state.get('version')!r}")
        if state.get("kind") != self.kind:
            raise BlockQNNError(
                f"agent snapshot: made by a {state.get('kind')!r} agent, not {self.kind!r}"
            )
        settings = state.get("settings")
        if not isinstance(settings, dict):
            raise BlockQNNError("agent snapshot: settings missing")
        for name, mine in self._settings().items():
            theirs = settings.get(name, self.SNAPSHOT_DEFAULTS.get(name))
            if theirs != mine:
                raise BlockQNNError(
                    f"agent snapshot: {name} = {theirs!r} differs from this agent's {mine!r} "
                    "(another search space or configuration)"
                )
        asked = state.get("asked")
        told = state.get("told")
        for name, value in (("asked", asked), ("told", told)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BlockQNNError(f"agent snapshot: {name} = {value!r} is not a count")
        assert isinstance(asked, int) and isinstance(told, int)
        return asked, told, _rng_from_json(state.get("rng"))
