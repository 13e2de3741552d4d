"""Opening a run: the read-only checks of a new or resumed run, and restoring the strategy.

Owns: `open_run` (what a run directory and the caller's settings allow: a new run in an
empty place, or a resume of a run nobody else works on, with the settings it may change),
`check_trials` (every stored trial parsed and the strategy restored, still read-only),
`restore_agent` (snapshot plus the calls recorded after it), `resume_config` and
`check_resume_overrides`. Must not write to a run: a refused resume leaves every file
unchanged; the session (`blockqnn.search.session`) locks and writes only after these pass.

Extending (a resume with a larger budget): the run's budget grows, the strategy keeps the
schedule of its first budget (`Store.schedule_budget`, see `scheduled`), so its history
replays exactly; Q-learning's extra blocks continue at the final epsilon (measured:
benchmarks/growth.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.search.prescreen import replayed_asks
from blockqnn.settings.config import Config, merge
from blockqnn.space.base import Space
from blockqnn.store.db import AgentState, Store, TrialRecord, damaged
from blockqnn.store.opening import check_new_run_dir, read_warm_start
from blockqnn.store.rundir import check_writable
from blockqnn.strategy.base import Strategy

log = logging.getLogger("blockqnn.search.resume")

# Settings a resumed run may change: where it runs, not what it searches.
EXECUTION_KEYS = ("executor", "workers", "gpus_per_trial", "cpus_per_trial", "address", "cache")


@dataclass(frozen=True)
class Opening:
    """A run directory checked for a new run (`resume` False) or a resume, read-only."""

    directory: Path
    config: Config  # as given (new) or as stored with this session's overrides (resume)
    resume: bool
    stored_budget: int  # the run's budget before this session (a larger one extends it)
    schedule_budget: int  # the budget the strategy is built with (its first)
    warm_start: tuple[str | Path, ...] = ()
    warm_start_any: bool = False

    @property
    def extended(self) -> bool:
        return self.resume and self.config.search.budget > self.stored_budget


def open_run(
    directory: Path,
    config: Config | None,
    resume_overrides: dict[str, Any] | None = None,
    warm_start: Sequence[str | Path] = (),
    warm_start_any: bool = False,
) -> Opening:
    """A new run in `directory` with `config`, or a resume of the run there (config None).
    Raises `BlockQNNError` for a directory that holds a run (new), for a missing, damaged,
    unwritable or busy run (resume), and for a warm start that is this run, unchanged."""
    if config is None:
        if warm_start:
            raise BlockQNNError("--warm-start applies to a new run; --resume continues one")
        return _open_existing(directory, resume_overrides)
    for source in warm_start:  # named before "holds a run", the message it would get
        if Path(source).resolve() == directory.resolve():
            raise BlockQNNError(f"--warm-start {clip(str(source))} is this run itself")
    check_new_run_dir(directory)  # a run, a file, a deleted run's log: refused, unchanged
    budget = config.search.budget
    return Opening(directory, config, False, budget, budget, tuple(warm_start), warm_start_any)


def _open_existing(directory: Path, overrides: dict[str, Any] | None) -> Opening:
    check_writable(directory)  # first: even reading a run with a -wal file writes its -shm
    with Store.open(directory, readonly=True) as existing:
        config = resume_config(existing, overrides)
        if existing.active():
            raise BlockQNNError(f"{directory} is in use by another running search")
        existing.sessions()  # verified: a damaged session row is refused here
        stored = existing.config().search.budget
        # a run stopped before its warm start was recorded (it holds no trial yet) tells it
        # now: the warm-start trials are written in one transaction, all or none
        empty = not any(existing.counts().values())
        runs, accept_any = read_warm_start(existing.meta()) if empty else ((), False)
        return Opening(
            directory, config, True, stored, existing.schedule_budget(), runs, accept_any
        )


def check_trials(directory: Path, space: Space, strategy: Strategy) -> tuple[int, tuple[Any, ...]]:
    """Every stored trial verified and parsed in `space`, and `strategy` restored to the
    store's state, on a read-only view; returns the calls restored and the progress they
    reflect. A candidate that does not parse or a snapshot that does not fit: refused. One
    pass over the trials (a long run has hundreds of thousands) does all three."""
    with Store.open(directory, readonly=True) as existing:
        snap = existing.latest_snapshot()
        since = 0 if snap is None else snap.seq
        parsed: set[str] = set()  # a long run repeats its candidates' texts: each parsed once
        digest = hashlib.sha256()
        after: list[TrialRecord] = []
        with existing.reading() as reading:
            for t in reading.trials():  # every row verified and decoded
                digest.update(_calls(t))
                if _after(t, since):
                    after.append(t)
                if t.candidate in parsed:
                    continue
                try:
                    space.parse(t.candidate)
                except BlockQNNError as exc:
                    raise damaged(f"trial {t.id}'s candidate does not parse ({exc})") from None
                parsed.add(t.candidate)
        seq = _replay(strategy, space, snap, after)  # an incompatible snapshot: refused
        return seq, (digest.hexdigest(), None if snap is None else snap.seq)


def progress(store: Store) -> tuple[Any, ...]:
    """What the strategy's state depends on: a digest of the trials' asks and tells (a long
    run has hundreds of thousands), and the newest snapshot's position."""
    snap = store.latest_snapshot()
    digest = hashlib.sha256()
    with store.reading() as reading:
        for t in reading.trials():
            digest.update(_calls(t))
    return (digest.hexdigest(), None if snap is None else snap.seq)


def _calls(t: TrialRecord) -> bytes:
    """What `progress` digests of a trial: its asks and tells and the reward told."""
    return repr((t.id, t.hash, t.ask_seq, t.tell_seq, t.reward)).encode()


def restore_agent(store: Store, agent: Strategy, space: Space) -> int:
    """Bring a fresh agent to the state the store records: load the newest snapshot, then
    replay the asks and tells recorded after it, in order. Returns the calls reflected."""
    snap = store.latest_snapshot()
    since = 0 if snap is None else snap.seq
    with store.reading() as reading:
        after = [t for t in reading.trials() if _after(t, since)]  # since the snapshot: few
    return _replay(agent, space, snap, after)


def _replay(
    agent: Strategy, space: Space, snap: AgentState | None, trials: list[TrialRecord]
) -> int:
    """Load `snap` into `agent`, then replay the calls of `trials` after it, in order."""
    seq = 0
    if snap is not None:
        agent.load_state_dict(snap.state)
        seq = snap.seq
    events: list[tuple[int, bool, TrialRecord | None]] = []
    for t in trials:
        if t.ask_seq > seq:
            events.append((t.ask_seq, True, t))
        # the pre-screen's losers: asked, never told (`blockqnn.search.prescreen`)
        events.extend((s, True, None) for s in replayed_asks(t.info) if s > seq)
        if t.tell_seq is not None and t.tell_seq > seq:
            events.append((t.tell_seq, False, t))
    for position, is_ask, trial in sorted(events, key=lambda e: e[0]):
        seq = position
        if trial is None:
            agent.ask()
            continue
        if not is_ask:
            assert trial.reward is not None
            agent.tell(space.parse(trial.candidate), trial.reward)
            continue
        candidate = agent.ask()
        if str(candidate) != trial.candidate and candidate.hash != trial.hash:
            log.warning(
                "trial %d: the restored agent proposed %s, the store recorded %s; "
                "continuing with the recorded candidate",
                trial.id,
                candidate,
                trial.candidate,
            )
    return seq


def _after(t: TrialRecord, seq: int) -> bool:
    """Whether trial `t` records a call of the strategy after call `seq` (an ask, a told
    reward, or a pre-screen loser's ask)."""
    if t.ask_seq > seq or (t.tell_seq is not None and t.tell_seq > seq):
        return True
    return any(s > seq for s in replayed_asks(t.info))


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


def scheduled(config: Config, budget: int) -> Config:
    """`config` with the budget the strategy is built with: an extended run's strategy keeps
    the schedule of its first budget (Q-learning: the extra blocks continue at the final
    epsilon, the choice measured in benchmarks/growth.py), so its history replays exactly."""
    if budget == config.search.budget:
        return config
    return merge(config, {"search": {"budget": budget}})
