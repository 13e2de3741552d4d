"""Hostile input at the command line: huge integers, deep nesting, foreign digits, unbounded
sizes, long echoes, odd files. Each must be one line on stderr and exit code 2, fast.

The property tests draw integers of any size (beyond Python's 4,300-digit conversion limit)
and nesting of any depth into every position of a block's text and JSON forms."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockqnn.cli import main
from blockqnn.errors import BlockQNNError
from blockqnn.space.nsc.block import Block

VALID = ["1", "1", "3", "0", "0"]


def _refused_cleanly(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    started = time.monotonic()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors exit from inside parse_args
        code = exc.code  # type: ignore[assignment]
    assert code == 2, argv[:3]
    assert time.monotonic() - started < 10  # refused up front, not after the work
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err[:500]
    assert len(lines[0]) < 400, lines[0][:500]  # echoed input is cut
    return lines[0]


# ----- 1. integers of any size and nesting of any depth in a block ---------------------------


@st.composite
def block_with_a_big_number(draw: st.DrawFn) -> str:
    digits = draw(st.integers(min_value=1, max_value=20_000))
    number = draw(st.sampled_from(["9", "1", "0"])) * digits
    sign = draw(st.sampled_from(["", "-"]))
    values = list(VALID)
    values[draw(st.integers(0, 4))] = sign + number
    if draw(st.booleans()):
        return "[[" + ",".join(values) + "]]"
    return ",".join(values)


@settings(max_examples=60, deadline=None)
@given(block_with_a_big_number())
def test_any_integer_size_in_a_block_is_a_clean_error(text: str) -> None:
    try:
        Block.parse(text)  # a leading-zero "000...01" may still be a valid layer value
    except BlockQNNError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 300


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=3, max_value=200_000), st.sampled_from(["[", "{", "[{"]))
def test_any_nesting_depth_in_a_block_is_a_clean_error(depth: int, opener: str) -> None:
    text = "[[" + (opener * depth)[: depth - 2] + "1"
    for parse in (Block.parse, Block.from_json):
        with pytest.raises(BlockQNNError) as info:
            parse(text)
        message = str(info.value)  # "nested more deeply", or "block text of N characters"
        assert "\n" not in message and len(message) < 200


@settings(max_examples=50, deadline=None)
@given(st.characters(categories=["Nd"]).filter(lambda c: not c.isascii()))
def test_digits_of_other_scripts_are_refused(digit: str) -> None:
    text = ",".join([digit, "1", "3", "0", "0"])
    with pytest.raises(BlockQNNError, match="not a list of integers"):
        Block.parse(text)


def test_the_reported_blocks_exit_2_with_one_short_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for text in (
        "1,1,3,0," + "9" * 4301,
        "[[1,1,3,0," + "9" * 4301 + "]]",
        "[" * 100_000,
        "１,１,３,０,０",  # full-width digits
        "1,1,3,0,0;" * 200_000,
        "x" * 10_000,
    ):
        _refused_cleanly(capsys, ["show", text])


# ----- 4. unbounded sizes: refused before any work ---------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--blocks-per-stage", "100000000"], "network.blocks_per_stage = 100000000"),
        (["--filters", "2000000000"], "network.filters = 2000000000"),
        (["--max-depth", "100000"], "max_depth = 100000: must be in [2, 64]"),
        (["--num-classes", "99999999999"], "network.num_classes"),
        (["--input-shape", "3,99999,99999"], "network.input_shape height"),
        (["--input-shape", "3," + "9" * 5000 + ",32"], "--input-shape"),
    ],
)
def test_show_refuses_unbounded_sizes(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert message in _refused_cleanly(capsys, ["show", "1,1,3,0,0", *argv])


def test_search_refuses_unbounded_sizes_before_creating_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        ("[agent]\nmax_depth = 100000\n", [], "agent.max_depth"),
        ("[network]\nblocks_per_stage = 100000000\n", [], "network.blocks_per_stage"),
        ("", ["--budget", "1000000000"], "search.budget = 1000000000"),
        ("", ["--budget", "9" * 5000], "--budget"),
        ("", ["--filters", "2000000000"], "network.filters"),
        ("", ["--seed", "99999999999999999999999"], "search.seed"),
    ]
    for i, (toml, flags, message) in enumerate(cases):
        config = tmp_path / f"c{i}.toml"
        config.write_text(toml)
        run = tmp_path / f"run{i}"
        argv = ["search", "--run-dir", str(run), "--config", str(config), *flags]
        assert message in _refused_cleanly(capsys, argv)
        assert not run.exists()


# ----- 3. values that used to pass and crash the first evaluation ------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "1e300"], "train.lr = 1e+300: must be a finite number in (0, 1_000_000]"),
        (["--lr", "nan"], "argument --lr: not a finite number"),
        (["--seed", "99999999999999999999999"], "train.seed = 99999999999999999999999"),
        (["--seed", "-1"], "train.seed = -1"),
        (["--filters", "2000000000"], "network.filters"),
        (["--epochs", "0"], "train.epochs = 0"),
        (["--batch-size", "99999999999"], "train.batch_size"),
    ],
)
def test_evaluate_refuses_values_that_would_crash_training(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    line = _refused_cleanly(capsys, ["evaluate", "1,1,3,0,0", "--dataset", "digits", *flags])
    assert message in line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "1e300"], "--lr = 1e+300"),
        (["--weight-decay", "nan"], "argument --weight-decay: not a finite number"),
        (["--seed", "99999999999999999999999"], "--seed"),
        (["--label-smoothing", "1.5"], "--label-smoothing"),
        (["--max-depth", "100000"], "max_depth = 100000"),
        (["--blocks-per-stage", "100000000"], "network.blocks_per_stage"),
        (["--train-samples", "-5"], "data.train_samples"),
    ],
)
def test_train_refuses_values_that_would_crash_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    out = tmp_path / "out"
    argv = ["train", "--block", "1,1,3,0,0", "--dataset", "digits", "--out", str(out), *flags]
    assert message in _refused_cleanly(capsys, argv)
    assert not out.exists()


# ----- 5. small ones ----------------------------------------------------------------------


def test_bare_blockqnn_prints_help_to_stderr_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage: blockqnn" in captured.err


@pytest.mark.parametrize("command", ["search", "evaluate"])
def test_an_empty_config_name_is_refused(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, "--config", ""]
    argv += ["--run-dir", str(tmp_path / "r")] if command == "search" else ["1,1,3,0,0"]
    assert "name is empty" in _refused_cleanly(capsys, argv)
    assert not (tmp_path / "r").exists()


def test_a_fifo_as_config_is_refused_without_waiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(
            main(["search", "--run-dir", str(tmp_path / "r"), "--config", str(fifo)])
        ),
        daemon=True,  # were it to block on the FIFO, the test fails instead of hanging
    )
    worker.start()
    worker.join(timeout=20)
    assert result == [2]
    assert "not a regular file" in capsys.readouterr().err


def test_long_values_are_echoed_cut(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long = "z" * 3000  # under the 4,096-character limit of string settings: echoed, cut
    config = tmp_path / "c.toml"
    cases = [
        (f'[search]\nagent = "{long}"\n', "unknown strategy"),
        (f'[train]\nprecision = "{long}"\n', "train.precision"),
        (f"[{long}]\nx = 1\n", "unknown config section"),
        (f"[train]\n{long} = 1\n", "unknown config key"),
        (f'[train]\nepochs = "{long}"\n', "expected an integer"),
    ]
    for text, message in cases:
        config.write_text(text)
        line = _refused_cleanly(
            capsys, ["search", "--run-dir", str(tmp_path / "r"), "--config", str(config)]
        )
        assert message in line and "..." in line and len(line) < 300
    line = _refused_cleanly(capsys, ["show", "1,1,3,0,0", "--filters", long])
    assert "..." in line  # argparse's own echo is cut too


@pytest.mark.parametrize("name", ["d" * 300, "runs/" + "d" * 300 + "/x.npz", "q" * 4000])
def test_a_dataset_name_the_file_system_cannot_hold_is_bad_input(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refused_cleanly(capsys, ["evaluate", "1,1,3,0,0", "--dataset", name])
    assert "dataset" in line and "..." in line


# ----- 6. round two (issue 24): long paths, `--` as a value, foreign digits in flags --------

LONG_PATHS = {"over 4096 bytes": "p/" * 2100 + "x", "a component over 255": "c" * 300}


def _path_cases(tmp_path: Path, long: str) -> list[list[str]]:
    run = str(tmp_path / "run")
    return [
        ["status", long],
        ["trials", long],
        ["report", long],
        ["report", run, "--out", long],
        ["train", long, "--out", str(tmp_path / "o")],
        ["train", "--block", "1,1,3,0,0", "--dataset", "digits", "--out", long],
        ["export", long, "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
        ["export", run, "--format", "onnx", "--out", long],
        ["show", "1,1,3,0,0", "--svg", long],
        ["search", "--run-dir", long],
        ["search", "--resume", long],
        ["search", "--run-dir", run, "--warm-start", long],
        ["search", "--run-dir", run, "--cache", long],
        ["search", "--run-dir", run, "--config", long],
        ["dashboard", long],
    ]


@pytest.mark.parametrize("kind", list(LONG_PATHS))
def test_paths_too_long_for_the_file_system_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    for argv in _path_cases(tmp_path, LONG_PATHS[kind]):
        line = _refused_cleanly(capsys, argv)
        assert "bytes" in line, argv[:2]
    assert not (tmp_path / "run").exists()


def test_a_symlink_loop_given_as_a_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    run = str(tmp_path / "run")
    for argv in (["search", "--run-dir", run, "--warm-start", str(tmp_path / "a")],
                 ["status", str(tmp_path / "a")]):  # fmt: skip
        assert "symlink loop" in _refused_cleanly(capsys, argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--top=--"],
        ["train", "--max-latency-ms=--"],
        ["train", "--out", "o", "--warmup-epochs=--"],
        ["dashboard", "r", "--port=--"],
        ["dashboard", "r", "--refresh=--"],
        ["search", "--warm-start=--"],
        ["search", "--top="],
        ["show", "1,1,3,0,0", "--filters", ""],
        ["show", "1,1,3,0,0", "--filters", "١٦"],  # Arabic-Indic digits
        ["show", "1,1,3,0,0", "--filters", "１６"],  # full-width digits
        ["search", "--gpus-per-trial", "inf"],
        ["search", "--gpus-per-trial", "٠.٥"],
        ["dashboard", "r", "--port", "70000"],
    ],
)
def test_odd_flag_values_are_refused_before_any_work(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    line = _refused_cleanly(capsys, argv)
    flag = [a for a in argv if a.startswith("--")][-1].split("=")[0]
    assert flag in line  # the message names the flag


def test_a_gpu_share_too_small_to_invert_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # found by tools/fuzz_cli.py: 1 / 1e-320 is infinite, round() of it raised OverflowError
    line = _refused_cleanly(capsys, ["search", "--run-dir", "r", "--gpus-per-trial", "1e-320"])
    assert "search.gpus_per_trial" in line


def test_a_host_name_that_cannot_be_encoded_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # found by tools/fuzz_cli.py: socket.bind raised TypeError "encoding of hostname failed"
    from blockqnn.settings.config import Config
    from blockqnn.store.db import Store

    Store.create(tmp_path / "run", Config()).close()
    line = _refused_cleanly(capsys, ["dashboard", str(tmp_path / "run"), "--host", "é" * 300])
    assert "--host" in line
