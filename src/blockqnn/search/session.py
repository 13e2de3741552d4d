"""A search session: open the run, assemble its parts, lock the store, run the loop, close.

Owns: `run_search`, the order of a session's steps, which is what keeps a refused or
interrupted run's files unchanged: every read-only check first (`blockqnn.search.resume`),
then the parts (`blockqnn.search.assemble`), then the lock (nothing, not even a migration,
is written without it), the session row, the extension of the budget, the loop, and the
session's outcome however it ends. Must not build parts itself nor print.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from blockqnn.execute import EvaluatorSpec, Executor, make_executor
from blockqnn.search.assemble import Factories, assemble
from blockqnn.search.loop import EventHandler, Search, SearchSummary, Terminated
from blockqnn.search.parts import RunParts
from blockqnn.search.resume import Opening, open_run, progress, restore_agent, scheduled
from blockqnn.settings.config import Config
from blockqnn.store.db import Store
from blockqnn.strategy.base import Strategy


def run_search(
    run_dir: str | Path,
    config: Config | None = None,
    *,
    resume_overrides: dict[str, Any] | None = None,
    device: str | None = None,
    spec: Callable[[Config], EvaluatorSpec] | None = None,
    agent_factory: Callable[[Config], Strategy] | None = None,
    executor_factory: Callable[[EvaluatorSpec], Executor] = make_executor,
    on_event: EventHandler | None = None,
    warm_start: Sequence[str | Path] = (),
    warm_start_any: bool = False,
) -> SearchSummary:
    """Start a new search in `run_dir` with `config`, or resume the run there (config None).

    `spec(config)` replaces the evaluator's description (default: the space's evaluator on
    `device`), `agent_factory(config)` the strategy (default: `blockqnn.strategy.
    make_strategy`), `executor_factory(spec)` the executor. Bad input (a run dir that holds a
    run, a missing, damaged or unwritable one, an unreachable cluster) raises
    `BlockQNNError` before anything in an existing run dir changes.

    `warm_start` (new runs only): runs whose completed trials are told to the strategy
    before its first ask (`blockqnn.search.warm`). A resume with a larger `budget` in
    `resume_overrides` extends the run.
    """
    factories = Factories(device, spec, agent_factory, executor_factory)
    opening = open_run(Path(run_dir), config, resume_overrides, warm_start, warm_start_any)
    parts = assemble(opening, factories)
    return _session(opening, parts, factories, on_event)


def _session(
    opening: Opening, parts: RunParts, factories: Factories, on_event: EventHandler | None
) -> SearchSummary:
    store: Store | None = None
    outcome = "error"
    try:
        store = _lock(opening, parts.config)
        store.begin_session()
        parts = _current(store, opening, parts, factories)
        if parts.config.search.budget > store.config().search.budget:
            store.extend(parts.config.search.budget)
        summary = Search(store, parts, on_event).run()
        outcome = "complete"
        return summary
    except KeyboardInterrupt as exc:
        outcome = "terminated" if isinstance(exc, Terminated) else "interrupted"
        raise
    finally:
        parts.executor.shutdown()
        if parts.cache is not None:
            parts.cache.close()
        if store is not None:
            if store.in_session:
                store.end_session(outcome)
            store.close()


def _lock(opening: Opening, config: Config) -> Store:
    """The run's store, acquired: the lock first, so nothing (not even a migration) is
    written without it; a new run's store is created with `config` (its data's shape)."""
    if opening.resume:
        return Store.open(opening.directory, acquire=True)
    store = Store.create(opening.directory, config, opening.warm_start, opening.warm_start_any)
    store.acquire()
    return store


def _current(store: Store, opening: Opening, parts: RunParts, factories: Factories) -> RunParts:
    """`parts` with a strategy that reflects the locked store: the one restored while
    checking, unless another search worked on the run between that check and the lock (then
    a fresh strategy restored from the store as it is now)."""
    if not opening.resume or progress(store) == parts.progress:
        return parts
    config = scheduled(parts.config, store.schedule_budget())
    strategy = factories.make_strategy(config, parts.space)
    seq = restore_agent(store, strategy, parts.space)
    return replace(parts, strategy=strategy, seq=seq, progress=progress(store))
