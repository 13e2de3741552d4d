"""Measured inference latency of a block's deployment-size network, and its cache key.

Owns: `LatencySettings` (runtime, batch, threads, repeats; from `[reward]`), building the
deployment network (the `train` settings: the run's filters and blocks per stage unless
`latency_filters` / `latency_blocks_per_stage` say otherwise, the data's input shape),
timing it (warm-up, then repeated single forward passes: median, IQR and coefficient of
variation), the cache key (block hash, network settings, device, runtime), and `LatencyMeter`,
which adds the `latency_*` metrics to an `EvalResult`. Must not know the agent or the store:
the cache of measurements (`blockqnn.store.cache.LatencyCache`) is handed in, and the data's
shape too. Must not compute a reward.

Runtimes: "cpu" (PyTorch eager on the CPU, `threads` intra-op threads), "cuda" (PyTorch on
the current GPU, timed with a synchronize around every pass) and "onnxruntime" (the network
exported to ONNX as `blockqnn export` does, run by ONNX Runtime's CPU provider with `threads`
intra-op threads). Timings are per forward pass of `batch` images, in milliseconds.

Failures: a network that cannot be measured (out of memory, an export error) gives the metric
`latency_failed = 1` instead of `latency_ms`, never an exception; a reward that needs the
latency then fails the trial (`LatencyMeter.apply`), told reward 0 like any failed trial: a
network that cannot run at deployment size is not one to deploy.

The front and `--pick` live in `blockqnn.final.pick`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from blockqnn.errors import BlockQNNError, clip
from blockqnn.evaluate.gate import Gate
from blockqnn.evaluate.result import STATUS_FAILED, EvalResult
from blockqnn.evaluate.shape import data_shape
from blockqnn.settings.choices import LATENCY_RUNTIMES
from blockqnn.settings.config import NetworkConfig, RewardConfig
from blockqnn.train.threads import cpu_name

if TYPE_CHECKING:
    from blockqnn.settings.config import Config
    from blockqnn.space.nsc.block import Block

log = logging.getLogger("blockqnn.evaluate.latency")

LATENCY_METRIC = "latency_ms"
FAILED_METRIC = "latency_failed"
# rewards that cannot be computed without `latency_ms` (a failed measurement fails the trial)
LATENCY_REWARDS = ("mnasnet", "additive")


class LatencyError(Exception):
    """The network could not be measured (its reason is the message)."""


@dataclass(frozen=True)
class LatencySettings:
    """How to measure. `batch` > 1 adds a second timing at that batch (`latency_batch_ms`);
    the reward uses batch 1 (`latency_ms`), the latency of serving one request."""

    runtime: str = "cpu"
    # defaults: `[reward] latency_*`. One thread: the deployment target is usually one core;
    # untimed warm-up passes first (allocator, oneDNN primitive caches, CUDA kernels); of the
    # timed passes the median is the figure, the IQR and CV its spread
    batch: int = RewardConfig.latency_batch
    threads: int = RewardConfig.latency_threads
    warmup: int = RewardConfig.latency_warmup
    repeats: int = RewardConfig.latency_repeats

    def __post_init__(self) -> None:
        check_runtime(self.runtime, here=False)


def check_runtime(runtime: str, here: bool = True) -> None:
    """Unknown runtime: `BlockQNNError`; with `here`, also CUDA without a GPU and ONNX
    Runtime not installed on this machine."""
    if runtime not in LATENCY_RUNTIMES:
        raise BlockQNNError(
            f"latency device {clip(runtime, quote=True)}: choose one of "
            f"{', '.join(LATENCY_RUNTIMES)}"
        )
    if not here:
        return
    if runtime == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BlockQNNError("latency device 'cuda': CUDA is not available on this machine")
    if runtime == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise BlockQNNError(
                "latency device 'onnxruntime': onnxruntime is not installed "
                '(pip install -e ".[export]")'
            ) from None


@dataclass(frozen=True)
class Latency:
    """One measurement: batch-1 median and spread, and the median at `batch`."""

    median_ms: float
    iqr_ms: float  # interquartile range of the timed passes
    cv: float  # standard deviation / mean of the timed passes
    batch: int
    batch_median_ms: float  # = median_ms when batch is 1
    seconds: float  # what the measurement cost (build, export, warm-up, timing)
    device: str

    def metrics(self) -> dict[str, float]:
        out = {
            LATENCY_METRIC: self.median_ms,
            "latency_iqr_ms": self.iqr_ms,
            "latency_cv": self.cv,
        }
        if self.batch > 1:
            out["latency_batch"] = float(self.batch)
            out["latency_batch_ms"] = self.batch_median_ms
        return out


def deployment_network(config: Config, input_shape: tuple[int, int, int], classes: int) -> Any:
    """The `train` network: the run's network settings (with `[reward] latency_filters` and
    `latency_blocks_per_stage` where set) on the data's images and classes."""
    r = config.reward
    return replace(
        config.network,
        input_shape=input_shape,
        num_classes=classes,
        filters=r.latency_filters or config.network.filters,
        blocks_per_stage=r.latency_blocks_per_stage or config.network.blocks_per_stage,
    )


def settings_of(config: Config) -> LatencySettings | None:
    """The run's latency settings, or None when no latency is measured."""
    r = config.reward
    runtime = r.latency_device or ("cpu" if r.name in LATENCY_REWARDS else "")
    if not runtime:
        return None
    return LatencySettings(runtime, r.latency_batch, r.latency_threads, r.latency_warmup,
                           r.latency_repeats)  # fmt: skip


def device_key(settings: LatencySettings) -> str:
    """What the figure depends on besides the network: the hardware, threads, versions."""
    import torch

    if settings.runtime == "cuda":
        return f"cuda {torch.cuda.get_device_name()} torch {torch.__version__}"
    where = f"cpu {cpu_name()} x{settings.threads} torch {torch.__version__}"
    if settings.runtime == "onnxruntime":
        import onnxruntime

        where += f" onnxruntime {onnxruntime.__version__}"
    return where


def cache_key(block_hash: str, network: NetworkConfig, settings: LatencySettings) -> str:
    identity = {
        "block": block_hash,
        "network": network.to_dict(),
        "settings": asdict(settings),
        "device": device_key(settings),
    }
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class LatencyStore(Protocol):
    """Where measurements are kept between searches (`blockqnn.store.cache.LatencyCache`,
    passed in: this module does not decide where files live). Keys are `cache_key`s."""

    def get(self, key: str) -> Latency | None: ...

    def put(self, key: str, latency: Latency) -> None: ...


def _timings(run: Any, warmup: int, repeats: int, sync: Any = None) -> list[float]:
    for _ in range(warmup):
        run()
    if sync is not None:
        sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        if sync is not None:
            sync()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def spread(times: list[float]) -> tuple[float, float, float]:
    """(median, interquartile range, coefficient of variation) of timings."""
    median = statistics.median(times)
    if len(times) < 2:
        return median, 0.0, 0.0
    q = statistics.quantiles(times, n=4, method="inclusive")
    mean = statistics.fmean(times)
    cv = statistics.stdev(times) / mean if mean > 0 else 0.0
    return median, q[2] - q[0], cv


def measure(block: Block, network: NetworkConfig, settings: LatencySettings) -> Latency:
    """Build `block`'s network with `network`, untrained (latency does not depend on the
    weights), and time it; raises `LatencyError` when it cannot be measured."""
    import torch

    from blockqnn.space.nsc.builder import Network
    from blockqnn.space.nsc.cost import network_cost
    from blockqnn.train.devices import too_large

    device = torch.device("cuda" if settings.runtime == "cuda" else "cpu")
    t0 = time.perf_counter()
    try:
        # priced before it is built: allocating it could take the host (or the master) down
        reason = too_large(network_cost(block, network).params, device, timing=True)
        if reason:
            raise LatencyError(f"network too large: {reason}")
        with _threads(settings):
            torch.manual_seed(0)
            model = Network(block, network).eval()
            shape = network.input_shape
            batches = sorted({1, settings.batch})
            medians: dict[int, tuple[float, float, float]] = {}
            if settings.runtime == "onnxruntime":
                run_at = _onnx_runner(model, shape, settings.threads)
                sync = None
            else:
                model = model.to(device)
                sync = torch.cuda.synchronize if device.type == "cuda" else None
                run_at = _torch_runner(model, shape, device)
            for batch in batches:
                medians[batch] = spread(
                    _timings(run_at(batch), settings.warmup, settings.repeats, sync)
                )
    except LatencyError:
        raise
    except Exception as exc:  # any cause (OOM, an exporter or runtime error): a failed metric
        lines = str(exc).strip().splitlines()
        first = lines[0] if lines else ""
        raise LatencyError(f"{type(exc).__name__}: {first}"[:300]) from None
    finally:
        if settings.runtime == "cuda":
            torch.cuda.empty_cache()
    median, iqr, cv = medians[1]
    return Latency(
        median_ms=median,
        iqr_ms=iqr,
        cv=cv,
        batch=settings.batch,
        batch_median_ms=medians[settings.batch][0],
        seconds=time.perf_counter() - t0,
        device=device_key(settings),
    )


class _threads:
    """Run with `settings.threads` PyTorch threads, then restore the caller's count."""

    def __init__(self, settings: LatencySettings) -> None:
        self.threads = settings.threads

    def __enter__(self) -> None:
        import torch

        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.previous)


def _torch_runner(model: Any, shape: tuple[int, int, int], device: Any) -> Any:
    import torch

    def at(batch: int) -> Any:
        x = torch.rand(batch, *shape, device=device)

        def run() -> None:
            with torch.inference_mode():
                model(x)

        return run

    return at


def _onnx_runner(model: Any, shape: tuple[int, int, int], threads: int) -> Any:
    """Export as `blockqnn export --format onnx` does (model_io._export_onnx: the TorchScript
    exporter, opset 17, dynamic batch), into memory, and run it with ONNX Runtime."""
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch

    buffer = io.BytesIO()
    example = torch.rand(1, *shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # a file object works, as torch's docs say
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def at(batch: int) -> Any:
        x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)

        def run() -> None:
            session.run(None, {"images": x})

        return run

    return at


class LatencyMeter:
    """Measures (or finds in the cache) the latency of blocks and adds it to their results.

    Built where the measuring happens: in each worker (`latency_on = "worker"`, wrapped
    around its evaluator by `LatencyEvaluator`) or in the master (`"master"`, by the search
    loop). `measured` counts real measurements (the cache's misses)."""

    def __init__(
        self,
        network: NetworkConfig,
        settings: LatencySettings,
        cache: LatencyStore,
        required: bool,
    ) -> None:
        self.network = network
        self.settings = settings
        self.cache = cache
        self.required = required  # the reward needs the latency: a failure fails the trial
        self.measured = 0

    @classmethod
    def for_config(
        cls,
        config: Config,
        input_shape: tuple[int, int, int],
        classes: int,
        cache: LatencyStore,
    ) -> LatencyMeter | None:
        settings = settings_of(config)
        if settings is None:
            return None
        return cls(
            deployment_network(config, input_shape, classes),
            settings,
            cache,
            config.reward.name in LATENCY_REWARDS,
        )

    def latency(self, block: Block) -> Latency:
        """Cached or measured; raises `LatencyError`."""
        key = cache_key(block.hash, self.network, self.settings)
        found = self.cache.get(key)
        if found is not None:
            return found
        self.measured += 1
        latency = measure(block, self.network, self.settings)
        self.cache.put(key, latency)
        return latency

    def apply(self, block: Any, result: EvalResult) -> EvalResult:
        """`result` with the latency metrics; failed results are left as they are."""
        if not result.ok or result.metrics.get(LATENCY_METRIC) is not None:
            return result
        try:
            metrics = self.latency(block).metrics()
        except LatencyError as exc:
            log.warning("latency of %s not measured: %s", block, exc)
            metrics = {FAILED_METRIC: 1.0}
            if self.required:
                return replace(
                    result,
                    status=STATUS_FAILED,
                    error=f"latency not measured ({self.settings.runtime}): {exc}",
                    metrics={**result.metrics, **metrics},
                )
        if not all(math.isfinite(v) for v in metrics.values()):
            metrics = {FAILED_METRIC: 1.0}
        return replace(result, metrics={**result.metrics, **metrics})


class AddsLatency(Protocol):
    """What `LatencyEvaluator` needs of its meter: a `LatencyMeter`'s `apply`."""

    def apply(self, candidate: Any, result: EvalResult, /) -> EvalResult: ...


class LatencyEvaluator:
    """An evaluator with the latency metrics added to each ok result (on the worker)."""

    def __init__(self, inner: Any, meter: AddsLatency) -> None:
        self.inner = inner
        self.meter = meter

    def evaluate(self, candidate: Any) -> EvalResult:
        # the master computes the reward from these metrics (`blockqnn.reward.score`)
        return self.meter.apply(candidate, self.inner.evaluate(candidate))

    def evaluate_gated(self, candidate: Any, gate: Gate | None) -> EvalResult:
        """The early-termination gate passed on to the inner evaluator where it takes one
        (`blockqnn.execute.base.run_job` finds this method), the latency added after."""
        gated = getattr(self.inner, "evaluate_gated", None)
        if gate is None or gated is None:
            return self.evaluate(candidate)
        return self.meter.apply(candidate, gated(candidate, gate))


@dataclass(frozen=True)
class LatencyFactory:
    """A picklable `EvaluatorSpec.factory` that wraps `inner`'s evaluator in a
    `LatencyEvaluator` (Ray and the process pool send it to every worker)."""

    inner: Callable[[Config, Any, str | None], Any]  # the evaluator factory it wraps
    cache: LatencyStore  # picklable: each worker opens it (a file path) where it runs

    def __call__(self, config: Config, data: Any, device: str | None) -> Any:
        evaluator = self.inner(config, data, device)
        shape, classes = data_shape(config, data, evaluator)
        meter = LatencyMeter.for_config(config, shape, classes, self.cache)
        if meter is None:
            return evaluator
        return LatencyEvaluator(evaluator, meter)


def check_config(config: Config) -> None:
    """Latency settings that cannot work, refused before a search starts (exit 2)."""
    settings = settings_of(config)
    if settings is None:
        return
    if config.search.space != "nsc":
        raise BlockQNNError(
            f"reward.latency_device = {settings.runtime!r}: latency is measured for NSC "
            f"blocks only, not the {clip(config.search.space, quote=True)} space"
        )
    remote = config.search.executor != "local" and config.reward.latency_on == "worker"
    check_runtime(settings.runtime, here=not remote)  # a Ray cluster's GPUs are not here
    if config.reward.name in LATENCY_REWARDS and config.reward.latency_target_ms <= 0:
        raise BlockQNNError(
            f"reward.latency_target_ms = {config.reward.latency_target_ms:g}: the "
            f"{config.reward.name} reward needs a positive target latency in ms "
            "(e.g. --latency-target-ms 2)"
        )
