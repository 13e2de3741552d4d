"""The assembler: a run's parts, each built once from its settings, handed to the loop.

Owns: `Factories` (what a caller may replace: the evaluator's description, the strategy, the
executor) and `assemble`, which builds, in this order, cheapest and read-only first: the space
(the one `make_space` call of a search), the strategy (restored from the store on resume,
told nothing on a new run), the warm-start trials, the evaluator spec with its data loaded
once (and from it the data's shape a new run records), the latency meter, the reward, the
evaluation cache and, last, the executor, so that bad input is refused before any worker
starts. Must not write to the run nor run the loop (`blockqnn.search.session` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from blockqnn.errors import BlockQNNError
from blockqnn.evaluate import latency as latency_module
from blockqnn.evaluate.latency import LatencyFactory, LatencyMeter
from blockqnn.evaluate.shape import data_shape
from blockqnn.execute import EvaluatorSpec, Executor, make_executor
from blockqnn.execute.base import default_evaluator
from blockqnn.reward import make_reward
from blockqnn.search.parts import RunParts, WarmTrial
from blockqnn.search.prescreen import Screener
from blockqnn.search.resume import Opening, check_trials, scheduled
from blockqnn.search.warm import load_warm_start
from blockqnn.settings.config import Config, with_absolute_paths
from blockqnn.space.base import Space, distinct_count, make_space, reads_data
from blockqnn.store.cache import EvalCache, cache_dir_for, callable_name, fingerprint
from blockqnn.store.cache import latency_cache as open_latency_cache
from blockqnn.strategy import make_strategy
from blockqnn.strategy.base import Strategy


@dataclass(frozen=True)
class Factories:
    """How the parts a caller may replace are made (tests, benchmarks, plug-ins).

    `spec(config)` describes the evaluator (default: the space's own, on `device`),
    `strategy(config)` builds the strategy (default: `[search] agent` from the registry, on
    the run's space), `executor(spec)` starts the executor (default: `[search] executor`)."""

    device: str | None = None
    spec: Callable[[Config], EvaluatorSpec] | None = None
    strategy: Callable[[Config], Strategy] | None = None
    executor: Callable[[EvaluatorSpec], Executor] = make_executor

    def make_strategy(self, config: Config, space: Space) -> Strategy:
        if self.strategy is not None:
            return self.strategy(config)
        s = config.search
        return make_strategy(s.agent, space, s.budget, s.seed, config.agent)

    def make_spec(self, config: Config, space: Space) -> EvaluatorSpec:
        if self.spec is not None:
            return self.spec(config)
        return EvaluatorSpec.for_space(config, space, self.device)


def assemble(opening: Opening, factories: Factories) -> RunParts:
    """Every part of the run `opening` describes, each built once (see the module docstring).
    Raises `BlockQNNError` for bad input before anything is written or any worker starts."""
    # A new run stores its data's paths absolute: a resume from another folder, a warm start
    # and the shared cache must not take another file of the same relative name for it.
    space = make_space(opening.config)  # reads no path
    names_data = reads_data(space)
    config = opening.config if opening.resume else with_absolute_paths(opening.config, names_data)
    strategy = factories.make_strategy(scheduled(config, opening.schedule_budget), space)
    seq, progress = 0, None
    if opening.resume:
        seq, progress = check_trials(opening.directory, space, strategy)
    warm = tuple(_warm_trials(opening, config, space))  # a resume: only one stopped before
    if not opening.resume or opening.extended:
        _check_budget(config, space)
    spec = factories.make_spec(config, space).with_data()  # the data is read here, once
    if not opening.resume:  # the run records its data's shape (digits: [1, 8, 8])
        config = _with_data_shape(config, spec)
    spec, meter = _with_latency(config, spec)
    reward = make_reward(config)
    screener = make_screener(config, space, spec)  # a bad score name or space: refused here
    cache = open_cache(config)  # a bad cache folder is refused here: nothing started yet
    try:
        executor = factories.executor(spec)  # may raise BlockQNNError: nothing written
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    fprint = fingerprint(config, evaluator_name(spec), names_data)
    return RunParts(
        config, space, strategy, seq, reward, executor, cache, meter, fprint, warm, progress,
        screener,
    )  # fmt: skip


def make_screener(config: Config, space: Space, spec: EvaluatorSpec) -> Screener | None:
    """The free pre-screen, scoring in this process (the master) on the run's data; None
    when `[search] prescreen` is 1."""
    s = config.search
    if s.prescreen <= 1:
        return None
    if space.name != "nsc":
        raise BlockQNNError(f"search.prescreen = {s.prescreen}: the pre-screen scores NSC blocks")
    from blockqnn.evaluate.zero_cost import ZeroCostScorer

    data = spec.load_data() if s.prescreen_score != "params" else None
    return Screener(s.prescreen, ZeroCostScorer(config, data), s.prescreen_score)


def _warm_trials(opening: Opening, config: Config, space: Space) -> list[WarmTrial]:
    if not opening.warm_start:
        return []
    sources = opening.warm_start
    return load_warm_start(sources, config, space, opening.directory, opening.warm_start_any)


def _check_budget(config: Config, space: Space) -> None:
    # distinct hashes, not paths: a budget past them ends the search "converged" (exit 1)
    size = distinct_count(space)
    if config.search.budget > size:
        raise BlockQNNError(
            f"search.budget = {config.search.budget} exceeds the {size} distinct candidates "
            f"of the search space {space!r}: at most {size}"
        )


def _with_data_shape(config: Config, spec: EvaluatorSpec) -> Config:
    """The config as the run will store it: with the classes and image shape of its data,
    which the evaluator takes from the data (a digits run records [1, 8, 8], not the
    default [3, 32, 32]). Unchanged for evaluators without data (tables, synthetic)."""
    shape, classes = data_shape(config, spec.load_data())
    network = replace(config.network, num_classes=classes, input_shape=shape)
    return replace(config, network=network)


def _with_latency(config: Config, spec: EvaluatorSpec) -> tuple[EvaluatorSpec, LatencyMeter | None]:
    """Where the latency is measured: each worker's evaluator wrapped (`latency_on =
    "worker"`), or a meter for the master; refuses settings that cannot work."""
    latency_module.check_config(config)
    if latency_module.settings_of(config) is None:
        return spec, None
    cache = open_latency_cache(config)
    if config.reward.latency_on == "worker":
        factory = LatencyFactory(spec.factory or default_evaluator, cache)
        return replace(spec, factory=factory), None
    # the input shape and classes of the deployment network (an older run's config may hold
    # the defaults there)
    shape, classes = data_shape(config, spec.load_data())
    return spec, LatencyMeter.for_config(config, shape, classes, cache)


def open_cache(config: Config) -> EvalCache | None:
    """The evaluation cache `[search] cache` names, opened (None when "off"). A folder that
    is a file or cannot be written is refused (BlockQNNError); a damaged cache file is set
    aside with a warning."""
    directory = cache_dir_for(config)
    return EvalCache.open(directory) if directory is not None else None


def evaluator_name(spec: EvaluatorSpec) -> str:
    """What the cache's fingerprint adds for an evaluator or data loader other than the
    default ones ("" for those)."""
    names = [callable_name(spec.factory), callable_name(spec.loader)]
    return " | ".join(names) if any(names) else ""
