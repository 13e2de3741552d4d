"""The row writes a store transaction is made of: status transitions, copied results, the
agent's snapshot and warm-start trials.

Owns: the SQL of each write inside a transaction the caller holds, and the sealing (checksum)
of every row it touches. Must not open, commit or roll back: `blockqnn.store.db.Store` owns
the transactions and decides which writes go together.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from blockqnn.evaluate.result import EvalResult
from blockqnn.space.base import Candidate
from blockqnn.store.queries import AgentState, TrialRecord
from blockqnn.store.schema import REUSED, seal


def transition(c: sqlite3.Connection, trial_id: int, allowed: tuple[str, ...]) -> None:
    """Refuse (RuntimeError: a bug, not bad input) a change of a trial not in `allowed`."""
    row = c.execute("SELECT status FROM trials WHERE id = ?", (trial_id,)).fetchone()
    if row is None or row[0] not in allowed:
        found = "missing" if row is None else row[0]
        expected = tuple(str(a) for a in allowed)  # the stored strings, not enum reprs
        raise RuntimeError(f"trial {trial_id} is {found}, expected one of {expected}")


def copy_result(
    c: sqlite3.Connection, trial_id: int, source: TrialRecord, now: float, tell_seq: int
) -> None:
    """Mark `trial_id` reused, with `source`'s result, told as call `tell_seq`."""
    c.execute(
        "UPDATE trials SET status = ?, reward = ?, accuracy = ?, flops = ?, params = ?, "
        "density = ?, result = ?, reuse_of = ?, error = ?, finished = ?, tell_seq = ? "
        "WHERE id = ?",
        (
            REUSED,
            source.reward,
            source.accuracy,
            source.flops,
            source.params,
            source.density,
            json.dumps(source.result) if source.result is not None else None,
            source.id,
            source.error,
            now,
            tell_seq,
            trial_id,
        ),
    )
    seal(c, "trials", trial_id)


def insert_snapshot(c: sqlite3.Connection, state: AgentState) -> None:
    """Save the agent's snapshot; only the newest is kept (the trials hold the history)."""
    trial_count = c.execute("SELECT COALESCE(MAX(id), 0) FROM trials").fetchone()[0]
    cur = c.execute(
        "INSERT INTO agent_snapshots (seq, trial_count, created, state) VALUES (?,?,?,?)",
        (state.seq, trial_count, time.time(), json.dumps(state.state)),
    )
    assert cur.lastrowid is not None
    seal(c, "agent_snapshots", cur.lastrowid)
    c.execute("DELETE FROM agent_snapshots WHERE id < ?", (cur.lastrowid,))


def insert_warm(
    c: sqlite3.Connection,
    rows: Sequence[tuple[Candidate, EvalResult, float, dict[str, Any], int]],
    now: float,
) -> None:
    """Insert warm-start trials (candidate, result, reward told, info naming the source,
    tell_seq): told without an ask (ask_seq 0), status reused."""
    for block, result, reward, info, tell_seq in rows:
        source = f"warm start: {info.get('warm_start')} trial {info.get('source_trial')}"
        cur = c.execute(
            "INSERT INTO trials (hash, candidate, status, reward, accuracy, flops, "
            "params, density, result, worker, error, info, ask_seq, tell_seq, created, "
            "finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
            (
                block.hash,
                str(block),
                REUSED,
                reward,
                result.accuracy,
                result.flops,
                result.params,
                result.density,
                json.dumps(result.to_dict()),
                source,
                result.error,
                json.dumps(info),
                tell_seq,
                now,
                now,
            ),
        )
        assert cur.lastrowid is not None
        seal(c, "trials", cur.lastrowid)
