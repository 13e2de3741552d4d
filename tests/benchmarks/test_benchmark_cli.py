"""The benchmark scripts' command lines: a bad count is a usage error (exit 2, one line naming
it), not a traceback; `--json` is strict JSON (an interval of one seed is null, not NaN);
the mean's interval uses Student's t for every sample size."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import (
    common,
    faster,
    growth,
    latency,
    packing,
    readers,
    strategies,
    threads,
    trainer,
)

NSC = ["--space", "nsc", "--synthetic", "--workers", "1", "--max-depth", "4"]


@pytest.mark.parametrize(
    ("main", "argv", "named"),
    [
        (strategies.main, [*NSC, "--seeds", "0"], "--seeds"),
        (strategies.main, [*NSC, "--budgets", "8,0"], "--budgets"),
        (strategies.main, [*NSC, "--budgets", "x"], "--budgets"),
        (growth.main, ["extend", "--budget", "100", "--extend-to", "100"], "--extend-to"),
        (growth.main, ["warm", "--seeds", "-1"], "--seeds"),
        (faster.main, ["--seeds", "0"], "--seeds"),
        (latency.main, ["--parts", "x"], "--parts"),
        (latency.main, ["--parts", "a", "--repeats", "0"], "--repeats"),
        (packing.main, ["--workers", "1,x"], "--workers"),
        (packing.main, ["--repeats", "0"], "--repeats"),
        (readers.main, ["--sizes", "100,0"], "--sizes"),
        (readers.main, ["--sizes", "10", "--trained", "20"], "--sizes"),
        (readers.main, ["--readers", "status,nope"], "--readers"),
        (readers.main, ["--compare", "/nonexistent"], "--compare"),
        (threads.main, ["--busy", "-1"], "--busy"),
        (trainer.main, ["--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_counts_are_usage_errors(
    main: Any, argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert named in err[-1] and "error" in err[-1], err


@pytest.mark.parametrize(
    ("setting", "message"),
    [("=1", "expected KEY=VALUE"), ("nope=1", "agent.nope"), ("preset=fast", "preset")],
)
def test_bad_agent_settings_exit_2(
    setting: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert strategies.main([*NSC, "--agent-set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (packing.main, ["--filters", "100000"], "network.filters"),
        (packing.main, ["--dataset", "/nonexistent", "--budget", "2", "--workers", "1",
                        "--repeats", "1"], "/nonexistent"),
        (threads.main, ["--dataset", "/nonexistent", "--repeats", "1"], "/nonexistent"),
    ],
)  # fmt: skip
def test_settings_blockqnn_refuses_are_one_line(
    main: Any, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_one_seed_json_is_strict_and_bare_words_are_strings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*NSC, "--seeds", "1", "--budgets", "6", "--strategies", "qlearning", "--json"]
    assert strategies.main([*argv, "--agent-set", "preset=paper"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert report["agent_settings"] == {"preset": "paper"}
    row = report["results"][0]
    assert row["seeds"] == 1 and row["best_ci95"] is None and row["best_mean"] > 0


def test_dumps_turns_non_finite_figures_into_null() -> None:
    text = common.dumps({"a": [math.nan, 1.0, (math.inf,)], "b": {"c": -math.inf}}, indent=None)
    assert json.loads(text) == {"a": [None, 1.0, [None]], "b": {"c": None}}


def test_interval_uses_students_t_beyond_30() -> None:
    assert strategies.t975(2) == pytest.approx(12.706, abs=1e-3)
    assert strategies.t975(31) == pytest.approx(2.042, abs=1e-3)  # the normal 1.96 was used from 31
    assert strategies.t975(101) == pytest.approx(1.984, abs=1e-3)
    assert math.isnan(strategies.t975(1)) and math.isnan(strategies.ci95([1.0]))
    values = [float(i % 7) for i in range(40)]
    sd = (sum((v - sum(values) / 40) ** 2 for v in values) / 39) ** 0.5
    assert strategies.ci95(values) == pytest.approx(2.0227 * sd / 40**0.5, rel=1e-3)


def test_from_runs_keeps_the_seeds_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed in range(3):
        for setting in faster.SETTINGS:
            (tmp_path / f"{setting}-{seed}").mkdir()
            (tmp_path / f"{setting}-{seed}" / "bench.json").write_text(
                json.dumps({"setting": setting, "seed": seed, "wall": 1.0})
            )
    monkeypatch.setattr(faster, "load_run", lambda d: json.loads((d / "bench.json").read_text()))
    assert {r["seed"] for r in faster.finished_runs(tmp_path)} == {0, 1, 2}
    assert {r["seed"] for r in faster.finished_runs(tmp_path, 2)} == {0, 1}


def test_readers_at_a_tiny_size_times_each_reader(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--sizes", "12,24", "--trained", "8", "--readers", "scan,status,trials", "--json"]
    assert readers.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["rows"], r["reader"]) for r in report["rows"]] == [
        (n, reader) for n in (12, 24) for reader in ("scan", "status", "trials")
    ]
    assert all(r["seconds"] > 0 and r["peak_mb"] > 1 for r in report["rows"])
    assert report["growth"]["status"]["rows"] == 2


def test_readers_builds_runs_of_the_sizes_asked_for(tmp_path: Path) -> None:
    from blockqnn.report.data import stage_means
    from blockqnn.store.db import Store

    runs = readers.build_runs(tmp_path, [30, 10], trained=6, seed=0)
    for size, run in runs.items():
        with Store.open(run, readonly=True) as store:
            counts = store.counts()
            stages = [s.epsilon for s in stage_means(store.trials())]
        assert (counts["complete"], counts["reused"]) == (6, size - 6)
        assert stages[0] == 1.0 and stages[-1] < 1.0  # epsilon stages, as Q-learning's
