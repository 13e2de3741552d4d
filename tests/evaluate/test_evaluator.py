"""The evaluator: a filled result record for every candidate, failures included."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

import blockqnn.evaluate.early_stop as evaluator_module
from blockqnn.data import DataArrays, load_arrays
from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.early_stop import Evaluator, evaluate_block
from blockqnn.reward import compute_reward, make_reward, score
from blockqnn.settings.config import Config, merge
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.cost import network_cost, reference_flops
from blockqnn.train import threads

BLOCK = Block.parse("1,1,3,0,0; 2,1,3,1,0; 3,5,0,2,0; 4,7,0,0,0")
SETTINGS = {
    "data": {"dataset": "digits", "train_samples": 400},
    "train": {"epochs": 2, "batch_size": 50},
    "network": {"filters": 8},
}


@pytest.fixture(scope="module")
def config() -> Config:
    return merge(Config(), SETTINGS)


@pytest.fixture(scope="module")
def arrays(config: Config) -> DataArrays:
    return load_arrays(config.data)


@pytest.fixture(scope="module")
def evaluator(config: Config, arrays: DataArrays) -> Evaluator:
    return Evaluator(config, arrays, device="cpu")


def test_ok_result_is_complete(evaluator: Evaluator, config: Config) -> None:
    result = evaluator.evaluate(BLOCK)
    assert result.ok, result.error
    net_cfg = replace(config.network, num_classes=10, input_shape=(1, 8, 8))
    cost = network_cost(BLOCK, net_cfg)
    assert (result.flops, result.params, result.density) == (
        cost.flops,
        cost.params,
        cost.density,
    )
    assert 0.6 < result.accuracy <= 1.0  # chance is 0.1
    expected = compute_reward(
        result.accuracy, cost.flops, reference_flops(net_cfg), cost.density, 0.01, 0.01
    )
    assert result.reward is None  # metrics only: the master scores them
    assert score(make_reward(config), result).reward == pytest.approx(expected)
    assert result.epochs == 2 and result.batch_size == 50 and result.error == ""
    assert result.build_seconds > 0 and result.train_seconds > 0 and result.eval_seconds > 0
    assert result.images_per_second > 0
    assert result.device.startswith("cpu") and result.mode.startswith("eager")


def test_repeatable_on_cpu(evaluator: Evaluator) -> None:
    block = Block.parse("1,1,1,0,0; 2,7,0,0,0")
    a, b = evaluator.evaluate(block), evaluator.evaluate(block)
    assert a.ok and (a.accuracy, a.reward) == (b.accuracy, b.reward)


def test_huge_lr_is_a_failed_record(config: Config, arrays: DataArrays) -> None:
    cfg = merge(config, {"train": {"lr": 1e6}})
    result = Evaluator(cfg, arrays, device="cpu").evaluate(BLOCK)
    assert result.status == "failed"
    assert result.error.startswith(("loss diverged at epoch 1", "non-finite loss at epoch 1"))
    assert score(make_reward(cfg), result).reward == 0.0
    assert result.accuracy == 0.0 and result.epochs == 0
    assert result.flops > 0 and result.params > 0 and result.train_seconds > 0


def test_time_limit_is_a_failed_record(config: Config, arrays: DataArrays) -> None:
    cfg = merge(config, {"train": {"max_seconds": 1e-6}})
    result = Evaluator(cfg, arrays, device="cpu").evaluate(BLOCK)
    assert result.status == "failed"
    assert result.error == "time limit of 1e-06 s reached in epoch 1"


def _oom(times: int, evaluator: Evaluator, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the first `times` runs raise CUDA out-of-memory; returns the batch sizes tried."""
    real_run = evaluator._run
    tried: list[int] = []

    def run(block: Block, recipe: Any, cost: Any, gate: Any) -> Any:
        tried.append(recipe.batch_size)
        if len(tried) <= times:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real_run(block, recipe, cost, gate)

    monkeypatch.setattr(evaluator, "_run", run)
    return tried


def test_out_of_memory_retries_at_half_batch(
    evaluator: Evaluator, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried = _oom(1, evaluator, monkeypatch)
    result = evaluator.evaluate(BLOCK)
    assert tried == [50, 25]
    assert result.ok and result.batch_size == 25


def test_out_of_memory_twice_fails(evaluator: Evaluator, monkeypatch: pytest.MonkeyPatch) -> None:
    tried = _oom(2, evaluator, monkeypatch)
    result = evaluator.evaluate(BLOCK)
    assert tried == [50, 25]
    assert result.status == "failed"
    assert result.error == "CUDA out of memory at batch 50 and again at 25"
    assert result.flops > 0 and result.batch_size == 25


def test_out_of_memory_halves_the_batch_actually_used(
    config: Config, arrays: DataArrays, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch larger than the training set trains the whole set at once: that is halved."""
    evaluator = Evaluator(merge(config, {"train": {"batch_size": 1000}}), arrays, device="cpu")
    n_train = len(arrays.x_train)
    tried = _oom(2, evaluator, monkeypatch)
    result = evaluator.evaluate(BLOCK)
    assert tried == [n_train, n_train // 2]
    assert result.error == f"CUDA out of memory at batch {n_train} and again at {n_train // 2}"
    one = Evaluator(merge(config, {"train": {"batch_size": 1}}), arrays, device="cpu")
    tried = _oom(1, one, monkeypatch)
    assert one.evaluate(BLOCK).error == "CUDA out of memory at batch 1" and tried == [1]


def test_the_device_records_the_threads_used(config: Config, arrays: DataArrays) -> None:
    """Built through the API, the evaluator applies `train.threads` before it describes the
    device, as `fit` will; the count before it is not what trained."""
    saved = torch.get_num_threads()
    try:
        threads.reset()
        torch.set_num_threads(2)
        cfg = merge(config, {"train": {"threads": "1", "epochs": 1}})
        result = Evaluator(cfg, arrays, device="cpu").evaluate(BLOCK)
        assert result.device == "cpu (1 thread)" and torch.get_num_threads() == 1
    finally:
        threads.reset()
        torch.set_num_threads(saved)


def test_bugs_still_raise(evaluator: Evaluator, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the trainer")

    monkeypatch.setattr(evaluator_module, "fit", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        evaluator.evaluate(BLOCK)


def test_evaluate_block_loads_data_from_config(config: Config) -> None:
    cfg = merge(config, {"train": {"epochs": 1}, "data": {"train_samples": 200}})
    result = evaluate_block("1,1,3,0,0; 2,7,0,0,0", cfg, device="cpu")
    assert result.ok and result.epochs == 1


def test_empty_validation_split_is_bad_input(config: Config, arrays: DataArrays) -> None:
    empty = replace(arrays, x_val=arrays.x_val[:0], y_val=arrays.y_val[:0])
    with pytest.raises(BlockQNNError, match="validation split is empty"):
        Evaluator(config, empty, device="cpu")


def test_one_training_image_is_bad_input(config: Config, arrays: DataArrays) -> None:
    one = replace(arrays, x_train=arrays.x_train[:1], y_train=arrays.y_train[:1])
    with pytest.raises(BlockQNNError, match=r"training split has 1 image\(s\)"):
        Evaluator(config, one, device="cpu")


def test_host_out_of_memory_is_a_failed_record(
    evaluator: Evaluator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the CPU allocator raises when a candidate is too large for the machine's memory.
    def too_big(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
            "can't allocate memory: you tried to allocate 98765432100 bytes."
        )

    monkeypatch.setattr(evaluator_module, "Network", too_big)
    result = evaluator.evaluate(BLOCK)
    assert result.status == "failed"
    assert result.error == "host out of memory at batch 50 and again at 25"
    assert result.flops > 0
