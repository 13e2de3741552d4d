"""An evaluation that fails in a way nobody planned for is a failed trial, never a crashed
search with a trial left `running` (which every `--resume` would run into again)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import blockqnn.execute.base as ex
from blockqnn.cli import main
from blockqnn.evaluate.result import EvalResult
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.settings.config import Config
from blockqnn.space.nsc.block import Block
from blockqnn.store.db import Store


class Troubled(SyntheticEvaluator):
    """The synthetic evaluator, misbehaving for blocks whose hash starts with 0-4."""

    def __init__(self, config: Config, how: str) -> None:
        super().__init__(config)
        self.how = how

    def evaluate(self, block: Block) -> EvalResult:
        result = super().evaluate(block)
        if block.hash[0] not in "01234":
            return result
        if self.how == "raises":
            raise RuntimeError("value cannot be converted to type float without overflow")
        if self.how == "huge flops":
            return replace(result, flops=2**70)
        metrics: dict[str, Any] = {"odd": {1, 2}}  # not a JSON value
        return replace(result, metrics=metrics)


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("raises", "the evaluator raised RuntimeError: value cannot be converted"),
        ("huge flops", "flops = 1180591620717411303424 does not fit a 64-bit integer"),
        ("odd metrics", "its metrics are not JSON numbers"),
    ],
)
def test_an_unplanned_failure_is_a_recorded_failed_trial(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    how: str,
    error: str,
) -> None:
    monkeypatch.setattr(ex, "default_evaluator", lambda c, d, dev: Troubled(c, how))
    monkeypatch.setattr(ex, "load_data", lambda c: None)
    run = tmp_path / "run"
    argv = ["search", "--run-dir", str(run), "--budget", "12", "--dataset", "digits"]
    assert main(argv) == 0
    capsys.readouterr()
    with Store.open(run, readonly=True) as store:
        trials = store.trials()
        counts = store.counts()
    failed = [t for t in trials if t.status == "failed"]
    assert failed and all(error in t.error for t in failed), [t.error for t in failed]
    assert counts["trained"] == 12 and counts["running"] == 0
    assert main(["search", "--resume", str(run)]) == 0  # nothing stuck: a finished run
    assert main(["status", str(run)]) == 0
    assert "failed trial" in capsys.readouterr().out


def test_a_network_too_large_for_the_device_fails_before_it_is_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import blockqnn.evaluate.early_stop as evaluator_module
    import blockqnn.train.devices as devices
    from blockqnn.data import load_arrays
    from blockqnn.evaluate.early_stop import Evaluator
    from blockqnn.final.train import FinalSettings, train_final
    from blockqnn.settings.config import NetworkConfig, merge

    monkeypatch.setattr(devices, "device_memory", lambda device: 1 << 20)  # a 1 MiB device

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("built a network that cannot fit")

    monkeypatch.setattr(evaluator_module, "Network", never)
    config = merge(Config(), {"data": {"train_samples": 200}, "network": {"filters": 64}})
    evaluator = Evaluator(config, load_arrays(config.data), device="cpu")
    result = evaluator.evaluate(Block.parse("1,1,3,0,0"))
    assert result.status == "failed" and result.error.startswith("network too large: its ")
    assert "GiB to train, more than the 0.0 GiB" in result.error and result.params > 0

    from blockqnn import BlockQNNError

    with pytest.raises(BlockQNNError, match="too large for this device"):
        train_final(
            Block.parse("1,1,3,0,0"),
            config.data,
            NetworkConfig(filters=64),
            FinalSettings(epochs=1),
            tmp_path / "out",
            device="cpu",
        )
    assert not (tmp_path / "out").exists()
