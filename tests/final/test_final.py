"""Final training: trains on train + val, tests on the test split, checkpoints and resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from blockqnn import BlockQNNError, load_model
from blockqnn.final.model_io import read_payload
from blockqnn.final.train import (
    CHECKPOINT,
    FINAL_RECIPES,
    MODEL,
    FinalSettings,
    TrainingPlan,
    _settings_identity,
    train_final,
)
from blockqnn.settings.config import DataConfig, NetworkConfig
from blockqnn.space.nsc.block import Block

BLOCK = Block.parse("1,1,3,0,0; 2,1,3,1,0; 3,5,0,2,0")
DATA = DataConfig(dataset="digits", train_samples=300)
NET = NetworkConfig(filters=4, blocks_per_stage=1, head="gap")
FAST = FinalSettings(epochs=2, batch_size=64, lr=0.05)


def test_train_checkpoint_and_load(tmp_path: Path) -> None:
    out = tmp_path / "final"
    result = train_final(BLOCK, DATA, NET, FAST, out, device="cpu")
    assert result.epochs == 2 and 0.0 <= result.test_accuracy <= 1.0
    assert (out / CHECKPOINT).is_file() and (out / MODEL).is_file()
    lines = (out / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    model = load_model(out / MODEL)
    assert str(model.block) == str(BLOCK)
    assert read_payload(out / MODEL)["metrics"]["test_accuracy"] == result.test_accuracy
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    # Running again reports the finished training without training.
    again = train_final(BLOCK, DATA, NET, FAST, out, device="cpu")
    assert again.test_accuracy == result.test_accuracy


def test_a_folder_one_training_writes_is_refused_to_a_second(tmp_path: Path) -> None:
    from blockqnn.files import lock_folder

    out = tmp_path / "final"
    out.mkdir()
    busy = pytest.raises(BlockQNNError, match=r"another training is writing this folder")
    with lock_folder(out, "busy"), busy:  # a training in another process holds it
        train_final(BLOCK, DATA, NET, FAST, out, device="cpu")
    assert not any(out.iterdir())  # nothing of it written
    train_final(BLOCK, DATA, NET, FAST, out, device="cpu")  # the lock is gone with its holder


def test_a_finished_folder_moved_elsewhere_reports_where_it_is(tmp_path: Path) -> None:
    out = tmp_path / "final"
    train_final(BLOCK, DATA, NET, FAST, out, device="cpu")
    moved = out.rename(tmp_path / "moved")
    assert train_final(BLOCK, DATA, NET, FAST, moved, device="cpu").out == str(moved)


def test_resume_continues_to_the_same_weights(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    train_final(BLOCK, DATA, NET, replace_epochs(3), straight, device="cpu")

    def stop_after_first_epoch(row: dict[str, object]) -> None:
        if row["epoch"] == 1:  # the checkpoint of epoch 1 is written before this call
            raise KeyboardInterrupt

    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        train_final(
            BLOCK,
            DATA,
            NET,
            replace_epochs(3),
            stopped,
            device="cpu",
            progress=stop_after_first_epoch,
        )
    assert (stopped / CHECKPOINT).is_file() and not (stopped / MODEL).exists()
    resumed = train_final(BLOCK, DATA, NET, replace_epochs(3), stopped, device="cpu")
    assert resumed.resumed_from == 1 and resumed.epochs == 3
    a = load_model(straight / MODEL).state_dict()
    b = load_model(stopped / MODEL).state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def replace_epochs(n: int) -> FinalSettings:
    return FinalSettings(epochs=n, batch_size=64, lr=0.05)


def test_other_settings_in_the_same_folder_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "final"
    train_final(BLOCK, DATA, NET, FAST, out, device="cpu")
    with pytest.raises(BlockQNNError, match=r"other settings \(settings.epochs is 2 there, 5 here"):
        train_final(BLOCK, DATA, NET, replace_epochs(5), out, device="cpu")
    wider = replace(NET, filters=6)
    with pytest.raises(BlockQNNError, match=r"network.filters is 4 there, 6 here"):
        train_final(BLOCK, DATA, wider, FAST, out, device="cpu")
    (out / MODEL).unlink()
    start_over = r"to start over with these settings, give another --out or remove "
    with pytest.raises(BlockQNNError, match=rf"another block\b.*\(another block; {start_over}"):
        train_final(Block.parse("1,1,1,0,0"), DATA, NET, FAST, out, device="cpu")


def test_cli_bad_input(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "blockqnn", "train", *args], capture_output=True, text=True
        )

    cases = [
        ("--block", "1,1,3,0,0", "--out", str(tmp_path / "a")),  # no dataset
        (str(tmp_path / "nothing"), "--out", str(tmp_path / "b")),  # no run
        ("--block", "1,9,0,0,0", "--dataset", "digits", "--out", str(tmp_path / "c")),
        (
            "--block",
            "1,1,3,0,0",
            "--dataset",
            "digits",
            "--epochs",
            "0",
            "--out",
            str(tmp_path / "d"),
        ),
        ("--out", str(tmp_path / "e")),  # neither run nor block
    ]
    for args in cases:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    proc = run("--block", "1,1,3,0,0", "--dataset", "digits", "--out", str(tmp_path / "junk"))
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"


def test_block_deeper_than_the_default_needs_max_depth(tmp_path: Path) -> None:
    deep = "; ".join(f"{i},4,0,{i - 1},0" for i in range(1, 12))  # 11 identities
    out = tmp_path / "deep"
    proc = subprocess.run(
        [sys.executable, "-m", "blockqnn", "train", "--block", deep, "--dataset", "digits",
         "--out", str(out), "--epochs", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "maximum depth 10" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "blockqnn", "train", "--block", deep, "--max-depth", "12",
         "--dataset", "digits", "--out", str(out), "--epochs", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    # The block is accepted at depth 12; what stops it now is the (deliberately) bad epochs.
    assert proc.returncode == 2 and "epochs" in proc.stderr and "depth" not in proc.stderr


def test_the_paper_recipe_is_unchanged_and_keeps_old_folders_resumable() -> None:
    paper = FINAL_RECIPES["paper"]
    assert paper == FinalSettings()
    assert (paper.epochs, paper.batch_size, paper.lr, paper.momentum, paper.weight_decay) == (
        300,
        128,
        0.1,
        0.9,
        5e-4,
    )
    assert (paper.schedule, paper.nesterov, paper.warmup_epochs, paper.tta) == (
        "multistep",
        False,
        0.0,
        "none",
    )
    # A folder started before nesterov / warm-up / TTA existed recorded these keys only.
    old_keys = {"epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule"}
    old_keys |= {"label_smoothing", "cutout", "augment", "precision", "seed"}
    assert set(_settings_identity(paper)) == old_keys
    assert "tta" in _settings_identity(FINAL_RECIPES["fast"])


def test_fast_recipe_trains_and_tests_with_flips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blockqnn.train.loop as trainer

    calls: list[tuple[str, bool]] = []
    real = trainer.accuracy

    def spy(model: Any, data: Any, split: str = "val", **kwargs: Any) -> float:
        calls.append((split, bool(kwargs.get("tta", False))))
        return real(model, data, split, **kwargs)

    monkeypatch.setattr(trainer, "accuracy", spy)
    fast = replace(FINAL_RECIPES["fast"], epochs=2, augment="crop_flip")  # digits: no flips
    result = train_final(BLOCK, DATA, NET, fast, tmp_path / "fast", device="cpu")
    assert calls == [("test", True), ("test", False)]  # with the mirror images, then without
    assert result.tta == "flip" and result.test_accuracy_no_tta is not None
    assert 0.0 <= result.test_accuracy <= 1.0 and result.epochs == 2
    lines = (tmp_path / "fast" / "history.jsonl").read_text().splitlines()
    lrs = [json.loads(x)["lr"] for x in lines]
    assert lrs[0] < lrs[1] < fast.lr  # warming up all along (2 epochs of warm-up)

    calls.clear()
    auto = replace(FINAL_RECIPES["fast"], epochs=1)  # digits trains without flips: no TTA
    result = train_final(BLOCK, DATA, NET, auto, tmp_path / "auto", device="cpu")
    assert calls == [("test", False)] and result.tta == "none"
    assert result.test_accuracy_no_tta is None


def test_cli_recipe_flags(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "blockqnn", "train", "--block", "1,1,3,0,0",
             "--dataset", "digits", "--train-samples", "200", "--filters", "4", *args],
            capture_output=True, text=True,
        )  # fmt: skip

    proc = run("--recipe", "fast", "--epochs", "1", "--augment", "crop_flip", "--json",
               "--out", str(tmp_path / "fast"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["tta"] == "flip" and result["epochs"] == 1
    for args, message in (
        (("--recipe", "slow"), "invalid choice"),
        (("--recipe", "fast", "--warmup-epochs", "-1"), "--warmup-epochs -1"),
        (("--tta", "sideways"), "invalid choice"),
        (("--lr", "-1"), "--lr = -1.0: must be"),
    ):
        proc = run(*args, "--out", str(tmp_path / "bad"))
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_history_speed_is_per_epoch_and_the_network_is_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blockqnn.train.loop as trainer

    real = trainer.fit
    clock = iter([1.0, 3.0])  # cumulative training seconds after epochs 1 and 2

    def scripted(*args: Any, on_epoch: Any = None, **kwargs: Any) -> Any:
        def tick(info: Any) -> Any:
            return on_epoch(replace(info, train_seconds=next(clock)))

        return real(*args, on_epoch=tick, **kwargs)

    monkeypatch.setattr(trainer, "fit", scripted)
    told: list[TrainingPlan] = []
    train_final(BLOCK, DATA, NET, FAST, tmp_path / "f", device="cpu", on_start=told.append)
    rows = [json.loads(x) for x in (tmp_path / "f" / "history.jsonl").read_text().splitlines()]
    first, second = (r["images_per_second"] for r in rows)
    assert second == pytest.approx(first / 2, rel=1e-3)  # a running mean would be 2/3
    ((plan,),) = [told]
    net, params = plan.network, plan.params
    assert (plan.epochs, plan.start_epoch, plan.recipe_epochs) == (2, 0, 2)
    assert (net.filters, net.blocks_per_stage, net.input_shape) == (4, 1, (1, 8, 8))
    built = load_model(tmp_path / "f" / MODEL).network
    assert params == sum(p.numel() for p in built.parameters())


def test_cli_train_prints_the_network(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "blockqnn", "train", "--block", "1,1,3,0,0", "--dataset",
         "digits", "--train-samples", "200", "--filters", "4", "--epochs", "1",
         "--batch-size", "64", "--threads", "1", "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "network  F=4 filters, N=2 blocks per stage, paper head," in proc.stderr
    assert "parameters" in proc.stdout and "search-time size" not in proc.stderr
    assert "epochs   1\n" in proc.stderr and "ETA" in proc.stderr and "None" not in proc.stderr
