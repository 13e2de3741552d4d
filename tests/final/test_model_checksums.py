"""Model files and checkpoints carry a SHA-256 of their contents, verified on every read.

Each refusal test first shows that PyTorch itself loads the damaged file without complaint:
without the checksum the changed weights would be used."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from blockqnn import BlockQNNError, build_network, load_model
from blockqnn.cli import main
from blockqnn.final.model_io import (
    CHECKSUM,
    VERSION,
    model_payload,
    payload_checksum,
    read_payload,
    save_atomic,
)
from blockqnn.final.train import CHECKPOINT, FinalSettings, train_final
from blockqnn.settings.config import DataConfig, NetworkConfig
from blockqnn.space.nsc.block import Block

BLOCK = "1,1,3,0,0; 2,2,3,0,0; 3,6,0,1,2; 4,7,0,0,0"


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = build_network(BLOCK, input_shape=(1, 8, 8), filters=4, head="gap")
    path = tmp_path / "model.pt"
    save_atomic(model_payload(net, (0.3,), (0.2,), tuple("0123456789"), {"acc": 0.9}), path)
    return path


def _raw(path: Path) -> dict[str, object]:
    loaded: dict[str, object] = torch.load(path, map_location="cpu", weights_only=True)
    return loaded


def test_a_saved_file_holds_a_checksum_of_everything_else(model_file: Path) -> None:
    raw = _raw(model_file)
    assert raw["version"] == VERSION == 2
    assert raw[CHECKSUM] == payload_checksum(raw)
    assert read_payload(model_file)["metrics"] == {"acc": 0.9}


@pytest.mark.parametrize("what", ["a weight", "a buffer", "the block", "the normalisation"])
def test_any_changed_content_is_refused_naming_the_file(
    model_file: Path, tmp_path: Path, what: str
) -> None:
    raw = _raw(model_file)
    state = raw["state_dict"]
    assert isinstance(state, dict)
    if what == "a weight":
        key = next(k for k in state if k.endswith("weight"))
        state[key] = state[key].clone()
        state[key].view(-1)[0] += 1e-3
    elif what == "a buffer":
        key = next(k for k in state if k.endswith("running_var"))
        state[key] = state[key] * 2
    elif what == "the block":
        raw["block"] = "1,1,5,0,0; 2,2,3,0,0; 3,6,0,1,2; 4,7,0,0,0"
    else:
        raw["mean"] = [0.31]
    damaged = tmp_path / "damaged.pt"
    torch.save(raw, damaged)  # the stored checksum is the original's
    _raw(damaged)  # PyTorch reads it without a word
    with pytest.raises(BlockQNNError, match=r"damaged model file .*checksum") as info:
        load_model(damaged)
    assert str(damaged) in str(info.value)


def test_the_cli_refuses_a_damaged_file_in_one_line(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _raw(model_file)
    state = raw["state_dict"]
    assert isinstance(state, dict)
    key = next(iter(state))
    state[key] = torch.zeros_like(state[key])
    torch.save(raw, model_file)
    out = tmp_path / "m.pt"
    assert main(["export", str(model_file), "--format", "torchscript", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{model_file}: damaged model file" in err
    assert not out.exists()


def test_version_1_files_without_a_checksum_load_with_a_warning(
    model_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = _raw(model_file)
    del raw[CHECKSUM]
    raw["version"] = 1  # as the release before checksums wrote it
    old = tmp_path / "old.pt"
    torch.save(raw, old)
    with caplog.at_level(logging.WARNING, logger="blockqnn.final.model_io"):
        model = load_model(old)
    assert str(model.block) == BLOCK
    assert [r.getMessage() for r in caplog.records] == [
        f"{old}: written by an older blockqnn without a checksum; its contents cannot be verified"
    ]


def test_a_version_2_file_without_its_checksum_is_refused(model_file: Path, tmp_path: Path) -> None:
    raw = _raw(model_file)
    del raw[CHECKSUM]
    stripped = tmp_path / "stripped.pt"
    torch.save(raw, stripped)
    with pytest.raises(BlockQNNError, match="damaged model file"):
        load_model(stripped)


def test_settings_that_do_not_fit_are_a_damaged_file(model_file: Path, tmp_path: Path) -> None:
    raw = _raw(model_file)
    raw["network"] = {**raw["network"], "filters": 8}  # type: ignore[dict-item]
    bad = tmp_path / "bad.pt"
    save_atomic(raw, bad)  # a valid checksum over settings that do not fit the weights
    with pytest.raises(BlockQNNError, match=r"damaged model file .*weights do not fit"):
        load_model(bad)


def test_a_fifo_is_not_a_model_file(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    with pytest.raises(BlockQNNError, match="not a regular file"):
        read_payload(fifo)


# ----- 11. checkpoints that do not fit are damaged checkpoints ------------------------------

DATA = DataConfig(dataset="digits", train_samples=200)
NET = NetworkConfig(filters=4, blocks_per_stage=1, head="gap")
TWO = FinalSettings(epochs=2, batch_size=64, lr=0.05)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training folder stopped after its first epoch: checkpoint.pt, no model.pt."""
    out = tmp_path_factory.mktemp("final") / "out"

    def stop(row: dict[str, object]) -> None:
        raise KeyboardInterrupt  # after epoch 1's checkpoint is written

    with pytest.raises(KeyboardInterrupt):
        train_final(Block.parse(BLOCK), DATA, NET, TWO, out, device="cpu", progress=stop)
    return out / CHECKPOINT


def _train_argv(out: Path) -> list[str]:
    return [
        "train", "--block", BLOCK, "--dataset", "digits", "--train-samples", "200",
        "--filters", "4", "--blocks-per-stage", "1", "--head", "gap", "--epochs", "2",
        "--batch-size", "64", "--lr", "0.05", "--device", "cpu", "--out", str(out), "--json",
    ]  # fmt: skip


@pytest.mark.parametrize("change", ["renamed parameter", "optimizer state shape"])
def test_a_checkpoint_that_does_not_fit_is_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    raw = _raw(checkpoint)
    if change == "renamed parameter":
        state = raw["state_dict"]
        assert isinstance(state, dict)
        first = next(iter(state))
        state[first.replace(".", "_", 1)] = state.pop(first)
    else:
        train_state = raw["train_state"]
        assert isinstance(train_state, dict)
        buffers = train_state["optimizer"]["state"]
        key = next(iter(buffers))
        buffers[key]["momentum_buffer"] = torch.zeros(3, 3)
    out = tmp_path / "out"
    out.mkdir()
    save_atomic(raw, out / CHECKPOINT)  # valid checksum: a writer's bug, not a flipped bit
    assert main(_train_argv(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged checkpoint" in err and "Traceback" not in err
    assert str(out / CHECKPOINT) in err
