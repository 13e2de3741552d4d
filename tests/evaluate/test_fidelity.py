"""`[data] fidelity`: an nb201 search rewarded by the 12-epoch accuracy records the 200-epoch
one beside it, for the pick; `status`, `trials` and `report` show it."""

from __future__ import annotations

import csv
import itertools
import json
import os
from pathlib import Path

import pytest
from tests.strategies import write_nb201_table

from blockqnn.cli import main
from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.table import TableEvaluator
from blockqnn.reward import make_reward, score
from blockqnn.settings.config import Config, DataConfig
from blockqnn.space.nb201 import DATASETS, Cell
from blockqnn.space.nb201_table import load_table

CELLS = [Cell.from_indices((i, j, 3, 3, 2, 1)) for i in range(5) for j in range(5)]


def _final(k: int) -> float:
    return 90.0 - k * 0.3  # the first cell is the best after full training


def _proxy(k: int) -> float:
    return 60.0 + (k * 7) % 25  # a ranking unlike the final one


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def tables(tmp_path: Path) -> tuple[Path, Path]:
    final = _write(
        tmp_path / "t200.csv",
        [*DATASETS.values(), "ArchitectureString"],
        [[_final(k), 70, 40, str(c)] for k, c in enumerate(CELLS)],
    )
    proxy = _write(
        tmp_path / "t12.csv",
        ["ArchitectureString", "CIFAR10TestAccuracy12Epochs"],
        [[str(c), _proxy(k)] for k, c in enumerate(CELLS)],
    )
    return final, proxy


def test_the_proxy_is_the_reward_and_the_final_accuracy_a_metric(tables: tuple[Path, Path]) -> None:
    joined = os.pathsep.join(map(str, tables))
    evaluator = TableEvaluator(joined, "cifar10", 12)
    result = evaluator.evaluate(CELLS[3])
    scored = score(make_reward(Config()), result)  # the master scores: no cost, no penalty
    assert scored.reward == result.accuracy == pytest.approx(_proxy(3) / 100)
    assert result.epochs == 12 and result.metrics == {"final_accuracy": pytest.approx(0.891)}
    assert load_table(joined).optimum("cifar10", 12) == max(_proxy(k) for k in range(25))
    full = TableEvaluator(joined, "cifar10").evaluate(CELLS[3])
    assert full.accuracy == pytest.approx(0.891) and full.epochs == 200
    # a proxy table alone: the reward, and no final accuracy to record
    assert TableEvaluator(str(tables[1]), "cifar10", 12).evaluate(CELLS[3]).metrics == {}


def test_a_table_without_the_asked_column_is_refused(tables: tuple[Path, Path]) -> None:
    with pytest.raises(BlockQNNError, match="no column 'CIFAR10TestAccuracy12Epochs'"):
        TableEvaluator(str(tables[0]), "cifar10", 12)
    with pytest.raises(BlockQNNError, match="no column 'CIFAR100TestAccuracy12Epochs'"):
        TableEvaluator(os.pathsep.join(map(str, tables)), "cifar100", 12)
    with pytest.raises(BlockQNNError, match=r"data\.fidelity = 50: choose one of 12, 200"):
        DataConfig(fidelity=50)


def test_cli_refuses_a_missing_column_in_one_line(
    tables: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["search", "--space", "nb201", "--table", str(tables[0]), "--dataset", "cifar10"]
    run = tmp_path / "run"
    assert main([*argv, "--fidelity", "12", "--budget", "4", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no column 'CIFAR10TestAccuracy12Epochs'" in err and err.count("\n") == 1


def test_status_trials_and_report_show_the_picks_final_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    final = write_nb201_table(tmp_path / "t200.csv.gz")
    cells = [Cell.from_indices(ix) for ix in itertools.product(range(5), repeat=6)]
    proxy = _write(  # every cell; a ranking unlike the final one
        tmp_path / "t12.csv",
        ["ArchitectureString", "CIFAR10TestAccuracy12Epochs"],
        [[str(c), 50 + (k * 7919) % 40] for k, c in enumerate(cells)],
    )
    joined = f"{final}{os.pathsep}{proxy}"
    run = tmp_path / "run"
    argv = ["search", "--space", "nb201", "--table", joined, "--fidelity", "12"]
    argv += ["--dataset", "cifar10", "--budget", "10", "--run-dir", str(run)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["status", str(run), "--json"]) == 0
    pick = json.loads(capsys.readouterr().out)["top"][0]
    cell = Cell.parse(pick["candidate"])
    table = load_table(joined)
    assert pick["reward"] == pytest.approx(table.accuracy(cell, "cifar10", 12) / 100)
    expected = table.accuracy(cell, "cifar10") / 100
    assert pick["final_accuracy"] == pytest.approx(expected) != pick["reward"]
    assert main(["status", str(run)]) == 0
    assert f"final accuracy {expected:.4f}" in capsys.readouterr().out
    assert main(["trials", str(run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["metric.final_accuracy"] is not None for r in rows if r["status"] == "complete")
    assert main(["trials", str(run)]) == 0
    assert "final accuracy" in capsys.readouterr().out
    page = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(page)]) == 0
    assert f"final accuracy {expected:.4f}" in page.read_text()
