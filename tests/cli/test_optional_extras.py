"""Every optional dependency, missing: the command that needs it refuses in one line naming
the extra to install (exit 2), never with a traceback; and `make install` (what `make demo`
runs) installs the extras the demo's printed next commands need."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from blockqnn import build_network
from blockqnn.cli import main
from blockqnn.final.model_io import model_payload, save_atomic

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def _refusal(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_export_onnx_without_onnx_names_the_export_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    net = build_network("1,1,3,0,0; 2,7,0,0,0", input_shape=(1, 8, 8), filters=4, head="gap")
    model = tmp_path / "model.pt"
    save_atomic(model_payload(net, (0.3,), (0.2,), tuple("0123456789"), {}), model)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    out = tmp_path / "model.onnx"
    err = _refusal(capsys, ["export", str(model), "--format", "onnx", "--out", str(out)])
    assert "blockqnn[export]" in err and not out.exists()


def test_report_without_matplotlib_names_the_report_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert "blockqnn[report]" in _refusal(capsys, ["report", str(tmp_path)])


def test_ray_executor_without_ray_names_the_ray_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    run = tmp_path / "run"
    err = _refusal(capsys, ["search", "--run-dir", str(run), "--executor", "ray", "--budget", "2"])
    assert "blockqnn[ray]" in err and not run.exists()


def test_onnxruntime_latency_without_onnxruntime_names_the_export_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    err = _refusal(capsys, ["show", "1,1,3,0,0; 2,7,0,0,0", "--latency", "onnxruntime"])
    assert "[export]" in err


def _extras_installed_by(target: str) -> set[str]:
    """The extras the Makefile's `target` installs (`-e ".[a,b]"`)."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe is not None, f"no {target} target"
    found = re.search(r'-e "?\.\[([^\]]*)\]', recipe.group(1))
    return set(found.group(1).split(",")) if found else set()


def test_make_install_brings_what_the_demos_next_commands_import() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    installed = {
        re.split(r"[<>=;\[ ]", spec)[0]
        for extra in _extras_installed_by("install")
        for spec in extras[extra]
    }
    # report (matplotlib), export --format onnx (onnx; onnxruntime checks the file)
    assert {"matplotlib", "onnx", "onnxruntime"} <= installed
