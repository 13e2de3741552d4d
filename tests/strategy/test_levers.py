"""Q-learning's levers beyond the paper (`[agent]` explore_share, alpha_mode "max", ucb,
state "prefix", replay "ranked", explore_per "block"): what each one changes."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from blockqnn import Block
from blockqnn.settings.config import AgentConfig
from blockqnn.space.nb201 import NB201Space
from blockqnn.strategy import QLearningAgent
from blockqnn.strategy.base import DEFAULT_SCHEDULE, explore_stages, scale_schedule

PAPER = AgentConfig(preset="paper")


def _reward(cell: Any) -> float:
    return 0.5 + 0.08 * cell.ops.count("nor_conv_3x3") - 0.05 * cell.ops.count("none")


def test_explore_share_puts_the_decay_after_that_share_of_the_budget() -> None:
    stages = explore_stages(DEFAULT_SCHEDULE, 100, 0.2)
    assert stages[0] == (1.0, 20) and sum(n for _, n in stages) == 100
    assert [eps for eps, _ in stages[1:]] == [eps for eps, _ in DEFAULT_SCHEDULE[1:]]
    assert explore_stages(DEFAULT_SCHEDULE, 100, 0.0) == scale_schedule(DEFAULT_SCHEDULE, 100)
    space = NB201Space()
    agent = QLearningAgent(space, budget=100, config=PAPER, explore_share=0.2)
    rng = random.Random(0)
    told: set[str] = set()
    while len(told) < 20:  # the clock counts distinct blocks
        cell = space.to_candidate(space.sample(rng))
        agent.tell(cell, 0.5)
        told.add(cell.hash)
    assert agent.epsilon == 0.9  # the paper would still be at 1.0 for 53 blocks


def test_alpha_mode_max_keeps_the_best_target_of_a_pair() -> None:
    space = NB201Space()
    cell = space.to_candidate(space.sample(random.Random(1)))
    last = space.path_of(cell)

    def final_q(mode: str) -> float:
        agent = QLearningAgent(space, config=PAPER, alpha_mode=mode, reward_shaping=False)
        agent.tell(cell, 0.9)
        agent.tell(cell, 0.1)
        return agent.q_value(last[-2], last[-1])

    assert final_q("max") == pytest.approx(0.9)
    assert final_q("visits") == pytest.approx(0.5)


def test_ranked_replay_draws_the_best_blocks_most(monkeypatch: pytest.MonkeyPatch) -> None:
    space = NB201Space()
    rng = random.Random(0)
    counts: dict[str, int] = {}
    for mode in ("ranked", "uniform"):
        agent = QLearningAgent(space, config=PAPER, replay=mode, replay_size=3000)
        cells = {space.to_candidate(space.sample(rng)) for _ in range(12)}
        for k, cell in enumerate(list(cells)[:10]):
            agent.tell(cell, k / 10)
        drawn: list[float] = []
        record = drawn.append
        monkeypatch.setattr(agent, "_update", lambda path, reward, record=record: record(reward))
        agent._replay()
        counts[mode] = drawn.count(0.9) - drawn.count(0.0)
    assert counts["ranked"] > 600 and abs(counts["uniform"]) < 150


@pytest.mark.parametrize("settings", [{"state": "prefix", "ucb": 0.1}, {"explore_per": "block"}])
def test_a_snapshot_with_levers_resumes_exactly(settings: dict[str, Any]) -> None:
    def agent() -> QLearningAgent:
        return QLearningAgent(NB201Space(), budget=60, seed=3, iteration_size=8, **settings)

    original = agent()
    for _ in range(40):
        cell = original.ask()
        original.tell(cell, _reward(cell))
    restored = agent()
    restored.load_state_dict(original.state_dict())
    for _ in range(20):
        a, b = original.ask(), restored.ask()
        assert a == b
        original.tell(a, _reward(a))
        restored.tell(b, _reward(b))
    assert restored.state_dict() == original.state_dict()


def test_explore_per_block_leaves_most_blocks_greedy() -> None:
    def greedy_share(per: str) -> float:
        agent = QLearningAgent(
            NB201Space(), schedule=[(0.5, 1)], config=PAPER, explore_per=per, seed=2
        )
        agent.tell(agent.greedy_candidate(), 1.0)  # one known block: the greedy walk's
        best = agent.greedy_candidate()
        return sum(agent.ask() == best for _ in range(300)) / 300

    assert 0.35 < greedy_share("block") < 0.65  # epsilon is a block's chance to explore
    assert greedy_share("step") < 0.1  # each of the 6 steps': 0.5^6 stay greedy


def test_a_snapshot_restores_the_mean_reward_to_the_last_bit() -> None:
    """q_init_mode "mean": the running sum (0.1 + 0.2, then 0.1 replaced by 0.7) is 0.9 where
    sum([0.7, 0.2]) is 0.8999999999999999; the restored agent must read the live one's mean."""

    def agent() -> QLearningAgent:
        return QLearningAgent(budget=100, seed=0, q_init_mode="mean")

    x, y, z = (Block.parse(t) for t in ("1,1,3,0,0", "1,1,5,0,0", "1,4,0,0,0; 2,1,3,1,0"))
    live = agent()
    live.tell(x, 0.1)
    live.tell(y, 0.2)
    live.tell(x, 0.7)  # told again with a new reward
    restored = agent()
    restored.load_state_dict(json.loads(json.dumps(live.state_dict())))
    assert restored._default() == live._default()
    live.tell(z, 0.3)
    restored.tell(z, 0.3)
    assert restored.state_dict() == live.state_dict()


@pytest.mark.parametrize("seed", range(3))
def test_on_repeat_explore_widens_until_it_finds_a_new_block(seed: int) -> None:
    """Late in a search of a small space every one-step change of the greedy block is known;
    the retries then explore more steps, the last a random walk. One-step retries alone
    asked 230-270 known blocks on the way to 1,000 distinct NB201 cells (this loop, seeds
    0-2); the widening ones 30-40."""
    agent = QLearningAgent(NB201Space(), budget=1000, seed=seed)  # the default preset
    assert agent.on_repeat == "explore"
    known: dict[str, float] = {}
    repeats = 0
    while len(known) < 1000:
        cell = agent.ask()
        repeats += cell.hash in known
        reward = known.setdefault(cell.hash, _reward(cell))
        agent.tell(cell, reward)  # a repeat is told its stored reward, as the search does
    assert repeats < 100
