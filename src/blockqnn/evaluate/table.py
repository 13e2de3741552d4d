"""The NAS-Bench-201 table as an evaluator: a cell's metrics are its row of the table.

Owns: `TableEvaluator` and the space's default evaluator factory. Must not import torch or
train anything: a search on the NB201 space costs a dictionary lookup per candidate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.result import STATUS_OK, EvalResult
from blockqnn.space.nb201 import Cell, column_of, load_table

if TYPE_CHECKING:
    from blockqnn.settings.config import Config


class TableEvaluator:
    """Reports a cell's table accuracy (the 200-epoch test accuracy as a fraction), which the
    master scores like any metric. It never raises for a candidate: a cell the table lacks
    (a partial table) is a failed result that says so."""

    device_name = "table"

    def __init__(self, table_path: str, dataset: str) -> None:
        self.column = column_of(dataset)
        self.dataset = dataset.lower()
        self.table = load_table(table_path)
        self._rows = self.table.rows  # the lookup below is the whole evaluation

    def __repr__(self) -> str:
        return f"TableEvaluator({self.table.path!r}, {self.dataset!r})"

    def evaluate(self, cell: Cell) -> EvalResult:
        row = self._rows.get(cell.ops)
        if row is None:
            return EvalResult.failed(
                f"the cell {cell} is not in the table {self.table.path}",
                device="table",
                mode="table lookup",
            )
        accuracy = row[self.column] / 100.0
        return EvalResult(
            status=STATUS_OK,
            accuracy=accuracy,
            epochs=200,
            device="table",
            mode="table lookup",
        )


def make_evaluator(config: Config, data: Any = None, device: str | None = None) -> TableEvaluator:
    """The space's default evaluator: `[data] table` looked up for `[data] dataset`; `data`
    and `device` are unused (nothing is trained)."""
    table = getattr(config.data, "table", "")
    if not table:
        raise BlockQNNError(
            "the nb201 space needs a table: --table FILE "
            "(a CSV or .csv.gz of NAS-Bench-201 accuracies)"
        )
    return TableEvaluator(str(table), config.data.dataset)
