"""The NAS-Bench-201 table as an evaluator: a cell's metrics are its row of the table.

Owns: `TableEvaluator` and the space's default evaluator factory. Must not import torch or
train anything: a search on the NB201 space costs a dictionary lookup per candidate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.result import STATUS_OK, EvalResult
from blockqnn.space.nb201 import Cell
from blockqnn.space.nb201_table import FINAL_EPOCHS, column_of, load_table

if TYPE_CHECKING:
    from blockqnn.settings.config import Config

FINAL_METRIC = "final_accuracy"  # the 200-epoch accuracy, recorded beside the reward


class TableEvaluator:
    """Reports a cell's table accuracy after `fidelity` epochs of training, as a fraction,
    which the master scores like any metric. When the table also holds the 200-epoch
    accuracy, it is recorded as the metric `final_accuracy` (what a pick is judged by; no
    reward reads it). It never raises for a candidate: a cell the table lacks (a partial
    table) is a failed result that says so. A table without the asked column is refused
    when the evaluator is built."""

    device_name = "table"

    def __init__(self, table_path: str, dataset: str, fidelity: int = FINAL_EPOCHS) -> None:
        self.table = load_table(table_path)
        self.column = self.table.column(dataset, fidelity)
        self.dataset = dataset.lower()
        self.fidelity = fidelity
        final = column_of(dataset, FINAL_EPOCHS)
        self.final_column = final if final in self.table.columns else None
        self._rows = self.table.rows  # the lookup below is the whole evaluation

    def __repr__(self) -> str:
        return f"TableEvaluator({self.table.path!r}, {self.dataset!r}, {self.fidelity})"

    def evaluate(self, cell: Cell) -> EvalResult:
        row = self._rows.get(cell.ops, {})
        value = row.get(self.column)
        if value is None:
            return EvalResult.failed(
                f"the cell {cell} is not in the table {self.table.path}",
                device="table",
                mode="table lookup",
            )
        accuracy = value / 100.0
        final = row.get(self.final_column) if self.final_column else None
        return EvalResult(
            status=STATUS_OK,
            accuracy=accuracy,
            epochs=self.fidelity,
            device="table",
            mode="table lookup",
            metrics={} if final is None else {FINAL_METRIC: final / 100.0},
        )


def make_evaluator(config: Config, data: Any = None, device: str | None = None) -> TableEvaluator:
    """The space's default evaluator: `[data] table` looked up for `[data] dataset` after
    `[data] fidelity` epochs; `data` and `device` are unused (nothing is trained)."""
    table = getattr(config.data, "table", "")
    if not table:
        raise BlockQNNError(
            "the nb201 space needs a table: --table FILE "
            "(a CSV or .csv.gz of NAS-Bench-201 accuracies)"
        )
    fidelity = getattr(config.data, "fidelity", FINAL_EPOCHS)
    return TableEvaluator(str(table), config.data.dataset, fidelity)
