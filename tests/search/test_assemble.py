"""The assembler builds a run's parts once, and the master alone turns metrics into rewards."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.strategies import write_nb201_table

import blockqnn.execute.base as ex
from blockqnn.cli import main
from blockqnn.evaluate.result import EvalResult
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.execute import EvaluatorSpec, Finished
from blockqnn.execute.synthetic import synthetic_spec
from blockqnn.reward import FAILED_REWARD, make_reward, score
from blockqnn.search import run_search
from blockqnn.settings.config import Config, merge, with_absolute_paths
from blockqnn.settings.registry import SPACES
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.space import NSCSpace
from blockqnn.store.db import Store

BLOCK = Block.parse("1,1,3,0,0; 2,1,5,1,0; 3,7,0,0,0")
DIGITS = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10)  # what a loader returns


def _config(**search: Any) -> Config:
    return merge(Config(), {"search": {"budget": 3, "cache": "off", **search}})


@pytest.fixture
def counted_space() -> Iterator[list[int]]:
    """A space plug-in ("counted", the NSC space) whose factory counts its calls."""
    calls: list[int] = []

    def factory(config: Config) -> NSCSpace:
        calls.append(1)
        return NSCSpace(max_depth=config.agent.max_depth)

    SPACES.register("counted", factory)
    yield calls
    SPACES.unregister("counted")


def test_a_search_loads_its_data_once_and_records_its_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default spec and local executor: one read of the data, which both the stored
    config (its shape) and the evaluator (its arrays) come from."""
    loads: list[Config] = []
    given: list[Any] = []

    def load(config: Config) -> Any:
        loads.append(config)
        return DIGITS

    def evaluator(config: Config, data: Any, device: str | None) -> SyntheticEvaluator:
        given.append(data)
        return SyntheticEvaluator(config)

    monkeypatch.setattr(ex, "load_data", load)
    monkeypatch.setattr(ex, "default_evaluator", evaluator)
    summary = run_search(tmp_path / "run", _config())
    assert summary.trained == 3
    assert len(loads) == 1 and given == [DIGITS]
    with Store.open(tmp_path / "run", readonly=True) as store:
        network = store.config().network
    assert (network.input_shape, network.num_classes) == ((1, 8, 8), 10)


def test_a_new_and_a_resumed_search_each_build_their_space_once(
    tmp_path: Path, counted_space: list[int]
) -> None:
    config = _config(space="counted")
    run_search(tmp_path / "run", config, spec=synthetic_spec)
    assert len(counted_space) == 1
    run_search(tmp_path / "run", None, resume_overrides={"budget": 5}, spec=synthetic_spec)
    assert len(counted_space) == 2
    with Store.open(tmp_path / "run", readonly=True) as store:
        assert store.counts()["trained"] == 5


def _marked(config: Config) -> str:
    return "the-loaded-data" * 100


def test_a_spec_keeps_its_loaded_data_out_of_its_pickle() -> None:
    """Ray and the process pool ship the data once, beside the pickled spec."""
    spec = EvaluatorSpec(Config(), loader=_marked).with_data()
    assert spec.load_data() == _marked(Config())
    shipped = pickle.dumps(spec)
    assert b"the-loaded-data" not in shipped
    assert pickle.loads(shipped).preloaded is None


def test_an_evaluator_reports_metrics_and_no_reward() -> None:
    result = SyntheticEvaluator(Config()).evaluate(BLOCK)
    assert result.ok and result.accuracy > 0.5 and result.flops > 0
    assert result.reward is None
    scored = score(make_reward(Config()), result)
    assert scored.reward == pytest.approx(make_reward(Config())(result.metric_values()))


def test_score_fails_a_non_finite_reward_and_gives_failures_the_failed_reward() -> None:
    def nan_reward(metrics: Any) -> float:
        return math.nan

    nan = score(nan_reward, EvalResult("ok", accuracy=0.9))
    assert (nan.status, nan.reward, nan.error) == ("failed", FAILED_REWARD, "reward nan")
    failed = score(make_reward(Config()), EvalResult.failed("out of memory"))
    assert (failed.reward, failed.error) == (FAILED_REWARD, "out of memory")


class OneSlot:
    """An executor whose evaluator claims a reward of its own for every candidate."""

    slots = 1

    def __init__(self, spec: EvaluatorSpec) -> None:
        self.pending: list[int] = []

    def submit(self, trial_id: int, candidate: Any) -> None:
        self.pending.append(trial_id)

    def wait(self, timeout: float | None = None) -> list[Finished]:
        trial = self.pending.pop()
        claimed = EvalResult("ok", accuracy=0.25 + trial / 100, reward=99.0, density=2.0)
        return [Finished(trial, claimed, "w")]

    def shutdown(self) -> None:
        pass


def test_the_master_scores_every_result_with_the_runs_reward(tmp_path: Path) -> None:
    config = merge(_config(), {"reward": {"name": "paper", "mu": 0.0, "rho": 0.5}})
    run_search(tmp_path / "run", config, spec=synthetic_spec, executor_factory=OneSlot)
    with Store.open(tmp_path / "run", readonly=True) as store:
        trials = store.trials()
    assert [t.status for t in trials] == ["complete"] * 3
    for t in trials:  # accuracy - rho log(density), never the evaluator's 99
        assert t.accuracy is not None
        assert t.reward == pytest.approx(t.accuracy - 0.5 * math.log(2.0))
        assert t.result is not None and t.result["reward"] == t.reward


def test_an_nb201_dataset_is_a_column_even_beside_a_folder_of_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nb201's `[data] dataset` names the table's column: a folder `imagenet16-120` in the
    working directory made it a path, and the search refused it as no such column."""
    table = write_nb201_table(tmp_path / "t.csv.gz")
    (tmp_path / "imagenet16-120").mkdir()
    monkeypatch.chdir(tmp_path)
    config = merge(Config(), {"data": {"dataset": "imagenet16-120"}})
    assert with_absolute_paths(config, dataset_is_path=False).data.dataset == "imagenet16-120"
    assert with_absolute_paths(config).data.dataset == str(tmp_path / "imagenet16-120")  # nsc
    nb = ["--space", "nb201", "--table", str(table), "--dataset", "imagenet16-120"]
    assert main(["search", *nb, "--budget", "5", "--run-dir", "a", "--agent", "random"]) == 0
    with Store.open(tmp_path / "a", readonly=True) as store:
        assert store.config().data.dataset == "imagenet16-120"
        assert store.counts()["complete"] == 5
    # a warm start compares the source's settings with the same rule: exact, not refused
    assert main(["search", *nb, "--budget", "5", "--run-dir", "b", "--warm-start", "a"]) == 0
    with Store.open(tmp_path / "b", readonly=True) as store:
        assert len(store.trials()) == 10 and store.counts()["trained"] == 5
