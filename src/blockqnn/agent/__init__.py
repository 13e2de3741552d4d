"""Search strategies behind one ask/tell interface: tabular Q-learning and the random baseline.

Owns: choosing the next block (`ask`), learning from rewards (`tell`), the epsilon schedule,
the replay memory and the agents' plain-JSON snapshots (`base`, `qlearning`, `baseline`).
Must not import torch, know about the store or decide whether a block gets trained: the
search loop reuses stored rewards for blocks already seen and simply tells them again.

>>> from blockqnn.config import AgentConfig
>>> agent = make_agent("qlearning", AgentConfig(), budget=1000, seed=0)
>>> block = agent.ask()
>>> agent.tell(block, 0.8)
>>> round(agent.epsilon, 1)
1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from blockqnn.agent.base import (
    DEFAULT_SCHEDULE,
    PAPER_BUDGET,
    SNAPSHOT_FORMAT,
    SNAPSHOT_VERSION,
    Agent,
    scale_schedule,
)
from blockqnn.agent.baseline import RandomAgent
from blockqnn.agent.qlearning import QLearningAgent
from blockqnn.errors import BlockQNNError

if TYPE_CHECKING:
    from blockqnn.config import AgentConfig

__all__ = [
    "DEFAULT_SCHEDULE",
    "PAPER_BUDGET",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_VERSION",
    "Agent",
    "QLearningAgent",
    "RandomAgent",
    "make_agent",
    "scale_schedule",
]


def make_agent(kind: str, config: AgentConfig, budget: int, seed: int) -> Agent:
    """The strategy named `kind` ("qlearning" or "random") with the config's settings."""
    if kind == "qlearning":
        return QLearningAgent(
            budget=budget,
            max_depth=config.max_depth,
            alpha=config.alpha,
            gamma=config.gamma,
            q_init=config.q_init,
            replay_size=config.replay_size,
            iteration_size=config.iteration_size,
            reward_shaping=config.reward_shaping,
            seed=seed,
        )
    if kind == "random":
        return RandomAgent(max_depth=config.max_depth, seed=seed, budget=budget)
    raise BlockQNNError(f"agent = {kind!r}: choose one of qlearning, random")
