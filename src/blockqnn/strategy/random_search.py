"""The random baseline: uniform over the valid actions at every step, learning nothing.

Owns: `RandomAgent`, the strategy every claim about Q-learning is measured against. Must not
import torch or know about the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blockqnn.space.base import Space
from blockqnn.strategy.base import PAPER_BUDGET, BaseAgent, check_reward, space_or_nsc

if TYPE_CHECKING:
    from blockqnn.settings.config import AgentConfig


class RandomAgent(BaseAgent):
    """The baseline: every step uniform over the valid actions (epsilon = 1), learns nothing.

    This is the distribution of the Q-learning agent's first stage, uniform per step rather
    than over whole blocks (which would almost only draw the deepest blocks).
    """

    kind = "random"

    def __init__(
        self, space: Space | None = None, budget: int = PAPER_BUDGET, seed: int = 0
    ) -> None:
        space = space_or_nsc(space)
        super().__init__(space, budget, seed)

    def ask(self) -> Any:
        self._asked += 1
        return self.space.to_candidate(self.space.sample(self._rng))

    def tell(self, candidate: Any, reward: float) -> None:
        check_reward(reward)
        self.space.path_of(candidate)  # one from another space is a caller bug worth a message
        self._told += 1

    def state_dict(self) -> dict[str, Any]:
        return self._base_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        asked, told, rng = self._read_base(state)
        self._asked, self._told, self._rng = asked, told, rng


def make_strategy(space: Space, budget: int, seed: int, config: AgentConfig) -> RandomAgent:
    """The registry's factory for `random`."""
    return RandomAgent(space, seed=seed, budget=budget)
