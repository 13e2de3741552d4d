"""`blockqnn evaluate`: JSON and text output, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blockqnn.cli import main

BLOCK = "1,1,3,0,0; 2,1,3,1,0; 3,5,0,2,0; 4,7,0,0,0"
QUICK = ["--dataset", "digits", "--filters", "8", "--train-samples", "300", "--epochs", "1"]


def test_json_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", BLOCK, *QUICK, "--batch-size", "40", "--device", "cpu", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["status"] == "ok" and out["error"] == ""
    assert out["nsc"] == BLOCK and len(out["hash"]) == 32
    for key in ("accuracy", "reward", "flops", "params", "density", "train_seconds"):
        assert key in out
    assert out["images_per_second"] > 0 and out["epochs"] == 1 and out["batch_size"] == 40


def test_huge_lr_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", BLOCK, *QUICK, "--lr", "1e6", "--batch-size", "40", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["status"] == "failed" and "epoch 1" in out["error"]


def test_text_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", BLOCK, *QUICK, "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "accuracy" in out and "reward" in out and "images/s" in out


def test_text_failure_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", BLOCK, *QUICK, "--lr", "1e6", "--batch-size", "40"])
    assert code == 1
    assert "failed" in capsys.readouterr().err


def test_config_file_then_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text("[train]\nepochs = 5\nbatch_size = 30\n[network]\nfilters = 8\n")
    code = main(["evaluate", BLOCK, "--config", str(cfg), "--epochs", "1",
                 "--train-samples", "200", "--device", "cpu", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["epochs"] == 1 and out["batch_size"] == 30


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([BLOCK, "--epochs", "0"], "epochs"),
        ([BLOCK, "--dataset", "no-such-dataset"], "dataset"),
        (["1,1,3,0,0; 2,9,0,0,0"], "type"),
        ([BLOCK, "--lr", "-1"], "lr"),
        ([BLOCK, "--device", "tpu"], "device"),
        ([BLOCK, "--config", "/no/such/file.toml"], "does not exist"),
    ],
)
def test_bad_input_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", BLOCK, *QUICK, "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_latency_reward_is_measured_and_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a latency reward the evaluation measures the latency and scores with it (no NaN
    reward from an evaluator that had no latency to use)."""
    config = tmp_path / "c.toml"
    config.write_text(
        '[reward]\nname = "mnasnet"\nlatency_target_ms = 1.0\nlatency_warmup = 1\n'
        "latency_repeats = 3\n"
    )
    code = main(["evaluate", BLOCK, *QUICK, "--config", str(config), "--device", "cpu", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    latency = out["metrics"]["latency_ms"]
    assert latency > 0
    assert out["reward"] == pytest.approx(out["accuracy"] * latency**-0.07)
    code = main(["evaluate", BLOCK, *QUICK, "--config", str(config), "--device", "cpu"])
    text = capsys.readouterr().out
    assert code == 0 and "latency " in text and "(mnasnet)" in text


def test_latency_reward_without_target_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[reward]\nname = "mnasnet"\n')
    assert main(["evaluate", BLOCK, *QUICK, "--config", str(config)]) == 2
    assert "latency_target_ms" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["1,9,3,0,0"], "unknown type 9"),
        ([BLOCK, "--dataset", "no/such/folder"], "dataset folder no/such/folder does not exist"),
        ([BLOCK, "--dataset", "missing.npz"], "dataset file missing.npz does not exist"),
        ([BLOCK, "--dataset", "mnist"], "unknown dataset 'mnist'"),
    ],
)
def test_bad_input_is_refused_before_torch_is_imported(argv: list[str], says: str) -> None:
    # importing torch takes seconds: a refusal must not wait for it
    code = (
        "import sys\nfrom blockqnn.cli import main\n"
        f"code = main(['evaluate', *{argv!r}])\n"
        "print('torch' in sys.modules, code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split() == ["False", "2"], proc.stderr
    assert says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_one_class_folder_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.setenv("BLOCKQNN_CACHE", str(tmp_path / "cache"))  # the decoded arrays
    for split in ("train", "test"):
        (tmp_path / "one" / split / "cat").mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), i).save(tmp_path / "one" / split / "cat" / f"{i}.png")
    assert main(["evaluate", BLOCK, "--dataset", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err
    assert "one has one class ('cat')" in err and len(err.strip().splitlines()) == 1


def test_an_interrupted_evaluation_says_to_run_it_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import blockqnn.cli.evaluate as command

    def stopped(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "_evaluate", stopped)
    assert main(["evaluate", BLOCK, "--dataset", "digits"]) == 130
    assert capsys.readouterr().err == (
        "blockqnn evaluate: interrupted (nothing was written); run the same command again "
        "to start it over\n"
    )
