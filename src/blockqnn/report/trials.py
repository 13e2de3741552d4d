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

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from blockqnn.evaluate.table import FINAL_METRIC
from blockqnn.store.db import Store, TrialRecord

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


def _metrics(t: TrialRecord) -> dict[str, Any]:
    metrics = (t.result or {}).get("metrics") or {}
    return metrics if isinstance(metrics, dict) else {}


def final_accuracy(t: TrialRecord) -> float | None:
    """The trial's final (e.g. NAS-Bench-201 200-epoch) accuracy when its result records one
    beside a proxy reward (`[data] fidelity`), else None."""
    value = _metrics(t).get(FINAL_METRIC)
    return float(value) if isinstance(value, (int, float)) else None


def columns(trials: Sequence[TrialRecord]) -> list[str]:
    """The column names for `trials` (see the module docstring)."""
    metric_keys = sorted({k for t in trials for k in _metrics(t)})
    info_keys = sorted({k for t in trials for k in t.info})
    return [
        *HEAD,
        *(METRIC + k for k in metric_keys),
        *(INFO + k for k in info_keys),
        *TAIL,
    ]


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC, `2026-12-04T18:27:11.123Z` (None stays None)."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trial_rows(trials: Sequence[TrialRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): one dict per trial in the given order, every column present."""
    names = columns(trials)
    rows = []
    for t in trials:
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
        rows.append(row)
    return names, rows


def trials_table(run_dir: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of every trial of the run in `run_dir`, in ask order. Raises
    `BlockQNNError` for a directory that is not a run."""
    with Store.open(run_dir, readonly=True) as store:
        return trial_rows(store.trials())
