"""The read side of the store: a trial as readers see it, the agent's snapshot, and the
queries behind `Store`'s reading methods.

Owns: `TrialRecord`, `AgentState`, a trial row's checks (`trial_values`) and one function
per query, each on a connection, each verifying the checksums of what it reads. Must not
write. Streaming reads of every trial are `blockqnn.store.scan`'s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from blockqnn.errors import clip
from blockqnn.settings.bounds import DEFAULT_MAX_DEPTH
from blockqnn.settings.config import Config
from blockqnn.space.nsc.block import Block
from blockqnn.store.schema import (
    CACHE_WORKER,
    COMPLETE,
    CONTENT,
    FAILED,
    META_CHECKSUM,
    REUSED,
    STATUSES,
    TRAINED,
    TRIAL_COLUMNS,
    damaged,
    decode,
    digest,
    verified,
)


@dataclass(frozen=True)
class TrialRecord:
    """One row of `trials`, as readers see it."""

    id: int
    hash: str
    candidate: str  # the candidate's text, as its space writes it
    status: str  # a `TrialStatus` value
    reward: float | None
    accuracy: float | None
    flops: int | None
    params: int | None
    density: float | None
    result: dict[str, Any] | None  # EvalResult.to_dict(); None until finished
    worker: str
    attempts: int
    lost: int
    error: str
    reuse_of: int | None
    info: dict[str, Any]  # the strategy's `info()` at ask time, e.g. {"epsilon": 0.9}
    ask_seq: int  # position of the ask among the agent's calls (asks and tells)
    tell_seq: int | None  # position of the tell; None until told
    created: float  # Unix seconds
    started: float | None
    finished: float | None

    @property
    def block(self) -> Block:
        """The candidate as an NSC block (runs of the `nsc` space only)."""
        # The stored text was validated at the run's max_depth when recorded; its own layer
        # count (terminal included) is a depth it always fits.
        text = self.candidate
        return Block.parse(text, max_depth=max(DEFAULT_MAX_DEPTH, text.count(";") + 1))

    @property
    def trained(self) -> bool:
        return self.status in TRAINED

    @property
    def train_seconds(self) -> float | None:
        """The training this run spent on it: None for a trial that trained nothing here
        (reused, or its result copied from the evaluation cache) or is not finished."""
        return train_seconds_of(self.result, self.status, self.worker)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def train_seconds_of(result: dict[str, Any] | None, status: str, worker: str) -> float | None:
    """`TrialRecord.train_seconds` of a trial's values."""
    if result is None or status == REUSED or worker.startswith(CACHE_WORKER):
        return None
    seconds = result.get("train_seconds")
    return float(seconds) if isinstance(seconds, (int, float)) else None


_COLUMNS = TRIAL_COLUMNS
# where a row's values are (`trial_values`), for readers that look at a few of them
ID, STATUS, REWARD, RESULT, ERROR, INFO, ASK_SEQ = (
    _COLUMNS.index(n) for n in ("id", "status", "reward", "result", "error", "info", "ask_seq")
)
_KNOWN = frozenset(s.value for s in STATUSES)  # a set of the stored texts: a row's one look-up
if tuple(TrialRecord.__dataclass_fields__) != _COLUMNS:  # pragma: no cover - a coding error
    raise ImportError("TrialRecord's fields and store_schema.TRIAL_COLUMNS differ")


@dataclass(frozen=True)
class AgentState:
    """An agent's `state_dict()` after its first `seq` calls (asks and tells)."""

    state: dict[str, Any]
    seq: int


def trial_values(
    row: Sequence[Any], decode_json: Callable[[Any, str], Any] = decode, check: bool = True
) -> list[Any]:
    """A trial's values in `TRIAL_COLUMNS` order from its row (content columns then
    checksum): verified (unless `check` is False: a row this read has verified already), its
    JSON decoded with `decode_json`, its status a known one."""
    # the id is an INTEGER PRIMARY KEY (an int): `clip` only for what cannot be (per row)
    trial = f"trial {row[0]}" if type(row[0]) is int else f"trial {clip(row[0])}"
    values = list(row)
    checksum = values.pop()
    if check and digest("trials", values) != checksum:
        raise damaged(f"{trial} does not match its checksum")
    if values[RESULT] is not None:
        values[RESULT] = decode_json(values[RESULT], f"{trial}'s result")
        if not isinstance(values[RESULT], dict):
            raise damaged(f"{trial}'s result is not a JSON object")
    info = decode_json(values[INFO], f"{trial}'s info") if values[INFO] else {}
    if not isinstance(info, dict):
        raise damaged(f"{trial}'s info is not a JSON object")
    values[INFO] = info
    if values[STATUS] not in _KNOWN:
        raise damaged(f"{trial} has an unknown status")
    return values


def row_to_record(row: Sequence[Any]) -> TrialRecord:
    """A trial from its row, verified and decoded."""
    return TrialRecord(*trial_values(row))


def is_warm(t: TrialRecord) -> bool:
    """A warm-start trial: told from an earlier run's result before the first ask."""
    return t.status == REUSED and t.reuse_of is None and "warm_start" in t.info


SELECT_TRIALS = f"SELECT {', '.join(_COLUMNS)}, checksum FROM trials"


def select_trial(c: sqlite3.Connection, trial_id: int) -> TrialRecord | None:
    row = c.execute(SELECT_TRIALS + " WHERE id = ?", (trial_id,)).fetchone()
    return None if row is None else row_to_record(row)


def read_meta(c: sqlite3.Connection) -> dict[str, str]:
    """The run's meta rows (schema version, creation time, config JSON), verified."""
    rows = c.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
    stored = dict(rows)
    content = [r for r in rows if r[0] != META_CHECKSUM]
    if stored.get(META_CHECKSUM) != digest("meta", content):
        raise damaged("its settings (the meta table) do not match their checksum")
    del stored[META_CHECKSUM]
    return stored


def read_config(c: sqlite3.Connection) -> Config:
    """The resolved config the run was started with."""
    data = decode(read_meta(c).get("config"), "the stored config")
    if not isinstance(data, dict):
        raise damaged("the stored config is not a JSON object")
    return Config.from_saved(data)


def select_trials(c: sqlite3.Connection, status: str | None = None) -> list[TrialRecord]:
    """Every trial in ask order, or those with one status."""
    query = SELECT_TRIALS
    args: tuple[Any, ...] = ()
    if status is not None:
        query += " WHERE status = ?"
        args = (status,)
    return [row_to_record(r) for r in c.execute(query + " ORDER BY id", args)]  # streamed


def select_top(c: sqlite3.Connection, k: int) -> list[TrialRecord]:
    """The `k` best trained blocks by reward, best first (reused duplicates excluded)."""
    rows = c.execute(
        SELECT_TRIALS + " WHERE status = ? ORDER BY reward DESC, id LIMIT ?",
        (COMPLETE, min(k, 2**62)),
    ).fetchall()
    return [row_to_record(r) for r in rows]


def count_statuses(c: sqlite3.Connection) -> dict[str, int]:
    """Trials per status (every status present, zeros included) and `trained`."""
    out = {s.value: 0 for s in STATUSES}
    for status, n in c.execute("SELECT status, COUNT(*) FROM trials GROUP BY 1"):
        if status not in out:
            raise damaged(f"a trial has an unknown status {clip(status)}")
        out[status] = n
    out["trained"] = out[COMPLETE] + out[FAILED]
    return out


def latest_snapshot(c: sqlite3.Connection) -> AgentState | None:
    """The newest agent snapshot, or None."""
    cols = ", ".join(CONTENT["agent_snapshots"])
    row = c.execute(
        f"SELECT {cols}, checksum FROM agent_snapshots ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    _, seq, _, _, state = verified("agent_snapshots", row, "the agent's snapshot")
    data = decode(state, "the agent's snapshot")
    if not isinstance(data, dict) or not isinstance(seq, int):
        raise damaged("the agent's snapshot is not a JSON object")
    return AgentState(data, seq)


def select_sessions(c: sqlite3.Connection) -> list[dict[str, Any]]:
    names = CONTENT["sessions"]
    rows = c.execute(f"SELECT {', '.join(names)}, checksum FROM sessions ORDER BY id").fetchall()
    out = []
    for row in rows:
        values = verified("sessions", row, f"session {clip(row[0])}")
        out.append(dict(zip(names, values, strict=True)))
    return out
