"""The accuracy-latency front of a run: which trials no other beats on both accuracy and
measured latency, and `train --pick pareto:K` / `--max-latency-ms` choosing from it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.evaluate.latency import LATENCY_METRIC

if TYPE_CHECKING:
    from blockqnn.settings.config import Config
    from blockqnn.space.nsc.block import Block


def trial_latency(trial: Any) -> float | None:
    """A stored trial's measured batch-1 latency in ms, None when not measured."""
    result = getattr(trial, "result", None) or {}
    value = (result.get("metrics") or {}).get(LATENCY_METRIC)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def pareto_front(trials: Any) -> list[Any]:
    """The complete trials with a latency that no other beats on both accuracy (higher) and
    latency (lower), fastest first. Ours: a sort and one sweep, O(n log n)."""
    points = [
        (lat, float(t.accuracy), t)
        for t in trials
        if getattr(t, "status", "complete") == "complete"
        and t.accuracy is not None
        and (lat := trial_latency(t)) is not None
    ]
    points.sort(key=lambda p: (p[0], -p[1], p[2].id))  # fastest first; ties: most accurate
    front, best = [], -math.inf
    for _, accuracy, t in points:
        if accuracy > best:  # more accurate than every faster one
            front.append(t)
            best = accuracy
    return front


def pick_front(trials: Any, member: int | None, max_latency_ms: float | None) -> Any:
    """A front member: the `member`-th fastest (as the report numbers the front), or, with
    `member` None, the most accurate one at or under `max_latency_ms`. Raises
    `BlockQNNError` when none fits."""
    front = pareto_front(trials)
    if not front:
        raise BlockQNNError("the run has no trial with a measured latency (search with "
                            "--latency-device or a latency reward)")  # fmt: skip
    limit = math.inf if max_latency_ms is None else max_latency_ms
    fits = [t for t in front if (trial_latency(t) or 0.0) <= limit]  # front members have one
    if not fits:
        raise BlockQNNError(
            f"--max-latency-ms {limit:g}: no block of the front is that fast "
            f"(the fastest takes {trial_latency(front[0]) or 0.0:.3f} ms)"
        )
    if member is None:
        return fits[-1]  # the front's accuracy rises with its latency
    if member > len(fits):
        within = f" within {max_latency_ms:g} ms" if max_latency_ms is not None else ""
        raise BlockQNNError(f"--pick pareto:{member}: the front has {len(fits)} block(s){within}")
    return fits[member - 1]


def parse_pick(text: str) -> int:
    """`pareto` or `pareto:K` (K >= 1) -> K."""
    name, _, k = text.partition(":")
    if name != "pareto" or (k and not (k.isascii() and k.isdigit() and len(k) <= 9)):
        raise BlockQNNError(f"--pick {clip(text, quote=True)}: expected pareto or pareto:K")
    member = int(k) if k else 1
    if member < 1:
        raise BlockQNNError(f"--pick {clip(text, quote=True)}: K counts from 1")
    return member


def pick_from_run(
    run_dir: str | Path, member: int | None, max_latency_ms: float | None
) -> tuple[Block, Config]:
    """The front member chosen by `pick_front` from a run's store, and the run's config."""
    from blockqnn.store.db import Store

    if max_latency_ms is not None and not (math.isfinite(max_latency_ms) and max_latency_ms > 0):
        raise BlockQNNError(f"--max-latency-ms {max_latency_ms:g}: must be a positive number")
    with Store.open(run_dir, readonly=True) as store, store.reading() as reading:
        config = store.config()
        if config.search.space != "nsc":
            raise BlockQNNError(
                f"{run_dir}: a run of the {config.search.space} space has no blocks"
            )
        # streamed: of the trials, only those with a measured latency are kept
        chosen = pick_front(reading.trials(), member, max_latency_ms)
    return chosen.block, config
