"""`blockqnn train` as the user meets it: the epochs it chooses for the data, what it prints
before and while training, and how an interrupted training continues."""

from __future__ import annotations

from typing import Any

import pytest

import blockqnn.final.train as final
from blockqnn.cli import main
from blockqnn.settings.final import FINAL_RECIPES, epochs_for_data


def test_the_paper_recipe_keeps_its_300_epochs_on_cifar_sized_data() -> None:
    assert epochs_for_data(300, 50_000) == 300
    assert epochs_for_data(300, 200_000) == 300  # never more than the recipe's


def test_a_small_data_set_trains_for_fewer_epochs_but_at_least_30() -> None:
    assert epochs_for_data(300, 1_438) == 30  # digits: minutes on a CPU, not 23
    assert epochs_for_data(300, 10_000) == 60
    assert epochs_for_data(20, 1_438) == 20  # a recipe shorter than the floor is kept


def _stub_training(monkeypatch: pytest.MonkeyPatch, fail: BaseException | None = None) -> None:
    """Everything up to the training itself is real (block, data, plan); the fit is not."""

    def fake(job: Any, dev: Any, resume: Any, progress: Any) -> Any:
        if fail is not None:
            raise fail
        total = job.settings.epochs
        for epoch in (1, 2):
            row = {"epoch": epoch, "epochs": total, "train_loss": 1.0, "lr": 0.1}
            progress({**row, "train_seconds": 2.0 * epoch, "images_per_second": 700.0})
        return final.FinalResult(
            str(job.out_dir), str(job.block), 0.5, total, 1.0, 1.0, "cpu", "eager", 0, 1, 1
        )

    monkeypatch.setattr(final, "_train", fake)


BLOCK = ["train", "--block", "1,1,3,0,0", "--dataset", "digits", "--filters", "4"]


def test_train_prints_the_epochs_it_chose_and_the_time_after_the_first_epoch(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stub_training(monkeypatch)
    assert main([*BLOCK, "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    paper = FINAL_RECIPES["paper"].epochs
    assert f"epochs   30 (the recipe's {paper} scaled to 1,438 training images;" in err
    # 2 s for the first epoch, 29 left: about a minute
    assert "time     about 58 s for the 29 epochs left" in err
    assert "epoch 1/30 loss 1.0000 lr 0.1 700 images/s ETA 58 s" in err
    assert "None" not in err


def test_given_epochs_are_kept_and_said_so(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stub_training(monkeypatch)
    assert main([*BLOCK, "--epochs", "5", "--out", str(tmp_path / "o")]) == 0
    assert "epochs   5\n" in capsys.readouterr().err


def test_an_interrupted_training_says_how_to_continue(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stub_training(monkeypatch, fail=KeyboardInterrupt())
    assert main([*BLOCK, "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        "blockqnn train: interrupted; run the same command again to resume from the last "
        "finished epoch"
    )


def test_a_run_searched_on_a_subset_trains_its_final_network_on_the_whole_set(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blockqnn.evaluate.result import EvalResult
    from blockqnn.settings.config import Config, merge
    from blockqnn.space.nsc.block import Block
    from blockqnn.store.db import Store

    run = tmp_path / "run"
    with Store.create(run, merge(Config(), {"data": {"train_samples": 100}})) as store:
        store.acquire()
        trial = store.add_trial(Block.parse("1,1,3,0,0"), {})
        store.finish(trial, EvalResult("ok", accuracy=0.5, reward=0.5), 0.5, "w", 1)
    seen: list[int] = []

    def spy(block: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(data.train_samples)
        raise KeyboardInterrupt  # the data is all this test needs

    monkeypatch.setattr(final, "train_final", spy)
    argv = ["train", str(run), "--filters", "4", "--epochs", "1"]
    main([*argv, "--out", str(tmp_path / "a")])
    main([*argv, "--out", str(tmp_path / "b"), "--train-samples", "50"])
    assert seen == [0, 50]
