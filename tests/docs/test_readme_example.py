"""The "Extending blockqnn" section of docs/extending.md runs as written: its example
strategy registers, searches the NAS-Bench-201 space with `run_search`, resumes exactly from
its snapshot, and the strategies benchmark accepts its name. So the documented code cannot
silently rot."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.strategies import write_nb201_table

from blockqnn.errors import BlockQNNError
from blockqnn.search import restore_agent
from blockqnn.settings.config import Config
from blockqnn.settings.registry import STRATEGIES
from blockqnn.space.nb201 import NB201Space
from blockqnn.store.db import Store
from blockqnn.strategy.base import Strategy


def _repository_root() -> Path:
    """The folder above this file that holds pyproject.toml, wherever the tests are nested."""
    return next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


ROOT = _repository_root()
DOC = ROOT / "docs" / "extending.md"
SECTION = "## Extending blockqnn"
TABLE_NAME = "nats-tss-200epoch-accuracy.csv.gz"  # the file name the example reads


def section_blocks(language: str) -> list[str]:
    """The fenced `language` code blocks of the page's section, in order."""
    text = DOC.read_text()
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    return re.findall(rf"^```{language}\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The section's first python block executed (it registers `local`), in a working
    directory that holds the table file its second block names."""
    write_nb201_table(tmp_path / TABLE_NAME)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    code = section_blocks("python")[0]
    try:
        exec(compile(code, f"{DOC}:{SECTION}", "exec"), namespace)
        yield namespace
    finally:
        STRATEGIES.unregister("local")
    assert "local" not in STRATEGIES.names()


def _reward(cell: Any, table: Any) -> float:
    return float(table.accuracy(cell, "cifar10")) / 100


def test_the_section_has_its_blocks() -> None:
    python = section_blocks("python")
    assert len(python) >= 2, "the strategy, then how to run it"
    assert "STRATEGIES.register(" in python[0] and "run_search(" in python[1]
    assert len(python[0].splitlines()) <= 60, "the example is meant to be short"
    toml = section_blocks("toml")
    assert toml and '[project.entry-points."blockqnn.strategies"]' in toml[0]
    assert any("benchmarks/strategies.py" in b for b in section_blocks("bash"))
    # the section sits where it was put: right before the Ray section
    assert re.search(rf"{SECTION}\n.*?\n## Running on a Ray cluster\n", DOC.read_text(), re.S)


def test_the_example_strategy_searches_and_is_restored(
    example: dict[str, Any], tmp_path: Path
) -> None:
    assert "local" in STRATEGIES.names()
    exec(compile(section_blocks("python")[1], f"{DOC}:{SECTION}", "exec"), example)
    summary = example["summary"]
    run = tmp_path / "runs" / "local"
    assert summary.trained == 40 and summary.best is not None
    with Store.open(run, readonly=True) as store:
        trials = store.trials()
        assert store.counts()["trained"] == 40
        assert store.config().search.agent == "local"
        snapshot = store.latest_snapshot()
    assert snapshot is not None and snapshot.state["kind"] == "local"
    # info() before every ask: the best reward so far never decreases
    seen = [t.info["best_reward"] for t in trials]
    assert seen == sorted(seen) and seen[-1] > 0

    # A fresh agent restored from the store (snapshot, then the calls after it) has told
    # everything the run told it.
    space = NB201Space()
    config = Config()
    finished = example["make_local"](space, 40, 0, config.agent)
    with Store.open(run, readonly=True) as store:
        restore_agent(store, finished, space)
    assert finished.asked == len(trials) and finished.best is not None
    assert finished.best_reward == max(t.reward or 0.0 for t in trials)


def test_the_example_strategy_resumes_exactly(example: dict[str, Any], tmp_path: Path) -> None:
    from blockqnn.space.nb201_table import load_table

    table = load_table(tmp_path / TABLE_NAME)
    make = example["make_local"]
    config = Config().agent
    space = NB201Space()
    agent = make(space, 60, 7, config)
    assert isinstance(agent, Strategy)
    assert agent.state_dict()["best"] is None
    for _ in range(15):
        cell = agent.ask()
        agent.tell(cell, _reward(cell, table))
    state = json.loads(json.dumps(agent.state_dict()))  # snapshots are stored as JSON
    fresh = make(space, 60, 7, config)
    fresh.load_state_dict(state)
    assert fresh.info() == agent.info() and fresh.state_dict() == agent.state_dict()
    for _ in range(20):  # the same asks, and the same learning from the same tells
        a, b = agent.ask(), fresh.ask()
        assert str(a) == str(b)
        agent.tell(a, _reward(a, table))
        fresh.tell(b, _reward(b, table))
    assert fresh.state_dict() == agent.state_dict()

    # A snapshot of another strategy or budget is refused, and changes nothing.
    before = fresh.state_dict()
    with pytest.raises(BlockQNNError, match="budget"):
        fresh.load_state_dict(make(space, 61, 7, config).state_dict())
    with pytest.raises(BlockQNNError, match="'random' agent"):
        fresh.load_state_dict({**state, "kind": "random"})
    assert fresh.state_dict() == before


def test_the_benchmark_accepts_the_registered_name(
    example: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location(
        "strategies_benchmark", ROOT / "benchmarks" / "strategies.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--space", "nb201", "--protocol", "oracle", "--table", str(tmp_path / TABLE_NAME)]
    argv += ["--json"]
    argv += ["--strategies", "local,random", "--budgets", "30", "--seeds", "3", "--workers", "1"]
    assert bench.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["strategy"]: r for r in report["results"]}
    assert set(rows) == {"local", "random"} and rows["local"]["seeds"] == 3
    assert rows["local"]["short_runs"] == 0
