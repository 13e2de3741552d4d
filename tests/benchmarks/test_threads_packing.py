"""benchmarks/threads.py and benchmarks/packing.py measure what their rows name: each thread
setting trains at its own count, and every packing run trains its blocks (no cache hits)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from benchmarks import packing
from benchmarks import threads as threads_bench
from blockqnn.train import threads

COUNTS = {"auto": 3, "all": 4, "physical": 2, "minus-one": 3}


def test_each_thread_setting_trains_at_its_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer sets torch's threads from the setting in force before every fit; the
    benchmark must choose each row's count there, not only call torch.set_num_threads."""
    seen: list[tuple[int, int]] = []  # (threads at the fit, the row's count)

    def resolve(setting: str, **_: Any) -> int:
        return int(setting) if setting.isdigit() else COUNTS[setting]

    def fit(*_: Any, **__: Any) -> SimpleNamespace:
        threads.configure_threads()  # what blockqnn.train.loop.fit does first on the CPU
        seen.append((torch.get_num_threads(), expected[0]))
        return SimpleNamespace(ok=True, error="", images_per_second=1.0)

    expected = [0]
    real_choose = threads.choose

    def choose(setting: str | None, *, override: bool = False) -> None:
        expected[0] = int(setting or 0)
        real_choose(setting, override=override)

    monkeypatch.setattr(threads, "resolve", resolve)
    monkeypatch.setattr(threads, "choose", choose)
    monkeypatch.setattr(threads_bench, "fit", fit)
    saved = torch.get_num_threads()
    try:
        args = argparse.Namespace(
            dataset="digits", train_samples=64, batch_size=32, epochs=1, repeats=1,
            busy_kind="python",
        )  # fmt: skip
        rows = threads_bench.measure(args, 0)
    finally:
        torch.set_num_threads(saved)
        threads.reset()
    assert {r["setting"]: r["threads"] for r in rows} == {**COUNTS, "1": 1}
    assert len(seen) == 2 * len(rows)  # a warm-up and a timed fit per setting
    assert all(got == want for got, want in seen), seen


def test_packing_runs_train_every_block_at_the_row_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs of one seed propose the same blocks: with the evaluation cache on, every run
    after the first was served from it and its rate was no training at all."""
    fits: list[int] = []
    real = threads.configure_threads

    def configure() -> int:
        fits.append(real())
        return fits[-1]

    monkeypatch.setattr(threads, "configure_threads", configure)
    ns = argparse.Namespace(
        budget=2, seed=0, dataset="digits", train_samples=64, cache_dir="", filters=4,
        blocks_per_stage=1, epochs=1, batch_size=32, device="cpu",
    )  # fmt: skip
    saved = torch.get_num_threads()
    try:
        first = packing.measure(ns, 1)
        fits.clear()
        second = packing.measure(ns, 1, threads=1)
    finally:
        torch.set_num_threads(saved)
        threads.reset()
    assert first["evaluations"] == second["evaluations"] == 2
    assert first["from_cache"] == second["from_cache"] == 0
    assert fits and set(fits) == {1}, fits  # the one-thread row trained on one thread
