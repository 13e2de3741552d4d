"""The asynchronous search: the master that ties the agent, the executor and the store.

Owns: the loop (keep every evaluation slot busy, tell each reward the moment it arrives, reuse
the reward of a hash seen before), budget accounting, retries of trials whose worker died,
stopping on Ctrl-C, and resuming a run from its store. Must not train anything itself (the
executor's evaluators do) nor print (callers get `SearchEvent`s and display them).

Rules, where the paper leaves the choice to us:
- The budget counts trained blocks (complete + failed). A block whose hash was trained before
  is not trained again: the stored reward is told to the agent and the trial is recorded
  `reused`, outside the budget. A duplicate of a block still being trained waits (queued) for
  that result and is then recorded `reused` with it.
- A failed evaluation (non-finite loss, out of memory, time limit) is told to the agent with
  reward `FAILED_REWARD` = 0.0: below any working network's accuracy, so the agent learns to
  avoid what cannot train, and a constant, so a failure teaches nothing else.
- A trial whose worker died (process killed, node lost) is run again, same block, on another
  worker, up to `search.max_attempts` losses; then it is recorded failed (reward 0.0 as above).
- Every change to the store is one transaction. Each trial records when, among the agent's
  calls, it was asked (`ask_seq`) and told (`tell_seq`). The agent's snapshot is saved every
  `SNAPSHOT_EVERY` tells, in the transaction that records the last of them (serialising a
  large Q-table at every tell would dominate the master's time). Resume loads the snapshot
  and replays the calls after it, in their recorded order; the agent is deterministic per
  seed and call sequence, so each replayed ask must give the block the store recorded. A
  resumed run thus continues exactly as the interrupted one would have, up to the order in
  which concurrent evaluations finish. With one slot (the local executor) that order is
  fixed, and an interrupted and resumed run records the same blocks, in the same order, as
  an uninterrupted one.
- Stopping (Ctrl-C, or SIGTERM turned into `Terminated` by the CLI): in-flight trials become
  `interrupted`; resume queues them again (their `attempts` count each start), and the
  session is closed with its outcome. A master killed with kill -9 leaves them `running`,
  treated the same way on resume.
- An evaluation that raises, or whose result cannot be stored (a FLOP count beyond SQLite's
  64-bit integers, metrics that are not numbers), is a failed trial with the reason as its
  error: a stuck `running` trial would crash every resume the same way.
- Resume checks everything first, on a read-only view: the stored config, every trial (its
  checksum, its JSON, its candidate parsed by the space), the sessions and the agent
  restored from its snapshot and the recorded calls. Only then does it lock the run, migrate
  an older schema and write its session: a refused resume leaves every file unchanged.
- Extending (a resume with a larger budget): the run's budget grows, the strategy keeps the
  schedule of its first budget (`Store.schedule_budget`), so its history replays exactly;
  Q-learning's extra blocks continue at the final epsilon (measured: benchmarks/growth.py).
- Warm start (new runs): the completed trials of earlier runs are told before the first ask,
  recorded as `reused` trials without an ask (ask_seq 0), outside the budget, in one
  transaction with a snapshot. With the same evaluation settings
  (`blockqnn.store.cache.fingerprint`) their blocks count as known: a proposal of one is
  reused, not trained.
- The evaluation cache (`blockqnn.store.cache`): a new block is looked up before it is trained; a
  hit is a trained trial (in the budget) whose result is copied, its source in `worker`.

Length (about 500 lines, on purpose): the loop, its budget rules and the resume checks are
one contract (a resumed run must continue exactly as the interrupted one would have); kept
in one module so that a change to one is read beside the others.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.evaluate.result import STATUS_FAILED, EvalResult
from blockqnn.execute import EvaluatorSpec, Executor, WorkerLost, make_executor, make_space
from blockqnn.execute.base import data_shape
from blockqnn.reward import Reward, make_reward
from blockqnn.settings.config import Config, merge
from blockqnn.space.base import Space
from blockqnn.store.cache import (
    EvalCache,
    cache_dir_for,
    callable_name,
    fingerprint,
    setting_differences,
)
from blockqnn.store.db import (
    COMPLETE,
    FAILED,
    QUEUED,
    RUNNING,
    TRAINED,
    AgentState,
    Store,
    TrialRecord,
    damaged,
    is_warm,
)
from blockqnn.store.rundir import DB_NAME, check_writable

log = logging.getLogger("blockqnn.search.loop")

FAILED_REWARD = 0.0  # told to the agent for a block that could not be trained (see above)
MAX_REUSE_STREAK = 10_000  # asks in a row that all hit known blocks: the agent has converged
SNAPSHOT_EVERY = 20  # tells between agent snapshots; resume replays at most this many
POLL_SECONDS = 1.0  # how long one executor wait lasts before the loop looks again
# Settings a resumed run may change: where it runs, not what it searches.
EXECUTION_KEYS = ("executor", "workers", "gpus_per_trial", "cpus_per_trial", "address", "cache")


class SearchStalled(RuntimeError):
    """The agent proposed only known blocks for `MAX_REUSE_STREAK` asks in a row."""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM, as cluster schedulers send before a kill).

    A `KeyboardInterrupt`, so that it takes Ctrl-C's path: in-flight trials are recorded
    `interrupted`, the workers are shut down and the session is closed ("terminated")."""


INT64 = 2**63 - 1  # SQLite's INTEGER: a larger count cannot be stored


@dataclass(frozen=True)
class SearchEvent:
    """What happened to one trial, with the run's totals after it (for progress displays).

    kind: "start" (trial None), "complete", "failed", "reused", "requeued" (worker lost).
    info: the strategy's `info()` at its latest ask (e.g. Q-learning's epsilon)."""

    kind: str
    trial: TrialRecord | None
    trained: int
    budget: int
    reused: int
    failed: int
    running: int
    best: TrialRecord | None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSummary:
    trained: int
    reused: int
    failed: int
    best: TrialRecord | None
    top: list[TrialRecord]
    cached: int = 0  # trained trials whose result came from the evaluation cache (this session)
    saved_seconds: float = 0.0  # the training time those results took when first trained
    warm: int = 0  # warm-start trials told before the first ask


@dataclass(frozen=True)
class WarmTrial:
    """A completed trial of an earlier run, to be told before the first ask. `exact`: its
    run's evaluation settings are this run's, so its result stands for this run's too."""

    candidate: Any
    record: TrialRecord
    run: str
    exact: bool


EventHandler = Callable[[SearchEvent], None]


def restore_agent(store: Store, agent: Any, space: Space) -> int:
    """Bring a fresh agent to the state the store records: load the newest snapshot, then
    replay the asks and tells recorded after it, in order. Returns the calls reflected."""
    snap = store.latest_snapshot()
    seq = 0
    if snap is not None:
        agent.load_state_dict(snap.state)
        seq = snap.seq
    events: list[tuple[int, bool, TrialRecord]] = []
    for t in store.trials():
        if t.ask_seq > seq:
            events.append((t.ask_seq, True, t))
        if t.tell_seq is not None and t.tell_seq > seq:
            events.append((t.tell_seq, False, t))
    for position, is_ask, t in sorted(events, key=lambda e: e[0]):
        seq = position
        if not is_ask:
            assert t.reward is not None
            agent.tell(space.parse(t.candidate), t.reward)
            continue
        candidate = agent.ask()
        if candidate.hash != t.hash:
            log.warning(
                "trial %d: the restored agent proposed %s, the store recorded %s; "
                "continuing with the recorded candidate",
                t.id,
                candidate,
                t.candidate,
            )
    return seq


class Search:
    """One session of the loop over an open, acquired store."""

    def __init__(
        self,
        store: Store,
        agent: Any,
        executor: Executor,
        config: Config,
        on_event: EventHandler | None = None,
        seq: int = 0,
        snapshot_every: int = SNAPSHOT_EVERY,
        space: Space | None = None,
        reward: Reward | None = None,
        cache: EvalCache | None = None,
        warm: Sequence[WarmTrial] = (),
        evaluator: str = "",
        latency: Any = None,
    ) -> None:
        self.store = store
        self.agent = agent
        self.executor = executor
        self.space = space if space is not None else make_space(config)
        self.reward = reward if reward is not None else make_reward(config)
        # a `blockqnn.evaluate.latency.LatencyMeter` with `latency_on = "master"`: measured here
        self.latency = latency
        self.budget = config.search.budget
        self.max_attempts = config.search.max_attempts
        self.on_event = on_event
        self._seq = seq  # the agent's calls so far (asks and tells)
        self._snapshot_every = snapshot_every
        self._unsaved = 0  # tells since the last snapshot
        self._pending: dict[int, Any] = {}  # trial id -> candidate, handed to the executor
        self._queue: deque[int] = deque()  # trials to train, waiting for a slot
        self._inflight: dict[str, int] = {}  # hash -> the trial training it
        self._waiting: dict[str, list[tuple[int, Any]]] = {}  # hash -> parked duplicates
        self._known: dict[str, TrialRecord] = {}  # hash -> its finished, trained trial
        self._trained = self._reused = self._failed = 0
        self._best: TrialRecord | None = None
        self._info: dict[str, Any] = {}
        self._streak = 0
        self.cache = cache if cache is not None and cache.enabled else None
        self._fingerprint = fingerprint(config, evaluator)
        self._cached: set[int] = set()  # trials of this session whose result is the cache's
        self._warm_trials = list(warm)
        self._warm = 0

    # ----- the loop -------------------------------------------------------------------------

    def run(self) -> SearchSummary:
        if self._warm_trials:
            self._warm_start()
        self._load()
        self._emit("start", None)
        try:
            while True:
                self._fill()
                if not self._pending:
                    break
                for trial_id, outcome, worker in self.executor.wait(POLL_SECONDS):
                    self._finish(trial_id, outcome, worker)
        except KeyboardInterrupt:
            self.store.interrupt([t.id for t in self.store.trials(RUNNING)])
            raise
        cache = self.cache
        return SearchSummary(
            self._trained,
            self._reused,
            self._failed,
            self._best,
            self.store.top(10),
            cached=len(self._cached),
            saved_seconds=cache.saved_seconds if cache is not None else 0.0,
            warm=self._warm,
        )

    def _warm_start(self) -> None:
        """Tell every warm-start trial, rescored with this run's reward, and record them
        (status reused, no ask, outside the budget) with the snapshot: one transaction."""
        rows = []
        for w in self._warm_trials:
            assert w.record.result is not None
            result = self._score(EvalResult.from_dict(w.record.result))
            reward = result.reward if result.ok else FAILED_REWARD
            info = {"warm_start": w.run, "source_trial": w.record.id, "exact": w.exact}
            rows.append((w.candidate, result, reward, info, self._tell(w.candidate, reward)))
        self._unsaved = self._snapshot_every  # a snapshot with them: resume replays none
        self.store.add_warm(rows, self._state())

    def _load(self) -> None:
        self.store.recover()  # running / interrupted (a stop or a crash) -> queued
        for t in self.store.trials():
            if t.ask_seq > 0:  # warm-start trials were never asked: no strategy info
                self._info = t.info
            if t.status in TRAINED:
                self._known[t.hash] = t
                self._trained += 1
                self._failed += t.status == FAILED
                self._note_best(t)
            elif t.status == QUEUED and t.reuse_of is None:
                self._queue.append(t.id)
                self._inflight[t.hash] = t.id
            elif t.status == QUEUED:
                candidate = self.space.parse(t.candidate)
                self._waiting.setdefault(t.hash, []).append((t.id, candidate))
            elif is_warm(t):
                self._warm += 1
                if t.info.get("exact") is True:  # its result is this run's: not trained again
                    self._known.setdefault(t.hash, t)
            else:
                self._reused += 1

    def _fill(self) -> None:
        """Keep every slot busy: queued trials first, then new blocks from the agent."""
        while len(self._pending) < self.executor.slots:
            if self._queue:
                trial = self.store.trial(self._queue.popleft())
                self.store.start(trial.id)
                self._submit(trial.id, self.space.parse(trial.candidate))
                continue
            if self._trained + len(self._pending) >= self.budget:
                return
            self._ask()

    def _ask(self) -> None:
        info = dict(self.agent.info())
        block = self.agent.ask()
        self._seq += 1
        ask_seq = self._seq
        self._info = info
        h = block.hash
        source = self._known.get(h)
        if source is not None:  # trained before: reuse its reward
            assert source.reward is not None
            tell_seq = self._tell(block, source.reward)
            trial_id = self.store.add_reused(block, info, source, ask_seq, tell_seq, self._state())
            self._reused += 1
            self._stalled()
            self._emit("reused", self.store.trial(trial_id))
        elif h in self._inflight:  # being trained now: wait for that result
            trial_id = self.store.add_trial(
                block, info, QUEUED, reuse_of=self._inflight[h], ask_seq=ask_seq
            )
            self._waiting.setdefault(h, []).append((trial_id, block))
            self._stalled()
        else:
            self._streak = 0
            hit = self.cache.get(h, self._fingerprint) if self.cache is not None else None
            worker = hit.source if hit is not None else ""
            trial_id = self.store.add_trial(block, info, RUNNING, ask_seq=ask_seq, worker=worker)
            self._inflight[h] = trial_id
            if hit is None:
                self._submit(trial_id, block)
                return
            # trained before with these settings, by some run: its result, no training
            self._cached.add(trial_id)
            self._pending[trial_id] = block
            self._finish(trial_id, hit.result, hit.source)

    def _submit(self, trial_id: int, block: Any) -> None:
        self._pending[trial_id] = block
        self.executor.submit(trial_id, block)

    def _finish(self, trial_id: int, outcome: EvalResult | WorkerLost, worker: str) -> None:
        block = self._pending.pop(trial_id)
        if isinstance(outcome, WorkerLost):
            lost = self.store.trial(trial_id).lost + 1
            if lost < self.max_attempts:
                self.store.requeue(trial_id, outcome.reason, lost=True)
                self._queue.appendleft(trial_id)
                self._emit("requeued", self.store.trial(trial_id))
                return
            outcome = EvalResult.failed(f"worker lost {lost} times; last: {outcome.reason}")
        if self.latency is not None:
            outcome = self.latency.apply(block, outcome)
        assert isinstance(outcome, EvalResult)
        outcome = _storable(self._score(outcome))
        reward = outcome.reward if outcome.ok else FAILED_REWARD
        tell_seq = self._tell(block, reward)
        duplicates = self._waiting.pop(block.hash, [])
        told = [(dup_id, self._tell(dup, reward)) for dup_id, dup in duplicates]
        self.store.finish(trial_id, outcome, reward, worker, tell_seq, self._state(), told)
        del self._inflight[block.hash]
        record = self.store.trial(trial_id)
        self._known[block.hash] = record
        if self.cache is not None and trial_id not in self._cached:
            run = str(self.store.run_dir.resolve())
            self.cache.put(block.hash, self._fingerprint, outcome, run, trial_id)
        self._trained += 1
        self._failed += not outcome.ok
        self._note_best(record)
        self._emit(COMPLETE if outcome.ok else FAILED, record)
        for dup_id, _ in duplicates:
            self._reused += 1
            self._emit("reused", self.store.trial(dup_id))

    # ----- helpers ----------------------------------------------------------------------------

    def _score(self, outcome: EvalResult) -> EvalResult:
        """The result with the run's reward of its metrics (the master scores every result
        with one reward); a non-finite reward makes it a failed result."""
        if not outcome.ok:
            return replace(outcome, reward=FAILED_REWARD)
        reward = float(self.reward(outcome.metric_values()))
        if not math.isfinite(reward):
            return replace(outcome, status=STATUS_FAILED, reward=0.0, error=f"reward {reward}")
        return replace(outcome, reward=reward)

    def _tell(self, block: Any, reward: float) -> int:
        self.agent.tell(block, reward)
        self._seq += 1
        self._unsaved += 1
        return self._seq

    def _state(self) -> AgentState | None:
        """A snapshot to save now, every `snapshot_every` tells."""
        if self._unsaved < self._snapshot_every:
            return None
        self._unsaved = 0
        return AgentState(self.agent.state_dict(), self._seq)

    def _stalled(self) -> None:
        self._streak += 1
        if self._streak >= MAX_REUSE_STREAK:
            raise SearchStalled(
                f"the agent proposed only known blocks {self._streak} times in a row "
                f"({self._trained} of {self.budget} trained): it has converged"
            )

    def _note_best(self, t: TrialRecord) -> None:
        better = self._best is None or (t.reward or 0.0) > (self._best.reward or -math.inf)
        if t.status == COMPLETE and t.reward is not None and better:
            self._best = t

    def _emit(self, kind: str, trial: TrialRecord | None) -> None:
        if self.on_event is None:
            return
        running = len(self._pending) + len(self._queue)
        self.on_event(
            SearchEvent(
                kind,
                trial,
                self._trained,
                self.budget,
                self._reused,
                self._failed,
                running,
                self._best,
                self._info,
            )
        )


def _storable(outcome: EvalResult) -> EvalResult:
    """The result as the store can keep it: counts that fit SQLite's 64-bit integers and
    metrics that JSON can write. A result that cannot be kept becomes a failed one that can,
    with the reason (its cost is then unknown: 0)."""
    problems = [
        f"{name} = {clip(value)} does not fit a 64-bit integer"
        for name, value in (("flops", outcome.flops), ("params", outcome.params))
        if not (isinstance(value, int) and -INT64 <= value <= INT64)
    ]
    try:
        json.dumps(outcome.to_dict())
    except (TypeError, ValueError) as exc:
        problems.append(f"its metrics are not JSON numbers ({clip(str(exc))})")
    if not problems:
        return outcome
    why = f"the result cannot be stored: {'; '.join(problems)}"
    error = f"{outcome.error}; {why}" if outcome.error else why
    return EvalResult.failed(error, device=str(outcome.device), mode=str(outcome.mode))


# ----- starting and resuming -------------------------------------------------------------------


def check_resume_overrides(
    overrides: dict[str, dict[str, Any]], free: Collection[str] = ()
) -> dict[str, Any]:
    """The `search` section of settings given with a resume, refusing any other section (a
    resume continues the stored search; `resume_config` checks the `search` keys) except the
    `free` keys, which describe this session's machine (the caller applies them)."""
    changed = {
        k
        for section, values in overrides.items()
        for k in values
        if section != "search" and k not in free
    }
    if changed:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(changed))
        raise BlockQNNError(f"--resume continues the stored search; {flags} cannot change")
    return dict(overrides.get("search", {}))


def resume_config(store: Store, overrides: dict[str, Any] | None = None) -> Config:
    """The stored config with execution-only `search` overrides (not saved: they describe
    this session's machines, not the search), and a larger `budget` to extend the run by
    (saved by `Store.extend` once the run is locked). A smaller budget is refused."""
    config = store.config()
    overrides = dict(overrides or {})
    budget = overrides.pop("budget", None)
    bad = sorted(set(overrides) - set(EXECUTION_KEYS))
    if bad:
        raise BlockQNNError(
            f"--resume continues the stored search; {', '.join(bad)} cannot change "
            f"(only {', '.join(EXECUTION_KEYS)} and a larger budget can)"
        )
    config = merge(config, {"search": overrides}) if overrides else config
    if budget is not None and budget != config.search.budget:
        if budget < config.search.budget:
            raise BlockQNNError(
                f"--budget {budget} is below the run's budget of {config.search.budget}: "
                "a search can be extended, not shortened"
            )
        config = merge(config, {"search": {"budget": budget}})
    return config


def _scheduled(config: Config, budget: int) -> Config:
    """`config` with the budget the strategy is built with: an extended run's agent keeps
    the schedule of its first budget (Q-learning: the extra blocks continue at the final
    epsilon, the choice measured in benchmarks/growth.py), so its history replays exactly."""
    if budget == config.search.budget:
        return config
    return merge(config, {"search": {"budget": budget}})


def load_warm_start(
    sources: Sequence[str | Path],
    config: Config,
    run_dir: str | Path,
    accept_any: bool = False,
) -> list[WarmTrial]:
    """The completed trials of the runs `sources`, parsed in this run's space, first of each
    hash only. Refuses (BlockQNNError, nothing read is changed) a source that is not a run,
    is this run, searched another space, or (unless `accept_any`) evaluated with other
    settings than `config`'s, naming the settings that differ."""
    space = make_space(config)
    here = Path(run_dir).resolve()
    seen: set[str] = set()
    out: list[WarmTrial] = []
    for source in sources:
        path = Path(source)
        if path.resolve() == here:
            raise BlockQNNError(f"--warm-start {clip(str(source))} is this run itself")
        with Store.open(path, readonly=True) as other:
            theirs = other.config()
            trials = other.trials(COMPLETE)
        if theirs.search.space != config.search.space:
            raise BlockQNNError(
                f"--warm-start {clip(str(source))} searched the {theirs.search.space!r} space, "
                f"this search {config.search.space!r}: its candidates cannot be told"
            )
        differ = setting_differences(config, theirs)
        if differ and not accept_any:
            raise BlockQNNError(
                f"--warm-start {clip(str(source))} was evaluated with other settings: "
                f"{'; '.join(differ)} (--warm-start-any tells its results anyway)"
            )
        name = str(path.resolve())
        for t in trials:
            if t.hash in seen or t.result is None:
                continue
            try:
                candidate = space.parse(t.candidate)
            except BlockQNNError as exc:
                raise BlockQNNError(
                    f"--warm-start {clip(str(source))}: trial {t.id} does not fit this "
                    f"search's space ({exc})"
                ) from None
            seen.add(t.hash)
            out.append(WarmTrial(candidate, t, name, exact=not differ))
    return out


def open_cache(config: Config) -> EvalCache | None:
    """The evaluation cache `[search] cache` names, opened (None when "off"). A folder that
    is a file or cannot be written is refused (BlockQNNError); a damaged cache file is set
    aside with a warning."""
    directory = cache_dir_for(config)
    return EvalCache.open(directory) if directory is not None else None


def run_search(
    run_dir: str | Path,
    config: Config | None = None,
    *,
    resume_overrides: dict[str, Any] | None = None,
    device: str | None = None,
    spec: Callable[[Config], EvaluatorSpec] | None = None,
    agent_factory: Callable[[Config], Any] | None = None,
    executor_factory: Callable[[EvaluatorSpec], Executor] = make_executor,
    on_event: EventHandler | None = None,
    warm_start: Sequence[str | Path] = (),
    warm_start_any: bool = False,
) -> SearchSummary:
    """Start a new search in `run_dir` with `config`, or resume the run there (config None).

    `spec(config)` replaces the evaluator's description (default: the early-stop evaluator
    on `device`), `agent_factory(config)` replaces `blockqnn.strategy.make_agent`. Bad input (a
    run dir that holds a run, a missing, damaged or unwritable one, an unreachable cluster)
    raises `BlockQNNError` before anything in an existing run dir changes.

    `warm_start` (new runs only): runs whose completed trials are told to the strategy
    before its first ask (`load_warm_start`). A resume with a larger `budget` in
    `resume_overrides` extends the run.

    Long on purpose: the order of the steps (check, lock, open, recover, loop, close) is
    what keeps a refused or interrupted run's files unchanged; it reads best in one place.
    """
    directory = Path(run_dir)
    resume = config is None
    make_agent = agent_factory or _make_agent
    checked: _Resumable | None = None
    warm: list[WarmTrial] = []
    if config is None:  # validate read-only: bad input must leave the run untouched
        if warm_start:
            raise BlockQNNError("--warm-start applies to a new run; --resume continues one")
        checked = _check_resumable(directory, resume_overrides, make_agent)
        config = checked.config
    else:
        for source in warm_start:  # named before "holds a run", the message it would get
            if Path(source).resolve() == directory.resolve():
                raise BlockQNNError(f"--warm-start {clip(str(source))} is this run itself")
        if (directory / DB_NAME).exists():
            Store.create(directory, config)  # raises: the dir holds a run; nothing changed
        warm = load_warm_start(warm_start, config, directory, warm_start_any)
    space = make_space(config)
    extended = checked is not None and config.search.budget > checked.stored_budget
    if not resume or extended:
        size = space.count()
        if config.search.budget > size:
            raise BlockQNNError(
                f"search.budget = {config.search.budget} exceeds the {size} candidates of "
                f"the search space {space!r}"
            )
    evaluator_spec = spec(config) if spec is not None else EvaluatorSpec.for_config(config, device)
    if not resume:
        config = _with_data_shape(config, evaluator_spec)
    evaluator_spec, latency = _with_latency(config, evaluator_spec)
    agent = checked.agent if checked is not None else make_agent(config)
    reward = make_reward(config)
    cache = open_cache(config)  # a bad cache folder is refused here: nothing written yet
    executor: Executor | None = None
    store: Store | None = None
    outcome = "error"
    try:
        executor = executor_factory(evaluator_spec)  # may raise BlockQNNError: nothing written
        if resume:  # the lock first: nothing is written (not even a migration) without it
            store = Store.open(directory, acquire=True)
        else:
            store = Store.create(directory, config)
            store.acquire()
        store.begin_session()
        if checked is not None and _progress(store) == checked.progress:
            seq = checked.seq  # the agent restored while checking is this store's agent
        else:
            if checked is not None:  # another search worked on the run meanwhile
                agent = make_agent(_scheduled(config, store.schedule_budget()))
            seq = restore_agent(store, agent, space)
        if config.search.budget > store.config().search.budget:
            store.extend(config.search.budget)
        search = Search(
            store,
            agent,
            executor,
            config,
            on_event,
            seq,
            SNAPSHOT_EVERY,
            space,
            reward,
            cache=cache,
            warm=warm,
            evaluator=_evaluator_name(evaluator_spec),
            latency=latency,
        )
        summary = search.run()
        outcome = "complete"
        return summary
    except KeyboardInterrupt as exc:
        outcome = "terminated" if isinstance(exc, Terminated) else "interrupted"
        raise
    finally:
        if executor is not None:
            executor.shutdown()
        if cache is not None:
            cache.close()
        if store is not None:
            if store.in_session:
                store.end_session(outcome)
            store.close()


def _with_latency(config: Config, spec: EvaluatorSpec) -> tuple[EvaluatorSpec, Any]:
    """Where the latency is measured: each worker's evaluator wrapped (`latency_on =
    "worker"`), or a meter for the master; refuses settings that cannot work."""
    from blockqnn.evaluate import latency

    latency.check_config(config)
    if latency.settings_of(config) is None:
        return spec, None
    if config.reward.latency_on == "worker":
        return replace(spec, factory=latency.LatencyFactory(spec.factory)), None
    # the input shape and classes of the deployment network (an older run's config may hold
    # the defaults there)
    shape, classes = data_shape(config, spec.load_data())
    return spec, latency.LatencyMeter.for_config(config, shape, classes)


def _with_data_shape(config: Config, spec: EvaluatorSpec) -> Config:
    """The config as the run will store it: with the classes and image shape of its data,
    which the evaluator takes from the data (a digits run records [1, 8, 8], not the
    default [3, 32, 32]). Unchanged for evaluators without data (tables, synthetic)."""
    shape, classes = data_shape(config, spec.load_data())
    network = replace(config.network, num_classes=classes, input_shape=shape)
    return replace(config, network=network)


@dataclass(frozen=True)
class _Resumable:
    """What checking a run for resume found: its config, the agent restored from it (after
    `seq` calls) and the trials' progress it was restored from."""

    config: Config
    agent: Any
    seq: int
    progress: tuple[Any, ...]
    stored_budget: int  # the run's budget before this resume (a larger one extends it)


def _progress(store: Store) -> tuple[Any, ...]:
    """What the agent's state depends on: the trials' asks and tells, the newest snapshot."""
    snap = store.latest_snapshot()
    asks = [(t.id, t.hash, t.ask_seq, t.tell_seq, t.reward) for t in store.trials()]
    return (tuple(asks), None if snap is None else snap.seq)


def check_resumable(
    run_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    agent_factory: Callable[[Config], Any] | None = None,
) -> Config:
    """Everything a resume will read, checked on a read-only view of the run; returns the
    config to resume with. Raises `BlockQNNError` for a run that is missing, damaged, in
    use, not writable, or whose agent cannot be restored, having changed nothing."""
    return _check_resumable(Path(run_dir), overrides, agent_factory or _make_agent).config


def _check_resumable(
    directory: Path, overrides: dict[str, Any] | None, agent_factory: Callable[[Config], Any]
) -> _Resumable:
    check_writable(directory)  # first: even reading a run with a -wal file writes its -shm
    with Store.open(directory, readonly=True) as existing:
        config = resume_config(existing, overrides)
        if existing.active():
            raise BlockQNNError(f"{directory} is in use by another running search")
        space = make_space(config)
        existing.sessions()  # verified: a damaged session row is refused here
        for t in existing.trials():  # every row verified and decoded
            try:
                space.parse(t.candidate)
            except BlockQNNError as exc:
                raise damaged(f"trial {t.id}'s candidate does not parse ({exc})") from None
        agent = agent_factory(_scheduled(config, existing.schedule_budget()))
        seq = restore_agent(existing, agent, space)  # an incompatible snapshot: refused
        stored = existing.config().search.budget
        return _Resumable(config, agent, seq, _progress(existing), stored)


def _evaluator_name(spec: EvaluatorSpec) -> str:
    """What the cache's fingerprint adds for an evaluator or data loader other than the
    default ones ("" for those)."""
    names = [callable_name(spec.factory), callable_name(spec.loader)]
    return " | ".join(names) if any(names) else ""


def _make_agent(config: Config) -> Any:
    from blockqnn.strategy import make_strategy

    s = config.search
    return make_strategy(s.agent, make_space(config), s.budget, s.seed, config.agent)
