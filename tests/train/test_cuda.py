"""The CUDA path on a real GPU: the graphed SGD step against the eager one, resume of a graphed
training, out-of-memory retried at half the batch, the fast final recipe (graph, warm-up,
flip test-time augmentation) with checkpoint resume, and two pool workers sharing one GPU.

Every test skips without CUDA; `benchmarks/gpu_check.sh` runs them (`pytest -m cuda`). The
networks use the global-pool head: dropout draws different random numbers inside a CUDA graph
than eagerly, and these tests compare the two paths weight by weight. Tolerances (1e-3) allow
for cuDNN's non-deterministic kernels; a lost or frozen learning rate moves the weights by
far more.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import blockqnn.evaluate.early_stop as evaluator_module
from blockqnn import load_model
from blockqnn.data import DeviceData, load_arrays
from blockqnn.evaluate.early_stop import Evaluator
from blockqnn.final.train import FINAL_RECIPES, MODEL, train_final
from blockqnn.search import run_search
from blockqnn.settings.config import Config, DataConfig, NetworkConfig, merge
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.builder import build_network
from blockqnn.store.db import Store
from blockqnn.train.loop import EpochInfo, fit
from blockqnn.train.recipe import Recipe

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

BLOCK = "1,1,3,0,0; 2,1,3,1,0; 3,5,0,2,0; 4,7,0,0,0"
TOL = 1e-3


@pytest.fixture(scope="module")
def digits() -> DeviceData:
    # 320 training images: batches of 64 divide them, so a graphed fit (which drops a
    # partial batch) and an eager one take the same steps
    return load_arrays(DataConfig(dataset="digits", train_samples=400)).to_device("cuda")


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_network(BLOCK, input_shape=(1, 8, 8), filters=8, head="gap")


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, x in a.items():
        if x.is_floating_point():
            torch.testing.assert_close(x.float().cpu(), b[k].float().cpu(), rtol=TOL, atol=TOL)


def test_graphed_sgd_follows_the_schedule_like_eager_sgd(digits: DeviceData) -> None:
    recipe = Recipe(
        optimizer="sgd", lr=0.05, nesterov=True, weight_decay=5e-4, schedule="cosine",
        warmup_epochs=1, batch_size=64, precision="fp32", pad=1, flip=True,
    )  # fmt: skip
    graphed, eager = net(), net()
    g = fit(graphed, digits, recipe, epochs=3, eval_split=None)
    e = fit(eager, digits, replace(recipe, cuda_graphs=False), epochs=3, eval_split=None)
    assert g.mode.startswith("cuda graph fp32"), g.mode
    assert e.mode.startswith("eager fp32"), e.mode
    assert g.images == e.images == 3 * 320
    _assert_close(graphed.state_dict(), eager.state_dict())


def test_graphed_adam_training_resumes_from_a_checkpoint(digits: DeviceData) -> None:
    recipe = Recipe(batch_size=64, precision="fp32", schedule="cosine")
    straight = net()
    fit(straight, digits, recipe, epochs=2, eval_split=None)
    saved: list[dict[str, Any]] = []

    def stop_after_one(info: EpochInfo) -> bool:
        saved.append(info.checkpoint())
        return True

    first = fit(net(), digits, recipe, epochs=2, eval_split=None, on_epoch=stop_after_one)
    assert first.mode.startswith("cuda graph") and first.epochs == 1
    resumed = net(seed=7)  # the checkpoint overwrites these weights
    result = fit(resumed, digits, recipe, epochs=2, eval_split=None, resume=saved[0])
    assert result.mode.startswith("cuda graph") and result.epochs == 2
    _assert_close(resumed.state_dict(), straight.state_dict())


def _evaluator() -> Evaluator:
    config = merge(
        Config(),
        {
            "data": {"dataset": "digits", "train_samples": 400},
            "train": {"epochs": 1, "batch_size": 64},
            "network": {"filters": 8},
        },
    )
    return Evaluator(config, device="cuda")


def test_out_of_memory_is_retried_at_half_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    evaluator = _evaluator()
    real_fit = fit  # the one the evaluator imported
    batches: list[int] = []
    fail = {"times": 1}

    def fit_out_of_memory_first(model: nn.Module, data: Any, recipe: Recipe, **kw: Any) -> Any:
        batches.append(recipe.batch_size)
        if len(batches) <= fail["times"]:
            torch.empty(1 << 50, dtype=torch.uint8, device="cuda")  # 1 PiB: the allocator's OOM
        return real_fit(model, data, recipe, **kw)

    monkeypatch.setattr(evaluator_module, "fit", fit_out_of_memory_first)
    result = evaluator.evaluate(Block.parse(BLOCK))
    assert batches == [64, 32]
    assert result.ok and result.batch_size == 32 and result.device.startswith("cuda")
    assert result.mode.startswith("cuda graph"), result.mode

    batches.clear()
    fail["times"] = 2  # out of memory at both sizes: a failed record, and the search goes on
    failed = evaluator.evaluate(Block.parse(BLOCK))
    assert batches == [64, 32] and failed.status == "failed"
    assert failed.error == "CUDA out of memory at batch 64 and again at 32"
    fail["times"] = 0
    assert evaluator.evaluate(Block.parse(BLOCK)).ok  # the memory was given back


def test_fast_recipe_graphs_warms_up_tests_with_flips_and_resumes(tmp_path: Path) -> None:
    settings = replace(
        FINAL_RECIPES["fast"], epochs=3, batch_size=64, augment="crop_flip", precision="fp32"
    )
    data = DataConfig(dataset="digits", train_samples=400)
    network = NetworkConfig(filters=8, blocks_per_stage=1, head="gap")
    block = Block.parse(BLOCK)
    straight = train_final(block, data, network, settings, tmp_path / "a", device="cuda")
    assert straight.mode.startswith("cuda graph fp32"), straight.mode
    assert straight.tta == "flip" and straight.test_accuracy_no_tta is not None

    def stop(row: dict[str, Any]) -> None:
        if row["epoch"] == 1:  # the checkpoint of epoch 1 is written before this call
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_final(block, data, network, settings, tmp_path / "b", device="cuda", progress=stop)
    resumed = train_final(block, data, network, settings, tmp_path / "b", device="cuda")
    assert resumed.resumed_from == 1 and resumed.epochs == 3
    _assert_close(
        load_model(tmp_path / "a" / MODEL).state_dict(),
        load_model(tmp_path / "b" / MODEL).state_dict(),
    )


def test_two_pool_workers_share_one_gpu(tmp_path: Path) -> None:
    config = merge(
        Config(),
        {
            "search": {"budget": 2, "workers": 2, "gpus_per_trial": 0.5, "agent": "random"},
            "data": {"dataset": "digits", "train_samples": 200},
            "network": {"filters": 4, "blocks_per_stage": 1},
            "train": {"epochs": 1},
        },
    )
    summary = run_search(tmp_path / "run", config, device="cuda:0")
    assert summary.trained == 2 and summary.failed == 0
    with Store.open(tmp_path / "run", readonly=True) as store:
        trials = [t for t in store.trials() if t.trained]
    assert len({t.worker for t in trials}) == 2  # two processes
    for t in trials:
        assert t.result is not None and t.result["device"].startswith("cuda:0"), t.result
        assert t.result["mode"].startswith("cuda graph"), t.result["mode"]
