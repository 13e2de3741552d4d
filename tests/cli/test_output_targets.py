"""No command replaces what is not a regular file (issue 24, item 1): every user-named output
(`show --svg`, `report --out`, `export --out`, `train --out`) given a device node, a folder,
a FIFO, or a symlink to any of them is refused in one line with exit 2, the target left as
it was and no temporary file left beside it.

Device nodes are made with `os.mknod` inside the test's own temp folder (char device 1,3):
never the machine's /dev/null or /dev/full."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from blockqnn.cli import main
from blockqnn.evaluate.result import EvalResult
from blockqnn.final.model_io import model_payload, save_atomic
from blockqnn.settings.config import Config, NetworkConfig
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.builder import Network
from blockqnn.store.db import Store

BLOCK = "1,1,3,0,0"


def _device(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _folder(path: Path) -> None:
    path.mkdir()


MAKERS: dict[str, Callable[[Path], None]] = {"device": _device, "fifo": _fifo, "dir": _folder}
KINDS = [*MAKERS, *(f"link-to-{k}" for k in MAKERS)]


def _target(tmp_path: Path, kind: str) -> Path:
    """A non-regular `kind` of file at tmp_path/out/target (a symlink: to one beside it)."""
    where = tmp_path / "out"
    where.mkdir()
    target = where / "target"
    if kind.startswith("link-to-"):
        real = where / "real"
        MAKERS[kind.removeprefix("link-to-")](real)
        target.symlink_to(real)
    else:
        MAKERS[kind](target)
    return target


def _fingerprint(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_mode, st.st_ino, st.st_rdev


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], target: Path) -> str:
    before = sorted(p.name for p in target.parent.iterdir())
    seen = _fingerprint(target)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert _fingerprint(target) == seen  # not replaced
    assert sorted(p.name for p in target.parent.iterdir()) == before  # no temp file left
    return err


@pytest.mark.parametrize("kind", KINDS)
def test_show_svg_never_replaces_a_non_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    target = _target(tmp_path, kind)
    err = _refused(capsys, ["show", BLOCK, "--svg", str(target)], target)
    assert "not a regular file" in err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run holding one complete trial: enough for a report."""
    directory = tmp_path_factory.mktemp("run") / "run"
    with Store.create(directory, Config()) as store:
        store.acquire()
        trial = store.add_trial(Block.parse(BLOCK), {})
        store.finish(trial, EvalResult("ok", accuracy=0.5, reward=0.5), 0.5, "w", 1)
    return directory


@pytest.mark.parametrize("kind", KINDS)
def test_report_out_never_replaces_a_non_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, run_dir: Path
) -> None:
    target = _target(tmp_path, kind)
    err = _refused(capsys, ["report", str(run_dir), "--out", str(target)], target)
    assert "--out" in err


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = NetworkConfig(num_classes=2, input_shape=(1, 8, 8), filters=4, blocks_per_stage=1)
    network = Network(Block.parse(BLOCK), config)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_atomic(model_payload(network, (0.5,), (0.25,), ("a", "b")), path)
    return path


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("kind", KINDS)
def test_export_out_never_replaces_a_non_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, fmt: str, model_file: Path
) -> None:
    target = _target(tmp_path, kind)
    argv = ["export", str(model_file), "--format", fmt, "--out", str(target)]
    assert "not a regular file" in _refused(capsys, argv, target)


@pytest.mark.parametrize("kind", ["device", "fifo", "link-to-device", "link-to-fifo"])
def test_train_out_never_uses_a_non_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    target = _target(tmp_path, kind)
    argv = ["train", "--block", BLOCK, "--dataset", "digits", "--epochs", "1", "--out"]
    assert "--out" in _refused(capsys, [*argv, str(target)], target)


@pytest.mark.parametrize("name", ["model.pt", "checkpoint.pt"])
@pytest.mark.parametrize("kind", ["device", "fifo", "dir"])
def test_train_files_are_never_written_over_a_non_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, name: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / name
    MAKERS[kind](target)
    argv = ["train", "--block", BLOCK, "--dataset", "digits", "--epochs", "1", "--out", str(out)]
    argv += ["--recipe", "fast", "--filters", "4", "--train-samples", "50"]
    _refused(capsys, argv, target)


def _refused_file(capsys: pytest.CaptureFixture[str], argv: list[str], target: Path) -> str:
    """`_refused` for a regular file: its bytes are what they were."""
    before = target.read_bytes()
    err = _refused(capsys, argv, target)
    assert target.read_bytes() == before and "exists and is not" in err, err
    return err


def test_an_output_replaces_an_earlier_one_of_its_kind_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], run_dir: Path, model_file: Path
) -> None:
    store = run_dir / "blockqnn.sqlite"
    _refused_file(capsys, ["report", str(run_dir), "--out", str(store)], store)
    _refused_file(capsys, ["show", BLOCK, "--svg", str(store)], store)
    for fmt in ("torchscript", "onnx"):  # the model being exported, or the other format
        argv = ["export", str(model_file), "--format", fmt, "--out"]
        _refused_file(capsys, [*argv, str(model_file)], model_file)
        other = tmp_path / f"other.{fmt}"
        assert main([*argv, str(tmp_path / f"{fmt}.export")]) == 0
        assert main([*argv, str(tmp_path / f"{fmt}.export")]) == 0  # an earlier export
        other.write_text("<html>")
        _refused_file(capsys, [*argv, str(other)], other)
    for argv in (["report", str(run_dir), "--out"], ["show", BLOCK, "--svg"]):
        page = tmp_path / "page"
        page.write_bytes(b"")  # empty: nothing to lose
        assert main([*argv, str(page)]) == 0
        assert main([*argv, str(page)]) == 0  # an earlier page or drawing
    capsys.readouterr()


def test_an_output_through_a_symlink_replaces_the_file_it_names(tmp_path: Path) -> None:
    real = tmp_path / "real.svg"
    real.write_text("<svg>old</svg>")
    link = tmp_path / "link.svg"
    link.symlink_to(real)
    assert main(["show", BLOCK, "--svg", str(link), "--json"]) == 0
    assert link.is_symlink() and "old" not in real.read_text()


def test_a_full_disk_under_stdout_is_one_line_and_exit_2() -> None:
    import subprocess
    import sys

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "blockqnn", "show", BLOCK, "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "blockqnn show: error: cannot write the output: disk full\n"
