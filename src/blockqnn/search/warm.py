"""Warm start: the completed trials of earlier runs, told to a new run's strategy first.

Owns: `load_warm_start` (read the source runs, refuse what cannot be told, parse their
candidates in this run's space). Must not write anything: the loop records the warm trials
(`Store.add_warm`), in one transaction with a snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from blockqnn.errors import BlockQNNError, clip
from blockqnn.evaluate.result import EvalResult
from blockqnn.search.parts import WarmTrial
from blockqnn.search.terminate import STOPPED_AT
from blockqnn.settings.config import Config, with_absolute_paths
from blockqnn.space.base import Space, reads_data
from blockqnn.store.cache import setting_differences
from blockqnn.store.db import COMPLETE, Store, TrialRecord


def load_warm_start(
    sources: Sequence[str | Path],
    config: Config,
    space: Space,
    run_dir: str | Path,
    accept_any: bool = False,
) -> list[WarmTrial]:
    """The completed trials of the runs `sources`, parsed in `space` (this run's), first of
    each hash only, unless a later one is exact where the first was not (evaluated with other
    settings, or early-stopped): the exact one takes its place. Refuses (BlockQNNError,
    nothing read is changed) a source that is not a run, is this run, searched another space,
    or (unless `accept_any`) evaluated with other settings than `config`'s, naming the
    settings that differ."""
    here = Path(run_dir).resolve()
    seen: dict[str, int] = {}  # hash -> its place in `out`
    out: list[WarmTrial] = []
    for source in sources:
        path = Path(source)
        if path.resolve() == here:
            raise BlockQNNError(f"--warm-start {clip(str(source))} is this run itself")
        trials, exact = _read_source(source, config, reads_data(space), accept_any)
        name = str(path.resolve())
        for t in trials:
            if t.result is None:
                continue
            place = seen.get(t.hash)
            if place is not None and (out[place].exact or not exact):
                continue  # the first copy stays, unless a later source's is exact
            try:
                candidate = space.parse(t.candidate)
            except BlockQNNError as exc:
                raise BlockQNNError(
                    f"--warm-start {clip(str(source))}: trial {t.id} does not fit this "
                    f"search's space ({exc})"
                ) from None
            # an early-stopped result is a prediction under the source's threshold: told to
            # the strategy, but trained again if proposed (the cache keeps none either)
            stopped = STOPPED_AT in EvalResult.from_dict(t.result).metrics
            warm = WarmTrial(candidate, t, name, exact=exact and not stopped)
            if place is None:
                seen[t.hash] = len(out)
                out.append(warm)
            elif warm.exact:
                out[place] = warm
    return out


def _read_source(
    source: str | Path, config: Config, dataset_is_path: bool, accept_any: bool
) -> tuple[list[TrialRecord], bool]:
    """The source run's completed trials, and whether its evaluation settings are ours."""
    with Store.open(Path(source), readonly=True) as other:
        theirs = other.config()
        trials = other.trials(COMPLETE)
    if theirs.search.space != config.search.space:
        raise BlockQNNError(
            f"--warm-start {clip(str(source))} searched the {theirs.search.space!r} space, "
            f"this search {config.search.space!r}: its candidates cannot be told"
        )
    theirs = with_absolute_paths(theirs, dataset_is_path)  # older runs: relative
    differ = setting_differences(config, theirs)
    if differ and not accept_any:
        raise BlockQNNError(
            f"--warm-start {clip(str(source))} was evaluated with other settings: "
            f"{'; '.join(differ)} (--warm-start-any tells its results anyway)"
        )
    return trials, not differ
