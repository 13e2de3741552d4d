"""A stand-in evaluator with a deterministic pseudo-accuracy and an optional sleep.

Owns: `SyntheticEvaluator`, which exercises the search loop, the store and the executors
without training anything (tests of the loop's logic, kill and resume, node loss, and the
overhead benchmark). Must not be used to claim anything about architectures: its accuracy
is a hash of the block, not a measurement. Returns metrics, never a reward (the master
scores them, `blockqnn.reward.score`); `blockqnn.execute.synthetic` describes it to executors.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from typing import Any

from blockqnn.evaluate.gate import Gate
from blockqnn.evaluate.result import EvalResult
from blockqnn.settings.config import Config
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.cost import network_cost, reference_flops


class SyntheticEvaluator:
    """`evaluate` sleeps `seconds`, then scores the block from its hash.

    Blocks whose hash starts with a digit in `fail_digits` fail (status "failed"), so tests
    can exercise the failure path deterministically. `record_times` adds the evaluation's
    start and end (Unix seconds, in the process that ran it) as the metrics `started_at` and
    `finished_at`, so tests can see which evaluations overlapped.
    """

    def __init__(
        self,
        config: Config,
        data: Any = None,
        device: str | None = None,
        seconds: float = 0.0,
        fail_digits: str = "",
        with_cost: bool = True,
        record_times: bool = False,
    ) -> None:
        self.config = config
        self.record_times = record_times
        self.seconds = seconds
        self.fail_digits = fail_digits
        self.with_cost = with_cost
        self._ref = reference_flops(config.network) if with_cost else 1

    def evaluate_gated(self, block: Block, gate: Gate) -> EvalResult:
        """`evaluate` with early termination (`blockqnn.evaluate.gate`): the partial
        accuracy at `gate.epoch` is 0.8 x the full one, so a line predicts it exactly."""
        full = self.evaluate(block)
        if not full.ok:
            return full
        partial = 0.8 * full.accuracy
        metrics = {**full.metrics, "partial_accuracy": partial, "partial_epoch": float(gate.epoch)}
        if not gate.stops(partial):
            return replace(full, metrics=metrics)
        metrics["stopped_at"] = float(gate.epoch)
        share = gate.epoch / max(full.epochs, 1)
        return replace(
            full,
            accuracy=partial,
            epochs=gate.epoch,
            train_seconds=full.train_seconds * share,
            metrics=metrics,
        )

    def evaluate(self, block: Block) -> EvalResult:
        started = time.time()
        if self.seconds:
            time.sleep(self.seconds)
        h = block.hash
        if self.fail_digits and h[0] in self.fail_digits:
            return EvalResult.failed("synthetic failure", device="synthetic")
        digest = hashlib.sha256(h.encode()).digest()
        accuracy = 0.5 + 0.5 * int.from_bytes(digest[:4], "big") / 2**32
        flops, params = 0, 0  # not reported: the paper reward leaves the FLOPs term out
        if self.with_cost:
            cost = network_cost(block, self.config.network)
            flops, params = cost.flops, cost.params
        metrics = {"flops_ref": float(self._ref)} if self.with_cost else {}
        if self.record_times:
            metrics.update(started_at=started, finished_at=time.time())
        return EvalResult(
            status="ok",
            accuracy=accuracy,
            flops=flops,
            params=params,
            density=block.density,
            epochs=self.config.train.epochs,
            train_seconds=self.seconds,
            device="synthetic",
            mode="synthetic",
            metrics=metrics,
        )
