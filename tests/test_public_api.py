"""The public API: every name in `blockqnn.__all__` can be imported, `from blockqnn import *`
works, and importing the package stays torch-free until a torch-backed name is used."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import blockqnn


def _in_fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter: the names must resolve from a cold import."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("name", blockqnn.__all__)
def test_every_exported_name_can_be_imported(name: str) -> None:
    value = getattr(blockqnn, name)
    assert value is not None
    if name != "__version__":
        module = importlib.import_module(value.__module__)
        assert getattr(module, value.__name__) is value  # the object of its home module


def test_star_import_gives_every_exported_name() -> None:
    done = _in_fresh_python(
        "from blockqnn import *\n"
        "import blockqnn\n"
        "missing = [n for n in blockqnn.__all__ if n not in globals()]\n"
        "assert not missing, missing\n"
    )
    assert done.returncode == 0, done.stderr


def test_importing_the_package_does_not_import_torch() -> None:
    done = _in_fresh_python(
        "import sys, blockqnn\n"
        "from blockqnn import Block, QLearningAgent, make_strategy, network_cost\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    assert done.returncode == 0, done.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="make_agent"):
        blockqnn.make_agent  # noqa: B018 (the stale name of make_strategy)


def test_dir_lists_the_lazy_names_too() -> None:
    """Tab completion shows `build_network` before anything imported it."""
    assert {"build_network", "load_model", "QLearningAgent"} <= set(dir(blockqnn))
    assert "Any" not in dir(blockqnn)
