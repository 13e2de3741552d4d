"""The random baseline: uniform over the valid actions at every step, learning nothing.

Owns: `RandomAgent`, the strategy every claim about Q-learning is measured against. Must not
import torch or know about the store.
"""

from __future__ import annotations

from typing import Any

from blockqnn.agent.base import PAPER_BUDGET, BaseAgent, check_reward
from blockqnn.nsc import DEFAULT_MAX_DEPTH, Block


class RandomAgent(BaseAgent):
    """The baseline: every step uniform over the valid actions (epsilon = 1), learns nothing.

    This is the distribution of the Q-learning agent's first stage, uniform per step rather
    than over whole blocks (which would almost only draw the deepest blocks).
    """

    kind = "random"

    def __init__(
        self, max_depth: int = DEFAULT_MAX_DEPTH, seed: int = 0, budget: int = PAPER_BUDGET
    ) -> None:
        super().__init__(max_depth, budget, seed)

    @property
    def epsilon(self) -> float:
        return 1.0

    def ask(self) -> Block:
        self._asked += 1
        return self.space.to_block(self.space.sample(self._rng))

    def tell(self, block: Block, reward: float) -> None:
        check_reward(reward)
        self.space.path_of(block)  # a block from another space is a caller bug worth a message
        self._told += 1

    def state_dict(self) -> dict[str, Any]:
        return self._base_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        asked, told, rng = self._read_base(state)
        self._asked, self._told, self._rng = asked, told, rng
