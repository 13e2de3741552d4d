"""benchmarks/gpu_check.sh in its shortest form: the CPU dry run on a tiny CIFAR-shaped JPEG
archive. Every step must run to the end and leave its JSON; the figures must name the device
and the PyTorch version. Bad input exits 2 with one line."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _tiny_cifar(path: Path, train: int = 60, test: int = 10) -> Path:
    """A .tar.gz laid out as cifar10-jpg.tar.gz: train/<class>/*.jpg, test/<class>/*.jpg,
    32x32 RGB, each class a different mean colour (so the data is learnable)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", train), ("test", test)):
            for label, name in enumerate(CLASSES):
                for i in range(n):
                    pixels = rng.normal(25 * label, 40, (32, 32, 3)).clip(0, 255)
                    buffer = io.BytesIO()
                    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG")
                    info = tarfile.TarInfo(f"{split}/{name}/{i:04d}.jpg")
                    info.size = buffer.tell()
                    buffer.seek(0)
                    tar.addfile(info, buffer)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=400
    )


@needs_bash
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_cpu_dry_run_runs_every_step(tmp_path: Path) -> None:
    archive = _tiny_cifar(tmp_path / "cifar10-jpg.tar.gz")
    out = tmp_path / "check"
    proc = _run(str(out), "--cifar", str(archive), "--device", "cpu")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert list(steps) == ["pytest", "trainer", "evaluation", "packing", "search", "final"]
    assert all(s["status"] == "ok" for s in steps.values()), steps
    for name in ("trainer", "evaluation", "packing", "search", "final"):
        assert (out / f"{name}.json").is_file(), name
    env = summary["environment"]
    assert env["torch"] and env["blockqnn_path"] == str(ROOT / "src" / "blockqnn")
    assert summary["data"]["train_images"] == 600 and summary["data"]["classes"] == 10
    figures = summary["figures"]
    assert figures["trainer"]["device"].startswith("cpu")
    assert figures["evaluation"]["device"].startswith("cpu")
    assert [row["workers"] for row in figures["packing"]["rows"]][-1] == "2"
    assert figures["search"]["trained"] == 4
    assert figures["final"]["tta"] == "flip" and figures["final"]["settings"]["recipe"] == "fast"
    assert figures["pytest"]["failures"] == figures["pytest"]["errors"] == 0
    log = (out / "log.txt").read_text()
    assert "=== final" in log and "Traceback" not in log
    assert not (out / "work").exists()  # the extracted images are scratch


@needs_bash
def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    (tmp_path / "not.tar.gz").write_text("no archive")
    for args, message in (
        ([str(tmp_path / "o1"), "--cifar", str(tmp_path / "missing.tar.gz")], "no such file"),
        ([str(tmp_path / "o2"), "--cifar", str(tmp_path / "not.tar.gz")], "not a tar archive"),
        ([str(tmp_path / "full"), "--device", "cpu"], "is not empty"),
        ([str(tmp_path / "o3"), "--device", "tpu"], "choose cuda or cpu"),
    ):
        proc = _run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr)
    assert (tmp_path / "full" / "x").read_text() == "mine"
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()
