"""The NAS-Bench-201 accuracy table: test accuracies of cells per dataset and training length.

Owns: reading the table's CSV files (`load_table`, `Table`) and naming their columns
(`column_of`): `<prefix>TestAccuracy<epochs>Epochs`, the benchmark's 200-epoch training and its
12-epoch schedule (BlockQNN's early-stop proxy). Must not import torch or score anything
(`blockqnn.evaluate.table` does).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import re
import zlib
from pathlib import Path as FilePath

from blockqnn.errors import BlockQNNError, clip
from blockqnn.settings.choices import FIDELITIES
from blockqnn.space.nb201 import DATASETS, Cell

__all__ = [
    "ARCH_COLUMN",
    "FIDELITIES",
    "FINAL_EPOCHS",
    "PREFIXES",
    "Table",
    "column_of",
    "load_table",
]

# Dataset name -> the prefix of its accuracy columns.
PREFIXES: dict[str, str] = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "imagenet16-120": "ImageNet",
}
FINAL_EPOCHS = 200  # the benchmark's full training: the accuracy a pick is judged by
ARCH_COLUMN = "ArchitectureString"
_ACCURACY_COLUMN = re.compile(r"(?:CIFAR10|CIFAR100|ImageNet)TestAccuracy[0-9]+Epochs")


def _clip(text: str, limit: int = 60) -> str:
    return clip(text, limit, quote=True)


def column_of(dataset: str, epochs: int = FINAL_EPOCHS) -> str:
    """The table's column of `dataset`'s test accuracy after `epochs` of training."""
    prefix = PREFIXES.get(dataset.lower()) if isinstance(dataset, str) else None
    if prefix is None:
        raise BlockQNNError(
            f"dataset {dataset!r:.40} is not in the NAS-Bench-201 table; "
            f"use one of: {', '.join(PREFIXES)}"
        )
    return f"{prefix}TestAccuracy{epochs}Epochs"


class Table:
    """Test accuracies (percent) of NAS-Bench-201 cells: per dataset and training length,
    whichever of those columns its files hold (`columns`)."""

    def __init__(self, path: str, accuracies: dict[tuple[str, ...], dict[str, float]]) -> None:
        self.path = path
        # ops -> (accuracy per column): lookups key on the tuple, no text is formatted.
        self.rows = accuracies
        self.columns = frozenset(c for row in accuracies.values() for c in row)
        self._optimum: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, cell: object) -> bool:
        return isinstance(cell, Cell) and cell.ops in self.rows

    def __repr__(self) -> str:
        return f"Table({self.path!r}, {len(self)} cells)"

    def column(self, dataset: str, epochs: int = FINAL_EPOCHS) -> str:
        """`column_of(dataset, epochs)`, refused in one line if this table lacks it."""
        column = column_of(dataset, epochs)
        if column not in self.columns:
            raise BlockQNNError(
                f"table {self.path}: no column {column!r} "
                f"(has {', '.join(sorted(self.columns))[:120]})"
            )
        return column

    def accuracy(self, cell: Cell, dataset: str, epochs: int = FINAL_EPOCHS) -> float:
        """`cell`'s test accuracy in percent; `BlockQNNError` if the table lacks it."""
        column = self.column(dataset, epochs)
        value = self.rows.get(cell.ops, {}).get(column)
        if value is None:
            raise BlockQNNError(f"table {self.path}: no row for the cell {cell}")
        return value

    def optimum(self, dataset: str, epochs: int = FINAL_EPOCHS) -> float:
        """The best accuracy in the table (percent), e.g. 94.37 for cifar10 at 200 epochs."""
        column = self.column(dataset, epochs)
        if column not in self._optimum:
            self._optimum[column] = max(r[column] for r in self.rows.values() if column in r)
        return self._optimum[column]


# (resolved path, mtime_ns, size) -> Table: building evaluators again in one process (the
# search makes one per worker) reads the file once.
_TABLES: dict[tuple[str, int, int], Table] = {}


def load_table(path: str | os.PathLike[str]) -> Table:
    """Read CSVs (plain or gzip, told by their magic bytes) of NAS-Bench-201 accuracies.

    `path` names one file, or several joined by `os.pathsep` (`200.csv.gz:12.csv.gz`), whose
    rows are joined on `ArchitectureString`. A file needs that column and at least one
    accuracy column (`<prefix>TestAccuracy<epochs>Epochs`); other columns are ignored. Every
    problem raises a one-line `BlockQNNError` naming the file (and the line, for a row).
    """
    name = str(path)
    parts = [_load_file(part) for part in name.split(os.pathsep)] if name else [_load_file("")]
    if len(parts) == 1:
        return parts[0]
    rows: dict[tuple[str, ...], dict[str, float]] = {}
    for part in parts:
        for ops, row in part.rows.items():
            rows.setdefault(ops, {}).update(row)
    return Table(name, rows)


def _load_file(name: str) -> Table:
    file = FilePath(name)
    try:
        stat = file.stat()
    except OSError:
        raise BlockQNNError(f"table {name}: no such file") from None
    if not file.is_file():
        raise BlockQNNError(f"table {name}: not a file")
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    cached = _TABLES.get(key)
    if cached is not None:
        return cached
    table = _read_table(file, name)
    _TABLES[key] = table
    return table


def _read_text(file: FilePath, name: str) -> str:
    try:
        with file.open("rb") as raw:
            data = raw.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BlockQNNError(f"table {name}: not UTF-8 text (nor gzip-compressed text)") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise BlockQNNError(f"table {name}: cannot read it ({exc})") from None


def _read_table(file: FilePath, name: str) -> Table:
    reader = csv.reader(io.StringIO(_read_text(file, name), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise BlockQNNError(f"table {name}: empty (no header line)")
        header = [h.strip() for h in header]
        if ARCH_COLUMN not in header:
            raise BlockQNNError(
                f"table {name}: no column {ARCH_COLUMN!r} (has {', '.join(header)[:80]})"
            )
        where = {c: header.index(c) for c in header if _ACCURACY_COLUMN.fullmatch(c)}
        where[ARCH_COLUMN] = header.index(ARCH_COLUMN)
        if len(where) == 1:
            raise BlockQNNError(
                f"table {name}: no accuracy column such as {DATASETS['cifar10']!r} "
                f"(has {', '.join(header)[:80]})"
            )
        accuracy_columns = [c for c in where if c != ARCH_COLUMN]
        accuracies: dict[tuple[str, ...], dict[str, float]] = {}
        first_line: dict[tuple[str, ...], int] = {}
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank lines, e.g. a trailing one
            if len(row) != len(header):
                raise BlockQNNError(
                    f"table {name} line {line}: {len(row)} fields, the header has {len(header)}"
                )
            try:
                cell = Cell.parse(row[where[ARCH_COLUMN]])
            except BlockQNNError as exc:
                raise BlockQNNError(f"table {name} line {line}: {ARCH_COLUMN}: {exc}") from None
            if cell.ops in first_line:
                raise BlockQNNError(
                    f"table {name} line {line}: the architecture {cell} repeats line "
                    f"{first_line[cell.ops]}"
                )
            first_line[cell.ops] = line
            accuracies[cell.ops] = {
                column: _percent(row[where[column]], column, f"table {name} line {line}")
                for column in accuracy_columns
            }
    except csv.Error as exc:
        raise BlockQNNError(f"table {name} line {reader.line_num}: not CSV ({exc})") from None
    if not accuracies:
        raise BlockQNNError(f"table {name}: no rows after the header")
    return Table(name, accuracies)


def _percent(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BlockQNNError(f"{where}: {column} = {_clip(text, 30)} is not a number") from None
    if not math.isfinite(value):
        raise BlockQNNError(f"{where}: {column} = {text.strip()} is not finite")
    if not 0.0 <= value <= 100.0:
        raise BlockQNNError(f"{where}: {column} = {value} is not a percentage in [0, 100]")
    return value
