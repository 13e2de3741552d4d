"""`blockqnn search` and `blockqnn status`: bad input, output, and a real search on digits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import blockqnn.execute.base as ex
from blockqnn.cli import main
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.store.db import DB_NAME, Store
from blockqnn.train import threads


@pytest.fixture
def synthetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the early-stop evaluator (and its data) with the instant synthetic one."""
    monkeypatch.setattr(ex, "default_evaluator", lambda c, d, dev: SyntheticEvaluator(c))
    monkeypatch.setattr(ex, "load_data", lambda c: None)


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


@pytest.fixture
def finished_run(tmp_path: Path, synthetic: None, capsys: pytest.CaptureFixture[str]) -> Path:
    run = tmp_path / "run"
    assert main(["search", "--run-dir", str(run), "--budget", "4", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "[4/4]" in out and "best blocks" in out  # plain lines: stdout is not a terminal
    return run


def test_search_then_status_json(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(finished_run), "--json", "--top", "2"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["budget"], info["trained"], info["running"], info["failed"]) == (4, 4, 0, 0)
    assert {"reused", "info", "evaluations_per_hour", "elapsed_seconds"} <= set(info)
    assert len(info["top"]) == 2
    assert info["top"][0]["reward"] >= info["top"][1]["reward"]
    assert {"nsc", "hash", "reward", "accuracy"} <= set(info["top"][0])
    assert main(["status", str(finished_run)]) == 0
    assert "4/4 trained" in capsys.readouterr().out


def test_json_summary_and_saved_config(
    tmp_path: Path, synthetic: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[search]\nbudget = 3\nagent = "random"\n[train]\nepochs = 2\n')
    run = tmp_path / "run"
    argv = ["search", "--run-dir", str(run), "--config", str(config), "--epochs", "1"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trained"] == 3 and len(summary["top"]) == 3
    with Store.open(run, readonly=True) as store:
        saved = store.config()
    assert (saved.search.agent, saved.search.budget, saved.train.epochs) == ("random", 3, 1)


def test_a_run_dir_holding_a_run_is_refused_unchanged(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(finished_run)
    assert main(["search", "--run-dir", str(finished_run), "--budget", "9"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and err.count("\n") == 1
    assert _snapshot(finished_run) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "3"], "--epochs cannot change"),
        (["--budget", "2"], "a search can be extended, not shortened"),
        (["--address", "127.0.0.1:1", "--executor", "ray"], "cannot reach a Ray cluster"),
    ],
)
def test_resume_refuses_changes_and_bad_clusters_unchanged(
    finished_run: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    pytest.importorskip("ray")
    capsys.readouterr()
    before = _snapshot(finished_run)
    assert main(["search", "--resume", str(finished_run), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert _snapshot(finished_run) == before


def test_resume_of_a_ray_run_without_ray_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from blockqnn.settings.config import Config, merge

    run = tmp_path / "ray-run"
    Store.create(run, merge(Config(), {"search": {"executor": "ray"}})).close()
    before = _snapshot(run)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["search", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'blockqnn[ray]'" in err and err.count("\n") == 1
    assert _snapshot(run) == before


def test_resume_of_a_finished_run_is_a_no_op(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", "--resume", str(finished_run)]) == 0
    with Store.open(finished_run, readonly=True) as store:
        assert store.counts()["trained"] == 4


def test_top_sets_the_blocks_listed_after_the_search_and_in_its_json(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resume = ["search", "--resume", str(finished_run)]
    assert main([*resume, "--top", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["top"]) == 2
    assert main([*resume, "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "best blocks" in table and "reused" in table
    with Store.open(finished_run, readonly=True) as store:
        listed = [t for t in store.trials() if f" {t.candidate}" in table]
    assert len(listed) == 3
    assert main([*resume, "--top", "-1"]) == 2
    assert "--top" in capsys.readouterr().err


def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, synthetic: None, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / DB_NAME).write_bytes(b"garbage" * 1000)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[search]\nbugdet = 3\n")
    cases = [
        (["search", "--resume", str(tmp_path / "missing")], "does not exist"),
        (["search", "--resume", str(corrupt)], "corrupt or not a database"),
        (["search", "--run-dir", str(tmp_path / "r1"), "--config", str(bad_toml)], "bugdet"),
        (["search", "--run-dir", str(tmp_path / "r2"), "--budget", "0"], "budget"),
        (["status", str(tmp_path / "missing")], "does not exist"),
    ]
    import torch

    if not torch.cuda.is_available():
        cases.append(
            (["search", "--run-dir", str(tmp_path / "r3"), "--gpus-per-trial", "1"], "no GPU")
        )
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert "valid: " in _last_error(bad_toml, tmp_path, capsys)
    assert (corrupt / DB_NAME).read_bytes() == b"garbage" * 1000
    for name in ("r1", "r2", "r3"):
        assert not (tmp_path / name / DB_NAME).exists()


def _last_error(toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    main(["search", "--run-dir", str(tmp_path / "r4"), "--config", str(toml)])
    return capsys.readouterr().err


@pytest.mark.slow
def test_real_search_on_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("blockqnn.evaluate.early_stop")
    run = tmp_path / "run"
    argv = ["search", "--run-dir", str(run), "--dataset", "digits", "--budget", "3"]
    argv += ["--epochs", "1", "--filters", "4", "--train-samples", "200", "--device", "cpu"]
    assert main(argv) == 0
    with Store.open(run, readonly=True) as store:
        trained = [t for t in store.trials() if t.trained]
        assert len(trained) == 3
        best = store.top(1)
        assert best and 0.0 <= (best[0].accuracy or 0) <= 1.0
        assert best[0].result is not None and best[0].result["epochs"] == 1


def test_a_search_whose_every_candidate_fails_is_a_failed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A huge learning rate makes every real evaluation diverge: each is a recorded failure,
    # the search finishes its budget, and the command says so with exit code 1.
    config = tmp_path / "huge.toml"
    config.write_text("[train]\nlr = 1e6\n")
    run = tmp_path / "run"
    argv = ["search", "--run-dir", str(run), "--dataset", "digits", "--budget", "2"]
    argv += ["--epochs", "1", "--filters", "4", "--device", "cpu"]  # 5 steps: enough to diverge
    assert main([*argv, "--config", str(config)]) == 1
    assert "every one of the 2 evaluations failed" in capsys.readouterr().err
    with Store.open(run, readonly=True) as store:
        assert [t.status for t in store.trials()] == ["failed", "failed"]
    assert main(["status", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["failed"] == 2 and info["top"] == []
    assert all("diverged" in f["error"] for f in info["recent_failures"])


def test_a_damaged_trials_table_is_refused_untouched(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    db = finished_run / DB_NAME
    with sqlite3.connect(db) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'trials'"
        ).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    data = bytearray(db.read_bytes())
    start = (root - 1) * page_size
    data[start : start + 12] = b"\xff" * 12  # the b-tree page header of the trials table
    db.write_bytes(bytes(data))
    before = _snapshot(finished_run)
    for argv in (["search", "--resume", str(finished_run)], ["status", str(finished_run)]):
        assert main(argv) == 2
        assert "corrupt run" in capsys.readouterr().err
    assert _snapshot(finished_run) == before


def test_config_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "k.toml"
    config.write_bytes(b"\xff\xfe[search]\n")
    assert main(["search", "--config", str(config), "--run-dir", str(tmp_path / "r")]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_budget_beyond_the_search_space_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text("[agent]\nmax_depth = 2\n")  # 8 one-layer blocks in all
    run = tmp_path / "run"
    argv = ["search", "--config", str(config), "--budget", "10", "--run-dir", str(run)]
    assert main(argv) == 2
    assert "exceeds the 8 distinct candidates" in capsys.readouterr().err
    assert not run.exists()


def test_a_search_ends_with_the_next_commands_of_its_run(
    tmp_path: Path, synthetic: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "my run"  # a space: the printed commands must quote it
    argv = ["search", "--run-dir", str(run), "--budget", "2", "--dataset", "digits"]
    argv += ["--filters", "8", "--blocks-per-stage", "1", "--batch-size", "32"]
    assert main([*argv, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    quoted = f"'{run}'"
    for command in ("status", "report", "trials"):
        assert f" {command} {quoted}" in out
    final = f"'{run}/final'"
    assert f" train {quoted} --out {final} --filters 32 --blocks-per-stage 2" in out
    assert f" export '{run}/final/model.pt' --format onnx --out '{run}/final/model.onnx'" in out
    with Store.open(run, readonly=True) as store:
        config = store.config()
    assert (config.network.blocks_per_stage, config.train.batch_size) == (1, 32)
    assert config.train.threads == "1"
    # threads describe this session's machine: a resume may change them
    try:
        assert main(["search", "--resume", str(run), "--threads", "all"]) == 0
        assert main(["search", "--resume", str(run), "--batch-size", "8"]) == 2
    finally:
        threads.reset()  # the command line's choice is process-wide


def test_the_quick_starts_latest_run_glob_finds_the_run_not_its_final_training(
    tmp_path: Path, synthetic: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import re
    import shlex

    run = tmp_path / "demo-20260101-000000"  # what `make demo` names a run
    argv = ["search", "--run-dir", str(run), "--budget", "2", "--dataset", "digits"]
    assert main(argv) == 0
    train = next(x for x in capsys.readouterr().out.splitlines() if " train " in x)
    words = shlex.split(re.sub(r"\s+#.*", "", train))
    Path(words[words.index("--out") + 1]).mkdir()  # as `blockqnn train` makes it
    # the quick start's `ls -d runs/demo-* | tail -n 1`: the run, not the training
    assert sorted(tmp_path.glob("demo-*"))[-1] == run


def test_the_stored_config_records_the_shape_of_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the real digits data, the instant evaluator
    monkeypatch.setattr(ex, "default_evaluator", lambda c, d, dev: SyntheticEvaluator(c))
    run = tmp_path / "run"
    argv = ["search", "--run-dir", str(run), "--budget", "2", "--dataset", "digits"]
    assert main([*argv, "--train-samples", "200"]) == 0
    with Store.open(run, readonly=True) as store:
        network = store.config().network
    assert (network.input_shape, network.num_classes) == ((1, 8, 8), 10)  # not (3, 32, 32)


def test_status_after_kill_9_says_the_trial_was_interrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blockqnn.settings.config import Config
    from blockqnn.space.nsc.block import Block

    run = tmp_path / "run"
    store = Store.create(run, Config())
    store.acquire()
    store.begin_session()
    store.add_trial(Block.parse("1,1,3,0,0"), info={})  # in flight when the search was killed
    store.close()  # no end_session: as after kill -9
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "stopped" in out and "1 running (left by a killed search)" in out
    assert f"blockqnn search --resume {run}" in out


def test_one_set_of_trial_status_names_in_status_trials_csv_json_and_report(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blockqnn.space.nsc.block import Block

    with Store.open(finished_run, acquire=True) as store:  # a search stopped by Ctrl-C
        store.begin_session()
        store.interrupt([store.add_trial(Block.parse("1,1,1,0,0"), info={})])
        store.end_session("interrupted")
    assert main(["status", str(finished_run)]) == 0
    status = capsys.readouterr().out
    assert "0 running, 0 queued, 1 interrupted" in status and "waiting" not in status
    assert main(["status", str(finished_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["interrupted"] == 1
    assert main(["trials", str(finished_run), "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split(",")[1] == "interrupted"
    assert main(["report", str(finished_run)]) == 0
    page = (finished_run / "report.html").read_text()
    assert "0 running, 0 queued, 1 interrupted" in page and "waiting" not in page


def test_a_config_type_error_quotes_toml_not_python(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[train]\nepochs = true\n[network]\nfilters = "8"\n')
    assert main(["search", "--config", str(config), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "epochs = true: expected an integer" in err and "True" not in err
    config.write_text('[network]\nfilters = "8"\n')
    assert main(["search", "--config", str(config), "--run-dir", str(tmp_path / "r")]) == 2
    assert 'filters = "8": expected an integer' in capsys.readouterr().err


def test_counts_of_one_are_singular(
    tmp_path: Path, synthetic: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["search", "--run-dir", str(tmp_path / "r"), "--budget", "12", "--dataset", "digits"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "at epsilon 0.1 (1 block): it" in out and "holds only 1 trained block," in out
    assert "1 blocks" not in out


def test_a_stop_says_how_to_continue_from_where_it_came(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import blockqnn.cli.search as search_cli
    import blockqnn.search as search

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    real = search.run_search
    monkeypatch.setattr(search, "run_search", stopped)
    new = tmp_path / "new"  # stopped while loading its data: no run was stored
    assert main(["search", "--run-dir", str(new), "--budget", "4", "--dataset", "digits"]) == 130
    assert "nothing was stored; run the same command again" in capsys.readouterr().err
    # an extension stopped before its budget was saved: the hint must carry it
    assert main(["search", "--resume", str(finished_run), "--budget", "9"]) == 130
    assert capsys.readouterr().err.endswith(f"--resume {finished_run} --budget 9\n")
    monkeypatch.setattr(search, "run_search", real)

    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(search_cli, "_finish", interrupted)  # Ctrl-C as the result prints
    assert main(["search", "--resume", str(finished_run)]) == 130
    err = capsys.readouterr().err
    assert f"the search had finished: blockqnn status {finished_run}" in err


@pytest.mark.parametrize(("in_file", "flag"), [("paper", "blockqnn"), ("blockqnn", "paper")])
def test_a_preset_flag_keeps_the_config_files_other_agent_keys(
    tmp_path: Path, synthetic: None, in_file: str, flag: str
) -> None:
    """--preset replaces the file's preset only: the file's explicit [agent] keys still
    override the preset's values, as they do beside the file's own preset (they were lost)."""
    from blockqnn.settings.config import AGENT_PRESETS

    explicit = 'alpha = 0.05\non_repeat = "explore"\nalpha_mode = "visits"\niteration_size = 8\n'
    config = tmp_path / "c.toml"
    config.write_text(f'[search]\nbudget = 2\n[agent]\npreset = "{in_file}"\n{explicit}')
    run = tmp_path / "run"
    assert main(["search", "--run-dir", str(run), "--config", str(config), "--preset", flag]) == 0
    with Store.open(run, readonly=True) as store:
        agent = store.config().agent
    assert agent.preset == flag
    assert (agent.alpha, agent.on_repeat, agent.alpha_mode, agent.iteration_size) == (
        0.05, "explore", "visits", 8,
    )  # fmt: skip
    assert agent.replay == AGENT_PRESETS[flag]["replay"]  # not in the file: the flag's preset
