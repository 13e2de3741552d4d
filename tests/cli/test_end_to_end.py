"""From search to deployed file, through the command line, as the docs show it: search on
digits -> train the best block -> export to TorchScript and ONNX -> load back. Also the docs'
walk and the commands a finished search prints, run as written (with tiny settings added)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from blockqnn import load_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
COMMANDS_DOC = ROOT / "docs" / "commands.md"
# Appended to the docs' commands: the same steps in seconds (later flags win in argparse).
TINY = {
    "search": ["--budget", "2", "--epochs", "1", "--filters", "4", "--train-samples", "200"],
    "train": ["--epochs", "1", "--train-samples", "200", "--filters", "4"],
}


def blockqnn(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "blockqnn", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _run_as_written(words: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A printed or documented command line, blockqnn called as this test's interpreter
    (what `blockqnn` on the PATH runs), with the tiny settings of its subcommand added."""
    at = next(i for i, w in enumerate(words) if w == "blockqnn" or w.endswith("/blockqnn"))
    command = words[at + 1]
    argv = [sys.executable, "-m", "blockqnn", *words[at + 1 :], *TINY.get(command, [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def _walk(path: Path, heading: str) -> list[str]:
    """The commands of the first bash block after `heading` in a Markdown file."""
    text = path.read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index(heading) :], re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.startswith("blockqnn ")]


def _docs_walk() -> list[str]:
    walk = _walk(COMMANDS_DOC, "## From search to deployed file")
    assert _walk(ROOT / "README.md", "From a search to a deployed file") == walk  # the same
    return walk


def test_the_docs_walk_and_the_commands_its_search_prints_run_as_written(tmp_path: Path) -> None:
    walk = _docs_walk()
    assert [line.split()[1] for line in walk] == ["search", "status", "report", "train", "export"]
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "digits.toml", tmp_path / "examples")
    search = _run_as_written(shlex.split(walk[0]), tmp_path)
    assert search.returncode == 0, search.stderr
    # what the search printed next, run exactly as printed (the tiny settings added)
    printed = search.stdout[search.stdout.index("next:\n") :].splitlines()[1:]
    commands = [re.sub(r"\s+# .*$", "", line).strip() for line in printed if " # " in line]
    names = [re.findall(r"blockqnn (\w+)", c)[0] for c in commands]
    assert names == ["status", "report", "trials", "train", "export"]
    for command in [*commands, *walk[1:]]:  # then the rest of the docs' walk
        proc = _run_as_written(shlex.split(command), tmp_path)
        assert proc.returncode == 0, f"{command}\n{proc.stderr}"
    run = tmp_path / "runs" / "digits"
    assert (run / "report.html").is_file() and (run / "final" / "model.onnx").is_file()
    written = [Path(w) for w in shlex.split(walk[-1]) if w.endswith(".onnx")]
    assert written and (tmp_path / written[0]).is_file()
    assert written[0].parts[0] == "runs"  # not into the repository's root


def test_search_train_export_load(tmp_path: Path) -> None:
    run = tmp_path / "run"
    blockqnn("search", "--dataset", "digits", "--run-dir", str(run), *TINY["search"])
    status = json.loads(blockqnn("status", str(run), "--json"))
    assert status["trained"] == 2 and status["top"]
    best = status["top"][0]["nsc"]

    final = tmp_path / "final"
    trained = json.loads(
        blockqnn(
            "train", str(run), "--out", str(final), "--epochs", "2", "--batch-size", "64",
            "--lr", "0.05", "--json",
        )
    )  # fmt: skip
    assert trained["block"] == best and 0.0 <= trained["test_accuracy"] <= 1.0

    model = load_model(final / "model.pt")
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    for fmt, name in (("torchscript", "model.ts"), ("onnx", "model.onnx")):
        info = json.loads(
            blockqnn(
                "export", str(final / "model.pt"), "--format", fmt,
                "--out", str(tmp_path / name), "--json",
            )
        )  # fmt: skip
        assert info["max_abs_diff"] < 1e-4
    scripted = torch.jit.load(str(tmp_path / "model.ts"))  # type: ignore[no-untyped-call]
    assert np.abs(scripted(x).detach().numpy() - expected).max() < 1e-4
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": x.numpy()})
    assert np.abs(logits - expected).max() < 1e-4
    # The deployed model predicts the same classes as the trained one.
    assert (logits.argmax(1) == expected.argmax(1)).all()
