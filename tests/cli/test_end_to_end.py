"""From search to deployed file, through the command line, as the README shows it:
search on digits -> train the best block -> export to TorchScript and ONNX -> load back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from blockqnn import load_model

pytestmark = pytest.mark.slow


def blockqnn(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "blockqnn", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_search_train_export_load(tmp_path: Path) -> None:
    run = tmp_path / "run"
    blockqnn(
        "search",
        "--dataset",
        "digits",
        "--budget",
        "3",
        "--epochs",
        "1",
        "--filters",
        "4",
        "--train-samples",
        "300",
        "--run-dir",
        str(run),
    )
    status = json.loads(blockqnn("status", str(run), "--json"))
    assert status["trained"] == 3 and status["top"]
    best = status["top"][0]["nsc"]

    final = tmp_path / "final"
    trained = json.loads(
        blockqnn(
            "train",
            str(run),
            "--out",
            str(final),
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--lr",
            "0.05",
            "--json",
        )
    )
    assert trained["block"] == best and 0.0 <= trained["test_accuracy"] <= 1.0

    model = load_model(final / "model.pt")
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    for fmt, name in (("torchscript", "model.ts"), ("onnx", "model.onnx")):
        info = json.loads(
            blockqnn(
                "export",
                str(final / "model.pt"),
                "--format",
                fmt,
                "--out",
                str(tmp_path / name),
                "--json",
            )
        )
        assert info["max_abs_diff"] < 1e-4
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    assert np.abs(scripted(x).detach().numpy() - expected).max() < 1e-4
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": x.numpy()})
    assert np.abs(logits - expected).max() < 1e-4
    # The deployed model predicts the same classes as the trained one.
    assert (logits.argmax(1) == expected.argmax(1)).all()
