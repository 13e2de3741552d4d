"""The record of one evaluation: what the evaluator returns and the store keeps.

Owns: `EvalResult` and its JSON-safe dict form. Must not import torch: the store, the
search loop and the report read results without a training stack. Rewards are computed from
its metrics by `blockqnn.reward`, in the master: an evaluator leaves `reward` None.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclass(frozen=True)
class EvalResult:
    """One early-stop evaluation. A failing candidate is a result with status "failed"
    and `error` set, never an exception."""

    status: str  # "ok" or "failed"
    accuracy: float = 0.0  # validation accuracy in [0, 1] (never the test split)
    # the run's reward of the metrics, set by the master alone (`blockqnn.reward.score`; 0 if
    # failed); None in an evaluator's result, which reports metrics only
    reward: float | None = None
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
    # further metrics by name (e.g. "flops_ref", a measured "latency_ms"): they travel
    # unchanged through Ray, the store and the report, and rewards may use them
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def seconds(self) -> float:
        """The evaluation's time: building, training and evaluating."""
        return self.build_seconds + self.train_seconds + self.eval_seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def metric_values(self) -> dict[str, float]:
        """Every metric by name: accuracy, flops, params, density and the extra `metrics`."""
        return {
            "accuracy": self.accuracy,
            "flops": float(self.flops),
            "params": float(self.params),
            "density": self.density,
            **self.metrics,
        }

    @classmethod
    def failed(cls, error: str, **metrics: Any) -> EvalResult:
        return cls(status=STATUS_FAILED, error=error, **metrics)
