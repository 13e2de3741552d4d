"""Reading a run's trials as a stream: one consistent read, every row verified, none held.

Owns: `Reading` (the queries of the readers, `status`, `trials`, `report` and the dashboard,
inside one read transaction, each streaming its rows from a cursor) and `JsonMemo` (the
decoding of the JSON values that a run repeats). Must not write.

Why: a run holds a row per proposal, and most of a long run's rows are reused trials, each
a copy of its original's result; readers that loaded every row as a record grew by gigabytes
with them. Here a reader sees one trial at a time and keeps what it needs. Every row is still
verified (checksum, JSON, status) as `blockqnn.store.queries` does, once per reading.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Collection, Iterator
from typing import Any, NamedTuple

from blockqnn.store.queries import (
    ASK_SEQ,
    ERROR,
    ID,
    INFO,
    RESULT,
    REWARD,
    SELECT_TRIALS,
    STATUS,
    TrialRecord,
    trial_values,
)
from blockqnn.store.schema import decode

MEMO_SIZE = 4096  # distinct JSON texts kept decoded; a run's results and infos repeat


class JsonMemo:
    """`schema.decode` with each distinct text decoded once. A reused trial stores its
    original's result text again and a strategy's info takes few values, so a run of many
    rows holds few texts. Values are shared between the trials that store the same text:
    callers read them and never change them. Bounded: cleared when `MEMO_SIZE` is reached."""

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}

    def __call__(self, text: Any, what: str) -> Any:
        try:
            return self._values[text]
        except KeyError:
            pass
        except TypeError:  # not hashable: not a value SQLite returns; decode refuses it
            return decode(text, what)
        value = decode(text, what)  # raises for damage, naming `what`: never cached
        if len(self._values) >= MEMO_SIZE:
            self._values.clear()
        self._values[text] = value
        return value


class Seen(NamedTuple):
    """One trial of a pass over every row (`Reading.scan`), verified and decoded: the
    fields readers summarise, and all its values (`Reading.record` makes the trial of them;
    a tuple is a tenth of a record's cost, and most rows of a long run need none)."""

    id: int
    status: str
    reward: float | None
    error: str
    info: dict[str, Any]
    result: dict[str, Any] | None
    ask_seq: int
    values: list[Any]


class Reading:
    """Queries over one consistent view of a store (`Reading.of`): a search writing beside
    it changes nothing this reading sees, so a second pass reads what the first verified."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._memo = JsonMemo()

    @classmethod
    @contextlib.contextmanager
    def of(cls, conn: sqlite3.Connection) -> Iterator[Reading]:
        """A read transaction on `conn` for the `with` block (none is started inside one)."""
        began = not conn.in_transaction
        if began:
            conn.execute("BEGIN")  # deferred: a snapshot from its first read, no write lock
        try:
            yield cls(conn)
        finally:
            if began and conn.in_transaction:
                conn.execute("COMMIT")

    def trials(
        self, statuses: Collection[str] = (), *, check: bool = True
    ) -> Iterator[TrialRecord]:
        """Every trial in ask order (or those with one of `statuses`), one at a time,
        verified unless `check` is False (a second pass over rows this reading verified).
        The records' `result` and `info` may be shared (`JsonMemo`): read-only."""
        for values in self._values(statuses, check):
            yield TrialRecord(*values)

    def scan(self, *, check: bool = True) -> Iterator[Seen]:
        """Every trial in ask order, verified unless `check` is False (as `trials`), as a
        `Seen` (read-only, as `trials`)."""
        for v in self._values((), check):
            yield Seen(v[ID], v[STATUS], v[REWARD], v[ERROR], v[INFO], v[RESULT], v[ASK_SEQ], v)

    @staticmethod
    def record(seen: Seen) -> TrialRecord:
        return TrialRecord(*seen.values)

    def _values(self, statuses: Collection[str], check: bool) -> Iterator[list[Any]]:
        query, args = SELECT_TRIALS, tuple(str(s) for s in statuses)
        if args:
            query += f" WHERE status IN ({', '.join('?' * len(args))})"
        cursor = self._conn.execute(query + " ORDER BY id", args)
        try:
            for row in cursor:
                yield trial_values(row, self._memo, check)
        finally:
            # a generator dropped after its store closed (an error unwinding both): nothing
            # left to close
            with contextlib.suppress(sqlite3.ProgrammingError):
                cursor.close()
