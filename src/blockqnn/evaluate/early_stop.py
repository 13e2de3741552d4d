"""One early-stop evaluation: block -> search-time network -> short training -> metrics.

Owns: `Evaluator` (the dataset loaded once and kept on the device, the network settings
fitted to the data, the early-stop recipe) and `evaluate_block`. Returns an `EvalResult` for
every candidate and never raises for a candidate's failure:

- non-finite loss -> failed, "non-finite loss at epoch k", training stopped there; an epoch
  whose mean loss is 100x that of guessing -> failed, "loss diverged at epoch k (...)" (a
  huge lr keeps the loss finite, ~1e20, while the network learns nothing);
- CUDA out of memory -> retried once from scratch at half the batch (of the one `fit` uses,
  at most the training set; no retry at batch 1), then failed;
- a network whose parameters alone (with their gradients and Adam's moments) exceed the
  device's memory -> failed, "network too large: ...", before it is built;
- `train.max_seconds` exceeded -> failed, "time limit of S s reached in epoch k". A partly
  trained network is not comparable with fully trained ones, and an "ok" result would let a
  slow block's under-trained accuracy into the reward; failing keeps the reward honest and
  the store says why.

Bad configuration or data raise `BlockQNNError` when the evaluator is built; bugs in our code
raise. Must not know the agent or the store, nor compute a reward: it reports metrics
(accuracy, FLOPs and their reference, params, density), which the master scores
(`blockqnn.reward.score`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.gate import Gate
from blockqnn.evaluate.result import STATUS_OK, EvalResult
from blockqnn.settings.config import Config
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.builder import Network
from blockqnn.space.nsc.cost import Cost, network_cost, reference_flops
from blockqnn.train import threads
from blockqnn.train.devices import describe_device, resolve_device, too_large
from blockqnn.train.loop import EpochInfo, fit
from blockqnn.train.recipe import Recipe, should_compile

if TYPE_CHECKING:
    from blockqnn.data import DataArrays, DeviceData


class Evaluator:
    """Measures blocks with the paper's early-stop training on one device.

    >>> from blockqnn.settings.config import Config, merge
    >>> cfg = merge(Config(), {"train": {"epochs": 1}, "network": {"filters": 8}})
    >>> Evaluator(cfg, device="cpu").evaluate(Block.parse("1,1,3,0,0; 2,7,0,0,0")).status
    'ok'
    """

    def __init__(
        self,
        config: Config,
        data: DataArrays | DeviceData | None = None,
        device: str | None = None,
    ) -> None:
        from blockqnn.data import DataArrays, load_arrays

        self.config = config
        self.device = resolve_device(device)
        if self.device.type == "cpu":  # now: results record the threads fit will use
            threads.choose(config.train.threads)  # a --threads given still wins
            threads.configure_threads()
        if data is None:
            data = load_arrays(config.data)
        if isinstance(data, DataArrays):
            data = data.to_device(self.device)
        elif data.device != self.device:
            raise BlockQNNError(f"data is on {data.device}, the evaluator on {self.device}")
        if len(data.x_val) == 0:
            raise BlockQNNError(f"dataset {data.name}: the validation split is empty")
        if len(data.x_train) < 2:  # every candidate has BatchNorm, which needs 2 images
            raise BlockQNNError(
                f"dataset {data.name}: the training split has {len(data.x_train)} image(s), "
                "training needs at least 2 (lower data.val_size or add images)"
            )
        self.data: DeviceData = data
        self.network_config = replace(
            config.network, num_classes=data.num_classes, input_shape=data.input_shape
        )
        self.recipe = Recipe.from_config(config.train, data.name, data.input_shape)
        self.flops_ref = reference_flops(self.network_config)

    @property
    def device_name(self) -> str:
        """The device as a result records it, described per result: the thread setting in
        force may change after the evaluator is built (`fit` applies it)."""
        return describe_device(self.device)

    def evaluate(self, block: Block) -> EvalResult:
        """Train `block`'s search-time network and measure it; failures become results."""
        return self.evaluate_gated(block, None)

    def evaluate_gated(self, block: Block, gate: Gate | None) -> EvalResult:
        """`evaluate`, validating after `gate.epoch` epochs too: the metric
        `partial_accuracy` is that accuracy and, when the gate stops the candidate there,
        `stopped_at` is the epoch and `accuracy` the partial one (the master predicts the
        full figure, `blockqnn.search.terminate`)."""
        cost = network_cost(block, self.network_config)
        reason = too_large(cost.params, self.device)
        if reason:  # priced before it is built: allocating it could take the host down
            return EvalResult.failed(
                f"network too large: {reason}",
                flops=cost.flops,
                params=cost.params,
                density=cost.density,
                device=self.device_name,
            )
        # fit never batches more than the training set: halve what it would use
        first = min(self.recipe.batch_size, len(self.data.x_train))
        half = max(1, first // 2)
        where = "CUDA"
        for batch_size in (first, half) if half < first else (first,):
            try:
                sized = replace(self.recipe, batch_size=batch_size)
                return self._run(block, sized, cost, gate)
            except torch.cuda.OutOfMemoryError:
                where = "CUDA"
            except (MemoryError, RuntimeError) as exc:
                if not _host_out_of_memory(exc):
                    raise  # a bug in our code, not a property of the candidate
                where = "host"
            self._free()  # out of the except block: the traceback no longer pins the model
        again = f" and again at {half}" if half < first else ""
        return EvalResult.failed(
            f"{where} out of memory at batch {first}{again}",
            flops=cost.flops,
            params=cost.params,
            density=cost.density,
            device=self.device_name,
            batch_size=half,
        )

    def _run(self, block: Block, recipe: Recipe, cost: Cost, gate: Gate | None) -> EvalResult:
        t0 = time.perf_counter()
        epochs = self.config.train.epochs
        images = len(self.data.x_train)
        compile_ = should_compile(
            self.config.train.compile, self.device, cost.flops, images, epochs
        )
        recipe = replace(recipe, compile=compile_)
        torch.manual_seed(recipe.seed)  # every candidate starts from the same seed
        model = Network(block, self.network_config)
        build_seconds = time.perf_counter() - t0
        partial: dict[str, float] = {}
        fitted = fit(
            model,
            self.data,
            recipe,
            epochs=epochs,
            eval_split="val",
            eval_at=(gate.epoch,) if gate is not None else (),
            on_epoch=None if gate is None else _gate_hook(gate, partial),
        )
        common: dict[str, Any] = {
            "flops": cost.flops,
            "params": cost.params,
            "density": cost.density,
            "epochs": fitted.epochs,
            "build_seconds": build_seconds + fitted.setup_seconds,
            "train_seconds": fitted.train_seconds,
            "eval_seconds": fitted.eval_seconds,
            "images_per_second": fitted.images_per_second,
            "device": self.device_name,
            "mode": fitted.mode,
            "batch_size": fitted.batch_size,
            "metrics": {"flops_ref": float(self.flops_ref), **partial},
        }
        if not fitted.ok or fitted.accuracy is None:
            return EvalResult.failed(fitted.error or "no accuracy measured", **common)
        return EvalResult(status=STATUS_OK, accuracy=fitted.accuracy, **common)

    def _free(self) -> None:
        """Give cached CUDA memory back after an out-of-memory, before the retry."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _gate_hook(gate: Gate, partial: dict[str, float]) -> Callable[[EpochInfo], bool]:
    """`fit`'s epoch callback for a gate: records the accuracy at the gate's epoch in
    `partial` and stops training there when the gate says so."""

    def on_epoch(info: EpochInfo) -> bool:
        if info.epoch != gate.epoch or info.accuracy is None:
            return False
        partial["partial_accuracy"] = info.accuracy
        partial["partial_epoch"] = float(info.epoch)
        if gate.stops(info.accuracy) and info.epoch < info.epochs:
            partial["stopped_at"] = float(info.epoch)
            return True
        return False

    return on_epoch


def _host_out_of_memory(exc: BaseException) -> bool:
    """CPU allocations that fail raise MemoryError or a RuntimeError from the allocator."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return "can't allocate memory" in text or "DefaultCPUAllocator" in text


def evaluate_block(
    block: Block | str,
    config: Config,
    data: DataArrays | DeviceData | None = None,
    device: str | None = None,
) -> EvalResult:
    """One early-stop evaluation of `block` (NSC text or a `Block`) under `config`."""
    if isinstance(block, str):
        block = Block.parse(block, max_depth=config.agent.max_depth)
    return Evaluator(config, data, device).evaluate(block)
