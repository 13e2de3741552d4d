"""Plug-ins: strategies declared as entry points by an installed distribution, and entries
registered at run time.

The distribution is a throwaway one on `sys.path` (a package and its `.dist-info` folder,
which is all `importlib.metadata` reads), so nothing is installed and the registries see
only the built-ins again once a test is done.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.strategies import write_nb201_table

import blockqnn.strategy.random_search
from blockqnn.cli import main
from blockqnn.errors import BlockQNNError
from blockqnn.search import loop
from blockqnn.settings.registry import REWARDS, STRATEGIES
from blockqnn.store.db import DB_NAME, Store

BUILTINS = ["qlearning", "random", "evolution"]
PLUGIN = '''
"""A throwaway strategy plug-in: uniform sampling that reports how often it was asked."""

from typing import Any

from blockqnn.strategy.base import BaseAgent, check_reward

BUILT: list[str] = []  # one entry per factory call: proof that this code ran


class Mine(BaseAgent):
    kind = "mine"

    def info(self) -> dict[str, Any]:
        return {"mine_asked": self.asked}

    def ask(self) -> Any:
        self._asked += 1
        return self.space.to_candidate(self.space.sample(self._rng))

    def tell(self, candidate: Any, reward: float) -> None:
        check_reward(reward)
        self._told += 1

    def state_dict(self) -> dict[str, Any]:
        return self._base_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._asked, self._told, self._rng = self._read_base(state)


def make_strategy(space: Any, budget: int, seed: int, config: Any) -> Mine:
    BUILT.append(space.name)
    return Mine(space, budget, seed)
'''
ENTRY_POINTS = """
[blockqnn.strategies]
mine = bq_plugin:make_strategy
broken = bq_plugin_missing:make
random = bq_plugin:make_strategy
"""


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[Any]:
    """The distribution `bq-plugin` on sys.path; yields its module once imported."""
    root = tmp_path / "site"
    (root / "bq_plugin").mkdir(parents=True)
    (root / "bq_plugin" / "__init__.py").write_text(PLUGIN)
    info = root / "bq_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bq-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS).lstrip())
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        STRATEGIES.reload_plugins()
        try:
            yield lambda: sys.modules["bq_plugin"]
        finally:
            sys.modules.pop("bq_plugin", None)
    STRATEGIES.reload_plugins()  # the path is gone: the plug-in's names with it
    assert not {"mine", "broken"} & set(STRATEGIES.names())
    assert STRATEGIES.names()[: len(BUILTINS)] == BUILTINS


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nb201_table(tmp_path_factory.mktemp("nb201") / "table.csv.gz")


def _search(run: Path, table: Path, *argv: str) -> list[str]:
    base = ["search", "--run-dir", str(run), "--space", "nb201", "--table", str(table)]
    return [*base, "--dataset", "cifar10", *argv]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ----- entry points -----------------------------------------------------------------------


def test_a_plugin_strategy_runs_a_search(
    plugin: Any, table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "mine" in STRATEGIES.names() and "broken" in STRATEGIES.names()
    run = tmp_path / "run"
    assert main([*_search(run, table, "--agent", "mine", "--budget", "25", "--json")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trained"] == 25
    assert plugin().BUILT == ["nb201"]
    with Store.open(run, readonly=True) as store:
        trials = store.trials()
        snapshot = store.latest_snapshot()
        assert store.config().search.agent == "mine"
    # the plug-in's own info and snapshot were recorded: its code proposed every trial
    assert [t.info for t in trials] == [{"mine_asked": n} for n in range(len(trials))]
    assert snapshot is not None and snapshot.state["kind"] == "mine"


def test_a_broken_plugin_is_one_line_and_the_rest_keeps_working(
    plugin: Any, table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for attempt in ("first", "second"):  # the second answers from the remembered failure
        run = tmp_path / attempt
        assert main(_search(run, table, "--agent", "broken", "--budget", "3")) == 2
        err = _one_line_error(capsys)
        assert "'broken'" in err and "bq_plugin_missing" in err, err
        assert not run.exists()  # refused before anything was written
    run = tmp_path / "qlearning"
    assert main(_search(run, table, "--agent", "qlearning", "--budget", "5")) == 0
    with Store.open(run, readonly=True) as store:
        assert store.counts()["trained"] == 5


def test_an_unknown_strategy_lists_the_registered_names(
    plugin: Any, table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(_search(run, table, "--agent", "nope", "--budget", "3")) == 2
    err = _one_line_error(capsys)
    assert "unknown strategy 'nope'" in err
    assert "registered: qlearning, random, evolution, broken, mine" in err, err
    assert not (run / DB_NAME).exists()


def test_a_plugin_cannot_replace_a_builtin(
    plugin: Any,
    table: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with caplog.at_level(logging.WARNING, logger="blockqnn.settings.registry"):
        STRATEGIES.reload_plugins()
        names = STRATEGIES.names()
    assert names.count("random") == 1
    assert any(
        "'random'" in r.getMessage() and "built in" in r.getMessage() for r in caplog.records
    )
    assert STRATEGIES.get("random") is blockqnn.strategy.random_search.make_strategy

    assert main(_search(tmp_path / "random", table, "--agent", "random", "--budget", "4")) == 0
    with Store.open(tmp_path / "random", readonly=True) as store:
        snapshot = store.latest_snapshot()
        assert [t.info for t in store.trials()] == [{}] * len(store.trials())
    assert snapshot is None or snapshot.state["kind"] == "random"
    assert "bq_plugin" not in sys.modules  # the impostor's code never even ran
    # ... while the same factory under a name of its own does run: the guard is what held.
    assert main(_search(tmp_path / "mine", table, "--agent", "mine", "--budget", "4")) == 0
    assert plugin().BUILT == ["nb201"]
    capsys.readouterr()


# ----- run-time registration ------------------------------------------------------------------


class HalfReward:
    """Half the accuracy: a reward no built-in gives, so its use shows in every trial."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def __call__(self, metrics: Any) -> float:
        return 0.5 * float(metrics["accuracy"])


@pytest.fixture
def half() -> Iterator[None]:
    REWARDS.register("half", HalfReward)
    try:
        yield
    finally:
        REWARDS.unregister("half")
    assert "half" not in REWARDS.names()


def test_a_registered_reward_is_used_by_name(
    half: None, table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "half" in REWARDS.names()
    config = tmp_path / "half.toml"
    config.write_text('[search]\nagent = "random"\nbudget = 6\n\n[reward]\nname = "half"\n')
    run = tmp_path / "run"
    assert main([*_search(run, table, "--config", str(config))]) == 0
    with Store.open(run, readonly=True) as store:
        trained = [t for t in store.trials() if t.status == "complete"]
        assert store.config().reward.name == "half"
    assert len(trained) == 6
    for t in trained:
        assert t.accuracy is not None and t.accuracy > 0.4  # the table's: 40% and up
        assert t.reward == pytest.approx(0.5 * t.accuracy)
        assert t.result is not None and t.result["reward"] == t.reward
    capsys.readouterr()


def test_registering_cannot_replace_or_remove_a_builtin() -> None:
    with pytest.raises(BlockQNNError, match="'paper' is built in and cannot be replaced"):
        REWARDS.register("paper", HalfReward)
    with pytest.raises(BlockQNNError, match="'random' is built in and cannot be removed"):
        STRATEGIES.unregister("random")
    assert REWARDS.get("paper").__name__ == "PaperReward"


class FussyReward(HalfReward):
    """Raises on accuracies below 0.6: a plug-in's bug that some candidates meet."""

    def __call__(self, metrics: Any) -> float:
        if float(metrics["accuracy"]) < 0.6:
            raise KeyError("latency_ms")
        return super().__call__(metrics)


def test_a_reward_that_raises_is_a_failed_trial_and_the_search_goes_on(
    table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unguarded, the exception took the search down with the trial `running`, and every
    resume met it again."""
    REWARDS.register("fussy", FussyReward)
    try:
        config = tmp_path / "fussy.toml"
        config.write_text('[search]\nagent = "random"\nbudget = 12\n\n[reward]\nname = "fussy"\n')
        run = tmp_path / "run"
        assert main([*_search(run, table, "--config", str(config))]) == 0
    finally:
        REWARDS.unregister("fussy")
    with Store.open(run, readonly=True) as store:
        trained = [t for t in store.trials() if t.trained]
    failed = [t for t in trained if t.status == "failed"]
    assert len(trained) == 12 and failed and len(failed) < 12
    assert {t.error for t in failed} == {"the reward raised KeyError: 'latency_ms'"}
    assert all(t.reward == 0.0 for t in failed)
    capsys.readouterr()


def test_a_converged_search_stops_with_exit_1_and_its_results_kept(
    table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paper's agent at its final epsilon proposes mostly known cells; after
    MAX_REUSE_STREAK of them in a row the search stops, pointing at its results."""
    monkeypatch.setattr(loop, "MAX_REUSE_STREAK", 5)
    run = tmp_path / "run"
    assert main(_search(run, table, "--budget", "3000", "--preset", "paper")) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("blockqnn search: stopped: the agent proposed only known blocks 5 ")
    assert err.endswith(f"it has converged; the best blocks: blockqnn status {run}")
    assert main(["status", str(run)]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("budget", ["6467", "15625"])
def test_a_budget_past_the_distinct_nb201_cells_is_refused_up_front(
    table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], budget: str
) -> None:
    """15,625 paths but 6,466 distinct cells: a larger budget ended "converged", exit 1."""
    run = tmp_path / "run"
    assert main(_search(run, table, "--budget", budget)) == 2
    err = _one_line_error(capsys)
    assert f"search.budget = {budget} exceeds the 6466 distinct candidates" in err
    assert "at most 6466" in err and not run.exists()
