"""Shared fixtures for every test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own user cache folder: searches read and write the evaluation cache
    there by default, so tests must neither share results through it nor write to ~."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
