"""The search master's overhead per trial (ask, store, tell), local and through Ray, and
the scaling from 1 to 2 Ray workers, with a synthetic evaluator (no training).

    python benchmarks/search.py [--trials 200] [--repeats 3] [--json]

Overhead: an instant evaluator; time from the first finished trial to the last, divided by
the trials recorded in between (trained and reused: each is an ask, a transaction and a
tell), so Ray's start-up is not counted. Scaling: a 1 s sleeping evaluator, `--scale-trials`
trained blocks with 1 then 2 workers; steady-state throughput = trials finished after the
first round (one per worker) / time since that round, so the actors' one-time start-up
(seconds: a Ray worker process importing torch) is not counted; speedup = throughput(2) /
throughput(1). Targets (issue 5): under 5 ms per trial local,
under 50 ms through Ray, near-linear scaling.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout

from blockqnn.cli.args import integer
from blockqnn.execute.synthetic import synthetic_spec
from blockqnn.search import SearchEvent, run_search
from blockqnn.settings.config import Config, merge


def _timed_search(config: Config, seconds: float, skip: int = 1) -> tuple[float, float, int]:
    """(seconds from start to the end, seconds from the `skip`-th to the last finished
    trial, trials finished after the `skip`-th)."""
    stamps: list[float] = []
    start: list[float] = []

    def on_event(e: SearchEvent) -> None:
        if e.kind == "start":
            start.append(time.perf_counter())
        elif e.kind in ("complete", "failed", "reused"):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        run_search(
            Path(tmp) / "run",
            config,
            spec=lambda c: synthetic_spec(c, seconds, with_cost=False),
            on_event=on_event,
        )
    return stamps[-1] - start[0], stamps[-1] - stamps[skip - 1], len(stamps) - skip


def _config(budget: int, executor: str, workers: int) -> Config:
    return merge(
        Config(),
        # no evaluation cache: every repeat must run its evaluations
        {"search": {"budget": budget, "executor": executor, "workers": workers, "cache": "off"}},
    )


def _ms_per_trial(config: Config, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        _, span, n = _timed_search(config, 0.0)
        out.append(1000 * span / n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=integer(2), default=200, help="trained blocks per run")
    parser.add_argument("--repeats", type=integer(1), default=3)
    parser.add_argument("--scale-trials", type=integer(3), default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import ray

    local = _ms_per_trial(_config(args.trials, "local", 1), args.repeats)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        through_ray = _ms_per_trial(_config(args.trials, "ray", 1), args.repeats)
        _, span1, n1 = _timed_search(_config(args.scale_trials, "ray", 1), 1.0, skip=1)
        _, span2, n2 = _timed_search(_config(args.scale_trials, "ray", 2), 1.0, skip=2)
        rate1, rate2 = n1 / span1, n2 / span2
    finally:
        ray.shutdown()

    result: dict[str, Any] = {
        "local_ms_per_trial": statistics.median(local),
        "ray_ms_per_trial": statistics.median(through_ray),
        "speedup_2_workers": rate2 / rate1,
        "local_ms_runs": local,
        "ray_ms_runs": through_ray,
        "trials_per_second_1_worker": rate1,
        "trials_per_second_2_workers": rate2,
        "trials": args.trials,
        "repeats": args.repeats,
        "scale_trials": args.scale_trials,
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'measure':28s} {'median':>10s} {'runs':>28s}")
    print(
        f"{'local ms / trial':28s} {result['local_ms_per_trial']:10.2f} "
        f"{', '.join(f'{v:.2f}' for v in local):>28s}"
    )
    print(
        f"{'ray ms / trial':28s} {result['ray_ms_per_trial']:10.2f} "
        f"{', '.join(f'{v:.2f}' for v in through_ray):>28s}"
    )
    print(
        f"{'1 s trials, 1 vs 2 workers':28s} {result['speedup_2_workers']:9.2f}x "
        f"{f'{rate1:.2f} vs {rate2:.2f} trials/s':>28s}"
    )


if __name__ == "__main__":
    main()
