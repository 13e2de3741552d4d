"""The faster-search figures of `status`, `trials` and the report: rank correlations with
their interval, and a synthetic run with early termination and the pre-screen."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from blockqnn.cli import trials as trials_cli
from blockqnn.cli.status import status
from blockqnn.execute.synthetic import synthetic_spec
from blockqnn.report import faster
from blockqnn.report.faster import correlation, faster_text, rank_interval, spearman
from blockqnn.search import run_search
from blockqnn.settings.config import Config, merge


def test_spearman_with_ties_matches_without_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    x = [1.0, 2.0, 2.0, 3.0, 5.0, 4.0]
    y = [0.1, 0.3, 0.2, 0.4, 0.6, 0.6]
    with_scipy = spearman(x, y)
    monkeypatch.setitem(__import__("sys").modules, "scipy.stats", None)  # import fails
    assert spearman(x, y) == pytest.approx(with_scipy)
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None


def test_interval_by_fisher_z_narrows_with_n() -> None:
    assert rank_interval(0.5, 4) is None
    low, high = rank_interval(0.5, 103) or (0.0, 0.0)
    half = 1.959964 * math.sqrt(1.06 / 100)
    assert (low, high) == pytest.approx(
        (math.tanh(math.atanh(0.5) - half), math.tanh(math.atanh(0.5) + half)),
    )
    wide = rank_interval(0.5, 10) or (0.0, 0.0)
    assert wide[0] < low and wide[1] > high
    assert correlation([1.0, 2.0], [1.0, 2.0]) is None


def test_status_and_trials_show_stops_and_the_prescreen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    search = {"budget": 20, "cache": "off", "agent": "random", "stop_after": 2, "prescreen": 2}
    settings = {"search": search, "train": {"epochs": 4}, "reward": {"name": "accuracy"}}
    config = merge(Config(), settings)
    run_search(tmp_path / "run", config, spec=synthetic_spec)
    info = status(str(tmp_path / "run"))["faster"]
    assert info["stopped"] > 0 and info["prescreen"]["proposals"] == 40
    assert info["partial_vs_reward"]["n"] == 20 - info["stopped"]
    assert info["partial_vs_reward"]["rho"] == pytest.approx(1.0)  # synthetic: 0.8 x full
    assert "stopped early" in faster_text(info)
    trials_cli.run(argparse.Namespace(run_dir=str(tmp_path / "run"), json=False, csv=False))
    assert "metric.stopped_at" in capsys.readouterr().out


def test_a_run_without_either_feature_has_no_figures(tmp_path: Path) -> None:
    config = merge(Config(), {"search": {"budget": 3, "cache": "off"}})
    run_search(tmp_path / "run", config, spec=synthetic_spec)
    assert status(str(tmp_path / "run"))["faster"] is None
    assert faster.faster_summary([]) is None
