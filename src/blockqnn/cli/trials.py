"""List every trial of a run: candidate, status, reward, metrics, strategy info and times.

Examples:
  blockqnn trials runs/demo                 a table (a compact subset of the columns)
  blockqnn trials runs/demo --csv > t.csv   every column, for pandas: pd.read_csv("t.csv")
  blockqnn trials runs/demo --json          a JSON list of objects with the same columns

Columns: id, status, candidate, hash, reward, accuracy, flops, params, density, then
metric.NAME for every extra metric of the results (e.g. metric.flops_ref), info.KEY for
every key of the strategy's info at ask time (e.g. info.epsilon; info.prescreen, a JSON
object, with the pre-screen), then reuse_of, attempts, lost, worker, error, created, started,
finished (ISO 8601, UTC) and train_seconds (empty for reused trials and evaluation-cache
hits: they trained nothing). A value a trial lacks is empty (null in JSON).

Reads the run's store only (safe while the search runs); never changes it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Iterable
from typing import Any

from blockqnn.cli.args import PATH


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=PATH, metavar="DIR", help="the run directory")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print a JSON list of objects")
    form.add_argument("--csv", action="store_true", help="print CSV with a header row")


def run(args: argparse.Namespace) -> int:
    from blockqnn.report.trials import streamed_table

    # written as the rows are read: a run's rows may be far more than its memory holds
    with streamed_table(args.run_dir) as (names, rows):
        if args.json:  # a closed pipe (`... --csv | head`) is handled once, in cli.main
            _write_json(dict(zip(names, values, strict=True)) for values in rows)
        elif args.csv:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(names)
            writer.writerows([v if type(v) in _AS_IS else _csv_value(v) for v in r] for r in rows)
        else:
            _print_table(args.run_dir, names, [dict(zip(names, r, strict=True)) for r in rows])
    return 0


def _write_json(rows: Iterable[dict[str, Any]]) -> None:
    """The rows as `json.dump(list(rows), sys.stdout, indent=1)` writes them, one at a
    time: each object's lines indented one level (JSON strings hold no raw newline)."""
    out = sys.stdout
    first = True
    for row in rows:
        out.write("[\n " if first else ",\n ")
        out.write(_json_row(row))
        first = False
    out.write("[]\n" if first else "\n]\n")


# With an indent, json encodes in pure Python (its C encoder takes none), 5x slower: a row of
# plain values (a trial's row has a dozen or more) is written by the C encoder instead, its
# items apart as the indent puts them.
_FLAT = json.JSONEncoder(separators=(",\n  ", ": "))


def _json_row(row: dict[str, Any]) -> str:
    """`json.dumps(row, indent=1)` indented one level more: a row in the list."""
    if not row or any(type(v) in (dict, list) for v in row.values()):
        return json.dumps(row, indent=1).replace("\n", "\n ")
    return "{\n  " + _FLAT.encode(row)[1:-1] + "\n }"


# Values the csv module writes as `_csv_value` would (None empty, the others as str(), which
# is repr() for a float): passed as they are, `_csv_value` only for the others (per field).
_AS_IS = frozenset({type(None), bool, int, str, float})


def _csv_value(value: Any) -> str:
    """A field as text that pandas and `float()` read back: empty for None, full precision."""
    if value is None:
        return ""
    if isinstance(value, (bool, int, str)):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return json.dumps(value)  # a plug-in's list or dict info


def _short(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and spec:
        return format(value, spec)
    return str(value)


def _print_table(run_dir: str, names: list[str], rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    if not rows:
        console.print(f"{run_dir}: no trials yet", markup=False)
        return
    info = [n for n in names if n.startswith("info.") and n != "info.prescreen"]
    final = [n for n in names if n == "metric.final_accuracy"]  # proxy-rewarded runs
    stops = ["metric.stopped_at"] if "metric.stopped_at" in names else []  # early termination
    errors = any(row["error"] for row in rows)
    table = Table(title=f"{len(rows)} trials (all columns: --csv or --json)")
    for name in ("trial", "status", "reward", "accuracy", *(["final accuracy"] * len(final))):
        table.add_column(name, justify="right")
    for name in (*info, *stops, "reuse of"):
        table.add_column(name, justify="right")
    table.add_column("candidate", overflow="fold")
    if errors:
        table.add_column("error", overflow="fold")
    for row in rows:
        cells = [
            str(row["id"]),
            row["status"],
            _short(row["reward"], ".4f"),
            _short(row["accuracy"], ".4f"),
            *(_short(row[n], ".4f") for n in final),
            *(_short(row[n], "g") for n in [*info, *stops]),
            _short(row["reuse_of"]),
        ]
        cells += [row["candidate"]] + ([row["error"]] if errors else [])
        table.add_row(*(Text(c) for c in cells))  # Text: no rich markup read in the values
    console.print(table)
