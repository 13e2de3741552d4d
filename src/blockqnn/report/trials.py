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
import functools
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

from blockqnn.evaluate.table import FINAL_METRIC
from blockqnn.store.db import Store, TrialRecord
from blockqnn.store.queries import train_seconds_of
from blockqnn.store.scan import Seen
from blockqnn.store.schema import TRIAL_COLUMNS

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
    return _metrics_of(t.result)


def _metrics_of(result: dict[str, Any] | None) -> dict[str, Any]:
    metrics = (result or {}).get("metrics") or {}
    return metrics if isinstance(metrics, dict) else {}


def final_accuracy(t: TrialRecord) -> float | None:
    """The trial's final (e.g. NAS-Bench-201 200-epoch) accuracy when its result records one
    beside a proxy reward (`[data] fidelity`), else None."""
    value = _metrics(t).get(FINAL_METRIC)
    return float(value) if isinstance(value, (int, float)) else None


def columns(trials: Iterable[TrialRecord | Seen]) -> list[str]:
    """The column names for `trials` (see the module docstring)."""
    return _names(*_keys(trials))


def _keys(trials: Iterable[TrialRecord | Seen]) -> tuple[list[str], list[str]]:
    """The metric and info keys over `trials`, each sorted."""
    metric_keys: set[str] = set()
    info_keys: set[str] = set()
    for t in trials:
        metric_keys.update(_metrics(t))
        info_keys.update(t.info)
    return sorted(metric_keys), sorted(info_keys)


def _names(metric_keys: list[str], info_keys: list[str]) -> list[str]:
    return [*HEAD, *(METRIC + k for k in metric_keys), *(INFO + k for k in info_keys), *TAIL]


@functools.lru_cache(maxsize=4)  # a reused trial is created and finished at one moment
def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC, `2026-12-04T18:27:11.123Z` (None stays None)."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# where a row's columns are in a trial's values (`TRIAL_COLUMNS` order)
_HEAD_AT = itemgetter(*(TRIAL_COLUMNS.index(n) for n in HEAD))
_PLAIN_AT = itemgetter(*(TRIAL_COLUMNS.index(n) for n in TAIL[:5]))  # reuse_of ... error
_CREATED, _STARTED, _FINISHED = (TRIAL_COLUMNS.index(n) for n in TIMES)
_STATUS, _RESULT, _WORKER, _INFO = (
    TRIAL_COLUMNS.index(n) for n in ("status", "result", "worker", "info")
)
_VALUES_OF = attrgetter(*TRIAL_COLUMNS)
if TAIL[5:] != (*TIMES, "train_seconds"):  # pragma: no cover - a coding error
    raise ImportError("trials.TAIL and row_values disagree")


def row_values(
    values: Sequence[Any], metric_keys: Sequence[str], info_keys: Sequence[str]
) -> list[Any]:
    """One trial's row from its values (`TRIAL_COLUMNS` order, as `Store.reading` reads
    them), in the order of `_names(metric_keys, info_keys)`; a value it lacks is None."""
    result, info = values[_RESULT], values[_INFO]
    metrics = _metrics_of(result)
    return [
        *_HEAD_AT(values),
        *[metrics.get(k) for k in metric_keys],
        *[info.get(k) for k in info_keys],
        *_PLAIN_AT(values),
        iso_time(values[_CREATED]),
        iso_time(values[_STARTED]),
        iso_time(values[_FINISHED]),
        train_seconds_of(result, values[_STATUS], values[_WORKER]),
    ]


def trial_rows(trials: Sequence[TrialRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): one dict per trial in the given order, every column present."""
    metric_keys, info_keys = _keys(trials)
    names = _names(metric_keys, info_keys)
    rows = [row_values(_VALUES_OF(t), metric_keys, info_keys) for t in trials]
    return names, [dict(zip(names, values, strict=True)) for values in rows]


@contextlib.contextmanager
def streamed_table(run_dir: str | Path) -> Iterator[tuple[list[str], Iterator[list[Any]]]]:
    """(columns, rows) of every trial of the run in `run_dir`, in ask order, each row its
    values in column order, made one at a time as they are read (a run may hold hundreds of
    thousands) while the `with` block holds the store open. Two passes over one consistent
    read: the first verifies every row and finds the columns, so a damaged store fails
    before any row is given. Raises `BlockQNNError` for a directory that is not a run or a
    damaged store."""
    with Store.open(run_dir, readonly=True) as store, store.reading() as reading:
        metric_keys, info_keys = _keys(reading.scan())
        trials = reading.scan(check=False)  # verified by the first, in this same read
        yield (
            _names(metric_keys, info_keys),
            (row_values(t.values, metric_keys, info_keys) for t in trials),
        )


def trials_table(run_dir: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of every trial of the run in `run_dir`, in ask order. Raises
    `BlockQNNError` for a directory that is not a run."""
    with streamed_table(run_dir) as (names, rows):
        return names, [dict(zip(names, values, strict=True)) for values in rows]
