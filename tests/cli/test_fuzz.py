"""The command-line fuzzer (`tools/fuzz_cli.py`) at CI size: a few dozen hostile inputs over
every command give no traceback, no hang and no replaced device, FIFO, folder or symlink.
The full run (3,000 inputs) is `python tools/fuzz_cli.py`."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fuzz_cli.py"


def _load_tool() -> object:
    spec = importlib.util.spec_from_file_location("fuzz_cli", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_cli"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_hostile_inputs_over_every_command_give_no_traceback_and_replace_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fuzz = _load_tool()
    monkeypatch.chdir(tmp_path)
    box = fuzz.Sandbox(tmp_path)  # type: ignore[attr-defined]
    with fuzz.patched():  # type: ignore[attr-defined]
        fuzz.prepare(box)  # type: ignore[attr-defined]
        tally = fuzz.fuzz(36, 7, 60, box)  # type: ignore[attr-defined]
    assert tally.inputs == 36
    assert tally.tracebacks == [] and tally.hangs == [] and tally.replaced == []
    assert tally.exit_codes.get(2, 0) > 0  # the hostile values were refused, not ignored
    assert os.path.islink(tmp_path / "link-device")  # the sandbox's specials are intact
