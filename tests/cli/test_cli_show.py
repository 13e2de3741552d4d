"""`blockqnn show` through the real console entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blockqnn.cli import main

EXAMPLE = "1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,7,0,0,0"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blockqnn", *args], capture_output=True, text=True, env=env
    )


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", EXAMPLE, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["nsc"] == EXAMPLE
    assert data["hash"] == "23771642cd3c9be910aec2940761c528"
    assert (data["params"], data["flops"]) == (1_259_178, 358_567_936)
    assert data["density"] == pytest.approx(1.0)


def test_show_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert "conv 5x5 <- 0" in out and "add <- 1, 2" in out
    assert "1,259,178" in out and "23771642cd3c" in out


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("1,1,3,0,0; 2,1,5,0,9", "layer 2: conv takes one predecessor"),
        ("1,1,3,0,0; 2,1,3,0,0; 3,5,0,1,5", "layer 3: pred2 = 5 is not an earlier layer"),
        ("1,9,0,0,0", "unknown type 9"),
        ("", "empty block"),
        ("x", "not a list of integers"),
    ],
)
def test_bad_block_is_one_line_exit_2(block: str, message: str) -> None:
    proc = _run("show", block)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_usage_errors_are_one_line() -> None:
    for args in (["show"], ["show", EXAMPLE, "--bogus"], ["nosuchcommand"]):
        proc = _run(*args)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_bad_network_option() -> None:
    proc = _run("show", EXAMPLE, "--input-shape", "3,4,4")
    assert proc.returncode == 2 and "too small" in proc.stderr


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_svg(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "block.svg"
    assert main(["show", EXAMPLE, "--svg", str(out)]) == 0
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") or "<svg" in svg
    assert "conv 5x5" in svg and "add" in svg


def test_svg_without_dot(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # no `dot` on this PATH
    out = tmp_path / "block.svg"
    proc = _run("show", EXAMPLE, "--svg", str(out), env=env)
    assert proc.returncode == 2
    assert "Graphviz" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_svg_under_a_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    proc = _run("show", EXAMPLE, "--svg", str(tmp_path / "afile" / "x.svg"))
    assert proc.returncode == 2 and "cannot write" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_show_run_prices_the_runs_network_as_status_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import blockqnn.execute.base as ex
    from blockqnn.evaluate.synthetic import SyntheticEvaluator
    from blockqnn.space.nsc.block import Block
    from blockqnn.space.nsc.cost import network_cost
    from blockqnn.store.db import Store

    # the real digits data (1x8x8), the instant evaluator
    monkeypatch.setattr(ex, "default_evaluator", lambda c, d, dev: SyntheticEvaluator(c))
    run = tmp_path / "run"
    argv = ["search", "--run-dir", str(run), "--budget", "2", "--dataset", "digits"]
    assert main([*argv, "--filters", "8", "--blocks-per-stage", "1", "--train-samples", "100"]) == 0
    capsys.readouterr()
    assert main(["status", str(run), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)["top"][0]
    assert main(["show", best["nsc"], "--run", str(run), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    # the synthetic evaluator prices at the default shape; the trainer (status) at the data's
    with Store.open(run, readonly=True) as store:
        network = store.config().network
    assert network.input_shape == (1, 8, 8) and shown["network"] == network.to_dict()
    cost = network_cost(Block.parse(best["nsc"]), network)
    assert (shown["params"], shown["flops"]) == (cost.params, cost.flops)
    assert shown["priced"] == f"the network of run {run}"
    assert main(["show", best["nsc"], "--run", str(run), "--filters", "16"]) == 0
    out = capsys.readouterr().out
    assert "network   F=16, N=1, input 1x8x8" in out
    assert f"priced    the network of run {run}, with --filters as given" in out


def test_show_says_it_prices_the_default_network(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert "network   F=32, N=2, input 3x32x32, 10 classes, paper head" in out
    assert "priced    the default search-time network (--run RUN: a run's)" in out


def test_show_run_that_is_not_a_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", EXAMPLE, "--run", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
