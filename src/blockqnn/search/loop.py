"""The asynchronous search loop: the master that ties the strategy, the executor and the store.

Owns: the loop (keep every evaluation slot busy, tell each reward the moment it arrives, reuse
the reward of a hash seen before), budget accounting, retries of trials whose worker died,
stopping on Ctrl-C, and scoring every result with the run's reward (`blockqnn.reward.score`,
here and nowhere else in a search). Must not build its parts (`blockqnn.search.assemble`
does), train anything itself (the executor's evaluators do) nor print (callers get
`SearchEvent`s and display them).

Rules, where the paper leaves the choice to us:
- The budget counts trained blocks (complete + failed). A block whose hash was trained before
  is not trained again: the stored reward is told to the agent and the trial is recorded
  `reused`, outside the budget. A duplicate of a block still being trained waits (queued) for
  that result and is then recorded `reused` with it.
- A failed evaluation (non-finite loss, out of memory, time limit) is told to the agent with
  reward `FAILED_REWARD` = 0.0 (`blockqnn.reward`).
- A trial whose worker died (process killed, node lost) is run again, same block, on another
  worker, up to `search.max_attempts` losses; then it is recorded failed (reward 0.0 as above).
- Every change to the store is one transaction. Each trial records when, among the agent's
  calls, it was asked (`ask_seq`) and told (`tell_seq`). The agent's snapshot is saved every
  `SNAPSHOT_EVERY` tells, in the transaction that records the last of them (serialising a
  large Q-table at every tell would dominate the master's time). Resume loads the snapshot
  and replays the calls after it, in their recorded order (`blockqnn.search.resume`); the
  agent is deterministic per seed and call sequence, so a resumed run continues exactly as
  the interrupted one would have, up to the order in which concurrent evaluations finish.
  With one slot (the local executor) that order is fixed, and an interrupted and resumed
  run records the same blocks, in the same order, as an uninterrupted one.
- Stopping (Ctrl-C, SIGTERM turned into `Terminated` by the CLI, or an error of the
  master's own, e.g. a full disk): in-flight trials become `interrupted`; resume queues them
  again (their `attempts` count each start). A master killed with kill -9 leaves them
  `running`, treated the same way on resume, except a trial the local executor ran in the
  search process itself: the search died with it (the out-of-memory killer, or a kill),
  which counts as its worker lost, so a network that takes the machine's memory fails after
  `max_attempts` instead of killing every resume.
- An evaluation or a reward that raises, or a result that cannot be stored (a FLOP count
  beyond SQLite's 64-bit integers, metrics that are not numbers), is a failed trial with the
  reason as its error: a stuck `running` trial would crash every resume the same way.
- Warm start (new runs): the completed trials of earlier runs are told before the first ask,
  recorded as `reused` trials without an ask (ask_seq 0), outside the budget, in one
  transaction with a snapshot. With the same evaluation settings
  (`blockqnn.store.cache.fingerprint`) their blocks count as known: a proposal of one is
  reused, not trained.
- The evaluation cache (`blockqnn.store.cache`): a new block is looked up before it is trained; a
  hit is a trained trial (in the budget) whose result is copied, its source in `worker`.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from blockqnn.errors import clip
from blockqnn.evaluate.gate import Job
from blockqnn.evaluate.result import EvalResult
from blockqnn.execute import IN_PROCESS, WorkerLost
from blockqnn.reward import FAILED_REWARD, score
from blockqnn.search.parts import RunParts
from blockqnn.search.terminate import STOPPED_AT, Terminator
from blockqnn.store.db import (
    COMPLETE,
    FAILED,
    QUEUED,
    RUNNING,
    TRAINED,
    AgentState,
    Store,
    TrialRecord,
    is_warm,
)
from blockqnn.store.schema import CACHE_WORKER

MAX_REUSE_STREAK = 10_000  # asks in a row that all hit known blocks: the agent has converged
SNAPSHOT_EVERY = 20  # tells between agent snapshots; resume replays at most this many
POLL_SECONDS = 1.0  # how long one executor wait lasts before the loop looks again
CRASHED = "the search process died while training it (killed, e.g. out of memory)"
INT64 = 2**63 - 1  # SQLite's INTEGER: a larger count cannot be stored

__all__ = [
    "FAILED_REWARD",
    "SNAPSHOT_EVERY",
    "Search",
    "SearchEvent",
    "SearchStalled",
    "SearchSummary",
    "Terminated",
]


class SearchStalled(RuntimeError):
    """The agent proposed only known blocks for `MAX_REUSE_STREAK` asks in a row."""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM, as cluster schedulers send before a kill).

    A `KeyboardInterrupt`, so that it takes Ctrl-C's path: in-flight trials are recorded
    `interrupted`, the workers are shut down and the session is closed ("terminated")."""


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


EventHandler = Callable[[SearchEvent], None]


class Search:
    """One session of the loop over an open, acquired store, with the run's parts."""

    def __init__(self, store: Store, parts: RunParts, on_event: EventHandler | None = None) -> None:
        self.store = store
        self.parts = parts
        self.agent = parts.strategy
        self.executor = parts.executor
        self.space = parts.space
        self.reward = parts.reward
        self.latency = parts.latency  # `latency_on = "master"`: measured here
        self.budget = parts.config.search.budget
        self.max_attempts = parts.config.search.max_attempts
        self.on_event = on_event
        self._seq = parts.seq  # the agent's calls so far (asks and tells)
        self._snapshot_every = SNAPSHOT_EVERY  # read now: tests change it
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
        cache = parts.cache
        self.cache = cache if cache is not None and cache.enabled else None
        self._cached: set[int] = set()  # trials of this session whose result is the cache's
        self._cached_before, self._saved_before = 0, 0.0  # those of earlier sessions
        self._warm = 0
        # a running trial's worker when it runs in this process (a crash of ours is its loss)
        self._here = IN_PROCESS if getattr(self.executor, "in_process", False) else ""
        self.terminator = Terminator.for_config(parts.config)  # None: early termination off
        self.screener = parts.screener  # None: pre-screen off

    # ----- the loop -------------------------------------------------------------------------

    def run(self) -> SearchSummary:
        if self.parts.warm:
            self._warm_start()
        self._load()
        self._emit("start", None)
        try:
            for trial_id in sorted(self._pending):  # trials that took the search down, lost
                self._finish(trial_id, WorkerLost(CRASHED), IN_PROCESS)
            while True:
                self._fill()
                if not self._pending:
                    break
                for trial_id, outcome, worker in self.executor.wait(POLL_SECONDS):
                    self._finish(trial_id, outcome, worker)
        except BaseException:
            # Ctrl-C, or an error of the master's own (a full disk, a stalled agent): the
            # trials in flight are not to blame, so they are resumed, not counted as lost.
            # Best effort: the store may be what failed, and the cause is what to report.
            with contextlib.suppress(Exception):
                self.store.interrupt([t.id for t in self.store.trials(RUNNING)])
            raise
        cache = self.cache
        return SearchSummary(
            self._trained,
            self._reused,
            self._failed,
            self._best,
            self.store.top(10),
            cached=self._cached_before + len(self._cached),
            saved_seconds=self._saved_before + (cache.saved_seconds if cache is not None else 0.0),
            warm=self._warm,
        )

    def _warm_start(self) -> None:
        """Tell every warm-start trial, rescored with this run's reward, and record them
        (status reused, no ask, outside the budget) with the snapshot: one transaction."""
        rows = []
        for w in self.parts.warm:
            assert w.record.result is not None
            result, reward = self._score(EvalResult.from_dict(w.record.result))
            info = {"warm_start": w.run, "source_trial": w.record.id, "exact": w.exact}
            rows.append((w.candidate, result, reward, info, self._tell(w.candidate, reward)))
        self._unsaved = self._snapshot_every  # a snapshot with them: resume replays none
        self.store.add_warm(rows, self._state())

    def _load(self) -> None:
        # a trial that was training in a search process that died: its worker is lost
        crashed = [t for t in self.store.trials(RUNNING) if t.worker == IN_PROCESS]
        doomed = {t.id for t in crashed if t.lost + 1 >= self.max_attempts}
        for t in crashed:
            if t.id not in doomed:
                self.store.requeue(t.id, CRASHED, lost=True)
        self.store.recover(keep=doomed)  # running / interrupted (a stop or a crash) -> queued
        parsed: dict[str, Any] = {}  # a long run repeats its texts: each parsed once
        with self.store.reading() as reading:
            for t in reading.trials():
                self._load_one(t, doomed, parsed)

    def _load_one(self, t: TrialRecord, doomed: set[int], parsed: dict[str, Any]) -> None:
        if t.ask_seq > 0:  # warm-start trials were never asked: no strategy info
            self._info = t.info
        # the hash by this release's rules: a run stored before concats whose operand
        # order decides the network were told apart holds the older hash for those
        candidate = parsed.get(t.candidate)
        if candidate is None:  # candidates are immutable values: shared by equal texts
            candidate = parsed[t.candidate] = self.space.parse(t.candidate)
        h = candidate.hash
        if t.status in TRAINED:
            result = EvalResult.from_dict(t.result) if t.result is not None else None
            if self.terminator is not None and result is not None:
                self.terminator.note(result)
            if t.worker.startswith(CACHE_WORKER) and result is not None:
                self._cached_before += 1
                self._saved_before += result.seconds
            self._known[h] = t
            self._trained += 1
            self._failed += t.status == FAILED
            self._note_best(t)
        elif t.id in doomed:  # failed by `run`, once every trial is loaded
            self._pending[t.id] = candidate
            self._inflight[h] = t.id
        elif t.status == QUEUED and t.reuse_of is None:
            self._queue.append(t.id)
            self._inflight[h] = t.id
        elif t.status == QUEUED:
            self._waiting.setdefault(h, []).append((t.id, candidate))
        elif is_warm(t):
            self._warm += 1
            if t.info.get("exact") is True:  # its result is this run's: not trained again
                self._known.setdefault(h, t)
        else:
            self._reused += 1

    def _fill(self) -> None:
        """Keep every slot busy: queued trials first, then new blocks from the agent."""
        while len(self._pending) < self.executor.slots:
            if self._queue:
                trial = self.store.trial(self._queue.popleft())
                self.store.start(trial.id, self._here)
                self._submit(trial.id, self.space.parse(trial.candidate))
                continue
            if self._trained + len(self._pending) >= self.budget:
                return
            self._ask()

    def _ask(self) -> None:
        info = dict(self.agent.info())
        if self.screener is not None:
            block, ask_seq, info["prescreen"] = self.screener.screen(self._ask_one)
        else:
            block, ask_seq = self._ask_one()
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
            hit = self.cache.get(h, self.parts.fingerprint) if self.cache is not None else None
            worker = hit.source if hit is not None else self._here
            trial_id = self.store.add_trial(block, info, RUNNING, ask_seq=ask_seq, worker=worker)
            self._inflight[h] = trial_id
            if hit is None:
                self._submit(trial_id, block)
                return
            # trained before with these settings, by some run: its result, no training
            self._cached.add(trial_id)
            self._pending[trial_id] = block
            result = hit.result if self.terminator is None else self.terminator.adopt(hit.result)
            self._finish(trial_id, result, hit.source)

    def _ask_one(self) -> tuple[Any, int]:
        block = self.agent.ask()
        self._seq += 1
        return block, self._seq

    def _submit(self, trial_id: int, block: Any) -> None:
        self._pending[trial_id] = block
        gate = self.terminator.gate() if self.terminator is not None else None
        self.executor.submit(trial_id, block if gate is None else Job(block, gate))

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
        if self.terminator is not None:
            outcome = self.terminator.complete(outcome)
            self.terminator.note(outcome)
        outcome, reward = self._score(outcome)
        tell_seq = self._tell(block, reward)
        duplicates = self._waiting.pop(block.hash, [])
        told = [(dup_id, self._tell(dup, reward)) for dup_id, dup in duplicates]
        self.store.finish(trial_id, outcome, reward, worker, tell_seq, self._state(), told)
        del self._inflight[block.hash]
        record = self.store.trial(trial_id)
        self._known[block.hash] = record
        stopped = STOPPED_AT in outcome.metrics  # depends on this run's threshold: not cached
        if self.cache is not None and trial_id not in self._cached and not stopped:
            run = str(self.store.run_dir.resolve())
            self.cache.put(block.hash, self.parts.fingerprint, outcome, run, trial_id)
        self._trained += 1
        self._failed += not outcome.ok
        self._note_best(record)
        self._emit(COMPLETE if outcome.ok else FAILED, record)
        for dup_id, _ in duplicates:
            self._reused += 1
            self._emit("reused", self.store.trial(dup_id))

    # ----- helpers ----------------------------------------------------------------------------

    def _score(self, outcome: EvalResult) -> tuple[EvalResult, float]:
        """The result as the store keeps it, scored with the run's reward (the one place a
        search computes rewards), and the reward the strategy is told for it."""
        scored = _storable(score(self.reward, outcome))
        return scored, scored.reward if scored.reward is not None else FAILED_REWARD

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
        if t.status != COMPLETE or t.reward is None:
            return
        best = self._best.reward if self._best is not None else None
        if best is None or t.reward > best:
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
    failed = EvalResult.failed(error, device=str(outcome.device), mode=str(outcome.mode))
    return replace(failed, reward=FAILED_REWARD)
