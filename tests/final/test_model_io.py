"""Model files: safe save/load, export to TorchScript and ONNX, bad files refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from blockqnn import BlockQNNError, build_network, load_model
from blockqnn.cli import main
from blockqnn.final.model_io import export_model, model_payload, read_payload, save_atomic

BLOCK = "1,1,3,0,0; 2,2,3,0,0; 3,6,0,1,2; 4,7,0,0,0"


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = build_network(BLOCK, input_shape=(1, 8, 8), filters=4, head="gap")
    # Perturb BN statistics so a lost buffer would show up in the comparison.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None  # tracked stats
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "model.pt"
    save_atomic(
        model_payload(net, (0.3,), (0.2,), tuple("0123456789"), {"test_accuracy": 0.9}), path
    )
    return path


def test_round_trip_predicts_the_same(model_file: Path) -> None:
    model = load_model(model_file)
    assert str(model.block) == BLOCK
    assert model.classes == tuple("0123456789")
    payload = read_payload(model_file)
    assert payload["metrics"] == {"test_accuracy": 0.9}
    x = torch.rand(5, 1, 8, 8)
    again = load_model(model_file)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
        net = model.network
        assert torch.allclose(model(x), net((x - 0.3) / 0.2))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_pytorch(model_file: Path, tmp_path: Path, fmt: str) -> None:
    model = load_model(model_file)
    out = tmp_path / f"model.{fmt}"
    info = export_model(model, fmt, out)
    assert out.is_file() and info["max_abs_diff"] < 1e-4
    x = torch.rand(7, 1, 8, 8)  # a batch size the export never saw
    with torch.no_grad():
        expected = model(x).numpy()
    if fmt == "torchscript":
        got = torch.jit.load(str(out))(x).detach().numpy()  # type: ignore[no-untyped-call]
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"images": x.numpy()})
    assert np.abs(got - expected).max() < 1e-4


def test_export_cli_json(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", str(model_file), "--format", "onnx", "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(out) and info["max_abs_diff"] < 1e-4
    assert "onnxruntime" in info["checked_with"]


class _Evil:
    """Unpickled by an unrestricted unpickler, creates the file `marker`: a payload whose
    harm shows (code run while loading), where one that prints would pass unseen."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize(
    "kind", ["truncated", "garbage", "foreign_pickle", "other_dict", "missing"]
)
def test_bad_model_files(model_file: Path, tmp_path: Path, kind: str) -> None:
    bad = tmp_path / "bad.pt"
    marker = tmp_path / "pwned"
    if kind == "truncated":
        data = model_file.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        bad.write_bytes(b"\x00not a model" * 50)
    elif kind == "foreign_pickle":
        torch.save({"x": _Evil(marker)}, bad)
    elif kind == "other_dict":
        torch.save({"state_dict": {}}, bad)
    with pytest.raises(BlockQNNError):
        load_model(bad)
    assert not marker.exists()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "blockqnn",
            "export",
            str(bad),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "x.onnx"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists() and not marker.exists()


def test_unsupported_format(model_file: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "blockqnn",
            "export",
            str(model_file),
            "--format",
            "tflite",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    with pytest.raises(BlockQNNError, match="not supported"):
        export_model(load_model(model_file), "tflite", tmp_path / "x")


def test_a_model_file_that_would_run_code_is_refused_without_running_it(
    model_file: Path, tmp_path: Path
) -> None:
    # A real model file with one more entry whose unpickling creates a file. Loading with
    # weights_only=True refuses it before any code runs; an unrestricted load would create
    # the marker (checked by hand: with weights_only=False in read_payload this test fails).
    marker = tmp_path / "pwned"
    payload = torch.load(model_file, map_location="cpu", weights_only=True)
    payload["extra"] = _Evil(marker)
    evil = tmp_path / "evil.pt"
    torch.save(payload, evil)
    assert not marker.exists()
    with pytest.raises(BlockQNNError) as refused:
        load_model(evil)
    assert not marker.exists()  # no code ran ...
    assert "not a readable blockqnn model file" in str(refused.value)  # ... refused at load


def test_foreign_torch_file_gives_one_plain_line(tmp_path: Path) -> None:
    foreign = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(2, 2), foreign)  # a whole pickled module, not our format
    proc = subprocess.run(
        [sys.executable, "-m", "blockqnn", "export", str(foreign), "--format", "onnx",
         "--out", str(tmp_path / "x.onnx")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "\x1b[" not in proc.stderr


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_honour_the_umask(model_file: Path, tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        payload = read_payload(model_file)
        saved = tmp_path / f"saved-{umask:o}.pt"
        save_atomic({k: v for k, v in payload.items() if k != "checksum"}, saved)
        files = [saved]
        for fmt, suffix in (("torchscript", "pt"), ("onnx", "onnx")):
            if fmt == "onnx":
                pytest.importorskip("onnx")
            out = tmp_path / f"export-{umask:o}.{suffix}"
            export_model(load_model(model_file), fmt, out)
            files.append(out)
    finally:
        os.umask(previous)
    for path in files:  # not mkstemp's 0600: readable by the group (and others at 022)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_a_file_that_is_not_a_model_is_named_in_whole_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "README.md"
    text.write_text("# not a model\n" * 50)
    assert main(["export", str(text), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("not a blockqnn model file (not a PyTorch zip archive)")
