"""Random byte flips in a run's store, a model file and a checkpoint (30 each, seeded; the
model file's flips go through `load_model`, the first 10 also through `blockqnn export`).

Every outcome must be a clean refusal (exit 2, one line on stderr, no traceback) or the
unchanged result (the same output, the same weights): never different data with exit 0.
The counts asserted at the end show that the flips exercised both outcomes; before the
checksums, most flips inside data were read as data (the issue's measurements: a zeroed
byte of a block shown by `status`, 16 of 20 model files exported with other weights).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import blockqnn.execute.base as ex
from blockqnn import BlockQNNError, build_network, load_model
from blockqnn.cli import main
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.final.model_io import model_payload, save_atomic
from blockqnn.final.train import CHECKPOINT, MODEL, FinalSettings, train_final
from blockqnn.settings.config import DataConfig, NetworkConfig
from blockqnn.space.nsc.block import Block
from blockqnn.store.db import DB_NAME

FLIPS = 30
BLOCK = "1,1,3,0,0; 2,2,3,0,0; 3,6,0,1,2; 4,7,0,0,0"


def flips(data: bytes, seed: int) -> list[tuple[int, bytes]]:
    """`FLIPS` copies of `data`, each with one byte changed (xor a non-zero mask)."""
    rng = random.Random(seed)
    out = []
    for _ in range(FLIPS):
        at = rng.randrange(len(data))
        flipped = bytearray(data)
        flipped[at] ^= rng.randrange(1, 256)
        out.append((at, bytes(flipped)))
    return out


def outcome(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the command in process (an exception escaping `main` fails the test: that is
    the traceback this test forbids); returns (exit code, stdout)."""
    code = main(argv)
    captured = capsys.readouterr()
    if code == 2:
        lines = captured.err.splitlines()
        assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    else:
        assert code == 0, (argv, captured.err)
    return code, captured.out


class Tally:
    def __init__(self) -> None:
        self.refused = self.unchanged = 0

    def add(self, code: int) -> None:
        if code == 2:
            self.refused += 1
        else:
            self.unchanged += 1


def test_flipped_bytes_in_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ex, "default_evaluator", lambda c, d, dev: SyntheticEvaluator(c))
    monkeypatch.setattr(ex, "load_data", lambda c: None)
    original = tmp_path / "original"
    argv = ["search", "--run-dir", str(original), "--budget", "24", "--dataset", "digits"]
    assert main(argv) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    readers: list[Callable[[Path], list[str]]] = [
        lambda r: ["status", str(r), "--json"],
        lambda r: ["trials", str(r), "--json"],
    ]
    shutil.copytree(original, run)
    expected = [outcome(reader(run), capsys) for reader in readers]
    assert all(code == 0 for code, _ in expected)

    tally = Tally()
    for at, data in flips((original / DB_NAME).read_bytes(), seed=16):
        shutil.rmtree(run)
        run.mkdir()
        (run / DB_NAME).write_bytes(data)
        for reader, want in zip(readers, expected, strict=True):
            code, out = outcome(reader(run), capsys)
            tally.add(code)
            assert code == 2 or out == want[1], f"byte {at}: different data with exit 0"
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        code, _ = outcome(["search", "--resume", str(run)], capsys)
        if code == 2:  # refused: nothing changed
            assert {p.name: p.read_bytes() for p in run.iterdir()} == before, f"byte {at}"
        else:  # a finished run: resumed to no effect, the same trials
            assert outcome(readers[1](run), capsys) == expected[1], f"byte {at}"
    assert tally.refused >= 10 and tally.unchanged >= 10, vars(tally)


@pytest.mark.parametrize(
    "reader",
    ["load_model", pytest.param("export", marks=pytest.mark.slow)],  # export traces: ~2 s
)
def test_flipped_bytes_in_a_model_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reader: str
) -> None:
    torch.manual_seed(0)
    net = build_network(BLOCK, input_shape=(1, 8, 8), filters=4, head="gap")
    original = tmp_path / "original.pt"
    save_atomic(model_payload(net, (0.3,), (0.2,), tuple("0123456789"), {"acc": 0.9}), original)
    weights = load_model(original).state_dict()
    flipped, out = tmp_path / "model.pt", tmp_path / "model.ts"

    tally = Tally()
    cases = flips(original.read_bytes(), seed=17)
    if reader == "export":  # the same flips through the CLI; a third of them: tracing is slow
        cases = cases[: FLIPS // 3]
    for at, data in cases:
        flipped.write_bytes(data)
        out.unlink(missing_ok=True)
        if reader == "export":
            argv = ["export", str(flipped), "--format", "torchscript", "--out", str(out)]
            code, _ = outcome(argv, capsys)
        else:
            try:
                load_model(flipped)
                code = 0
            except BlockQNNError as exc:
                assert "\n" not in str(exc) and str(flipped) in str(exc)
                code = 2
        tally.add(code)
        if code == 2:
            assert not out.exists()
            continue
        got = load_model(flipped).state_dict()
        assert got.keys() == weights.keys(), f"byte {at}"
        assert all(torch.equal(got[k], weights[k]) for k in weights), f"byte {at}"
    assert tally.refused >= len(cases) // 3 and tally.unchanged >= 1, vars(tally)


@pytest.mark.slow
def test_flipped_bytes_in_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = FinalSettings(epochs=2, batch_size=50, lr=0.05)
    data = DataConfig(dataset="digits", train_samples=100)
    network = NetworkConfig(filters=2, blocks_per_stage=1, head="gap")
    stopped = tmp_path / "stopped"

    def stop(row: dict[str, object]) -> None:
        raise KeyboardInterrupt  # after epoch 1's checkpoint is written

    with pytest.raises(KeyboardInterrupt):
        train_final(Block.parse(BLOCK), data, network, settings, stopped, "cpu", stop)
    checkpoint = (stopped / CHECKPOINT).read_bytes()
    argv = [
        "train", "--block", BLOCK, "--dataset", "digits", "--train-samples", "100",
        "--filters", "2", "--blocks-per-stage", "1", "--head", "gap", "--batch-size", "50",
        "--lr", "0.05", "--epochs", "2", "--device", "cpu", "--json", "--out",
    ]  # fmt: skip
    reference = tmp_path / "reference"
    shutil.copytree(stopped, reference)
    code, out = outcome([*argv, str(reference)], capsys)
    assert code == 0 and json.loads(out)["resumed_from"] == 1  # epoch 2 uses the optimizer
    weights = load_model(reference / MODEL).state_dict()

    tally = Tally()
    work = tmp_path / "work"
    for at, flipped in flips(checkpoint, seed=18):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(stopped, work)
        (work / CHECKPOINT).write_bytes(flipped)
        code, _ = outcome([*argv, str(work)], capsys)
        tally.add(code)
        if code == 2:
            continue
        got = load_model(work / MODEL).state_dict()
        assert all(torch.equal(got[k], weights[k]) for k in weights), f"byte {at}"
    assert tally.refused >= 10, vars(tally)
