"""Rewards: the scalar a strategy is told, computed from an evaluation's metrics.

Owns: the `Reward` protocol, the built-in rewards (`paper`, `accuracy`, and the latency
rewards `mnasnet` and `additive`), found by name in `blockqnn.settings.registry.REWARDS`, and
`score`, the one function that puts a reward on an evaluation's result: the search's master
calls it for every result, `blockqnn evaluate` for its one. Must not import torch or train
anything: a reward is a pure function of the metrics an evaluator reported
(`EvalResult.metric_values()`; evaluators never compute one), so a stored trial's metrics can
be re-scored later.

Metric names: `accuracy` (validation accuracy in [0, 1]), `flops` (forward FLOPs per image),
`flops_ref` (the reference network's, for normalising), `params`, `density`; evaluators may
add others (e.g. a measured latency), and a plug-in reward may use them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from blockqnn.errors import clip
from blockqnn.evaluate.result import STATUS_FAILED, EvalResult
from blockqnn.settings.registry import REWARDS

if TYPE_CHECKING:
    from blockqnn.settings.config import Config


@runtime_checkable
class Reward(Protocol):
    """Built once per search by its registry factory `factory(config)`; then called with the
    metrics of every successful evaluation (failed ones are told 0.0 without a call)."""

    def __call__(self, metrics: Mapping[str, float]) -> float: ...


# Told to the strategy for a candidate that could not be trained: below any working
# network's accuracy, so it learns to avoid what cannot train, and a constant, so a failure
# teaches nothing else.
FAILED_REWARD = 0.0


def compute_reward(
    accuracy: float, flops: float, flops_ref: float, density: float, mu: float, rho: float
) -> float:
    """accuracy - mu log(flops / flops_ref) - rho log(density); a term whose metric is not
    reported (0, e.g. a tabular benchmark gives accuracy only) is left out."""
    penalty = 0.0
    if mu and flops > 0 and flops_ref > 0:
        penalty += mu * math.log(flops / flops_ref)
    if rho and density > 0:
        penalty += rho * math.log(density)
    return accuracy - penalty


class PaperReward:
    """BlockQNN's reward with FLOPs normalised by a reference network (see `RewardConfig`)."""

    def __init__(self, config: Config) -> None:
        self.mu = config.reward.mu
        self.rho = config.reward.rho

    def __call__(self, metrics: Mapping[str, float]) -> float:
        return compute_reward(
            metrics["accuracy"],
            metrics.get("flops", 0.0),
            metrics.get("flops_ref", 0.0),
            metrics.get("density", 0.0),
            self.mu,
            self.rho,
        )


class AccuracyReward:
    """The accuracy alone (NAS-Bench comparisons, or when cost should not matter)."""

    def __init__(self, config: Config | None = None) -> None:
        pass

    def __call__(self, metrics: Mapping[str, float]) -> float:
        return float(metrics["accuracy"])


# The MnasNet factor saturates here (~1e100): beyond it every factor ranks the same, and the
# reward stays finite and far from overflowing the agent's sums of rewards.
_MAX_LOG_FACTOR = 230.0


def mnasnet_reward(
    accuracy: float, latency_ms: float, target_ms: float, alpha: float, beta: float
) -> float:
    """MnasNet (Tan et al. 2019): accuracy x (latency / target) ^ w, w = alpha at or under
    the target, beta over it."""
    w = alpha if latency_ms <= target_ms else beta
    if w == 0 or accuracy == 0:
        return float(accuracy)  # also spares 0 x inf below
    # in log space: an in-bounds tiny target or large |w| overflows (ratio) ** w
    exponent = w * (math.log(latency_ms) - math.log(target_ms))
    return accuracy * math.exp(min(exponent, _MAX_LOG_FACTOR))


def additive_latency_reward(
    accuracy: float, latency_ms: float, reference_ms: float, lam: float
) -> float:
    """accuracy - lambda x log(latency / reference), the paper's FLOPs term with latency."""
    # a difference of logs: latency / a tiny reference can overflow to inf
    return accuracy - lam * (math.log(latency_ms) - math.log(reference_ms))


def _latency(metrics: Mapping[str, float]) -> float:
    """The measured batch-1 latency; NaN when not measured (the search then records the
    trial failed, "reward nan": a latency reward without a latency means nothing)."""
    value = metrics.get("latency_ms")
    return float(value) if value is not None and value > 0 else math.nan


class MnasNetReward:
    """`[reward] latency_target_ms`, `latency_alpha`, `latency_beta` (see `RewardConfig`)."""

    def __init__(self, config: Config) -> None:
        r = config.reward
        self.target, self.alpha, self.beta = r.latency_target_ms, r.latency_alpha, r.latency_beta

    def __call__(self, metrics: Mapping[str, float]) -> float:
        latency = _latency(metrics)
        if math.isnan(latency) or self.target <= 0:
            return math.nan
        return mnasnet_reward(metrics["accuracy"], latency, self.target, self.alpha, self.beta)


class AdditiveLatencyReward:
    """`[reward] latency_target_ms` (the reference) and `latency_lambda`."""

    def __init__(self, config: Config) -> None:
        self.reference, self.lam = config.reward.latency_target_ms, config.reward.latency_lambda

    def __call__(self, metrics: Mapping[str, float]) -> float:
        latency = _latency(metrics)
        if math.isnan(latency) or self.reference <= 0:
            return math.nan
        return additive_latency_reward(metrics["accuracy"], latency, self.reference, self.lam)


def make_reward(config: Config) -> Reward:
    """The reward named by `[reward] name`, built with the config."""
    reward: Reward = REWARDS.get(config.reward.name)(config)
    return reward


def score(reward: Reward, result: EvalResult) -> EvalResult:
    """`result` with its reward: `reward` of its metrics when it is ok, `FAILED_REWARD` when
    it failed. A non-finite reward (a latency reward without a latency) or one that raises
    (a plug-in's bug, an overflow) makes it a failed result that says so: the strategy is
    never told a NaN, and a stored trial never crashes the search and its every resume."""
    if not result.ok:
        return replace(result, reward=FAILED_REWARD)
    try:
        value = float(reward(result.metric_values()))
    except Exception as exc:
        error = f"the reward raised {type(exc).__name__}: {clip(str(exc))}"
        return replace(result, status=STATUS_FAILED, reward=FAILED_REWARD, error=error)
    if not math.isfinite(value):
        return replace(result, status=STATUS_FAILED, reward=FAILED_REWARD, error=f"reward {value}")
    return replace(result, reward=value)
