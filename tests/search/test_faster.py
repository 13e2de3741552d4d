"""Early termination and the free pre-screen: the decision rules on literal fixtures, the
gate's text form, and searches with the synthetic evaluator (stops, predictions, resume with
a stopped trial in flight, the pre-screen's asks replayed on resume)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.gate import Gate, Job, split_job
from blockqnn.evaluate.result import EvalResult
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.execute import EvaluatorSpec, Finished
from blockqnn.execute.local import LocalExecutor
from blockqnn.execute.synthetic import synthetic_spec
from blockqnn.search import restore_agent, run_search
from blockqnn.search.prescreen import Screener
from blockqnn.search.terminate import (
    MIN_COMPLETED,
    Terminator,
    fit_line,
    predict,
    seconds_saved,
    stop_threshold,
)
from blockqnn.settings.config import Config, merge
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.space import NSCSpace
from blockqnn.store.db import Store
from blockqnn.strategy import make_strategy
from blockqnn.strategy.base import BaseAgent

BLOCK = Block.parse("1,1,3,0,0; 2,7,0,0,0")


def test_no_threshold_before_eight_completed_then_the_quantile() -> None:
    partials = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert stop_threshold(partials, completed=7, quantile=0.5) is None
    assert stop_threshold(partials, completed=8, quantile=0.5) == pytest.approx(0.5)
    assert stop_threshold(partials, completed=9, quantile=0.25) == pytest.approx(0.3)


def test_line_needs_five_distinct_pairs_and_predicts_clipped() -> None:
    pairs = [(0.1, 0.3), (0.2, 0.5), (0.3, 0.7), (0.4, 0.9)]
    assert fit_line(pairs) is None  # four pairs: the partial stands
    assert fit_line([(0.5, 0.6)] * 5) is None  # all partials equal: no slope
    slope, intercept = fit_line([*pairs, (0.0, 0.1)]) or (0.0, 0.0)
    assert (slope, intercept) == pytest.approx((2.0, 0.1))
    assert predict(0.25, (2.0, 0.1)) == pytest.approx(0.6)
    assert predict(0.9, (2.0, 0.1)) == 1.0
    assert predict(0.25, None) == 0.25


def test_seconds_saved_are_the_skipped_epochs_at_its_own_pace() -> None:
    assert seconds_saved(6.0, stopped_at=3, epochs=12) == pytest.approx(18.0)
    assert seconds_saved(6.0, stopped_at=0, epochs=12) == 0.0


def test_terminator_predicts_a_stopped_result_and_learns_only_full_pairs() -> None:
    term = Terminator(stop_after=2, quantile=0.5, epochs=8)
    for i in range(MIN_COMPLETED):
        partial = 0.1 * i
        term.note(EvalResult("ok", accuracy=partial + 0.2, metrics={"partial_accuracy": partial}))
    gate = term.gate()
    assert gate is not None and gate.epoch == 2 and gate.below == pytest.approx(0.35)
    stopped = EvalResult(
        "ok",
        accuracy=0.05,
        train_seconds=4.0,
        metrics={"partial_accuracy": 0.05, "stopped_at": 2.0},
    )
    done = term.complete(stopped)
    assert done.accuracy == pytest.approx(0.25)
    assert done.metrics["predicted_accuracy"] == pytest.approx(0.25)
    assert done.metrics["partial_accuracy"] == 0.05
    assert done.metrics["saved_seconds"] == pytest.approx(12.0)
    term.note(done)
    assert len(term.pairs) == MIN_COMPLETED and len(term.partials) == MIN_COMPLETED + 1


def test_a_job_travels_as_text_and_back() -> None:
    for gate in (Gate(3, 0.4512), Gate(1, None)):
        assert split_job(str(Job(BLOCK, gate))) == (str(BLOCK), gate)
    assert split_job(str(BLOCK)) == (str(BLOCK), None)


def test_screener_trains_the_best_and_ranks_unscorable_last() -> None:
    scores = {"a": 1.0, "b": math.nan, "c": 3.0, "d": -math.inf}
    proposals = iter([("a", 1), ("b", 2), ("c", 3)])
    screener = Screener(3, lambda c: (scores[c], 0.5), "params")
    best, seq, record = screener.screen(lambda: next(proposals))
    assert (best, seq, record["score"], record["asks"]) == ("c", 3, 3.0, [1, 2])
    assert record["seconds"] == pytest.approx(1.5)
    proposals = iter([("b", 4), ("d", 5)])
    best, seq, record = Screener(2, lambda c: (scores[c], 0.0), "params").screen(
        lambda: next(proposals)
    )
    assert (best, record["score"], record["asks"]) == ("b", None, [5])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"search": {"stop_after": 12}}, "search.stop_after = 12: must be below train.epochs"),
        ({"search": {"stop_quantile": 1.0}}, "search.stop_quantile = 1"),
        ({"search": {"stop_quantile": 0}}, "search.stop_quantile = 0"),
        ({"search": {"prescreen": 0}}, "search.prescreen = 0"),
        ({"search": {"prescreen_score": "zico"}}, "search.prescreen_score = 'zico'"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(BlockQNNError, match=message) as info:
        merge(Config(), settings)
    assert "\n" not in str(info.value)


def _config(budget: int, **search: Any) -> Config:
    search = {"budget": budget, "cache": "off", "agent": "random", **search}
    return merge(Config(), {"search": search, "train": {"epochs": 4}})


class InterruptingExecutor(LocalExecutor):
    """The local executor, with Ctrl-C arriving during evaluation number `at`."""

    def __init__(self, spec: EvaluatorSpec, at: int) -> None:
        super().__init__(spec)
        self.at, self.calls = at, 0

    def wait(self, timeout: float | None = None) -> list[Finished]:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().wait(timeout)


def _trace(run: Path) -> list[tuple[str, str, float | None, Any]]:
    """Each trial's candidate, status, reward and pre-screen asks (not its timings)."""
    with Store.open(run, readonly=True) as s:
        return [
            (t.candidate, t.status, t.reward, t.info.get("prescreen", {}).get("asks"))
            for t in s.trials()
        ]


def test_search_stops_weak_candidates_and_tells_the_predicted_reward(tmp_path: Path) -> None:
    config = merge(_config(20, stop_after=2), {"reward": {"name": "accuracy"}})
    run_search(tmp_path / "run", config, spec=synthetic_spec)
    with Store.open(tmp_path / "run", readonly=True) as store:  # stored, reopened
        trained = [t for t in store.trials() if t.trained]
    full = SyntheticEvaluator(config)
    stopped = [t for t in trained if t.result and "stopped_at" in t.result["metrics"]]
    assert stopped and all(t.id > MIN_COMPLETED for t in stopped)
    for t in stopped:
        assert t.result is not None
        metrics = t.result["metrics"]
        assert metrics["stopped_at"] == 2.0 and t.result["epochs"] == 2
        truth = full.evaluate(Block.parse(t.candidate)).accuracy
        # the synthetic partial is 0.8 x the full accuracy: the line recovers it
        assert t.reward == pytest.approx(truth) == metrics["predicted_accuracy"]
        assert metrics["partial_accuracy"] == pytest.approx(0.8 * truth)
        assert metrics["saved_seconds"] == 0.0  # the synthetic evaluator takes no time
    assert all("partial_accuracy" in (t.result or {}).get("metrics", {}) for t in trained)


def test_a_cached_result_teaches_its_partial_accuracy_only_at_this_runs_epoch(
    tmp_path: Path,
) -> None:
    """The evaluation cache's key leaves `stop_after` out: a result trained with the gate at
    epoch 3 must not be read, at epoch 2, as an accuracy after 2 epochs."""
    cache = str(tmp_path / "cache")
    run_search(tmp_path / "at3", _config(16, stop_after=3, cache=cache), spec=synthetic_spec)
    run_search(tmp_path / "at2", _config(16, stop_after=2, cache=cache), spec=synthetic_spec)
    with Store.open(tmp_path / "at2", readonly=True) as s:
        trained = [(t.worker, t.result) for t in s.trials() if t.trained and t.result is not None]
    hits = [result["metrics"] for worker, result in trained if worker.startswith("cache: ")]
    own = [result["metrics"] for worker, result in trained if not worker.startswith("cache: ")]
    assert hits and own
    assert all("partial_accuracy" not in m and "partial_epoch" not in m for m in hits)
    assert all(m["partial_epoch"] == 2.0 for m in own)
    term = Terminator(stop_after=2, quantile=0.5, epochs=4)
    at3 = EvalResult("ok", 0.5, metrics={"partial_accuracy": 0.4, "partial_epoch": 3.0})
    at2 = EvalResult("ok", 0.5, metrics={"partial_accuracy": 0.4, "partial_epoch": 2.0})
    assert term.adopt(at2) == at2 and "partial_accuracy" not in term.adopt(at3).metrics
    term.note(at3)
    assert term.partials == [] and term.pairs == []
    term.note(at2)
    assert term.partials == [0.4] and term.pairs == [(0.4, 0.5)]


def test_resume_reruns_a_stopped_trial_in_flight(tmp_path: Path) -> None:
    config = _config(16, stop_after=2)
    run_search(tmp_path / "straight", config, spec=synthetic_spec)
    straight = _trace(tmp_path / "straight")
    with Store.open(tmp_path / "straight", readonly=True) as s:
        trained = [t for t in s.trials() if t.trained]
    at = next(
        i
        for i, t in enumerate(trained, 1)
        if t.result is not None and "stopped_at" in t.result["metrics"]
    )
    with pytest.raises(KeyboardInterrupt):
        run_search(
            tmp_path / "stopped",
            config,
            spec=synthetic_spec,
            executor_factory=lambda s: InterruptingExecutor(s, at),
        )
    run_search(tmp_path / "stopped", None, spec=synthetic_spec)
    assert _trace(tmp_path / "stopped") == straight
    with Store.open(tmp_path / "stopped", readonly=True) as s:
        assert s.trials()[at - 1].attempts == 2  # the stopped trial ran again


@pytest.mark.parametrize("agent", ["qlearning", "evolution"])
def test_prescreen_asks_replay_on_resume(tmp_path: Path, agent: str) -> None:
    config = merge(
        _config(10, agent=agent, prescreen=3),
        {"agent": {"iteration_size": 4, "replay_size": 8, "population_size": 4, "sample_size": 2}},
    )
    run_search(tmp_path / "straight", config, spec=synthetic_spec)
    straight = _trace(tmp_path / "straight")
    with Store.open(tmp_path / "straight", readonly=True) as s:
        screened = [t.info["prescreen"] for t in s.trials() if t.status != "reused"]
    assert all(p["screened"] == 3 and len(p["asks"]) == 2 for p in screened)
    assert all(p["score"] is not None and p["score"] > 0 for p in screened)
    with pytest.raises(KeyboardInterrupt):
        run_search(
            tmp_path / "stopped",
            config,
            spec=synthetic_spec,
            executor_factory=lambda s: InterruptingExecutor(s, 6),
        )
    live = make_strategy(agent, NSCSpace(), 10, 0, config.agent)
    assert isinstance(live, BaseAgent)  # both agents count their asks and tells
    with Store.open(tmp_path / "stopped", readonly=True) as store:
        seq = restore_agent(store, live, NSCSpace())
    assert live.asked == seq - live.told  # every ask replayed, the losers' included
    run_search(tmp_path / "stopped", None, spec=synthetic_spec)
    assert _trace(tmp_path / "stopped") == straight


def test_prescreen_picks_the_largest_network_with_params(tmp_path: Path) -> None:
    run_search(tmp_path / "run", _config(4, prescreen=4), spec=synthetic_spec)
    with Store.open(tmp_path / "run", readonly=True) as s:
        for t in s.trials():
            assert t.result is not None
            assert t.info["prescreen"]["score"] == t.result["params"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--epochs", "3", "--stop-after", "3"],
        ["--stop-quantile", "1.5"],
        ["--prescreen", "0"],
        ["--prescreen-score", "zico"],
    ],
)
def test_search_refuses_bad_faster_settings_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    from blockqnn.cli import main

    assert main(["search", "--run-dir", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "search." in err
    assert not (tmp_path / "run").exists()


def test_the_gate_reaches_an_evaluator_wrapped_to_measure_latency() -> None:
    """With latency measured on the workers, each evaluator is a `LatencyEvaluator`: the
    gate must pass through it, or `--stop-after` silently trains everything in full."""
    from dataclasses import replace

    from blockqnn.evaluate.latency import LatencyEvaluator
    from blockqnn.execute.base import run_job

    class Meter:
        def apply(self, candidate: Any, result: EvalResult) -> EvalResult:
            return replace(result, metrics={**result.metrics, "latency_ms": 1.0})

    wrapped = LatencyEvaluator(SyntheticEvaluator(_config(4, stop_after=2)), Meter())
    stopped = run_job(wrapped, Job(BLOCK, Gate(2, below=1.0)))
    assert stopped.metrics["stopped_at"] == 2.0 and stopped.metrics["latency_ms"] == 1.0
    full = run_job(wrapped, BLOCK)
    assert "partial_accuracy" not in full.metrics and full.metrics["latency_ms"] == 1.0
