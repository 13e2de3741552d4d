"""Every trial of a run as one flat row: the raw data for pandas, spreadsheets and scripts.

Owns: the column names and values of `blockqnn trials` (`trial_rows`, `trials_table`). Reads
the store read-only, so a running search is never disturbed. Must not write, draw or import
torch.

Columns, in this order; the `metric.` and `info.` columns are the union of the keys over the
run's trials, sorted, so the columns are stable for a given run:

    id, status, candidate, hash, reward, accuracy, flops, params, density,
    metric.NAME ...   every key of the result's extra `metrics` (e.g. metric.flops_ref)
    info.KEY ...      the strategy's info when it proposed the trial (e.g. info.epsilon)
    reuse_of, attempts, lost, worker, error,
    created, started, finished, train_seconds

Times (created, started, finished) are ISO 8601 in UTC to the millisecond,
`2026-12-04T18:27:11.123Z`: what spreadsheets and `pd.to_datetime` read as they are. A value
a trial lacks is None (an empty CSV field): e.g. the metrics of a trial still running, or
`info.epsilon` of trials from a strategy without one. Reused trials carry the metrics of the
trial they reuse (`reuse_of`), and trials whose result came from the evaluation cache (their
`worker` is `cache: RUN trial N`) that trial's, but neither trained anything: their
`train_seconds` is None, so summing the column gives the training time actually spent.

Example:
    >>> import csv, io, subprocess  # doctest: +SKIP
    >>> out = subprocess.run(["blockqnn", "trials", "runs/demo", "--csv"], capture_output=True,
    ...                      text=True, check=True).stdout
    >>> import pandas as pd; df = pd.read_csv(io.StringIO(out))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from blockqnn.evaluate.table import FINAL_METRIC
from blockqnn.store.db import Store, TrialRecord
from blockqnn.store.scan import Seen

HEAD = ("id", "status", "candidate", "hash", "reward", "accuracy", "flops", "params", "density")
TAIL = (
    "reuse_of",
    "attempts",
    "lost",
    "worker",
    "error",
    "created",
    "started",
    "finished",
    "train_seconds",
)
TIMES = ("created", "started", "finished")
METRIC = "metric."  # prefix of the result's extra metrics
INFO = "info."  # prefix of the strategy's info keys


def _metrics(t: TrialRecord | Seen) -> dict[str, Any]:
    metrics = (t.result or {}).get("metrics") or {}
    return metrics if isinstance(metrics, dict) else {}


def final_accuracy(t: TrialRecord) -> float | None:
    """The trial's final (e.g. NAS-Bench-201 200-epoch) accuracy when its result records one
    beside a proxy reward (`[data] fidelity`), else None."""
    value = _metrics(t).get(FINAL_METRIC)
    return float(value) if isinstance(value, (int, float)) else None


def columns(trials: Iterable[TrialRecord]) -> list[str]:
    """The column names for `trials` (see the module docstring)."""
    metric_keys: set[str] = set()
    info_keys: set[str] = set()
    for t in trials:
        metric_keys.update(_metrics(t))
        info_keys.update(t.info)
    return _names(metric_keys, info_keys)


def _names(metric_keys: set[str], info_keys: set[str]) -> list[str]:
    return [
        *HEAD,
        *(METRIC + k for k in sorted(metric_keys)),
        *(INFO + k for k in sorted(info_keys)),
        *TAIL,
    ]


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC, `2026-12-04T18:27:11.123Z` (None stays None)."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trial_row(t: TrialRecord, names: Sequence[str]) -> dict[str, Any]:
    """One trial as a row with every one of the column `names`."""
    row: dict[str, Any] = dict.fromkeys(names)
    for name in HEAD:
        row[name] = getattr(t, name)
    for key, value in _metrics(t).items():
        row[METRIC + key] = value
    for key, value in t.info.items():
        row[INFO + key] = value
    for name in TAIL[:-1]:
        row[name] = iso_time(getattr(t, name)) if name in TIMES else getattr(t, name)
    row["train_seconds"] = t.train_seconds
    return row


def trial_rows(trials: Sequence[TrialRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): one dict per trial in the given order, every column present."""
    names = columns(trials)
    return names, [trial_row(t, names) for t in trials]


@contextlib.contextmanager
def streamed_table(run_dir: str | Path) -> Iterator[tuple[list[str], Iterator[dict[str, Any]]]]:
    """(columns, rows) of every trial of the run in `run_dir`, in ask order, the rows made
    one at a time as they are read (a run may hold hundreds of thousands) while the `with`
    block holds the store open. Two passes over one consistent read: the first verifies
    every row and finds the columns, so a damaged store fails before any row is given.
    Raises `BlockQNNError` for a directory that is not a run or a damaged store."""
    with Store.open(run_dir, readonly=True) as store, store.reading() as reading:
        metric_keys: set[str] = set()
        info_keys: set[str] = set()
        for seen in reading.scan():
            metric_keys.update(_metrics(seen))
            info_keys.update(seen.info)
        names = _names(metric_keys, info_keys)
        yield names, (trial_row(t, names) for t in reading.trials(check=False))


def trials_table(run_dir: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of every trial of the run in `run_dir`, in ask order. Raises
    `BlockQNNError` for a directory that is not a run."""
    with streamed_table(run_dir) as (names, rows):
        return names, list(rows)
