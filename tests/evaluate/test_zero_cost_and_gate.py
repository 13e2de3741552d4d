"""Zero-cost scores (synflow, jacob_cov, params) and the early-stop evaluator's gate, on
tiny digits networks."""

from __future__ import annotations

import math

import pytest
import torch

from blockqnn.data import DataArrays, load_arrays
from blockqnn.evaluate.early_stop import Evaluator
from blockqnn.evaluate.gate import Gate
from blockqnn.evaluate.zero_cost import ZeroCostScorer, jacob_cov, synflow
from blockqnn.settings.config import Config, merge
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.builder import Network
from blockqnn.space.nsc.cost import network_cost

SMALL = Block.parse("1,1,3,0,0; 2,7,0,0,0")
WIDE = Block.parse("1,1,3,0,0; 2,1,3,1,0; 3,5,0,2,0; 4,7,0,0,0")
SETTINGS = {
    "data": {"dataset": "digits", "train_samples": 200},
    "train": {"epochs": 2, "batch_size": 50},
    "network": {"filters": 8},
}


@pytest.fixture(scope="module")
def config() -> Config:
    return merge(Config(), SETTINGS)


@pytest.fixture(scope="module")
def arrays(config: Config) -> DataArrays:
    return load_arrays(config.data)


def test_synflow_is_positive_and_leaves_the_weights_as_they_were(config: Config) -> None:
    torch.manual_seed(0)
    model = Network(SMALL, config.network)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    value = synflow(model, (3, 32, 32))
    assert math.isfinite(value) and value > 0
    after = model.state_dict()
    assert all(torch.equal(before[k].double(), after[k].double()) for k in before)


def test_jacob_cov_is_finite_and_prefers_distinct_jacobians(config: Config) -> None:
    torch.manual_seed(0)
    model = Network(SMALL, config.network)
    x = torch.randn(8, 3, 32, 32)
    distinct = jacob_cov(model, x)
    same = jacob_cov(model, x[:1].repeat(8, 1, 1, 1) + 1e-3 * torch.randn(8, 3, 32, 32))
    assert math.isfinite(distinct) and distinct > same


@pytest.mark.parametrize("name", ["params", "synflow", "jacob_cov"])
def test_scorer_scores_blocks_on_the_run_data(
    config: Config, arrays: DataArrays, name: str
) -> None:
    scorer = ZeroCostScorer(merge(config, {"search": {"prescreen_score": name}}), arrays)
    value, seconds = scorer(WIDE)
    assert math.isfinite(value) and seconds >= 0
    if name == "params":
        assert value == scorer(WIDE)[0] > scorer(SMALL)[0]


def test_an_unscorable_candidate_ranks_last(
    config: Config, arrays: DataArrays, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = ZeroCostScorer(merge(config, {"search": {"prescreen_score": "synflow"}}), arrays)

    def out_of_memory(*args: object) -> float:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr("blockqnn.evaluate.zero_cost.synflow", out_of_memory)
    assert scorer(WIDE)[0] == -math.inf
    monkeypatch.setattr("blockqnn.evaluate.zero_cost.synflow", lambda *a: math.nan)
    assert scorer(WIDE)[0] == -math.inf


def test_params_score_is_the_analytic_count(config: Config, arrays: DataArrays) -> None:
    scorer = ZeroCostScorer(config, arrays)
    assert scorer(WIDE)[0] == network_cost(WIDE, scorer.network_config).params


def test_gate_stops_training_and_reports_the_partial_accuracy(
    config: Config, arrays: DataArrays
) -> None:
    evaluator = Evaluator(config, arrays, device="cpu")
    stopped = evaluator.evaluate_gated(SMALL, Gate(1, below=2.0))  # every accuracy is below
    assert stopped.ok and stopped.epochs == 1
    assert stopped.metrics["stopped_at"] == 1.0
    assert stopped.metrics["partial_accuracy"] == stopped.accuracy
    kept = evaluator.evaluate_gated(SMALL, Gate(1, below=None))
    assert kept.ok and kept.epochs == 2 and "stopped_at" not in kept.metrics
    assert kept.metrics["partial_accuracy"] == stopped.accuracy  # same seed, same epoch 1
    assert stopped.metrics["partial_epoch"] == kept.metrics["partial_epoch"] == 1.0
    assert "partial_accuracy" not in evaluator.evaluate(SMALL).metrics
