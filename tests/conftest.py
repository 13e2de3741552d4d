"""Shared fixtures for every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The user cache folder of module- and session-scoped fixtures, which are set up before
    any test's own (below): a search they run must not read or write the real ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache-home")))
        # decoded data sets: one folder for the session (decoding is slow and the cache keys
        # what the files hold), never the user's
        patch.setenv("BLOCKQNN_CACHE", str(tmp_path_factory.mktemp("data-cache")))
        yield


@pytest.fixture(autouse=True)
def _private_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own user cache folder: searches read and write the evaluation cache
    there by default, so tests must neither share results through it nor write to ~."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
