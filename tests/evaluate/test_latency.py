"""Latency: measuring, the cache, the latency rewards, the search with them (local and Ray),
resume, `show`/`status`/`trials`, the report's front and `train --pick`, and bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from blockqnn.errors import BlockQNNError
from blockqnn.evaluate import latency
from blockqnn.evaluate.latency import Latency, LatencyError, LatencyMeter, LatencySettings
from blockqnn.evaluate.result import EvalResult
from blockqnn.execute.synthetic import synthetic_spec
from blockqnn.final.pick import pareto_front, parse_pick, pick_front
from blockqnn.reward import additive_latency_reward, make_reward, mnasnet_reward, score
from blockqnn.search import run_search
from blockqnn.settings.config import Config, merge
from blockqnn.space.nsc.block import Block
from blockqnn.store.cache import LatencyCache, latency_cache
from blockqnn.store.db import Store

BLOCK = Block.parse("1,1,3,0,0; 2,3,3,0,0; 3,6,0,1,2")
# a tiny deployment network and few passes: the tests check plumbing, not speed
CHEAP = {
    "latency_filters": 4,
    "latency_blocks_per_stage": 1,
    "latency_warmup": 1,
    "latency_repeats": 3,
}


def _config(tmp_path: Path, **reward: Any) -> Config:
    return merge(
        Config(),
        {
            "search": {"budget": 4},
            "agent": {"iteration_size": 4},
            "data": {"cache_dir": str(tmp_path / "cache")},
            "reward": {**CHEAP, **reward},
        },
    )


def _ok(accuracy: float = 0.8, **metrics: float) -> EvalResult:
    return EvalResult(status="ok", accuracy=accuracy, metrics=dict(metrics))


class _Trial:
    def __init__(self, id: int, accuracy: float, ms: float | None) -> None:
        self.id, self.accuracy, self.status = id, accuracy, "complete"
        self.result = {"metrics": {} if ms is None else {"latency_ms": ms}}


# ----- pure parts -------------------------------------------------------------------------------


def test_spread_of_timings() -> None:
    median, iqr, cv = latency.spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert median == 3.0 and iqr == 2.0 and cv > 1.0  # the outlier moves the CV, not the median
    assert latency.spread([5.0]) == (5.0, 0.0, 0.0)


def test_pareto_front_and_picks() -> None:
    trials = [
        _Trial(1, 0.90, 5.0),
        _Trial(2, 0.80, 1.0),
        _Trial(3, 0.70, 2.0),  # dominated by 2: slower and less accurate
        _Trial(4, 0.85, 3.0),
        _Trial(5, 0.99, None),  # no latency: not on the front
    ]
    assert [t.id for t in pareto_front(trials)] == [2, 4, 1]
    assert pick_front(trials, 2, None).id == 4
    assert pick_front(trials, None, 3.5).id == 4  # the most accurate within 3.5 ms
    assert pick_front(trials, 1, 3.5).id == 2
    with pytest.raises(BlockQNNError, match=r"the fastest takes 1\.000 ms"):
        pick_front(trials, None, 0.5)
    with pytest.raises(BlockQNNError, match="the front has 2 block"):
        pick_front(trials, 3, 3.5)
    with pytest.raises(BlockQNNError, match="no trial with a measured latency"):
        pick_front([_Trial(1, 0.9, None)], 1, None)


def test_parse_pick() -> None:
    assert parse_pick("pareto") == 1 and parse_pick("pareto:3") == 3
    for bad in ("pareto:0", "pareto:x", "best:1", "pareto:-1", ""):
        with pytest.raises(BlockQNNError, match="--pick"):
            parse_pick(bad)


def test_latency_rewards() -> None:
    # MnasNet's soft constraint: twice the target costs 2 ** -0.07 = 4.7% of the accuracy
    assert mnasnet_reward(0.8, 4.0, 2.0, -0.07, -0.07) == pytest.approx(0.8 * 2**-0.07)
    assert mnasnet_reward(0.8, 1.0, 2.0, 0.0, -1.0) == pytest.approx(0.8)  # hard: free below
    assert mnasnet_reward(0.8, 4.0, 2.0, 0.0, -1.0) == pytest.approx(0.4)
    assert additive_latency_reward(0.8, 2.0, 1.0, 0.1) == pytest.approx(0.8 - 0.1 * math.log(2))
    config = merge(Config(), {"reward": {"name": "mnasnet", "latency_target_ms": 2.0}})
    reward = make_reward(config)
    assert reward({"accuracy": 0.8, "latency_ms": 2.0}) == pytest.approx(0.8)
    assert math.isnan(reward({"accuracy": 0.8}))  # no latency: the search fails the trial
    config = merge(Config(), {"reward": {"name": "additive", "latency_target_ms": 1.0}})
    assert make_reward(config)({"accuracy": 0.8, "latency_ms": math.e}) == pytest.approx(0.73)


@pytest.mark.parametrize(
    ("latency_ms", "target_ms", "w"),
    [(1.0, 1e-300, 100.0), (1e7, 1e-7, 100.0), (1e-300, 1.0, -100.0), (1e7, 5e-324, 1.0)],
)
def test_the_mnasnet_reward_saturates_instead_of_overflowing(
    latency_ms: float, target_ms: float, w: float
) -> None:
    # (ratio) ** w is past float range for these in-bounds settings: it was an OverflowError
    value = mnasnet_reward(0.8, latency_ms, target_ms, w, w)
    assert math.isfinite(value) and value > 0.8
    assert mnasnet_reward(0.8, 1.0, 1e-300, -100.0, -100.0) == 0.0  # underflow: no reward
    assert math.isfinite(additive_latency_reward(0.8, 1e7, 5e-324, 1000.0))
    config = merge(Config(), {"reward": {"name": "mnasnet", "latency_target_ms": target_ms}})
    config = merge(config, {"reward": {"latency_alpha": w, "latency_beta": w}})
    scored = score(make_reward(config), _ok(latency_ms=latency_ms))
    assert scored.ok and scored.reward is not None and math.isfinite(scored.reward)


def test_a_reward_that_raises_an_arithmetic_error_fails_the_trial() -> None:
    def overflowing(metrics: Any) -> float:
        return float(10.0 ** metrics["accuracy"] ** 9)

    scored = score(overflowing, _ok(accuracy=1000.0))
    assert not scored.ok and scored.reward == 0.0
    assert scored.error is not None and scored.error.startswith("the reward raised OverflowError")


def test_a_search_with_an_extreme_mnasnet_reward_completes(tmp_path: Path) -> None:
    # the measured latency far over a tiny target with a large beta: every trial overflowed
    config = _config(tmp_path, name="mnasnet", latency_target_ms=1e-9, latency_beta=100.0)
    run_search(tmp_path / "run", config, spec=synthetic_spec)
    run_search(tmp_path / "run", None, spec=synthetic_spec)  # a resume re-scores nothing bad
    with Store.open(tmp_path / "run", readonly=True) as store:
        trials = store.trials()
        assert store.counts()["complete"] == 4
        assert all(t.reward is not None and math.isfinite(t.reward) for t in trials)


# ----- measuring and the cache ------------------------------------------------------------------


def test_measure_and_cache(tmp_path: Path) -> None:
    config = _config(tmp_path, latency_device="cpu", latency_batch=2)
    meter = LatencyMeter.for_config(config, (1, 8, 8), 10, latency_cache(config))
    assert meter is not None
    first = meter.apply(BLOCK, _ok())
    m = first.metrics
    assert m["latency_ms"] > 0 and m["latency_iqr_ms"] >= 0 and m["latency_batch"] == 2
    assert m["latency_batch_ms"] > 0 and meter.measured == 1
    again = LatencyMeter.for_config(
        config, (1, 8, 8), 10, latency_cache(config)
    )  # a new process, the same cache
    assert again is not None
    assert again.apply(BLOCK, _ok()).metrics["latency_ms"] == m["latency_ms"]
    assert again.measured == 0
    wider_config = merge(config, {"reward": {"latency_filters": 8}})
    wider = LatencyMeter.for_config(wider_config, (1, 8, 8), 10, latency_cache(wider_config))
    assert wider is not None
    wider.apply(BLOCK, _ok())
    assert wider.measured == 1  # other network settings: another key
    assert meter.apply(BLOCK, EvalResult.failed("x")).metrics == {}  # failures left alone


def test_onnxruntime_measures(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    settings = LatencySettings("onnxruntime", batch=2, warmup=1, repeats=3)
    network = latency.deployment_network(_config(tmp_path), (1, 8, 8), 10)
    result = latency.measure(BLOCK, network, settings)
    assert result.median_ms > 0 and result.batch_median_ms > 0 and "onnxruntime" in result.device


def test_a_network_too_large_to_time_fails_before_it_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blockqnn.space.nsc.builder as builder
    import blockqnn.train.devices as devices

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("built a network that cannot fit")

    monkeypatch.setattr(devices, "device_memory", lambda device: 1 << 16)  # a 64 KiB host
    monkeypatch.setattr(builder, "Network", never)
    network = latency.deployment_network(_config(tmp_path), (1, 8, 8), 10)
    with pytest.raises(LatencyError, match=r"^network too large: its [\d,]+ parameters need"):
        latency.measure(BLOCK, network, LatencySettings("cpu", warmup=1, repeats=3))


def test_a_failed_measurement_is_a_failed_metric_never_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any) -> Latency:
        raise LatencyError("RuntimeError: out of memory")

    monkeypatch.setattr(latency, "measure", fail)
    recorded = _config(tmp_path, latency_device="cpu")  # paper reward: recorded only
    meter = LatencyMeter.for_config(recorded, (1, 8, 8), 10, latency_cache(recorded))
    assert meter is not None
    result = meter.apply(BLOCK, _ok())
    assert result.ok and result.metrics == {"latency_failed": 1.0}
    rewarded = _config(tmp_path, name="mnasnet", latency_target_ms=1.0)
    meter = LatencyMeter.for_config(rewarded, (1, 8, 8), 10, latency_cache(rewarded))
    assert meter is not None
    result = meter.apply(BLOCK, _ok())
    assert not result.ok and "latency not measured (cpu): RuntimeError" in result.error


def test_an_unusable_cache_only_costs_a_measurement(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    cache = LatencyCache(tmp_path / "file" / "latency.sqlite")
    assert cache.get("k") is None
    cache.put("k", Latency(1.0, 0.0, 0.0, 1, 1.0, 0.1, "cpu"))  # logged, not raised


# ----- in a search ----------------------------------------------------------------------------


def _latencies(run: Path) -> dict[str, float]:
    with Store.open(run, readonly=True) as store:
        return {
            t.hash: t.result["metrics"]["latency_ms"]
            for t in store.trials()
            if t.status == "complete" and t.result is not None
        }


@pytest.mark.parametrize("where", ["worker", "master"])
def test_search_with_the_mnasnet_reward_and_a_duplicate_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    config = _config(tmp_path, name="mnasnet", latency_target_ms=1.0, latency_on=where)
    run_search(tmp_path / "a", config, spec=synthetic_spec)
    with Store.open(tmp_path / "a", readonly=True) as store:
        trials = [t for t in store.trials() if t.status == "complete"]
        assert len(trials) == 4
        for t in trials:
            assert t.result is not None and t.accuracy is not None
            ms = t.result["metrics"]["latency_ms"]
            assert t.reward == pytest.approx(mnasnet_reward(t.accuracy, ms, 1.0, -0.07, -0.07))

    def never(*args: Any) -> Latency:
        raise AssertionError("measured twice")

    monkeypatch.setattr(latency, "measure", never)
    run_search(tmp_path / "b", config, spec=synthetic_spec)  # the same search again: cached
    assert _latencies(tmp_path / "b") == _latencies(tmp_path / "a")


def test_a_resumed_search_finds_the_latency_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after measuring trial 2's latency, before storing it: the resume trains the
    trial again, but takes the latency from the cache."""
    config = _config(tmp_path, name="additive", latency_target_ms=1.0)
    put = LatencyCache.put
    calls: list[str] = []

    def put_then_stop(self: LatencyCache, key: str, value: Latency) -> None:
        put(self, key, value)
        calls.append(key)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(LatencyCache, "put", put_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_search(tmp_path / "run", config, spec=synthetic_spec)
    monkeypatch.setattr(LatencyCache, "put", put)
    measure = latency.measure
    measured: list[Block] = []

    def counted(block: Block, *args: Any) -> Latency:
        measured.append(block)
        return measure(block, *args)

    monkeypatch.setattr(latency, "measure", counted)
    run_search(tmp_path / "run", None, spec=synthetic_spec)
    with Store.open(tmp_path / "run", readonly=True) as store:
        trials = store.trials()
        assert store.counts()["complete"] == 4
        assert trials[1].attempts == 2 and trials[1].status == "complete"
    assert len(measured) == 2  # trials 3 and 4; trial 2's came from the cache


@pytest.mark.slow
def test_latency_through_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    config = _config(tmp_path, name="mnasnet", latency_target_ms=1.0)
    config = merge(config, {"search": {"executor": "ray", "workers": 2}})
    run_search(tmp_path / "run", config, spec=synthetic_spec)
    assert len(_latencies(tmp_path / "run")) == 4


# ----- the command line -------------------------------------------------------------------------


def blockqnn(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "blockqnn", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == code, proc.stderr
    return proc


def test_show_latency() -> None:
    out = blockqnn("show", str(BLOCK), "--latency", "cpu", "--filters", "4", "--json").stdout
    measured = json.loads(out)["latency"]
    assert measured["runtime"] == "cpu" and measured["median_ms"] > 0
    text = blockqnn("show", str(BLOCK), "--latency", "cpu", "--filters", "4").stdout
    assert "ms median at batch 1" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "1,1,3,0,0", "--latency", "tpu"], "choose one of cpu, cuda, onnxruntime"),
        (["show", "1,1,3,0,0", "--latency", "cpu", "--latency-batch", "0"], "--latency-batch"),
        (
            ["search", "--run-dir", "R", "--latency-device", "gpu"],
            "reward.latency_device = 'gpu'",
        ),
        (["search", "--run-dir", "R", "--reward", "mnasnet"], "latency_target_ms = 0"),
        (
            ["search", "--run-dir", "R", "--reward", "additive", "--latency-target-ms", "-1"],
            "reward.latency_target_ms = -1",
        ),
        (
            ["search", "--run-dir", "R", "--space", "nb201", "--latency-device", "cpu"],
            "NSC blocks only",
        ),
        (["train", "R", "--pick", "best", "--out", "O"], "--pick 'best'"),
        (["train", "--block", "1,1,3,0,0", "--pick", "pareto", "--out", "O"], "not --block"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(tmp_path / a) if a in ("R", "O") else a for a in args]
    proc = blockqnn(*args, code=2)
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "R").exists()


def test_cuda_without_a_gpu_is_exit_2(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = blockqnn("show", "1,1,3,0,0", "--latency", "cuda", code=2)
    assert "CUDA is not available" in proc.stderr
    run = str(tmp_path / "run")
    proc = blockqnn("search", "--run-dir", run, "--latency-device", "cuda", code=2)
    assert "CUDA is not available" in proc.stderr


@pytest.mark.slow
def test_digits_search_with_latency_end_to_end(tmp_path: Path) -> None:
    """A real (tiny) digits search with the MnasNet reward, then status, trials, the report
    with its front, and `train --pick`."""
    config = tmp_path / "c.toml"
    config.write_text(
        '[data]\ncache_dir = "' + str(tmp_path / "cache") + '"\n[reward]\n'
        + "".join(f"{k} = {v}\n" for k, v in CHEAP.items())
    )  # fmt: skip
    run = str(tmp_path / "run")
    blockqnn(
        "search", "--config", str(config), "--dataset", "digits", "--budget", "3",
        "--epochs", "1", "--filters", "4", "--train-samples", "300", "--run-dir", run,
        "--reward", "mnasnet", "--latency-target-ms", "1",
    )  # fmt: skip
    status = json.loads(blockqnn("status", run, "--json").stdout)
    assert status["top"] and all(t["latency_ms"] > 0 for t in status["top"])
    assert "latency ms" in blockqnn("status", run).stdout
    header = blockqnn("trials", run, "--csv").stdout.splitlines()[0]
    assert "metric.latency_ms" in header
    pytest.importorskip("matplotlib")
    blockqnn("report", run)
    page = (tmp_path / "run" / "report.html").read_text()
    assert '<section id="accuracy-latency">' in page and 'class="front-block"' in page
    fastest = min(status["top"], key=lambda t: t["latency_ms"])
    out = tmp_path / "final"
    trained = json.loads(
        blockqnn(
            "train", run, "--pick", "pareto:1", "--out", str(out), "--epochs", "1", "--json"
        ).stdout
    )
    assert trained["block"] == fastest["nsc"]
    proc = blockqnn("train", run, "--max-latency-ms", "0.000001", "--out", str(out), code=2)
    assert "no block of the front is that fast" in proc.stderr


def test_report_front_in_headless_chromium(tmp_path: Path) -> None:
    """The report of a run with latencies shows the accuracy-latency plot (it decodes) and
    lists exactly the front's blocks, in a real browser."""
    pytest.importorskip("matplotlib")
    from tests.report.test_report import _CHROMIUM_FLAGS, _PROBE, CHROMIUM, parse

    from blockqnn.report import render_report

    config = merge(_config(tmp_path, latency_device="cpu"), {"search": {"budget": 8}})
    run_search(tmp_path / "run", config, spec=synthetic_spec)
    with Store.open(tmp_path / "run", readonly=True) as store:
        front = pareto_front(store.trials())
    text = render_report(tmp_path / "run")
    assert text.count('class="front-block"') == len(front) >= 1
    for t in front:
        assert t.candidate in text
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    page = tmp_path / "report.html"
    page.write_text(text.replace("<head>", "<head>\n" + _PROBE, 1))
    proc = subprocess.run(
        [CHROMIUM, *_CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p'}", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    section = dom[dom.index('<section id="accuracy-latency">') :]
    section = section[: section.index("</section>")]
    assert section.count('class="front-block"') == len(front)
    start = dom.index('<pre id="probe">') + len('<pre id="probe">')
    state = json.loads(dom[start : dom.index("</pre>", start)].replace("&quot;", '"'))
    assert state["errors"] == ["canary-console"]  # no script or resource errors
    assert state["images"] and all(ok for _, ok in state["images"])  # every plot decodes
    assert parse(dom).tags["img"] == 3  # the learning curve, accuracy-FLOPs, accuracy-latency


@pytest.mark.cuda
def test_cuda_measures(tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    settings = LatencySettings("cuda", batch=4, warmup=2, repeats=5)
    network = latency.deployment_network(_config(tmp_path), (3, 32, 32), 10)
    result = latency.measure(BLOCK, network, settings)
    assert result.median_ms > 0 and result.batch_median_ms > 0 and result.device.startswith("cuda")
    assert latency.settings_of(_config(tmp_path, latency_device="cuda")) is not None
