"""`blockqnn trials`: every trial as a table, CSV or JSON, from real stores written by the
search loop (synthetic evaluator), and bad input. Also what `blockqnn status` says about the
same runs' strategies (their `info`), with and without an epsilon."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from blockqnn.cli import main
from blockqnn.cli.trials import _csv_value
from blockqnn.evaluate.result import EvalResult
from blockqnn.execute.synthetic import synthetic_spec
from blockqnn.report.trials import trial_rows
from blockqnn.search import run_search
from blockqnn.settings.config import Config, merge
from blockqnn.space.nsc.block import Block
from blockqnn.store.db import DB_NAME, Store, TrialRecord


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Q-learning run with failed and reused trials, and an evolution run."""
    base = tmp_path_factory.mktemp("trials")
    for agent, budget in (("qlearning", 30), ("evolution", 12)):
        # the paper's constants re-propose known blocks: the run then has reused trials
        agent_section = {"preset": "paper"} if agent == "qlearning" else {}
        config = merge(
            Config(), {"search": {"budget": budget, "agent": agent}, "agent": agent_section}
        )
        run_search(base / agent, config, spec=lambda c: synthetic_spec(c, fail_digits="01"))
    return {"qlearning": base / "qlearning", "evolution": base / "evolution"}


def _trials(run: Path) -> list[TrialRecord]:
    with Store.open(run, readonly=True) as store:
        return store.trials()


def _csv(run: Path, capsys: pytest.CaptureFixture[str]) -> tuple[list[str], list[dict[str, str]]]:
    assert main(["trials", str(run), "--csv"]) == 0
    reader = csv.DictReader(io.StringIO(capsys.readouterr().out))
    rows = list(reader)
    assert reader.fieldnames is not None
    return list(reader.fieldnames), rows


def test_csv_has_one_row_per_trial_with_info_and_metric_columns(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    trials = _trials(runs["qlearning"])
    statuses = {t.status for t in trials}
    assert {"complete", "failed", "reused"} <= statuses  # the fixture covers every kind
    names, rows = _csv(runs["qlearning"], capsys)
    assert names[:5] == ["id", "status", "candidate", "hash", "reward"]
    assert {"info.epsilon", "metric.flops_ref", "reuse_of", "train_seconds"} <= set(names)
    assert {"created", "started", "finished", "attempts", "error"} <= set(names)
    assert len(rows) == len(trials)
    for row, t in zip(rows, trials, strict=True):
        assert (int(row["id"]), row["status"], row["candidate"]) == (t.id, t.status, t.candidate)
        assert Block.parse(row["candidate"]).hash == row["hash"] == t.hash
        assert float(row["reward"]) == t.reward  # full precision: the exact stored value
        assert float(row["info.epsilon"]) == t.info["epsilon"]
        # ISO 8601 in UTC, to the millisecond
        created = datetime.fromisoformat(row["created"].replace("Z", "+00:00"))
        assert created.tzinfo == timezone.utc and row["created"].endswith("Z")
        assert abs(created.timestamp() - t.created) < 0.001
        if t.status == "reused":
            assert int(row["reuse_of"]) == t.reuse_of and row["train_seconds"] == ""
        else:
            assert row["reuse_of"] == "" and row["train_seconds"] != ""
        if t.status == "failed":
            assert row["error"] == "synthetic failure" and row["metric.flops_ref"] == ""
        else:
            assert float(row["metric.flops_ref"]) > 0


def test_columns_are_the_union_of_keys_and_missing_values_are_empty() -> None:
    def record(i: int, info: dict[str, object], metrics: dict[str, float]) -> TrialRecord:
        result = {"status": "ok", "train_seconds": 1.5, "metrics": metrics}
        return TrialRecord(
            id=i, hash=f"h{i}", candidate="1,7,0,0,0", status="complete", reward=0.5,
            accuracy=0.5, flops=1, params=1, density=1.0, result=result, worker="w",
            attempts=1, lost=0, error="", reuse_of=None, info=info, ask_seq=i, tell_seq=i + 1,
            created=1.0, started=2.0, finished=3.0,
        )  # fmt: skip

    names, rows = trial_rows(
        [record(1, {"epsilon": 1.0}, {"latency_ms": 2.0}), record(2, {"population": 3}, {})]
    )
    assert names[9:13] == ["metric.latency_ms", "info.epsilon", "info.population", "reuse_of"]
    assert rows[0]["info.population"] is None and rows[1]["info.epsilon"] is None
    assert rows[1]["metric.latency_ms"] is None and rows[0]["train_seconds"] == 1.5
    assert rows[0]["started"] == "1970-01-01T00:00:02.000Z"
    assert all(list(row) == names for row in rows)


def test_a_cache_hit_trained_nothing_in_this_run(tmp_path: Path) -> None:
    from blockqnn.report.data import read_run

    config = merge(Config(), {"search": {"budget": 2}, "data": {"cache_dir": str(tmp_path)}})
    cache = {"search": {"cache": str(tmp_path / "cache")}}
    for name in ("first", "second"):  # the second run finds both results in the cache
        run_search(tmp_path / name, merge(config, cache), spec=lambda c: synthetic_spec(c, 0.01))
    first, second = _trials(tmp_path / "first"), _trials(tmp_path / "second")
    assert all(t.worker.startswith("cache: ") for t in second)
    _, rows = trial_rows(second)
    assert [row["train_seconds"] for row in rows] == [None, None]
    assert first[0].result is not None
    assert trial_rows(first)[1][0]["train_seconds"] == first[0].result["train_seconds"] > 0
    assert read_run(tmp_path / "second").median_train_seconds is None


def test_json_is_a_list_of_objects_with_the_csv_columns(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    names, rows = _csv(runs["evolution"], capsys)
    assert main(["trials", str(runs["evolution"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, list) and len(data) == len(rows) == len(_trials(runs["evolution"]))
    assert all(list(obj) == names for obj in data)
    assert "info.population" in names and "info.epsilon" not in names  # evolution's own info
    assert [obj["id"] for obj in data] == [int(r["id"]) for r in rows]
    assert all(isinstance(obj["info.population"], int) for obj in data)


def _whole_table(trials: list[TrialRecord]) -> tuple[str, str]:
    """The CSV and JSON of `trials` written at once from `trial_rows`, as `trials` wrote them
    before it streamed: every field through `_csv_value`, one `json.dump` of the list."""
    names, rows = trial_rows(trials)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([_csv_value(row[n]) for n in names] for row in rows)
    whole = io.StringIO()
    json.dump(rows, whole, indent=1)
    return text.getvalue(), whole.getvalue() + "\n"


def test_rows_written_as_they_are_read_are_the_whole_tables_bytes(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "odd"  # values the csv module does not write as they are: a dict, a list
    with Store.create(odd, Config()) as store:
        store.acquire()
        info = {"epsilon": 0.5, "prescreen": {"score": 1.5, "seconds": 0.25}, "tags": [1, "a"]}
        trial_id = store.add_trial(Block.parse("1,1,3,0,0; 2,7,0,0,0"), info)
        result = EvalResult("ok", 0.5, 0.5, metrics={"big": 1e300, "whole": 3.0})
        store.finish(trial_id, result, float("-inf"), "w0", 2)
        store.add_reused(Block.parse("1,1,3,0,0; 2,7,0,0,0"), {}, store.trial(1), 3, 4)
    for run in (*runs.values(), odd):
        text, whole = _whole_table(_trials(run))
        assert main(["trials", str(run), "--csv"]) == 0
        assert capsys.readouterr().out == text
        assert main(["trials", str(run), "--json"]) == 0
        assert capsys.readouterr().out == whole
    empty = tmp_path / "empty"
    Store.create(empty, Config()).close()
    assert main(["trials", str(empty), "--json"]) == 0
    assert capsys.readouterr().out == "[]\n"


@pytest.mark.parametrize("form", ["--csv", "--json"])
def test_damage_in_the_last_row_writes_no_row(
    runs: dict[str, Path], tmp_path: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows are written as they are read, after a first pass has verified every one."""
    run = tmp_path / "run"
    shutil.copytree(runs["evolution"], run)
    conn = sqlite3.connect(run / DB_NAME)
    conn.execute("UPDATE trials SET reward = 0.5 WHERE id = (SELECT MAX(id) FROM trials)")
    conn.commit()
    conn.close()
    assert main(["trials", str(run), form]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "does not match its checksum" in captured.err


def test_default_output_is_a_table(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trials", str(runs["qlearning"])]) == 0
    out = capsys.readouterr().out
    trials = _trials(runs["qlearning"])
    assert f"{len(trials)} trials" in out and "info.epsilon" in out
    assert trials[-1].candidate in out


def test_a_running_search_is_read_without_disturbing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store.create(tmp_path / "live", Config())
    try:
        store.acquire()  # a search holds the run
        store.add_trial(Block.parse("1,1,3,0,0; 2,7,0,0,0"), {"epsilon": 1.0})
        before = (tmp_path / "live" / DB_NAME).read_bytes()
        _, rows = _csv(tmp_path / "live", capsys)
        assert [(r["status"], r["reward"], r["finished"]) for r in rows] == [("running", "", "")]
        assert (tmp_path / "live" / DB_NAME).read_bytes() == before
    finally:
        store.close()


def test_both_formats_at_once_is_bad_input(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["trials", str(runs["qlearning"]), "--json", "--csv"])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "not allowed with argument" in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_a_directory_that_is_not_a_run_is_bad_input(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / kind
    if kind == "empty":
        target.mkdir()
    elif kind == "file":
        target.write_text("not a run")
    assert main(["trials", str(target), "--csv"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert (
        captured.err.startswith("blockqnn trials: error: ") and "not a blockqnn run" in captured.err
    )


def test_status_reports_the_strategy_info_and_the_space(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    for agent, key in (("qlearning", "epsilon"), ("evolution", "population")):
        run = runs[agent]
        last = _trials(run)[-1]
        assert main(["status", str(run), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert "epsilon" not in info and info["info"] == last.info and key in info["info"]
        assert info["space"] == "nsc" and info["agent"] == agent
        assert info["top"] and info["top"][0]["candidate"] == info["top"][0]["nsc"]
        failures = info["recent_failures"]
        assert all(set(f) == {"id", "candidate", "error"} for f in failures)
        assert main(["status", str(run)]) == 0
        out = capsys.readouterr().out
        assert f"agent {agent}, {key} {last.info[key]:g}" in out
        assert ("epsilon" in out) == (agent == "qlearning")
