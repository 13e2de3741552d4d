"""Regularized evolution: ask/tell, aging, tournament selection, exact resume, strict
snapshots and that it learns on a synthetic reward."""

from __future__ import annotations

import copy
import json
import random
import statistics
from collections.abc import Callable
from typing import Any

import pytest
from tests.strategies import synthetic_reward

from blockqnn import Block, BlockQNNError
from blockqnn.space.nb201 import Cell, NB201Space
from blockqnn.space.nsc.space import NSCSpace
from blockqnn.strategy import evolution
from blockqnn.strategy.evolution import RegularizedEvolution, make_strategy
from blockqnn.strategy.random_search import RandomAgent

ONE_CONV = Block.parse("1,1,3,0,0; 2,7,0,0,0")


def exact_reward(block: Block) -> float:
    """A deterministic reward (no noise), so two runs see the same values."""
    return synthetic_reward(block, random.Random(block.hash))


class RecordingSpace(NSCSpace):
    """An NSC space that records the parents it mutates."""

    def __init__(self, max_depth: int = 10) -> None:
        super().__init__(max_depth)
        self.parents: list[Block] = []

    def mutate(self, candidate: Block, rng: random.Random) -> Block:
        self.parents.append(candidate)
        return super().mutate(candidate, rng)


# ----- construction and interface -----------------------------------------------------------


def test_defaults_and_factory() -> None:
    agent = RegularizedEvolution()
    assert agent.kind == "evolution" and agent.space == NSCSpace()
    assert (agent.population_size, agent.sample_size) == (20, 5)

    class Config:
        population_size = 7
        sample_size = 3

    built = make_strategy(NSCSpace(5), 50, 3, Config())  # type: ignore[arg-type]
    assert (built.population_size, built.sample_size, built.budget) == (7, 3, 50)
    assert built.space == NSCSpace(5)
    bare = make_strategy(NSCSpace(), 50, 0, object())  # type: ignore[arg-type]
    assert (bare.population_size, bare.sample_size) == (20, 5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"population_size": 0},
        {"population_size": 2.5},
        {"sample_size": 0},
        {"sample_size": True},
        {"population_size": 4, "sample_size": 5},
        {"budget": 0},
        {"seed": -1},
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(BlockQNNError):
        RegularizedEvolution(**kwargs)


def test_interface_ask_ahead_unasked_and_repeated_tells() -> None:
    agent = RegularizedEvolution(budget=100, population_size=4, sample_size=2)
    asked = [agent.ask() for _ in range(6)]  # asynchronous workers ask ahead
    assert all(isinstance(b, Block) and b.max_depth == 10 for b in asked)
    assert agent.info() == {"population": 0}
    for block in reversed(asked):
        agent.tell(block, 0.4)
    agent.tell(ONE_CONV, 0.7)  # never asked: a reward reused from the store
    agent.tell(ONE_CONV, 0.7)  # the same block again: a new member
    agent.tell(Block.parse("1,1,3,0,0; 2,1,1,0,0; 3,5,0,2,1"), 0.1)  # unsorted add
    assert agent.told == 9 and agent.asked == 6
    assert agent.info() == {"population": 4}
    assert [r for _, r in agent.population] == [0.4, 0.7, 0.7, 0.1]
    json.dumps(agent.info())
    json.dumps(agent.state_dict())


def test_bad_tells_are_refused_and_change_nothing() -> None:
    agent = RegularizedEvolution(NSCSpace(max_depth=4), budget=10, population_size=3, sample_size=2)
    agent.tell(Block.parse("1,1,3,0,0", 4), 0.5)
    before = agent.state_dict()
    with pytest.raises(BlockQNNError):
        agent.tell(Block.parse("1,1,3,0,0; 2,1,3,1,0; 3,1,3,2,0; 4,1,3,3,0"), 0.5)  # too deep
    for reward in (float("nan"), float("inf"), "0.5", True):
        with pytest.raises(BlockQNNError):
            agent.tell(ONE_CONV, reward)  # type: ignore[arg-type]
    assert agent.state_dict() == before


# ----- the algorithm ------------------------------------------------------------------------


def test_population_is_bounded_and_aging_removes_the_oldest() -> None:
    agent = RegularizedEvolution(budget=100, population_size=5, sample_size=2, seed=1)
    told: list[tuple[str, float]] = []
    for step in range(30):
        block = agent.ask()
        reward = 1.0 if step == 0 else 0.01 * step  # the first is the best, yet it dies
        agent.tell(block, reward)
        told.append((str(block), reward))
        assert agent.info() == {"population": min(step + 1, 5)}
        assert [(str(c), r) for c, r in agent.population] == told[-5:]


def test_initial_population_is_random_then_children_are_mutations_of_members() -> None:
    space = RecordingSpace()
    agent = RegularizedEvolution(space, budget=100, population_size=6, sample_size=2, seed=4)
    for _ in range(6):
        agent.tell(agent.ask(), 0.5)
    assert space.parents == []  # the initial phase only samples
    for _ in range(60):
        members = [str(c) for c, _ in agent.population]
        start = len(space.parents)
        child = agent.ask()
        parent = space.parents[start]  # later mutations redraw a known child
        assert str(parent) in members and child.hash != parent.hash
        agent.tell(child, exact_reward(child))


def test_selection_takes_the_best_of_the_sample_ties_to_the_youngest() -> None:
    # sample_size == population_size: the tournament sees everybody.
    space = RecordingSpace()
    agent = RegularizedEvolution(space, budget=100, population_size=4, sample_size=4)
    blocks = [
        Block.parse(text)
        for text in ("1,1,3,0,0", "1,1,5,0,0", "1,2,3,0,0", "1,4,0,0,0", "1,3,1,0,0")
    ]
    for block, reward in zip(blocks, (0.9, 0.2, 0.8, 0.3, 0.8), strict=True):
        agent.tell(block, reward)  # the 0.9 has aged out; 0.8 twice
    for _ in range(10):
        agent.ask()
    assert {str(p) for p in space.parents} == {str(blocks[4])}


def test_a_run_is_a_pure_function_of_the_seed() -> None:
    def run(seed: int) -> list[str]:
        agent = RegularizedEvolution(budget=100, population_size=8, sample_size=3, seed=seed)
        out = []
        for _ in range(40):
            block = agent.ask()
            agent.tell(block, exact_reward(block))
            out.append(str(block))
        return out

    assert run(0) == run(0) and run(0) != run(1)


# ----- snapshots ----------------------------------------------------------------------------


def _drive(agent: RegularizedEvolution, steps: range, log: list[str]) -> None:
    """Asks three ahead, tells them back in another order (asynchronous workers)."""
    for _ in steps:
        batch = [agent.ask() for _ in range(3)]
        log.extend(str(b) for b in batch)
        for block in (batch[1], batch[2], batch[0]):
            agent.tell(block, exact_reward(block))


def test_snapshot_resumes_exactly() -> None:
    def fresh() -> RegularizedEvolution:
        return RegularizedEvolution(budget=1000, population_size=10, sample_size=3, seed=5)

    a, log_a = fresh(), list[str]()
    _drive(a, range(70), log_a)
    snapshot = json.loads(json.dumps(a.state_dict()))
    b, log_b = fresh(), list[str]()
    b.load_state_dict(snapshot)
    assert b.state_dict() == a.state_dict()
    assert (b.asked, b.told, b.info()) == (a.asked, a.told, a.info())
    _drive(a, range(70, 150), log_a)
    _drive(b, range(70, 150), log_b)
    assert log_b == log_a[3 * 70 :]
    assert b.state_dict() == a.state_dict()


def test_snapshot_of_the_initial_phase_resumes_exactly() -> None:
    a = RegularizedEvolution(budget=100, population_size=10, sample_size=3, seed=2)
    _drive(a, range(2), [])
    b = RegularizedEvolution(budget=100, population_size=10, sample_size=3, seed=2)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    log_a: list[str] = []
    log_b: list[str] = []
    _drive(a, range(10), log_a)
    _drive(b, range(10), log_b)
    assert log_a == log_b


def _corruptions() -> list[tuple[str, Callable[[dict[str, Any]], None], str]]:
    def set_(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda s: s.__setitem__(key, value)

    def setting(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda s: s["settings"].__setitem__(key, value)

    def row(n: int, i: int, value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda s: s["population"][n].__setitem__(i, value)

    return [
        ("wrong kind", set_("kind", "qlearning"), "made by a 'qlearning' agent"),
        ("population_size", setting("population_size", 6), "population_size = 6"),
        ("sample_size", setting("sample_size", 2), "sample_size = 2"),
        ("max_depth", setting("max_depth", 12), "max_depth = 12"),
        ("bad reward", row(1, 1, "high"), "population row 1: reward"),
        ("nan reward", row(2, 1, float("nan")), "population row 2: reward"),
        ("unparsable", row(0, 0, "1,1,3,0"), "population row 0"),
        ("invalid layer", row(3, 0, "1,1,4,0,0; 2,7,0,0,0"), "population row 3"),
        ("not text", row(0, 0, [[1, 1, 3, 0, 0]]), "population row 0 is not"),
        ("row shape", lambda s: s["population"].__setitem__(0, ["1,1,3,0,0"]), "row 0"),
        ("too long", lambda s: s["population"].append(["1,1,3,0,0", 0.5]), "expected 5"),
        ("too short", lambda s: s["population"].pop(), "expected 5"),
        ("not a list", set_("population", {"a": 1}), "population must be a list"),
        ("missing", lambda s: s.pop("population"), "population must be a list"),
        ("told", set_("told", -1), "told = -1"),
        ("rng", set_("rng", [3, [1, 2], None]), "random generator"),
        ("format", set_("format", "other"), "not a blockqnn agent snapshot"),
        ("known not a list", set_("known", "abc"), "known must be a list of hashes"),
        ("known not text", set_("known", [1, 2]), "known must be a list of hashes"),
        ("known lacks a member", set_("known", []), "not every member's"),
    ]


@pytest.mark.parametrize(("what", "corrupt", "message"), _corruptions(), ids=lambda v: str(v))
def test_corrupt_snapshot_is_refused_and_changes_nothing(
    what: str, corrupt: Callable[[dict[str, Any]], None], message: str
) -> None:
    source = RegularizedEvolution(budget=100, population_size=5, sample_size=3, seed=1)
    _drive(source, range(4), [])
    snapshot = copy.deepcopy(source.state_dict())
    corrupt(snapshot)

    agent = RegularizedEvolution(budget=100, population_size=5, sample_size=3, seed=9)
    _drive(agent, range(1), [])
    before = agent.state_dict()
    with pytest.raises(BlockQNNError, match=message.replace("(", r"\(")):
        agent.load_state_dict(snapshot)
    assert agent.state_dict() == before
    twin = RegularizedEvolution(budget=100, population_size=5, sample_size=3, seed=9)
    _drive(twin, range(1), [])
    assert [str(agent.ask()) for _ in range(30)] == [str(twin.ask()) for _ in range(30)]


def test_an_older_snapshot_without_known_hashes_knows_its_members() -> None:
    source = RegularizedEvolution(budget=100, population_size=5, sample_size=3, seed=1)
    _drive(source, range(4), [])
    snapshot = copy.deepcopy(source.state_dict())
    del snapshot["known"]
    agent = RegularizedEvolution(budget=100, population_size=5, sample_size=3, seed=1)
    agent.load_state_dict(snapshot)
    assert agent.state_dict()["known"] == sorted(c.hash for c, _ in source.population)


# ----- repeats ------------------------------------------------------------------------------


def _repeats(agent: RegularizedEvolution, asks: int) -> int:
    """Asks and tells as the search loop does (a known cell told its reward again); returns
    how many asks proposed a cell told before."""
    told: set[str] = set()
    repeats = 0
    for _ in range(asks):
        cell = agent.ask()
        repeats += cell.hash in told
        told.add(cell.hash)
        agent.tell(cell, random.Random(cell.hash).random())
    return repeats


def test_a_child_told_before_is_mutated_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # NB201 has 6,466 distinct cells: after 2,000 a settled population's one-mutation
    # children are mostly known. Without the redraws half the asks are repeats (1,061 here).
    def run() -> int:
        return _repeats(RegularizedEvolution(NB201Space(), budget=2000, seed=3), 2000)

    redrawn = run()
    monkeypatch.setattr(evolution, "REPEAT_TRIES", 0)
    plain = run()
    assert redrawn < 20 and plain > 500, (redrawn, plain)


class RecordingNB201(NB201Space):
    """An NB201 space that records the cells it mutates."""

    def __init__(self) -> None:
        super().__init__()
        self.parents: list[Cell] = []

    def mutate(self, candidate: Cell, rng: random.Random) -> Cell:
        self.parents.append(candidate)
        return super().mutate(candidate, rng)


def test_redraws_mutate_the_parent_then_walk_away() -> None:
    space = RecordingNB201()
    agent = RegularizedEvolution(space, budget=100, population_size=1, sample_size=1, seed=0)
    parent = Cell.parse(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|"
        "nor_conv_3x3~1|nor_conv_3x3~2|"
    )
    rng = random.Random(0)
    neighbours = {c.hash: c for c in (NB201Space.mutate(space, parent, rng) for _ in range(500))}
    for cell in [*neighbours.values(), parent]:  # the parent last: the only member
        agent.tell(cell, 0.5)
    child = agent.ask()
    tries = space.parents
    assert tries[: evolution.REPEAT_STEP] == [parent] * evolution.REPEAT_STEP
    assert tries[evolution.REPEAT_STEP].hash in neighbours  # a known child, mutated further
    assert child.hash not in neighbours and child.hash != parent.hash


# ----- learning -----------------------------------------------------------------------------


def _last_quarter_mean(agent: Any, n: int, seed: int) -> float:
    rng = random.Random(1000 + seed)
    rewards = []
    for _ in range(n):
        block = agent.ask()
        reward = synthetic_reward(block, rng)
        agent.tell(block, reward)
        rewards.append(reward)
    return statistics.fmean(rewards[-n // 4 :])


def test_evolution_beats_random_on_a_synthetic_reward() -> None:
    space = NSCSpace()
    for seed in range(3):
        evolved = _last_quarter_mean(RegularizedEvolution(space, budget=600, seed=seed), 600, seed)
        baseline = _last_quarter_mean(RandomAgent(space, seed=seed, budget=600), 600, seed)
        assert evolved > baseline + 0.2, (seed, evolved, baseline)
