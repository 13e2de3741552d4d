"""The search loop's logic with instant, scripted executors: async ordering, reuse of
duplicates, budget accounting, failures, lost workers, Ctrl-C and exact resume."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from blockqnn.evaluate.result import EvalResult
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.execute import EvaluatorSpec, Finished, WorkerLost
from blockqnn.execute.local import LocalExecutor
from blockqnn.execute.synthetic import synthetic_spec
from blockqnn.reward import FAILED_REWARD
from blockqnn.search import run_search
from blockqnn.settings.config import Config, merge
from blockqnn.settings.registry import REWARDS
from blockqnn.space.base import Space
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.space import NSCSpace
from blockqnn.store.db import Store
from blockqnn.strategy import make_strategy

BLOCKS = {
    name: Block.parse(text)
    for name, text in {
        "A": "1,1,3,0,0; 2,7,0,0,0",
        "B": "1,1,5,0,0; 2,7,0,0,0",
        "C": "1,2,3,0,0; 2,7,0,0,0",
        "D": "1,3,3,0,0; 2,7,0,0,0",
        "E": "1,4,0,0,0; 2,7,0,0,0",
        "X": "1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,7,0,0,0",
        "X2": "1,1,5,0,0; 2,1,3,0,0; 3,5,0,2,1; 4,7,0,0,0",  # X numbered differently
    }.items()
}
NAME = {b.hash: n for n, b in BLOCKS.items() if n != "X2"}
REWARD = {"A": 0.5, "B": 0.6, "C": 0.7, "D": 0.8, "E": 0.9, "X": 0.4}


def _config(budget: int, workers: int = 1, **search: Any) -> Config:
    return merge(Config(), {"search": {"budget": budget, "workers": workers, **search}})


class ScriptedAgent:
    """Proposes a fixed sequence of blocks; records every tell."""

    def __init__(self, names: list[str]) -> None:
        self.space: Space = NSCSpace()
        self.names = names
        self.asked = 0
        self.tells: list[tuple[str, float]] = []

    def info(self) -> dict[str, Any]:
        return {}

    def ask(self) -> Block:
        block = BLOCKS[self.names[self.asked % len(self.names)]]
        self.asked += 1
        return block

    def tell(self, block: Block, reward: float) -> None:
        self.tells.append((NAME[block.hash], reward))

    def state_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "tells": self.tells}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.asked = state["asked"]
        self.tells = [tuple(t) for t in state["tells"]]


class ScriptedExecutor:
    """`slots` evaluations in flight; finishes them in `order` (a function of the pending
    trial ids) with scripted outcomes."""

    def __init__(
        self, slots: int, pick: Any = min, lose: dict[str, int] | None = None, fail: str = ""
    ) -> None:
        self.slots = slots
        self.pick = pick
        self.lose = dict(lose or {})
        self.fail = fail
        self.pending: dict[int, Block] = {}
        self.submitted: list[str] = []

    def submit(self, trial_id: int, block: Block) -> None:
        self.pending[trial_id] = block
        self.submitted.append(NAME[block.hash])

    def wait(self, timeout: float | None = None) -> list[Finished]:
        trial_id = self.pick(self.pending)
        name = NAME[self.pending.pop(trial_id).hash]
        if self.lose.get(name, 0) > 0:
            self.lose[name] -= 1
            return [Finished(trial_id, WorkerLost("node died"), "w")]
        if name in self.fail:
            return [Finished(trial_id, EvalResult.failed("nan"), "w")]
        r = REWARD[name]
        return [Finished(trial_id, EvalResult("ok", accuracy=r, reward=r), f"w{trial_id}")]

    def shutdown(self) -> None:
        pass


def _run(tmp_path: Path, agent: Any, executor: Any, config: Config) -> Store:
    run_search(
        tmp_path / "run",
        config,
        agent_factory=lambda c: agent,
        executor_factory=lambda spec: executor,
    )
    return Store.open(tmp_path / "run", readonly=True)


def test_rewards_are_told_as_they_arrive(tmp_path: Path) -> None:
    agent = ScriptedAgent(["A", "B", "C", "D"])
    executor = ScriptedExecutor(slots=3, pick=max)  # the newest finishes first
    store = _run(tmp_path, agent, executor, _config(budget=4, workers=3))
    # A, B, C in flight; C finishes first, D takes its slot and finishes, then B, then A.
    assert [n for n, _ in agent.tells] == ["C", "D", "B", "A"]
    assert agent.asked == 4
    assert [t.status for t in store.trials()] == ["complete"] * 4


def test_duplicates_reuse_the_reward_and_stay_outside_the_budget(tmp_path: Path) -> None:
    agent = ScriptedAgent(["A", "B", "A", "C", "B", "X", "X2", "D"])
    executor = ScriptedExecutor(slots=2, pick=max)  # A keeps training until the end
    store = _run(tmp_path, agent, executor, _config(budget=5, workers=2))
    trials = store.trials()
    assert [(NAME[t.hash], t.status) for t in trials] == [
        ("A", "complete"),
        ("B", "complete"),
        ("A", "reused"),  # asked while A was training: waited for its result
        ("C", "complete"),
        ("B", "reused"),  # B had finished: reused at once
        ("X", "complete"),
        ("X", "reused"),  # X2: the same graph numbered differently
        ("D", "complete"),
    ]
    assert executor.submitted == ["A", "B", "C", "X", "D"]  # no hash trained twice
    assert trials[2].reuse_of == trials[0].id and trials[2].reward == REWARD["A"]
    assert trials[6].candidate == str(BLOCKS["X2"])
    assert store.counts()["trained"] == 5 and store.counts()["reused"] == 3
    assert sorted(agent.tells) == sorted((NAME[t.hash], t.reward) for t in trials)


def test_failures_are_told_zero_and_count_in_the_budget(tmp_path: Path) -> None:
    agent = ScriptedAgent(["A", "B", "C"])
    store = _run(tmp_path, agent, ScriptedExecutor(1, fail="B"), _config(budget=3))
    assert agent.tells == [("A", 0.5), ("B", FAILED_REWARD), ("C", 0.7)]
    assert store.counts()["failed"] == 1 and store.counts()["trained"] == 3
    assert store.trials()[1].error == "nan"


def test_lost_workers_rerun_the_trial_up_to_max_attempts(tmp_path: Path) -> None:
    agent = ScriptedAgent(["A", "B", "C"])
    executor = ScriptedExecutor(2, lose={"A": 1, "B": 5})
    store = _run(tmp_path, agent, executor, _config(budget=3, workers=2, max_attempts=3))
    a, b, c = store.trials()
    assert (a.status, a.attempts, a.lost) == ("complete", 2, 1)
    assert (b.status, b.attempts, b.lost) == ("failed", 3, 2)  # third loss: given up
    assert "worker lost 3 times" in b.error
    assert c.status == "complete"
    assert executor.submitted.count("B") == 3


def test_local_search_with_the_real_agent_and_synthetic_evaluator(tmp_path: Path) -> None:
    config = _config(budget=12)
    events: list[str] = []
    summary = run_search(
        tmp_path / "run",
        config,
        spec=lambda c: synthetic_spec(c, fail_digits="0"),
        on_event=lambda e: events.append(e.kind),
    )
    store = Store.open(tmp_path / "run", readonly=True)
    trained = [t for t in store.trials() if t.trained]
    assert len(trained) == 12 == summary.trained
    assert len({t.hash for t in trained}) == 12
    assert events[0] == "start" and events.count("complete") + events.count("failed") == 12
    assert summary.best is not None and summary.best.reward == store.top(1)[0].reward


class InterruptingExecutor(LocalExecutor):
    """The local executor, with Ctrl-C arriving during evaluation number `at`."""

    def __init__(self, spec: EvaluatorSpec, at: int) -> None:
        super().__init__(spec)
        self.at = at
        self.calls = 0

    def wait(self, timeout: float | None = None) -> list[Finished]:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().wait(timeout)


@pytest.mark.parametrize(
    ("agent_kind", "snapshot_every"), [("qlearning", 1), ("qlearning", 3), ("random", 20)]
)
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    tmp_path: Path, agent_kind: str, snapshot_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blockqnn.search.loop.SNAPSHOT_EVERY", snapshot_every)
    config = merge(  # no evaluation cache: the stopped run must train what the straight did
        _config(budget=10, agent=agent_kind, cache="off"),
        {"agent": {"iteration_size": 4, "replay_size": 8}},
    )
    spec = lambda c: synthetic_spec(c)  # noqa: E731

    def trace(run: Path) -> list[tuple[str, str, float | None]]:
        with Store.open(run, readonly=True) as s:
            return [(t.candidate, t.status, t.reward) for t in s.trials()]

    run_search(tmp_path / "straight", config, spec=spec)
    for at in (3, 6):  # stop twice, resume twice
        with pytest.raises(KeyboardInterrupt):
            run_search(
                tmp_path / "stopped",
                config if at == 3 else None,
                spec=spec,
                executor_factory=lambda s, at=at: InterruptingExecutor(s, at),  # type: ignore[misc]
            )
        with Store.open(tmp_path / "stopped", readonly=True) as s:
            assert s.counts()["interrupted"] == 1
    run_search(tmp_path / "stopped", None, spec=spec)
    assert trace(tmp_path / "stopped") == trace(tmp_path / "straight")
    with Store.open(tmp_path / "stopped", readonly=True) as s:
        assert max(t.attempts for t in s.trials()) == 2
        assert [x["outcome"] for x in s.sessions()] == ["interrupted", "interrupted", "complete"]


@pytest.mark.parametrize("snapshot_every", [1, 2, 20])
def test_restored_agent_matches_the_live_one(
    tmp_path: Path, snapshot_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot plus replayed calls rebuild exactly the agent that was running."""
    monkeypatch.setattr("blockqnn.search.loop.SNAPSHOT_EVERY", snapshot_every)
    config = merge(_config(budget=8), {"agent": {"iteration_size": 2, "replay_size": 4}})
    live = make_strategy("qlearning", NSCSpace(), 8, 0, config.agent)
    with pytest.raises(KeyboardInterrupt):
        run_search(
            tmp_path / "run",
            config,
            spec=lambda c: synthetic_spec(c),
            agent_factory=lambda c: live,
            executor_factory=lambda s: InterruptingExecutor(s, 7),
        )
    from blockqnn.search import restore_agent

    fresh = make_strategy("qlearning", NSCSpace(), 8, 0, config.agent)
    with Store.open(tmp_path / "run", readonly=True) as store:
        restore_agent(store, fresh, NSCSpace())
    assert fresh.state_dict() == live.state_dict()


def test_synthetic_evaluator_is_deterministic() -> None:
    ev = SyntheticEvaluator(Config())
    assert ev.evaluate(BLOCKS["A"]) == ev.evaluate(BLOCKS["A"])
    assert ev.evaluate(BLOCKS["A"]).accuracy != ev.evaluate(BLOCKS["B"]).accuracy


class _Shifted:
    """The accuracy less 0.5: a reward of exactly 0.0 for block A, below it for X."""

    def __init__(self, config: Config) -> None:
        pass

    def __call__(self, metrics: Any) -> float:
        return float(metrics["accuracy"]) - 0.5


def test_a_best_reward_of_zero_is_not_beaten_by_a_negative_one(tmp_path: Path) -> None:
    REWARDS.register("shifted", _Shifted)
    try:
        config = merge(_config(budget=2), {"reward": {"name": "shifted"}})
        summary = run_search(
            tmp_path / "run",
            config,
            agent_factory=lambda c: ScriptedAgent(["A", "X"]),
            executor_factory=lambda spec: ScriptedExecutor(1),
        )
    finally:
        REWARDS.unregister("shifted")
    assert summary.best is not None and summary.best.reward == 0.0
    assert NAME[summary.best.hash] == "A"


def test_a_store_error_leaves_the_trial_in_flight_resumable_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of the master's own (here the disk filling as a result is recorded) is not
    the in-process trial's doing: it is resumed, never counted as a lost worker, so a good
    block is not recorded failed after `max_attempts` such stops."""
    config = _config(budget=3, max_attempts=3)
    finish = Store.finish

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    for _ in range(3):
        monkeypatch.setattr(Store, "finish", full_disk)
        with pytest.raises(Exception, match="disk is full"):
            new = not (tmp_path / "run").exists()
            run_search(tmp_path / "run", config if new else None, spec=synthetic_spec)
        with Store.open(tmp_path / "run", readonly=True) as store:
            assert [t.status for t in store.trials()] == ["interrupted"]
    monkeypatch.setattr(Store, "finish", finish)
    run_search(tmp_path / "run", None, spec=synthetic_spec)
    with Store.open(tmp_path / "run", readonly=True) as store:
        trials = store.trials()
    assert [t.status for t in trials] == ["complete"] * 3
    assert trials[0].lost == 0 and trials[0].attempts == 4
