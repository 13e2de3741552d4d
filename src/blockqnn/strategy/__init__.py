"""Search strategies behind one ask/tell interface: Q-learning, regularized evolution and the
random baseline.

Owns: choosing the next candidate (`ask`), learning from rewards (`tell`), the strategies'
own state (Q-table and epsilon schedule, population, replay memory) and their plain-JSON
snapshots (`base`, `qlearning`, `evolution`, `baseline`). Must not import torch, know about
the store or decide whether a candidate gets trained: the search loop reuses stored rewards
for candidates already seen and simply tells them again.

Strategies are found by name in `blockqnn.settings.registry.STRATEGIES` (plug-ins included):

>>> from blockqnn.settings.config import AgentConfig
>>> from blockqnn.space.nsc.space import NSCSpace
>>> agent = make_strategy("qlearning", NSCSpace(), budget=1000, seed=0, config=AgentConfig())
>>> block = agent.ask()
>>> agent.tell(block, 0.8)
>>> agent.info()
{'epsilon': 1.0}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blockqnn.settings.registry import STRATEGIES
from blockqnn.strategy.base import (
    DEFAULT_SCHEDULE,
    PAPER_BUDGET,
    SNAPSHOT_FORMAT,
    SNAPSHOT_VERSION,
    BaseAgent,
    Strategy,
    scale_schedule,
)
from blockqnn.strategy.qlearning import QLearningAgent
from blockqnn.strategy.random_search import RandomAgent

if TYPE_CHECKING:
    from blockqnn.settings.config import AgentConfig
    from blockqnn.space.base import Space

__all__ = [
    "DEFAULT_SCHEDULE",
    "PAPER_BUDGET",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_VERSION",
    "BaseAgent",
    "QLearningAgent",
    "RandomAgent",
    "Strategy",
    "make_strategy",
    "scale_schedule",
]


def make_strategy(name: str, space: Space, budget: int, seed: int, config: AgentConfig) -> Strategy:
    """The strategy registered as `name`, built for `space` with the `[agent]` settings."""
    strategy: Strategy = STRATEGIES.get(name)(space, budget, seed, config)
    return strategy
