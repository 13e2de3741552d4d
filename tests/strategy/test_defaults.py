"""Every agent default in one place: the library's agent is the CLI's agent."""

from __future__ import annotations

from pathlib import Path

import pytest

import blockqnn.execute.base as ex
from blockqnn.cli import main
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.settings.config import AGENT_PRESETS, AgentConfig
from blockqnn.space.nsc.space import NSCSpace
from blockqnn.store.db import Store
from blockqnn.strategy import QLearningAgent
from blockqnn.strategy.base import agent_settings


def test_a_preset_is_resolved_when_the_section_is_built_in_python() -> None:
    paper = AgentConfig(preset="paper")
    assert all(getattr(paper, k) == v for k, v in AGENT_PRESETS["paper"].items())
    assert AgentConfig(preset="paper", alpha_mode="visits").alpha_mode == "visits"
    assert AgentConfig() == AgentConfig(preset="blockqnn")


def test_a_preset_given_to_an_agent_as_a_keyword_sets_its_constants() -> None:
    """`QLearningAgent(preset="paper")` is the paper's agent, as `config=AgentConfig(preset=
    "paper")` is; switching a config's preset does not keep the old preset's values."""
    levers = ("alpha", "alpha_mode", "on_repeat", "explore_share", "replay", "explore_per")
    for name in AGENT_PRESETS:
        expected = AgentConfig(preset=name)
        assert agent_settings(None, {"preset": name}) == expected
        assert agent_settings(AgentConfig(preset="paper"), {"preset": name}) == expected
        agent = QLearningAgent(seed=0, budget=100, preset=name)
        assert all(getattr(agent, k) == getattr(expected, k) for k in levers)
    beside = agent_settings(None, {"preset": "paper", "ucb": 0.05})
    assert beside == AgentConfig(preset="paper", ucb=0.05)  # keys beside the preset win


def test_the_library_agent_proposes_what_the_cli_search_proposes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ex, "default_evaluator", lambda c, d, dev: SyntheticEvaluator(c))
    monkeypatch.setattr(ex, "load_data", lambda c: None)
    budget, seed = 30, 3
    run = tmp_path / "run"
    argv = ["search", "--run-dir", str(run), "--budget", str(budget), "--seed", str(seed)]
    assert main([*argv, "--dataset", "digits"]) == 0
    with Store.open(run, readonly=True) as store:
        trials = store.trials()
    agent = QLearningAgent(seed=seed, budget=budget)
    assert agent.space == NSCSpace(AgentConfig().max_depth)
    # The run's calls in their order: each trial's ask and its tell (a reused block's too).
    calls = sorted(
        [(t.ask_seq, "ask", t) for t in trials]
        + [(t.tell_seq, "tell", t) for t in trials if t.tell_seq is not None]
    )
    for _, call, trial in calls:
        if call == "ask":
            assert str(agent.ask()) == trial.candidate
        else:
            assert trial.reward is not None
            agent.tell(agent.space.parse(trial.candidate), trial.reward)
    assert len(trials) >= budget and agent.epsilon < 1.0  # past the random phase


def test_a_saved_config_without_the_levers_reads_them_off() -> None:
    from blockqnn.settings.config import LEVERS_OFF, Config

    saved = Config().to_dict()
    for key in LEVERS_OFF:  # as a run of the release before the levers saved it
        del saved["agent"][key]
    agent = Config.from_saved(saved).agent
    assert agent.preset == "blockqnn"
    assert {k: getattr(agent, k) for k in LEVERS_OFF} == LEVERS_OFF
    assert Config.from_saved(Config().to_dict()).agent == AgentConfig()
