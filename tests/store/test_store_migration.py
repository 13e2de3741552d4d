"""Version-1 runs (made by the release before pluggable spaces) keep working.

The fixture is written by hand with sqlite3, as that release wrote it: its schema, its meta
rows, a config without the keys version 2 added, trials of every status (one left `running`
by a kill) and a Q-learning snapshot in the version-1 format. The trials come from the
version-1 search loop replayed with today's agent at the paper's settings, which
`tests/test_agent.py` pins to that release's agent; so `--resume` must continue the run
exactly as the uninterrupted version-1 search would have.
"""

from __future__ import annotations

import html
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import blockqnn.execute.base as ex
import blockqnn.store.schema as store_schema
from blockqnn.cli import main
from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.result import EvalResult
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.reward import make_reward, score
from blockqnn.settings.config import LEVERS_OFF, AgentConfig, Config
from blockqnn.space.nsc.space import NSCSpace
from blockqnn.store.db import APPLICATION_ID, DB_NAME, LOCK_NAME, SCHEMA_VERSION, Store
from blockqnn.strategy.qlearning import QLearningAgent

V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trials (id INTEGER PRIMARY KEY, hash TEXT NOT NULL, nsc TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('queued','running','complete','failed','reused','interrupted')), reward REAL, accuracy REAL, flops INTEGER, params INTEGER, density REAL, result TEXT, worker TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0, lost INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', reuse_of INTEGER REFERENCES trials(id), epsilon REAL NOT NULL, ask_seq INTEGER NOT NULL, tell_seq INTEGER, created REAL NOT NULL, started REAL, finished REAL);
CREATE INDEX trials_hash ON trials(hash);
CREATE INDEX trials_status ON trials(status);
CREATE TABLE agent_snapshots (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, trial_count INTEGER NOT NULL, created REAL NOT NULL, state TEXT NOT NULL);
CREATE TABLE sessions (id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, started REAL NOT NULL, updated REAL NOT NULL, ended REAL, outcome TEXT NOT NULL DEFAULT '');
"""  # noqa: E501 - the schema exactly as version 1 wrote it
# Keys version 2 added to the saved config; a version-1 config has none of them.
V2_CONFIG_KEYS = {
    "search": ("space",),
    "data": ("table",),
    "reward": ("name",),
    "agent": (
        "preset",
        "q_init_mode",
        "alpha_mode",
        "on_repeat",
        "population_size",
        "sample_size",
        *LEVERS_OFF,  # added later still: a version-1 config lacks them too
    ),
}
# The version-1 agent section's values: the paper's constants (that release's defaults).
V1_AGENT = {
    "alpha": 0.01,
    "gamma": 1.0,
    "q_init": 0.5,
    "replay_size": 128,
    "iteration_size": 64,
    "reward_shaping": True,
}
V1_SNAPSHOT_SETTINGS = {
    "max_depth",
    "budget",
    "alpha",
    "gamma",
    "q_init",
    "replay_size",
    "iteration_size",
    "reward_shaping",
    "schedule",
}
# A small space and a seed whose first 11 asks hold every finished status (checked below),
# and a failure rule the resumed search's evaluator follows too.
MAX_DEPTH = 3
SEED = 4
BUDGET = 12
FAIL_DIGITS = "0"
KILLED_AFTER = 10  # trials finished before the kill; the next one is left running
SNAPSHOT_AFTER = 6  # the snapshot reflects the first 6 trials; resume replays the rest
T0 = 1_790_000_000.0  # Unix seconds of the fixture's first trial


def v1_config(**agent: Any) -> dict[str, Any]:
    """A version-1 saved config: today's dict without the keys version 2 added."""
    data = Config().to_dict()
    for section, keys in V2_CONFIG_KEYS.items():
        for key in keys:
            del data[section][key]
    data["agent"].update(V1_AGENT, max_depth=MAX_DEPTH, **agent)
    data["search"].update(budget=BUDGET, seed=SEED)
    return data


def paper_agent() -> QLearningAgent:
    return QLearningAgent(
        NSCSpace(MAX_DEPTH),
        budget=BUDGET,
        seed=SEED,
        config=AgentConfig(preset="paper"),
        alpha=0.01,
        gamma=1.0,
        q_init=0.5,
        replay_size=128,
        iteration_size=64,
        reward_shaping=True,
        q_init_mode="fixed",
        alpha_mode="fixed",
        on_repeat="allow",
    )


def v1_snapshot(agent: QLearningAgent) -> dict[str, Any]:
    """The agent's snapshot as version 1 wrote it: q rows without visit counts, settings
    without the space and the modes."""
    state = agent.state_dict()
    assert all(row[3] == 0 for row in state["q"])  # fixed alpha counts nothing: no loss
    state["q"] = [row[:3] for row in state["q"]]
    for key in ("space", "q_init_mode", "alpha_mode", "on_repeat", *LEVERS_OFF):
        del state["settings"][key]
    assert set(state["settings"]) == V1_SNAPSHOT_SETTINGS
    return state


def v1_result(result: EvalResult) -> dict[str, Any]:
    data = result.to_dict()
    del data["metrics"]  # version 1 had no extra metrics
    return data


def v1_search(kill_after: int | None) -> tuple[list[dict[str, Any]], tuple[int, dict[str, Any]]]:
    """The version-1 search loop with one slot: ask, reuse a known hash's reward or evaluate,
    tell. With `kill_after`, the next ask is left running (a kill -9). Returns the trial rows
    and the (seq, state) snapshot taken after `SNAPSHOT_AFTER` trials."""
    agent = paper_agent()
    evaluator = SyntheticEvaluator(Config(), fail_digits=FAIL_DIGITS)
    reward_of = make_reward(Config())
    rows: list[dict[str, Any]] = []
    known: dict[str, dict[str, Any]] = {}
    snapshot: tuple[int, dict[str, Any]] | None = None
    seq = trained = 0
    while trained < BUDGET:
        epsilon = agent.epsilon
        block = agent.ask()
        seq += 1
        now = T0 + len(rows)
        row: dict[str, Any] = {
            "id": len(rows) + 1,
            "hash": block.hash,
            "nsc": str(block),
            "epsilon": epsilon,
            "ask_seq": seq,
            "created": now,
        }
        rows.append(row)
        if kill_after is not None and len(rows) > kill_after:
            row.update(status="running", attempts=1, started=now)
            break
        source = known.get(block.hash)
        if source is not None:
            agent.tell(block, source["reward"])
            row.update({k: source[k] for k in ("reward", "accuracy", "flops", "params")})
            row.update(density=source["density"], result=source["result"], error=source["error"])
            row.update(status="reused", reuse_of=source["id"], finished=now)
        else:
            result = score(reward_of, evaluator.evaluate(block))  # as the master scores it
            assert result.reward is not None  # score() always sets it
            reward = result.reward if result.ok else 0.0
            agent.tell(block, reward)
            trained += 1
            row.update(reward=reward, accuracy=result.accuracy, flops=result.flops)
            row.update(params=result.params, density=result.density, error=result.error)
            row.update(result=json.dumps(v1_result(result)), worker="local", attempts=1)
            row.update(status="complete" if result.ok else "failed", started=now)
            row.update(finished=now + 0.5)
            known[block.hash] = row
        seq += 1
        row["tell_seq"] = seq
        if len(rows) == SNAPSHOT_AFTER:
            snapshot = (seq, v1_snapshot(agent))
    assert snapshot is not None
    return rows, snapshot


def build_v1_run(run: Path, config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Write a killed version-1 run into `run`; returns its trial rows."""
    rows, (seq, state) = v1_search(KILLED_AFTER)
    statuses = [r["status"] for r in rows]
    assert {"complete", "failed", "reused"} <= set(statuses[:-1]), statuses
    assert statuses[-1] == "running" and rows[-1]["ask_seq"] > seq  # replayed on resume
    run.mkdir()
    conn = sqlite3.connect(run / DB_NAME, isolation_level=None)
    conn.executescript(V1_SCHEMA)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    meta = {
        "schema_version": "1",
        "created": repr(T0 - 1),
        "blockqnn_version": "0.1.0",
        "config": json.dumps(config or v1_config(), sort_keys=True),
    }
    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    for row in rows:
        names = ", ".join(row)
        marks = ", ".join("?" * len(row))
        conn.execute(f"INSERT INTO trials ({names}) VALUES ({marks})", tuple(row.values()))
    conn.execute(
        "INSERT INTO agent_snapshots (seq, trial_count, created, state) VALUES (?, ?, ?, ?)",
        (seq, SNAPSHOT_AFTER, T0 + SNAPSHOT_AFTER, json.dumps(state)),
    )
    conn.execute(  # killed: the session never ended
        "INSERT INTO sessions (pid, host, started, updated) VALUES (?, ?, ?, ?)",
        (4242, "gpu-node", T0 - 1, T0 + len(rows)),
    )
    conn.execute("PRAGMA journal_mode = WAL")  # version 1 ran in WAL mode; close checkpoints
    conn.close()
    (run / LOCK_NAME).touch()
    assert sorted(p.name for p in run.iterdir()) == [DB_NAME, LOCK_NAME]
    return rows


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


@pytest.fixture
def v1_run(tmp_path: Path) -> Path:
    run = tmp_path / "v1"
    build_v1_run(run)
    return run


@pytest.fixture
def synthetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The instant synthetic evaluator, failing the same blocks as the fixture's did."""
    evaluator = lambda c, d, dev: SyntheticEvaluator(c, fail_digits=FAIL_DIGITS)  # noqa: E731
    monkeypatch.setattr(ex, "default_evaluator", evaluator)
    monkeypatch.setattr(ex, "load_data", lambda c: None)


# ----- reading a version-1 run changes nothing ------------------------------------------------


def test_read_only_commands_show_the_migrated_view_and_change_nothing(
    v1_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = build_v1_run(tmp_path / "again")  # the same rows as the fixture's
    before = _files(v1_run)

    assert main(["status", str(v1_run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    trained = sum(r["status"] in ("complete", "failed") for r in rows)
    assert (info["space"], info["agent"], info["budget"]) == ("nsc", "qlearning", BUDGET)
    assert (info["trained"], info["running"]) == (trained, 1)
    assert info["reused"] == sum(r["status"] == "reused" for r in rows) >= 1
    assert info["info"] == {"epsilon": rows[-1]["epsilon"]}
    assert [f["id"] for f in info["recent_failures"]] == [
        r["id"] for r in rows if r["status"] == "failed"
    ]

    assert main(["trials", str(v1_run), "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split(",")
    assert "candidate" in header and "info.epsilon" in header and "nsc" not in header
    assert len(lines) == 1 + len(rows)

    page = tmp_path / "report.html"
    assert main(["report", str(v1_run), "--out", str(page)]) == 0
    text = html.unescape(page.read_text())
    assert 'preset = "paper"' in text and 'q_init_mode = "fixed"' in text

    assert _files(v1_run) == before  # no migration, no -wal / -shm, nothing written


def test_read_only_open_migrates_in_memory_only(v1_run: Path) -> None:
    before = _files(v1_run)
    with Store.open(v1_run, readonly=True) as store:
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION)
        assert store.config().agent.preset == "paper"
        assert store.trials()[0].info
    assert _files(v1_run) == before
    conn = sqlite3.connect(v1_run / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


# ----- a writable open migrates ---------------------------------------------------------------


def test_writable_open_migrates_schema_trials_and_config(tmp_path: Path) -> None:
    run = tmp_path / "v1"
    rows = build_v1_run(run)
    with Store.open(run) as store:
        assert store.meta()["schema_version"] == str(SCHEMA_VERSION)
        trials = store.trials()
        config = store.config()
        raw = json.loads(store.meta()["config"])
    conn = sqlite3.connect(run / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    columns = [r[1] for r in conn.execute("PRAGMA table_info(trials)")]
    conn.close()
    assert "nsc" not in columns and "epsilon" not in columns and "candidate" in columns

    assert [t.id for t in trials] == [r["id"] for r in rows]
    for t, row in zip(trials, rows, strict=True):
        assert t.candidate == row["nsc"] and t.hash == row["hash"]
        assert t.info == {"epsilon": row["epsilon"]}
        assert (t.status, t.ask_seq, t.tell_seq) == (
            row["status"],
            row["ask_seq"],
            row.get("tell_seq"),
        )
        assert t.reward == row.get("reward")
        if t.result is not None:  # version 1 stored no `metrics`: read as none
            assert "metrics" not in t.result
            assert EvalResult.from_dict(t.result).metrics == {}

    # The agent the run was made with: the paper's, every stored value kept.
    assert config.agent == AgentConfig(
        preset="paper",
        max_depth=MAX_DEPTH,
        iteration_size=64,
        reward_shaping=True,
        q_init_mode="fixed",
        alpha_mode="fixed",
        on_repeat="allow",
    )
    assert (config.search.space, config.reward.name, config.data.table) == ("nsc", "paper", "")
    assert (config.search.budget, config.search.seed) == (BUDGET, SEED)
    assert raw["agent"]["preset"] == "paper" and raw["search"]["space"] == "nsc"

    with Store.open(run) as again:  # a second open finds the current version: nothing to do
        assert again.trials() == trials


def test_migration_keeps_stored_agent_values(tmp_path: Path) -> None:
    run = tmp_path / "v1"
    build_v1_run(run, v1_config(replay_size=50, alpha=0.05))
    with Store.open(run) as store:
        agent = store.config().agent
    assert (agent.replay_size, agent.alpha) == (50, 0.05)  # stored: kept
    assert (agent.preset, agent.q_init_mode, agent.on_repeat) == ("paper", "fixed", "allow")


def test_a_failed_migration_leaves_the_v1_run_as_it_was(
    v1_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sqlite3.connect(v1_run / DB_NAME)
    config_before = conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    conn.close()
    real = store_schema._migrate_config_v1

    def rewrite_then_fail(c: sqlite3.Connection) -> None:
        real(c)  # the config is rewritten, then the migration fails before its commit
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_schema, "_migrate_config_v1", rewrite_then_fail)
    with pytest.raises(sqlite3.OperationalError):
        Store.open(v1_run)
    conn = sqlite3.connect(v1_run / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone() == config_before
    assert "nsc" in [r[1] for r in conn.execute("PRAGMA table_info(trials)")]
    conn.close()


# ----- version-1 agent snapshots --------------------------------------------------------------


def test_v1_snapshot_resumes_a_paper_agent_exactly() -> None:
    original = paper_agent()
    for _ in range(9):
        block = original.ask()
        original.tell(block, 0.5 + len(str(block)) / 1000)
    restored = paper_agent()
    restored.load_state_dict(v1_snapshot(original))
    assert restored.state_dict() == original.state_dict()
    assert [str(restored.ask()) for _ in range(5)] == [str(original.ask()) for _ in range(5)]


def test_v1_snapshot_is_refused_by_an_agent_with_other_modes() -> None:
    state = v1_snapshot(paper_agent())
    space = NSCSpace(MAX_DEPTH)
    paper = AgentConfig(preset="paper")
    ours = QLearningAgent(space, budget=BUDGET, seed=SEED, config=paper, q_init_mode="mean")
    with pytest.raises(BlockQNNError, match=r"q_init_mode = 'fixed' differs .* 'mean'"):
        ours.load_state_dict(state)
    explore = QLearningAgent(space, budget=BUDGET, seed=SEED, config=paper, on_repeat="explore")
    with pytest.raises(BlockQNNError, match="on_repeat = 'allow' differs"):
        explore.load_state_dict(state)


# ----- --resume continues a version-1 run -------------------------------------------------------


def test_resume_continues_as_the_uninterrupted_v1_search(
    v1_run: Path, synthetic: None, caplog: pytest.LogCaptureFixture
) -> None:
    with Store.open(v1_run, readonly=True) as store:
        before = store.trials()
    with caplog.at_level(logging.WARNING, logger="blockqnn.search.resume"):
        assert main(["search", "--resume", str(v1_run)]) == 0
    assert not [r for r in caplog.records if "restored agent" in r.getMessage()]

    with Store.open(v1_run, readonly=True) as store:
        after = store.trials()
        assert store.counts()["trained"] == BUDGET
        assert store.config().agent.preset == "paper"
    finished = [t for t in before if t.status != "running"]
    assert after[: len(finished)] == finished  # recorded trials never change
    killed, resumed = before[len(finished)], after[len(finished)]
    assert (resumed.hash, resumed.candidate, resumed.ask_seq, resumed.info) == (
        killed.hash,
        killed.candidate,
        killed.ask_seq,
        killed.info,
    )
    assert resumed.status in ("complete", "failed") and resumed.attempts == 2

    # The same trials, in the same order, as the version-1 search that was never killed.
    full, _ = v1_search(kill_after=None)
    got = [(t.hash, t.status, t.reward, t.ask_seq, t.tell_seq) for t in after]
    want = [(r["hash"], r["status"], r["reward"], r["ask_seq"], r["tell_seq"]) for r in full]
    assert got == want
    assert [t.info["epsilon"] for t in after] == [r["epsilon"] for r in full]
