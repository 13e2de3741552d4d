"""The record of one evaluation: what the evaluator returns and the store keeps.

Owns: `EvalResult`, its JSON-safe dict form and the reward formula. Must not import torch:
the store, the agent's caller and the report read results without a training stack.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclass(frozen=True)
class EvalResult:
    """One early-stop evaluation. A failing candidate is a result with status "failed"
    and `error` set, never an exception."""

    status: str  # "ok" or "failed"
    accuracy: float = 0.0  # validation accuracy in [0, 1] (never the test split)
    reward: float = 0.0  # accuracy - mu log(FLOPs / ref) - rho log(density); 0 when failed
    flops: int = 0  # forward FLOPs per image of the search-time network
    params: int = 0
    density: float = 0.0
    epochs: int = 0  # epochs actually run
    build_seconds: float = 0.0  # network construction, device transfer, graph capture
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    images_per_second: float = 0.0  # training throughput
    device: str = ""  # e.g. "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"
    mode: str = ""  # how training ran, e.g. "eager bf16", "cuda graph bf16"
    batch_size: int = 0  # the batch size finally used (halved after an out-of-memory)
    error: str = ""  # why a failed evaluation failed

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def failed(cls, error: str, **metrics: Any) -> EvalResult:
        return cls(status=STATUS_FAILED, error=error, **metrics)


def compute_reward(
    accuracy: float, flops: int, flops_ref: int, density: float, mu: float, rho: float
) -> float:
    """The paper's reward with FLOPs normalised by a reference network (see RewardConfig)."""
    penalty = 0.0
    if mu:
        penalty += mu * math.log(flops / flops_ref)
    if rho:
        penalty += rho * math.log(density)
    return accuracy - penalty
