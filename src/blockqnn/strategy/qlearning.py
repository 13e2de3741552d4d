"""Tabular epsilon-greedy Q-learning over a space's decision process (BlockQNN, after MetaQNN).

Owns: `QLearningAgent`: the Q-table, the update rule, the epsilon schedule's use, the replay
memory and their snapshot. Must not import torch, know about the store or decide whether a
block gets trained: the search loop reuses stored rewards for blocks already seen and simply
tells them again.

Choices, where the paper is silent:

- The schedule's clock is the number of *distinct* blocks (by isomorphism-invariant hash)
  told so far: MetaQNN's schedule counts models trained at each epsilon, and the search's
  budget counts trained blocks, while a reused reward (a block seen before) is told again
  without being trained. So the stages keep their share of the budget however many
  duplicates the greedy phase proposes. Repeated tells still update the Q-table. Blocks asked
  ahead of their tells use the epsilon of the moment they are asked. After `budget` distinct
  blocks the last stage's epsilon stays.
- Experience replay: after every `iteration_size` distinct blocks, `replay_size` blocks are drawn
  uniformly *with replacement* (as MetaQNN) from the memory of distinct paths told so far
  (a repeated path keeps its latest reward) and go through the same update.
- Reward shaping: the last step of a path (the terminal) gets R, every earlier step R / T,
  T the number of steps including the terminal (paper); without shaping, earlier steps get 0
  (MetaQNN).
- One `random.Random` drives sampling, tie breaking and replay, so a run is a pure function
  of the seed and the sequence of calls; its state is part of the snapshot.

Levers beyond the paper (`AgentConfig`; the `paper` preset turns every one off):
`explore_share` (the share of the budget at epsilon 1, then the paper's decay stages),
`ucb` (a count bonus c sqrt(ln(1 + N(s)) / (1 + n(s, a))) on greedy steps, n counting
distinct blocks told through the pair), `state` ("prefix": the Q-table's state is the whole
path so far, not its last step), `explore_per` ("block": epsilon is the chance that a
block explores, by one random step of the greedy walk, not each step's chance) and `replay`
("ranked": draws favour the best blocks, P(i) ~ 1 / rank, as rank-based prioritized replay).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

from blockqnn.errors import BlockQNNError
from blockqnn.settings.config import LEVERS_OFF, AgentConfig
from blockqnn.space.base import Action, Path, Space, State, parse_path_rows, path_text
from blockqnn.strategy.base import (
    DEFAULT_SCHEDULE,
    PAPER_BUDGET,
    BaseAgent,
    agent_settings,
    check_reward,
    check_schedule,
    explore_stages,
    replay_iteration,
    space_or_nsc,
)

# The Q-table's state: the space's state (its last step), or with `state = "prefix"` the
# steps so far.
Key = tuple[Any, ...]

REPEAT_TRIES = 20  # on_repeat "explore": walks tried before a repeated block is proposed
REPEAT_STEP = 10  # of them one-step changes; then each explores more steps, the last all


class QLearningAgent(BaseAgent):
    """Tabular epsilon-greedy Q-learning over a space's steps (BlockQNN, MetaQNN).

    Q(s, a) <- (1 - alpha) Q(s, a) + alpha [r + gamma max_a' Q(s', a')], applied to a whole
    path from its last step back; unvisited pairs read `q_init`, the terminal's successor 0.

    >>> agent = QLearningAgent(budget=128, seed=1)
    >>> block = agent.ask()
    >>> agent.tell(block, 0.9)
    >>> agent.epsilon
    1.0
    """

    kind = "qlearning"
    # Version-1 snapshots have no modes: that release always ran the paper's.
    # Snapshots without the levers were made before them: those releases ran them off.
    SNAPSHOT_DEFAULTS: ClassVar[dict[str, Any]] = {
        **BaseAgent.SNAPSHOT_DEFAULTS,
        "q_init_mode": "fixed",
        "alpha_mode": "fixed",
        "on_repeat": "allow",
        **LEVERS_OFF,
    }

    def __init__(
        self,
        space: Space | None = None,
        budget: int = PAPER_BUDGET,
        seed: int = 0,
        config: AgentConfig | None = None,
        schedule: Sequence[tuple[float, int]] = DEFAULT_SCHEDULE,
        **overrides: Any,
    ) -> None:
        """`config` (default `AgentConfig()`, the CLI's agent) gives every constant;
        `overrides` are `AgentConfig` fields that replace its values (checked by it)."""
        settings = agent_settings(config, overrides)
        space = space_or_nsc(space, settings.max_depth)
        super().__init__(space, budget, seed)
        self.alpha = float(settings.alpha)
        self.gamma = float(settings.gamma)
        self.q_init = float(settings.q_init)
        self.replay_size = settings.replay_size
        self.iteration_size = settings.iteration_size
        self._iteration = replay_iteration(self.iteration_size, self.budget)
        self.reward_shaping = bool(settings.reward_shaping)
        self.q_init_mode = settings.q_init_mode
        self.alpha_mode = settings.alpha_mode
        self.on_repeat = settings.on_repeat
        self.explore_share = float(settings.explore_share)
        self.ucb = float(settings.ucb)
        self.state = settings.state
        self.replay = settings.replay
        self.explore_per = settings.explore_per
        self._prefix = self.state == "prefix"
        self.schedule = check_schedule(schedule)
        stages = self.stages()
        self._epsilons = [eps for eps, _ in stages]
        self._stage_ends: list[int] = []
        for _, n in stages:
            self._stage_ends.append((self._stage_ends[-1] if self._stage_ends else 0) + n)
        # Q-table: state -> {action -> q}; absent pairs read q_init. Keys are the space's
        # shared tuples, so an entry costs a dict slot and a float.
        self._q: dict[Key, dict[Action, float]] = {}
        self._n: dict[Key, dict[Action, int]] = {}  # updates per pair (alpha_mode "visits")
        # distinct blocks told through each pair, and their sum per state (ucb > 0)
        self._count: dict[Key, dict[Action, int]] = {}
        self._count_total: dict[Key, int] = {}
        # Replay memory: distinct paths in the order first told, their latest reward, and
        # their NSC text (made once here, so that a snapshot after every tell stays cheap).
        self._paths: list[Path] = []
        self._rewards: list[float] = []
        self._texts: list[str] = []
        self._where: dict[Path, int] = {}
        self._hashes: set[str] = set()  # the schedule's clock: distinct blocks told
        self._total = 0.0  # sum of the memory's rewards (q_init_mode "mean")

    # ----- the schedule -------------------------------------------------------------------

    @property
    def epsilon(self) -> float:
        stage = bisect.bisect_right(self._stage_ends, len(self._hashes))
        return self._epsilons[min(stage, len(self._epsilons) - 1)]

    def info(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}

    def stages(self) -> list[tuple[float, int]]:
        """The schedule as (epsilon, blocks) for this budget: the paper's stages scaled to
        it, or with `explore_share` that share at epsilon 1 and the decay over the rest."""
        return explore_stages(self.schedule, self.budget, self.explore_share)

    def _key(self, path: Sequence[Action]) -> Key:
        """The Q-table's state after the steps `path`: its last step (the paper's), or with
        `state = "prefix"` the whole path so far."""
        if self._prefix:
            return tuple(path)
        return path[-1] if path else self.space.start

    # ----- ask and tell -------------------------------------------------------------------

    def ask(self) -> Any:
        epsilon = self.epsilon
        if self.explore_per == "block" and epsilon < 1.0:
            # epsilon is the chance that a block explores, by one random step of the greedy
            # walk (a mutation of it), rather than each step's chance
            explores = self._rng.random() < epsilon
            path = self._walk(0.0, -1)
            if explores:
                path = self._walk(0.0, self._rng.randrange(len(path)))
            epsilon = 0.0
        else:
            path = self._walk(epsilon, -1)
        candidate = self.space.to_candidate(path)
        if self.on_repeat == "explore" and self.epsilon < 1.0:
            # A rebuilt told block teaches nothing: explore one step of the walk, then more
            # (late in a small space every one-step change is known: docs/benchmarks.md)
            for tries in range(REPEAT_TRIES):
                if candidate.hash not in self._hashes:
                    break
                wider = (tries + 1 - REPEAT_STEP) / (REPEAT_TRIES - REPEAT_STEP)
                path = self._walk(max(epsilon, wider), self._rng.randrange(len(path)))
                candidate = self.space.to_candidate(path)
        self._asked += 1
        return candidate

    def _walk(self, epsilon: float, forced: int) -> Path:
        """One path, epsilon-greedy at every step and random at step `forced` (0-based)."""
        rng = self._rng
        space = self.space
        path: list[Action] = []
        state = space.start
        while True:
            actions = space.actions(state)
            explore = len(path) == forced or rng.random() < epsilon
            state = rng.choice(actions) if explore else self._greedy(self._key(path), actions)
            path.append(state)
            if space.is_terminal(state):
                return tuple(path)

    def _default(self) -> float:
        """What an unvisited pair reads: q_init, or the mean reward told so far."""
        if self.q_init_mode == "mean" and self._rewards:
            return self._total / len(self._rewards)
        return self.q_init

    def _greedy(self, state: Key, actions: tuple[Action, ...]) -> Action:
        """An action of highest Q (plus the count bonus with `ucb`), ties broken uniformly
        with the agent's RNG."""
        if self.ucb > 0:
            return self._optimistic(state, actions)
        row = self._q.get(state)
        if not row:
            return self._rng.choice(actions)
        q_init = self._default()
        best = max(row.values())
        if len(row) < len(actions) and q_init > best:
            best = q_init
        ties = [a for a in actions if row.get(a, q_init) == best]
        return ties[0] if len(ties) == 1 else self._rng.choice(ties)

    def _optimistic(self, state: Key, actions: tuple[Action, ...]) -> Action:
        """argmax Q(s, a) + ucb sqrt(ln(1 + N(s)) / (1 + n(s, a))) (UCB1's bonus, counting
        distinct blocks): pairs the memory rarely went through look better than their Q."""
        row = self._q.get(state, {})
        counts = self._count.get(state, {})
        q_init = self._default()
        scale = self.ucb * math.sqrt(math.log1p(self._count_total.get(state, 0)))
        scores = [row.get(a, q_init) + scale / math.sqrt(1 + counts.get(a, 0)) for a in actions]
        best = max(scores)
        ties = [a for a, v in zip(actions, scores, strict=True) if v == best]
        return ties[0] if len(ties) == 1 else self._rng.choice(ties)

    def _remember(self, path: Path) -> None:
        """Count a distinct block's pairs (the ucb bonus's n and N)."""
        for t in range(len(path)):
            key = self._key(path[:t])
            row = self._count.setdefault(key, {})
            row[path[t]] = row.get(path[t], 0) + 1
            self._count_total[key] = self._count_total.get(key, 0) + 1

    def tell(self, candidate: Any, reward: float) -> None:
        value = check_reward(reward)
        path = self.space.path_of(candidate)
        self._update(path, value)
        where = self._where.get(path)
        if where is None:
            self._where[path] = len(self._paths)
            self._paths.append(path)
            self._rewards.append(value)
            self._texts.append(path_text(path))
            self._total += value
            self._remember(path)
        else:
            self._total += value - self._rewards[where]
            self._rewards[where] = value
        self._told += 1
        digest = candidate.hash
        if digest not in self._hashes:
            self._hashes.add(digest)
            if len(self._hashes) % self._iteration == 0:
                self._replay()

    def _max_q(self, key: Key, state: State, q_init: float) -> float:
        """max_a Q(key, a) over the actions of the space's `state`."""
        row = self._q.get(key)
        if not row:
            return q_init
        best = max(row.values())
        if len(row) < len(self.space.actions(state)) and q_init > best:
            return q_init
        return best

    def _update(self, path: Path, reward: float) -> None:
        """One Q-learning pass over `path`, from the terminal back to the first layer."""
        alpha, gamma, q_init = self.alpha, self.gamma, self._default()
        visits = self.alpha_mode == "visits"
        best = self.alpha_mode == "max"
        steps = len(path)
        shaped = reward / steps if self.reward_shaping else 0.0
        target_next = 0.0  # after the terminal nothing follows
        start = self.space.start
        prefix = self._prefix
        for t in range(steps - 1, -1, -1):
            state = path[t - 1] if t > 0 else start
            key = path[:t] if prefix else state
            action = path[t]
            r = reward if t == steps - 1 else shaped
            row = self._q.get(key)
            if row is None:
                row = self._q[key] = {}
            rate = alpha
            if visits:  # the sample mean of the targets until 1/n falls below alpha
                counts = self._n.setdefault(key, {})
                n = counts[action] = counts.get(action, 0) + 1
                rate = max(alpha, 1.0 / n)
            target = r + gamma * target_next
            old = row.get(action)
            if best:  # the first target, then the best so far (the greedy walk: the best block)
                row[action] = target if old is None else max(old, target)
            else:
                row[action] = (1 - rate) * (q_init if old is None else old) + rate * target
            if t > 0:
                target_next = self._max_q(key, state, q_init)

    def _replay(self) -> None:
        """Replay `replay_size` draws (with replacement) from the memory: uniform, or with
        `replay = "ranked"` the i-th best block with weight 1 / i."""
        n = len(self._paths)
        if n == 0:
            return
        if self.replay == "ranked":
            order = sorted(range(n), key=lambda i: -self._rewards[i])
            weights = list(itertools.accumulate(1.0 / (r + 1) for r in range(n)))
            drawn = self._rng.choices(order, cum_weights=weights, k=self.replay_size)
        else:
            randrange = self._rng.randrange
            drawn = [randrange(n) for _ in range(self.replay_size)]
        for i in drawn:
            self._update(self._paths[i], self._rewards[i])

    # ----- inspection ---------------------------------------------------------------------

    def q_value(self, state: State, action: Action) -> float:
        """Q(state, action); unvisited pairs read `q_init` (or the mean reward, see modes)."""
        return self._q.get(state, {}).get(action, self._default())

    @property
    def q_entries(self) -> int:
        """(state, action) pairs with a learned value."""
        return sum(len(row) for row in self._q.values())

    @property
    def memory_size(self) -> int:
        """Distinct paths in the replay memory."""
        return len(self._paths)

    def greedy_candidate(self) -> Any:
        """The candidate the agent would build at epsilon 0 (ties to the first action)."""
        path: list[Action] = []
        state = self.space.start
        while not path or not self.space.is_terminal(state):
            key = self._key(path)
            values = [(self.q_value(key, a), a) for a in self.space.actions(state)]
            best = max(q for q, _ in values)
            state = next(a for q, a in values if q == best)
            path.append(state)
        return self.space.to_candidate(tuple(path))

    # ----- snapshots ----------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "alpha": self.alpha,
            "gamma": self.gamma,
            "q_init": self.q_init,
            "replay_size": self.replay_size,
            "iteration_size": self.iteration_size,
            "reward_shaping": self.reward_shaping,
            "schedule": [[eps, n] for eps, n in self.schedule],
            "q_init_mode": self.q_init_mode,
            "alpha_mode": self.alpha_mode,
            "on_repeat": self.on_repeat,
            "explore_share": self.explore_share,
            "ucb": self.ucb,
            "state": self.state,
            "replay": self.replay,
            "explore_per": self.explore_per,
        }

    @classmethod
    def from_config(
        cls, space: Space, budget: int, seed: int, config: AgentConfig
    ) -> QLearningAgent:
        """An agent with the `[agent]` section's settings (the paper's schedule)."""
        return cls(space, budget=budget, seed=seed, config=config)

    def state_dict(self) -> dict[str, Any]:
        out = self._base_state()
        counts = self._n
        out["q"] = [
            [_plain(state), list(action), q, counts.get(state, {}).get(action, 0)]
            for state, row in self._q.items()
            for action, q in row.items()
        ]
        out["memory"] = [
            [text, reward] for text, reward in zip(self._texts, self._rewards, strict=True)
        ]
        out["reward_total"] = self._total  # as added up: sum(memory) may differ in the last bit
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Everything is read into fresh structures first and swapped in at the end, so a bad
        # snapshot leaves the agent as it was.
        try:
            asked, told, rng = self._read_base(state)
            q, n = self._read_q(state.get("q"))
            paths, rewards, texts, where = self._read_memory(state.get("memory"))
            # The memory holds every block told, so it rebuilds the schedule's clock.
            hashes = {self.space.to_candidate(p).hash for p in paths}
            total = check_reward(state.get("reward_total", sum(rewards)))  # older: the sum
        except BlockQNNError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise BlockQNNError(f"agent snapshot: corrupted ({exc})") from None
        self._asked, self._told, self._rng = asked, told, rng
        self._q, self._n = q, n
        self._paths, self._rewards, self._texts, self._where = paths, rewards, texts, where
        self._total = total
        self._hashes = hashes
        self._count, self._count_total = {}, {}
        for path in paths:  # the memory holds every distinct block: the ucb counts
            self._remember(path)

    def _read_q(
        self, rows: Any
    ) -> tuple[dict[Key, dict[Action, float]], dict[Key, dict[Action, int]]]:
        if not isinstance(rows, list):
            raise BlockQNNError("agent snapshot: q must be a list of [state, action, q, n] rows")
        q: dict[Key, dict[Action, float]] = {}
        visits: dict[Key, dict[Action, int]] = {}
        space = self.space
        for n, entry in enumerate(rows):
            # Version-1 snapshots hold [state, action, q]: no visit counts (alpha was fixed).
            if not isinstance(entry, list) or len(entry) not in (3, 4):
                raise BlockQNNError(f"agent snapshot: q row {n} is not [state, action, q, n]")
            raw_state, raw_action, value = entry[:3]
            count = entry[3] if len(entry) == 4 else 0
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise BlockQNNError(f"agent snapshot: q row {n} count {count!r} is not a count")
            key = self._read_state(raw_state)
            state = key  # the space's state the pair acts from
            if self._prefix and key is not None:
                state = key[-1] if key else space.start
            action = space.intern(raw_action) if isinstance(raw_action, list) else None
            if key is None or action is None or not space.is_action(state, action):
                raise BlockQNNError(
                    f"agent snapshot: q row {n} ({raw_state}, {raw_action}) is not a valid "
                    f"state and action of the search space {self.space!r}"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BlockQNNError(f"agent snapshot: q row {n} value {value!r} is not a number")
            if not math.isfinite(value):
                raise BlockQNNError(f"agent snapshot: q row {n} value {value} is not finite")
            q.setdefault(key, {})[action] = float(value)
            if count:
                visits.setdefault(key, {})[action] = count
        return q, visits

    def _read_state(self, raw: Any) -> Any:
        """A snapshot's state: the space's state, or with `state = "prefix"` a valid path so
        far (a list of steps); None if it is not one."""
        if not isinstance(raw, list):
            return None
        if not self._prefix:
            return self.space.intern(raw)
        steps, state = [], self.space.start
        for step in raw:
            action = self.space.intern(step) if isinstance(step, list) else None
            if action is None or not self.space.is_action(state, action):
                return None
            steps.append(action)
            state = action
        return tuple(steps)

    def _read_memory(self, rows: Any) -> tuple[list[Path], list[float], list[str], dict[Path, int]]:
        if not isinstance(rows, list):
            raise BlockQNNError("agent snapshot: memory must be a list of [block, reward] rows")
        paths: list[Path] = []
        rewards: list[float] = []
        where: dict[Path, int] = {}
        for n, entry in enumerate(rows):
            if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str):
                raise BlockQNNError(f"agent snapshot: memory row {n} is not [block text, reward]")
            try:
                path = self.space.check_path(parse_path_rows(entry[0]))
                reward = check_reward(entry[1])
            except BlockQNNError as exc:
                raise BlockQNNError(f"agent snapshot: memory row {n}: {exc}") from None
            if path in where:
                raise BlockQNNError(f"agent snapshot: memory row {n} repeats a block")
            where[path] = len(paths)
            paths.append(path)
            rewards.append(reward)
        return paths, rewards, [path_text(p) for p in paths], where


def _plain(state: Key) -> list[Any]:
    """A state as JSON lists: a step's numbers, or a prefix's steps."""
    return [list(v) if isinstance(v, tuple) else v for v in state]


def make_strategy(space: Space, budget: int, seed: int, config: AgentConfig) -> QLearningAgent:
    """The registry's factory for `qlearning`, with the `[agent]` section's settings."""
    return QLearningAgent.from_config(space, budget, seed, config)
