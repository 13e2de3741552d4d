"""Regularized (aging) evolution over a space's candidates (Real et al., "Regularized
Evolution for Image Classifier Architecture Search", AAAI 2019).

Owns: `RegularizedEvolution`: the population, tournament selection, aging and their
snapshot. Must not import torch, know about the store or decide whether a candidate gets
trained; the mutation itself belongs to the space (`Space.mutate`).

The paper's loop, adapted to asynchronous ask/tell (choices where it is silent):

- Until `population_size` rewards have been told, `ask` returns uniform samples of the space
  (the random initial population). Asks made ahead of tells during that phase are samples
  too, so a run with many workers starts with more than `population_size` random candidates.
- Afterwards `ask` draws `sample_size` members uniformly without replacement, takes the one
  with the highest reward (ties: the youngest, the most recent evidence) and returns
  `space.mutate(parent)`. The population is read at ask time: children asked ahead of their
  tells are not members until told.
- A child whose hash was told before is mutated again (our choice; the paper's budget counts
  evaluations, ours distinct candidates, so a repeat costs it nothing): first other mutations
  of the parent, then a walk of one more mutation a try, `REPEAT_TRIES` redraws in all, the
  last proposed even if known. Without this, a population that has settled among known candidates
  proposes little else (NAS-Bench-201 at budget 5,000: 845,029 repeats for 3,339 cells in 10
  minutes, docs/benchmarks.md).
- `tell` appends the candidate as the youngest member and, past `population_size`, removes
  the oldest (aging: a member's life is bounded whatever its reward, the paper's regulariser).
  Every tell counts, also a candidate told before: the search loop tells a duplicate its
  stored reward again, and the paper likewise re-adds a re-evaluated child, so a good
  candidate rediscovered is alive again. Candidates never asked are accepted (as the store
  replays them) if they fit the space.
- One `random.Random` drives sampling, selection and mutation, so a run is a pure function
  of the seed and the sequence of calls; its state is part of the snapshot.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from blockqnn.errors import BlockQNNError
from blockqnn.settings.config import AgentConfig
from blockqnn.space.base import Space
from blockqnn.strategy.base import (
    PAPER_BUDGET,
    BaseAgent,
    agent_settings,
    check_reward,
    space_or_nsc,
)

REPEAT_TRIES = 20  # redraws of a child told before; the last is proposed even if known
REPEAT_STEP = 10  # mutations of the parent in all; each later redraw mutates the child before


class RegularizedEvolution(BaseAgent):
    """Aging evolution with tournament selection (Real et al. 2019).

    >>> agent = RegularizedEvolution(budget=100, population_size=2, sample_size=1)
    >>> for _ in range(2):
    ...     agent.tell(agent.ask(), 0.5)
    >>> agent.info()
    {'population': 2}
    >>> child = agent.ask()  # a mutation of a member from now on
    """

    kind = "evolution"

    def __init__(
        self,
        space: Space | None = None,
        budget: int = PAPER_BUDGET,
        seed: int = 0,
        config: AgentConfig | None = None,
        **overrides: Any,
    ) -> None:
        """`config` (default `AgentConfig()`) gives the population and tournament sizes;
        `overrides` are `AgentConfig` fields that replace its values (checked by it)."""
        settings = agent_settings(config, overrides)
        space = space_or_nsc(space, settings.max_depth)
        super().__init__(space, budget, seed)
        self.population_size = settings.population_size
        self.sample_size = settings.sample_size
        # (candidate, reward), oldest first. Members are the space's own value of their path,
        # so a snapshot's text reads back to equal candidates (exact resume).
        self._population: deque[tuple[Any, float]] = deque()
        self._hashes: set[str] = set()  # every candidate told: a child among them is redrawn

    @property
    def population(self) -> list[tuple[Any, float]]:
        """The living members as (candidate, reward), oldest first (a copy)."""
        return list(self._population)

    def info(self) -> dict[str, Any]:
        return {"population": len(self._population)}

    # ----- ask and tell -------------------------------------------------------------------

    def ask(self) -> Any:
        space, rng, population = self.space, self._rng, self._population
        if len(population) < self.population_size:
            child = space.to_candidate(space.sample(rng))
        else:
            drawn = rng.sample(range(len(population)), self.sample_size)
            # Highest reward, ties to the youngest (largest position).
            best = max(drawn, key=lambda i: (population[i][1], i))
            parent = population[best][0]
            child = space.mutate(parent, rng)
            for tries in range(REPEAT_TRIES):
                if child.hash not in self._hashes:
                    break
                child = space.mutate(parent if tries + 1 < REPEAT_STEP else child, rng)
        self._asked += 1
        return child

    def tell(self, candidate: Any, reward: float) -> None:
        value = check_reward(reward)
        member = self.space.to_candidate(self.space.path_of(candidate))  # raises if foreign
        self._population.append((member, value))
        self._hashes.add(candidate.hash)  # the member's too, and computed already by the loop
        if len(self._population) > self.population_size:
            self._population.popleft()  # aging: the oldest dies, whatever its reward
        self._told += 1

    # ----- snapshots ----------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "population_size": self.population_size,
            "sample_size": self.sample_size,
        }

    @classmethod
    def from_config(
        cls, space: Space, budget: int, seed: int, config: AgentConfig
    ) -> RegularizedEvolution:
        """Evolution with the `[agent]` section's population and tournament sizes (a plug-in's
        section without them gets the defaults)."""
        if not isinstance(config, AgentConfig):
            names = ("population_size", "sample_size")
            sizes = {k: getattr(config, k) for k in names if hasattr(config, k)}
            return cls(space, budget=budget, seed=seed, **sizes)
        return cls(space, budget=budget, seed=seed, config=config)

    def state_dict(self) -> dict[str, Any]:
        out = self._base_state()
        out["population"] = [[str(c), reward] for c, reward in self._population]
        out["known"] = sorted(self._hashes)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Everything is read into fresh structures first and swapped in at the end, so a bad
        # snapshot leaves the agent as it was.
        try:
            asked, told, rng = self._read_base(state)
            population = self._read_population(state.get("population"), told)
            hashes = self._read_known(state.get("known"), population, told)
        except BlockQNNError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise BlockQNNError(f"agent snapshot: corrupted ({exc})") from None
        self._asked, self._told, self._rng = asked, told, rng
        self._population = population
        self._hashes = hashes

    @staticmethod
    def _read_known(rows: Any, population: deque[tuple[Any, float]], told: int) -> set[str]:
        if rows is None:  # an older release's snapshot: the members are all it knew of
            return {member.hash for member, _ in population}
        if not isinstance(rows, list) or not all(isinstance(h, str) for h in rows):
            raise BlockQNNError("agent snapshot: known must be a list of hashes")
        known = set(rows)
        if len(known) > told or any(member.hash not in known for member, _ in population):
            raise BlockQNNError(
                f"agent snapshot: known holds {len(known)} hashes, not every member's "
                f"among at most {told} told"
            )
        return known

    def _read_population(self, rows: Any, told: int) -> deque[tuple[Any, float]]:
        if not isinstance(rows, list):
            raise BlockQNNError("agent snapshot: population must be a list of [candidate, reward]")
        # Every tell adds a member until the population is full, so its length is fixed by
        # the tell count: anything else is a truncated or edited snapshot.
        expected = min(told, self.population_size)
        if len(rows) != expected:
            raise BlockQNNError(
                f"agent snapshot: population has {len(rows)} members, expected {expected} "
                f"(told = {told}, population_size = {self.population_size})"
            )
        population: deque[tuple[Any, float]] = deque()
        for n, entry in enumerate(rows):
            if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str):
                raise BlockQNNError(f"agent snapshot: population row {n} is not [text, reward]")
            try:
                candidate = self.space.parse(entry[0])
                member = self.space.to_candidate(self.space.path_of(candidate))
                reward = check_reward(entry[1])
            except BlockQNNError as exc:
                raise BlockQNNError(f"agent snapshot: population row {n}: {exc}") from None
            population.append((member, reward))
        return population


def make_strategy(
    space: Space, budget: int, seed: int, config: AgentConfig
) -> RegularizedEvolution:
    """The registry's factory for `evolution`, with the `[agent]` section's settings."""
    return RegularizedEvolution.from_config(space, budget, seed, config)
