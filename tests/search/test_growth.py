"""Growing a search: extending a finished run, warm-starting from earlier runs, and the
evaluation cache shared by runs (in process with the synthetic evaluator, and through the
CLI on a small NAS-Bench-201 table)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from tests.search.test_search import InterruptingExecutor
from tests.strategies import write_nb201_table

from blockqnn.cli import main
from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.result import EvalResult
from blockqnn.execute.synthetic import synthetic_spec
from blockqnn.files import user_cache_dir
from blockqnn.search import run_search
from blockqnn.search.resume import progress
from blockqnn.settings.config import Config, merge
from blockqnn.space.base import make_space
from blockqnn.store.cache import CACHE_FILE, EvalCache, fingerprint
from blockqnn.store.db import COMPLETE, REUSED, Store, is_warm
from blockqnn.strategy import make_strategy


def _config(budget: int, **search: Any) -> Config:
    return merge(
        Config(),
        {
            "search": {"budget": budget, **search},
            "agent": {"iteration_size": 4, "replay_size": 8},
        },
    )


def _spec(c: Config) -> Any:
    return synthetic_spec(c)


def _trace(run: Path) -> list[tuple[str, str, float | None, dict[str, Any]]]:
    with Store.open(run, readonly=True) as s:
        return [(t.candidate, t.status, t.reward, t.info) for t in s.trials()]


def _files(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()}


# ----- extend ------------------------------------------------------------------------------------


def test_extend_continues_at_the_final_epsilon_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blockqnn.search.loop.SNAPSHOT_EVERY", 3)
    config = _config(10, cache="off")
    first = _trace(_run(tmp_path / "short", config))
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for run in (straight, stopped):
        run_search(run, config, spec=_spec)
    run_search(straight, None, spec=_spec, resume_overrides={"budget": 16})
    with pytest.raises(KeyboardInterrupt):  # stopped mid-extension, then resumed
        run_search(
            stopped,
            None,
            spec=_spec,
            resume_overrides={"budget": 16},
            executor_factory=lambda s: InterruptingExecutor(s, 3),
        )
    run_search(stopped, None, spec=_spec)  # the stored budget is now 16
    extended = _trace(straight)
    assert extended == _trace(stopped)
    assert extended[: len(first)] == first  # the first 10 blocks are untouched
    with Store.open(straight, readonly=True) as s:
        assert s.config().search.budget == 16
        assert s.schedule_budget() == 10
        assert s.counts()["trained"] == 16
        later = [t.info["epsilon"] for t in s.trials() if t.id > len(first)]
    final = first[-1][3]["epsilon"]
    assert later and all(e == final for e in later)


def _run(run: Path, config: Config) -> Path:
    run_search(run, config, spec=_spec)
    return run


def test_the_progress_a_resume_compares_follows_every_ask_and_tell(tmp_path: Path) -> None:
    """`progress` (a digest, not the rows: a long run has hundreds of thousands) tells the
    store a resume checked from one another search has worked on since."""
    run = _run(tmp_path / "run", _config(6, cache="off"))
    with Store.open(run, readonly=True) as s:
        before = progress(s)
        assert progress(s) == before and isinstance(before[0], str)
    run_search(run, None, spec=_spec, resume_overrides={"budget": 7})
    with Store.open(run, readonly=True) as s:
        assert progress(s) != before


def test_a_smaller_budget_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", _config(6, cache="off"))
    before = _files(run)
    with pytest.raises(BlockQNNError, match="below the run's budget of 6"):
        run_search(run, None, spec=_spec, resume_overrides={"budget": 5})
    assert _files(run) == before


def test_extend_through_the_cli_on_the_nb201_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = write_nb201_table(tmp_path / "t.csv.gz")
    run = tmp_path / "run"
    args = ["--space", "nb201", "--table", str(table), "--dataset", "cifar10"]
    assert main(["search", *args, "--budget", "12", "--run-dir", str(run), "--json"]) == 0
    assert main(["search", "--resume", str(run), "--budget", "20", "--json"]) == 0
    with Store.open(run, readonly=True) as s:
        assert s.counts()["trained"] == 20
    capsys.readouterr()
    assert main(["search", "--resume", str(run), "--budget", "8"]) == 2
    assert "can be extended, not shortened" in capsys.readouterr().err


# ----- warm start --------------------------------------------------------------------------------


def test_warm_start_tells_every_completed_trial_outside_the_budget(tmp_path: Path) -> None:
    source = _run(tmp_path / "random", _config(8, agent="random", cache="off"))
    run = tmp_path / "q"
    summary = run_search(run, _config(8, cache="off", seed=1), spec=_spec, warm_start=[str(source)])
    assert summary.warm == 8
    with Store.open(source, readonly=True) as s:
        complete = {t.hash: t for t in s.trials(COMPLETE)}
    with Store.open(run, readonly=True) as s:
        trials = s.trials()
        assert s.counts()["trained"] == 8  # warm-start trials are not in the budget
    warm = [t for t in trials if is_warm(t)]
    assert [t.hash for t in warm] == list(complete)  # in the source's order
    assert all(t.ask_seq == 0 and t.status == REUSED for t in warm)
    assert {t.info["warm_start"] for t in warm} == {str(source.resolve())}
    assert all(t.reward == complete[t.hash].reward for t in warm)
    # a later proposal of a warm-start block is reused, not trained again
    reused = [t for t in trials if t.status == REUSED and not is_warm(t)]
    assert all(t.reuse_of in {w.id for w in warm} for t in reused if t.hash in complete)
    trained = {t.hash for t in trials if t.trained}
    assert not trained & set(complete)


def test_a_warm_started_run_resumes_exactly(tmp_path: Path) -> None:
    source = _run(tmp_path / "random", _config(8, agent="random", cache="off"))
    config = _config(10, cache="off", seed=2)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_search(straight, config, spec=_spec, warm_start=[source])
    with pytest.raises(KeyboardInterrupt):
        run_search(
            stopped,
            config,
            spec=_spec,
            warm_start=[source],
            executor_factory=lambda s: InterruptingExecutor(s, 4),
        )
    run_search(stopped, None, spec=_spec)
    assert _trace(stopped) == _trace(straight)


def test_a_run_stopped_while_telling_its_warm_start_tells_it_on_resume(tmp_path: Path) -> None:
    """The run exists before its warm-start trials are recorded (one transaction): a stop
    in between leaves no trial, and the resume tells the recorded warm start as a new run."""
    source = _run(tmp_path / "src", _config(16, cache="off"))
    config = _config(8, cache="off", seed=1)
    told = {"n": 0}

    def interrupted(c: Config) -> Any:
        strategy = make_strategy(
            c.search.agent, make_space(c), c.search.budget, c.search.seed, c.agent
        )
        tell = strategy.tell

        def stop_at_the_tenth(candidate: Any, reward: float) -> None:
            told["n"] += 1
            if told["n"] == 10:  # Ctrl-C while the warm trials are told
                raise KeyboardInterrupt
            tell(candidate, reward)

        strategy.tell = stop_at_the_tenth  # type: ignore[method-assign]
        return strategy

    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        run_search(stopped, config, spec=_spec, warm_start=[source], agent_factory=interrupted)
    with Store.open(stopped, readonly=True) as s:
        assert s.trials() == []
    run_search(stopped, None, spec=_spec)
    straight = tmp_path / "straight"
    run_search(straight, config, spec=_spec, warm_start=[source])
    assert _trace(stopped) == _trace(straight)
    assert any(status == REUSED and "warm_start" in info for _, status, _, info in _trace(stopped))


def test_warm_start_refuses_other_settings_unless_told(tmp_path: Path) -> None:
    source = _run(tmp_path / "src", _config(4, cache="off"))
    other = merge(_config(4, cache="off"), {"train": {"epochs": 3}, "network": {"filters": 8}})
    with pytest.raises(BlockQNNError) as info:
        run_search(tmp_path / "a", other, spec=_spec, warm_start=[source])
    assert "network.filters = 32 (here 8)" in str(info.value)
    assert "train.epochs = 12 (here 3)" in str(info.value)
    assert not (tmp_path / "a").exists()  # refused before the run was created
    summary = run_search(
        tmp_path / "b", other, spec=_spec, warm_start=[source], warm_start_any=True
    )
    assert summary.warm == 4
    with Store.open(tmp_path / "b", readonly=True) as s:
        warm = [t for t in s.trials() if is_warm(t)]
        assert warm and all(t.info["exact"] is False for t in warm)
        # results of other settings are told, but their blocks are trained again here
        assert all(t.reuse_of is None for t in s.trials() if t.status == REUSED)


def test_an_early_stopped_source_result_is_told_but_not_taken_as_exact(tmp_path: Path) -> None:
    """A stopped candidate's accuracy is a prediction under the source's threshold: a run
    without early termination trains that block again if it is proposed."""
    source = _run(tmp_path / "src", _config(30, agent="random", seed=5, stop_after=2, cache="off"))
    with Store.open(source, readonly=True) as s:
        complete = [(t.hash, t.result) for t in s.trials(COMPLETE) if t.result is not None]
        stopped = {h for h, result in complete if "stopped_at" in result["metrics"]}
    assert stopped  # the threshold stopped some
    run = tmp_path / "new"
    run_search(
        run, _config(30, agent="random", seed=5, cache="off"), spec=_spec, warm_start=[source]
    )
    with Store.open(run, readonly=True) as s:
        trials = s.trials()
    warm = {t.id: t for t in trials if is_warm(t)}
    assert all(t.info["exact"] is (t.hash not in stopped) for t in warm.values())
    reused = [t for t in trials if t.status == REUSED and not is_warm(t)]
    assert reused  # the same seed proposes the source's blocks again
    assert not [t for t in reused if t.reuse_of in warm and warm[t.reuse_of].hash in stopped]
    assert {t.hash for t in trials if t.trained} & stopped  # those were trained instead


def test_a_later_sources_exact_result_replaces_an_earlier_inexact_one(tmp_path: Path) -> None:
    other = _run(tmp_path / "other", merge(_config(6, cache="off"), {"train": {"epochs": 3}}))
    same = _run(tmp_path / "same", _config(6, cache="off"))  # the same seed: the same blocks
    run = tmp_path / "new"
    run_search(
        run, _config(4, cache="off"), spec=_spec, warm_start=[other, same], warm_start_any=True
    )
    with Store.open(same, readonly=True) as s:
        exact = {t.hash for t in s.trials(COMPLETE)}
    with Store.open(run, readonly=True) as s:
        warm = [t for t in s.trials() if is_warm(t)]
    assert exact and {t.hash for t in warm} >= exact
    assert all(t.info["exact"] and t.info["warm_start"] == str(same.resolve())
               for t in warm if t.hash in exact)  # fmt: skip


def test_warm_start_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = write_nb201_table(tmp_path / "t.csv.gz")
    nb = ["--space", "nb201", "--table", str(table), "--dataset", "cifar10", "--budget", "4"]
    assert main(["search", *nb, "--run-dir", str(tmp_path / "nb")]) == 0
    capsys.readouterr()
    cases = [
        (["--dataset", "digits", "--budget", "4"], tmp_path / "nb", "searched the 'nb201' space"),
        (nb, tmp_path, "not a blockqnn run"),
        (nb, tmp_path / "missing", "does not exist"),
    ]
    for args, source, message in cases:
        run = tmp_path / "new"
        assert main(["search", *args, "--run-dir", str(run), "--warm-start", str(source)]) == 2
        assert message in capsys.readouterr().err
        assert not run.exists()
    before = _files(tmp_path / "nb")
    itself = [
        "search",
        *nb,
        "--run-dir",
        str(tmp_path / "nb"),
        "--warm-start",
        str(tmp_path / "nb"),
    ]
    assert main(itself) == 2
    assert "is this run itself" in capsys.readouterr().err
    assert _files(tmp_path / "nb") == before
    resumed = ["search", "--resume", str(tmp_path / "nb"), "--warm-start", str(tmp_path / "nb")]
    assert main(resumed) == 2
    assert "applies to a new run" in capsys.readouterr().err


def test_warm_start_from_a_random_run_on_the_nb201_table(tmp_path: Path) -> None:
    table = write_nb201_table(tmp_path / "t.csv.gz")
    nb = ["--space", "nb201", "--table", str(table), "--dataset", "cifar10", "--budget", "30"]
    source, run = tmp_path / "random", tmp_path / "q"
    assert main(["search", *nb, "--agent", "random", "--run-dir", str(source), "--json"]) == 0
    assert main(["search", *nb, "--run-dir", str(run), "--warm-start", str(source)]) == 0
    with Store.open(run, readonly=True) as s:
        assert sum(is_warm(t) for t in s.trials()) == 30
        assert s.counts()["trained"] == 30


# ----- the evaluation cache ----------------------------------------------------------------------


def test_a_second_identical_search_takes_every_result_from_the_cache(tmp_path: Path) -> None:
    config = _config(8, cache=str(tmp_path / "cache"))
    first = run_search(tmp_path / "one", config, spec=_spec)
    assert first.cached == 0
    second = run_search(tmp_path / "two", config, spec=_spec)
    assert second.cached == second.trained == 8
    assert _trace(tmp_path / "two") == _trace(tmp_path / "one")
    with Store.open(tmp_path / "two", readonly=True) as s:
        sources = {t.worker for t in s.trials() if t.trained}
    assert all(w.startswith(f"cache: {(tmp_path / 'one').resolve()} trial ") for w in sources)
    other = merge(config, {"train": {"epochs": 3}})  # other settings: trained again
    assert run_search(tmp_path / "three", other, spec=_spec).cached == 0


def test_an_extended_search_counts_the_cache_hits_of_every_session(tmp_path: Path) -> None:
    """The summary's `cached` is out of `trained`, which counts the whole run: so must it,
    and the training time saved with it."""

    def spec(c: Config) -> Any:
        return synthetic_spec(c, 0.01)  # each evaluation "trains" 0.01 s

    config = _config(4, cache=str(tmp_path / "cache"))
    for run in ("one", "two"):  # "two" proposes what "one" trained, extension included
        first = run_search(tmp_path / run, config, spec=spec)
        longer = run_search(tmp_path / run, None, spec=spec, resume_overrides={"budget": 8})
    assert first.cached == 4
    assert longer.cached == longer.trained == 8
    assert longer.saved_seconds == pytest.approx(8 * 0.01)


def test_a_data_file_of_the_same_name_elsewhere_or_rewritten_is_other_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run stores the data's absolute path, and the cache keys what the file holds:
    `d.npz` in another folder, or rewritten, never takes the first file's results."""
    config = _config(4, cache=str(tmp_path / "cache"), agent="random")
    config = merge(config, {"data": {"dataset": "d.npz"}})
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "d.npz").write_bytes(b"data of " + name.encode())
    monkeypatch.chdir(tmp_path / "a")
    assert run_search(tmp_path / "one", config, spec=_spec).cached == 0
    with Store.open(tmp_path / "one", readonly=True) as s:
        assert s.config().data.dataset == str(tmp_path / "a" / "d.npz")
    assert run_search(tmp_path / "two", config, spec=_spec).cached == 4  # the same file
    monkeypatch.chdir(tmp_path / "b")
    assert run_search(tmp_path / "three", config, spec=_spec).cached == 0  # another file
    monkeypatch.chdir(tmp_path / "a")
    (tmp_path / "a" / "d.npz").write_bytes(b"new data, regenerated")
    assert run_search(tmp_path / "four", config, spec=_spec).cached == 0  # rewritten


def test_no_cache_reads_and_writes_nothing(tmp_path: Path) -> None:
    run_search(tmp_path / "one", _config(4), spec=_spec)  # the default: the user cache dir
    assert (user_cache_dir() / CACHE_FILE).is_file()
    assert str(user_cache_dir()).startswith(str(tmp_path))  # conftest: never the home dir
    off = run_search(tmp_path / "two", _config(4, cache="off"), spec=_spec)
    assert off.cached == 0


def test_a_damaged_cache_is_set_aside_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / CACHE_FILE).write_bytes(b"not a database at all" * 100)
    summary = run_search(tmp_path / "run", _config(4, cache=str(folder)), spec=_spec)
    assert summary.trained == 4
    assert "is damaged" in caplog.text
    aside = list(folder.glob(f"{CACHE_FILE}.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database")
    cache = EvalCache.open(folder)  # the new cache holds this run's results
    assert cache.count() == 4
    cache.close()


def test_a_busy_cache_is_skipped_for_the_run_never_set_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache another search holds locked past the wait is fine: the run goes without it,
    and the file (other searches' results) stays where it is."""
    folder = tmp_path / "cache"
    run_search(tmp_path / "one", _config(4, cache=str(folder)), spec=_spec)
    monkeypatch.setattr("blockqnn.store.cache.BUSY_TIMEOUT", 0.1)
    holder = sqlite3.connect(folder / CACHE_FILE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the wait
    try:
        summary = run_search(tmp_path / "two", _config(4, cache=str(folder)), spec=_spec)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert summary.trained == 4 and summary.cached == 0
    assert "evaluation cache disabled for this run: database is locked" in caplog.text
    assert not list(folder.glob("*.damaged-*"))
    cache = EvalCache.open(folder)
    assert cache.count() == 4  # the first run's results, untouched
    cache.close()


def test_a_cache_path_that_is_a_file_exits_2_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = write_nb201_table(tmp_path / "t.csv.gz")
    nb = ["--space", "nb201", "--table", str(table), "--dataset", "cifar10", "--budget", "4"]
    (tmp_path / "afile").write_text("x")
    run = tmp_path / "run"
    assert main(["search", *nb, "--run-dir", str(run), "--cache", str(tmp_path / "afile")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not run.exists()
    unwritable = "/proc/blockqnn-cache"  # cannot be created, whoever runs the test
    assert main(["search", *nb, "--run-dir", str(run), "--cache", unwritable]) == 2
    assert "cannot create the folder" in capsys.readouterr().err
    assert not run.exists()


def test_two_caches_open_on_one_file_share_results(tmp_path: Path) -> None:
    a, b = EvalCache.open(tmp_path), EvalCache.open(tmp_path)
    result = EvalResult("ok", accuracy=0.5, train_seconds=2.0)
    a.put("h1", "f", result, "run-a", 1)
    b.put("h1", "f", EvalResult("ok", accuracy=0.9), "run-b", 7)  # the first stays
    hit = b.get("h1", "f")
    assert hit is not None and hit.result.accuracy == 0.5 and hit.source == "cache: run-a trial 1"
    assert b.saved_seconds == 2.0
    assert a.get("h1", "other") is None
    a.put("h2", "f", EvalResult.failed("out of memory"), "run-a", 2)  # failures: not kept
    assert a.get("h2", "f") is None and a.count() == 1
    a.close()
    b.close()
    with sqlite3.connect(tmp_path / CACHE_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_fingerprint_covers_evaluation_settings_only() -> None:
    base = Config()
    assert fingerprint(merge(base, {"search": {"seed": 5, "workers": 2}})) == fingerprint(base)
    assert fingerprint(merge(base, {"data": {"cache_dir": "/x"}})) == fingerprint(base)
    assert fingerprint(merge(base, {"train": {"threads": "1"}})) == fingerprint(base)
    # read from the data (which the data keys decide); older runs stored the default there
    shape = {"network": {"input_shape": [1, 8, 8], "num_classes": 3}}
    assert fingerprint(merge(base, shape)) == fingerprint(base)
    for change in (
        {"train": {"epochs": 3}},
        {"network": {"filters": 8}},
        {"data": {"train_samples": 100}},
        {"reward": {"mu": 0.02}},
        {"search": {"space": "nb201"}},
    ):
        assert fingerprint(merge(base, change)) != fingerprint(base), change


# ----- end to end on digits ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_digits_cache_extend_and_warm_start_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real training: a second identical search trains nothing, an extension trains only
    the extra block, a warm start tells the first run's results before its first ask."""
    digits = ["--dataset", "digits", "--epochs", "1", "--filters", "4", "--train-samples", "150"]
    cache = ["--cache", str(tmp_path / "cache")]
    one, two, warm = tmp_path / "one", tmp_path / "two", tmp_path / "warm"
    assert main(["search", *digits, *cache, "--budget", "2", "--run-dir", str(one)]) == 0
    capsys.readouterr()
    assert main(["search", *digits, *cache, "--budget", "2", "--run-dir", str(two)]) == 0
    out = capsys.readouterr().out
    assert "evaluation cache: 2 of 2 trained results came from the cache" in out
    assert _trace(two) == _trace(one)
    assert main(["search", "--resume", str(two), "--budget", "3", "--json"]) == 0
    with Store.open(two, readonly=True) as s:
        assert s.counts()["trained"] == 3 and s.schedule_budget() == 2
    args = ["--budget", "1", "--no-cache", "--run-dir", str(warm), "--warm-start", str(one)]
    assert main(["search", *digits, "--seed", "5", *args]) == 0
    assert "warm start: 2 trials of earlier runs" in capsys.readouterr().out
    with Store.open(warm, readonly=True) as s:
        assert s.counts()["trained"] == 1
        assert sum(is_warm(t) for t in s.trials()) == 2


def test_a_cache_that_fails_while_in_use_is_disabled_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EvalCache.open(tmp_path)
    cache.put("h", "f", EvalResult("ok", accuracy=0.5), "run", 1)
    assert cache._conn is not None
    cache._conn.close()  # as a file gone bad under a running search: every call now fails
    assert cache.get("h", "f") is None
    assert not cache.enabled and "disabled for this search" in caplog.text
    cache.put("h2", "f", EvalResult("ok"), "run", 2)  # a no-op now, no error


def test_another_evaluator_never_shares_cached_results(tmp_path: Path) -> None:
    config = _config(6, cache=str(tmp_path / "cache"))
    run_search(tmp_path / "one", config, spec=_spec)
    failing = run_search(
        tmp_path / "two", config, spec=lambda c: synthetic_spec(c, fail_digits="0")
    )
    assert failing.cached == 0
    assert fingerprint(config) != fingerprint(config, "tests.synthetic")
